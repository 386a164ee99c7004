"""``Mask``: parameter name -> bool tensor (True = kept); densities, a per-layer table, save/load,
and ``info``: what produced it (method, allocation, e.g. which smart-ratio variant was used)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from prunelab.errors import PrunelabError
from prunelab.pruning.prunable import Layer

_FORMAT = "prunelab-mask-v1"


class PruningWarning(UserWarning):
    """A mask is valid but probably not what was meant, e.g. a layer keeps no weight at all (layer
    collapse: the network's output no longer depends on its input)."""


@dataclass(frozen=True)
class LayerDensity:
    """One row of a mask's per-layer table. ``density`` is the kept fraction of the layer."""

    name: str
    shape: tuple[int, ...]
    kept: int
    total: int

    @property
    def density(self) -> float:
        return self.kept / self.total if self.total else 1.0


class Mask(Mapping[str, Tensor]):
    """A pruning mask over named weight tensors: ``True`` keeps a weight, ``False`` prunes it.

    Parameters not in the mask are not prunable (always kept). Iteration order is layer order.

    ``info`` is a JSON-able record of how the mask was made (``prune()`` fills in the method, the
    allocation and what the allocation decided, e.g. ``smart_ratio_variant``); it is saved with the
    mask and does not take part in equality.
    """

    def __init__(self, tensors: Mapping[str, Tensor], info: Mapping[str, Any] | None = None) -> None:
        self._tensors: dict[str, Tensor] = {}
        for name, tensor in tensors.items():
            self._tensors[name] = tensor.detach().to(torch.bool)
        self.info: dict[str, Any] = dict(info or {})

    @classmethod
    def ones(cls, layers: list[Layer], device: str | torch.device = "cpu") -> Mask:
        """The dense mask (everything kept) over ``layers``."""
        return cls({layer.name: torch.ones(layer.shape, dtype=torch.bool, device=device) for layer in layers})

    def __getitem__(self, name: str) -> Tensor:
        return self._tensors[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._tensors)

    def __len__(self) -> int:
        return len(self._tensors)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Mask) or list(self) != list(other):
            return False
        return all(torch.equal(self[n].cpu(), other[n].cpu()) for n in self)

    def __hash__(self) -> int:  # masks are mutable-tensor holders; hash by identity
        return id(self)

    def __repr__(self) -> str:
        return f"Mask({len(self)} layers, density={self.density():.4f})"

    # -- counts ---------------------------------------------------------------------------------
    @property
    def num_kept(self) -> int:
        return int(sum(int(t.sum()) for t in self._tensors.values()))

    @property
    def num_total(self) -> int:
        return int(sum(t.numel() for t in self._tensors.values()))

    def density(self) -> float:
        """Kept fraction of the masked (prunable) weights."""
        return self.num_kept / self.num_total if self.num_total else 1.0

    def sparsity(self) -> float:
        """Pruned fraction of the masked (prunable) weights: ``1 - density()``."""
        return 1.0 - self.density()

    def counts(self) -> dict[str, int]:
        """Kept weights per layer."""
        return {name: int(t.sum()) for name, t in self._tensors.items()}

    def empty_layers(self) -> list[str]:
        """Names of the layers that keep no weight at all (layer collapse), in layer order."""
        return [name for name, t in self._tensors.items() if t.numel() > 0 and not bool(t.any())]

    def per_layer(self) -> list[LayerDensity]:
        """The per-layer table in layer order."""
        return [
            LayerDensity(name, tuple(t.shape), int(t.sum()), t.numel()) for name, t in self._tensors.items()
        ]

    def model_density(self, model: nn.Module) -> float:
        """Kept fraction of *all* of ``model``'s parameters (unmasked parameters count as kept)."""
        total = sum(p.numel() for p in model.parameters())
        pruned = self.num_total - self.num_kept
        return (total - pruned) / total if total else 1.0

    # -- use ------------------------------------------------------------------------------------
    def to(self, device: str | torch.device) -> Mask:
        return Mask({n: t.to(device) for n, t in self._tensors.items()}, self.info)

    def check_fits(self, model: nn.Module) -> dict[str, nn.Parameter]:
        """The model parameters this mask covers; raises if a name or shape does not match."""
        params = dict(model.named_parameters())
        out: dict[str, nn.Parameter] = {}
        for name, tensor in self._tensors.items():
            if name not in params:
                raise PrunelabError(f"mask layer {name!r} is not a parameter of the model")
            if tuple(params[name].shape) != tuple(tensor.shape):
                raise PrunelabError(
                    f"mask layer {name!r} has shape {tuple(tensor.shape)}, the model's has "
                    f"{tuple(params[name].shape)}"
                )
            out[name] = params[name]
        return out

    @torch.no_grad()
    def apply_(self, model: nn.Module) -> nn.Module:
        """Zero the pruned weights of ``model`` in place; returns the model."""
        for name, param in self.check_fits(model).items():
            param.mul_(self._tensors[name].to(device=param.device, dtype=param.dtype))
        return model

    # -- persistence ----------------------------------------------------------------------------
    def save(self, path: str | Path, metadata: Mapping[str, object] | None = None) -> Path:
        """Write the mask as safetensors, atomically (temp file + rename); ``info`` is saved with it."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"format": _FORMAT, "order": json.dumps(list(self._tensors))}
        if self.info:
            meta["info"] = json.dumps(self.info, default=str)
        if metadata:
            meta["user"] = json.dumps(dict(metadata), default=str)
        tmp = path.with_name(path.name + ".tmp")
        save_file({n: t.contiguous().cpu() for n, t in self._tensors.items()}, str(tmp), metadata=meta)
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> Mask:
        """Read a mask written by :meth:`save` (safetensors: no code is executed)."""
        path = Path(path)
        if not path.is_file():
            raise PrunelabError(f"mask file {str(path)!r} does not exist")
        try:
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as handle:
                meta = handle.metadata() or {}
            tensors = load_file(str(path))
        except Exception as exc:  # safetensors raises several types for corrupt files
            raise PrunelabError(
                f"mask file {str(path)!r} is not a readable safetensors file ({exc})"
            ) from None
        if meta.get("format") != _FORMAT:
            raise PrunelabError(f"{str(path)!r} is not a prunelab mask (format {meta.get('format')!r})")
        order = json.loads(meta["order"])
        info = json.loads(meta["info"]) if "info" in meta else None
        return cls({name: tensors[name] for name in order}, info)
