"""A pruned model as data: its architecture (registry name, input shape, class count, options incl. the
pruned ``widths``/``blocks``) as JSON plus an ordinary state dict in safetensors, never a pickled module.

Files in a pruned-model directory:

- ``architecture.json``: ``{"name", "input_shape", "num_classes", "options"}``;
- ``model.safetensors``: the state dict;
- ``kept.json``: kept channel (or block) indices per pruned layer;
- ``mask.safetensors``: the mask of a weight-level pruned model (only then).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file
from torch import nn

from prunelab.errors import PrunelabError
from prunelab.models.registry import MODELS, build_model

ARCHITECTURE_KEYS = ("name", "input_shape", "num_classes", "options")


def jsonable(value: Any) -> Any:
    """Tuples -> lists, recursively, so an options mapping survives a JSON round trip unchanged."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def architecture_of(model: nn.Module) -> dict[str, Any]:
    """The architecture of a registry model (from its ``prunelab_build``), JSON-able.

    Raises:
        PrunelabError: for a model not built by :func:`prunelab.build_model`.
    """
    build = getattr(model, "prunelab_build", None)
    if not isinstance(build, dict):
        raise PrunelabError(
            f"structured pruning needs a registry model (built by prunelab.build_model), got {type(model).__name__}"
        )
    return {
        "name": str(build["name"]),
        "input_shape": [int(d) for d in build["input_shape"]],
        "num_classes": int(build["num_classes"]),
        "options": jsonable(dict(build["options"])),
    }


def pruned_architecture(model: nn.Module, base: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` (the large model's architecture) with options describing ``model``'s pruned widths.

    A model whose class has a ``structure_options()`` method (the CIFAR ResNets, PreResNet, DenseNet)
    describes itself: ResNets give ``widths`` (each block's prunable convs' out-channels: a basic
    block's ``conv1``, a bottleneck's ``conv1`` and ``conv2``) and ``blocks`` (blocks per stage);
    PreResNet and DenseNet add ``selected`` (each channel selection's kept channels). Otherwise, by
    family: VGG, cnn1d, cnn2d: ``widths`` = every conv's out-channels (the overall
    ``width``/``channels`` option is dropped, since the models take one or the other).
    """
    family = MODELS.get(str(base["name"])).family
    options = dict(base["options"])
    convs = [m for m in model.modules() if isinstance(m, nn.Conv1d | nn.Conv2d)]
    describe = getattr(model, "structure_options", None)
    if callable(describe):
        options.update(describe())
    elif family in ("vgg", "cnn1d", "cnn2d"):
        for overall in ("width", "channels"):
            options.pop(overall, None)
        options["widths"] = [int(c.out_channels) for c in convs]
    elif family == "resnet":
        from prunelab.models.resnet import BasicBlock

        blocks = [m for m in model.modules() if isinstance(m, BasicBlock)]
        options["widths"] = [int(b.conv1.out_channels) for b in blocks]
        options["blocks"] = [len(getattr(model, stage)) for stage in ("layer1", "layer2", "layer3")]
    else:
        raise PrunelabError(
            f"structured pruning supports the vgg, resnet, cnn1d and cnn2d model families, "
            f"got {base['name']!r} (family {family!r})"
        )
    return {**dict(base), "options": jsonable(options)}


def build_architecture(architecture: Mapping[str, Any], seed: int) -> nn.Module:
    """A freshly initialised model of ``architecture`` (Scratch-E / Scratch-B start from this).

    Raises:
        PrunelabError: for a malformed architecture or bad options.
    """
    missing = [k for k in ARCHITECTURE_KEYS if k not in architecture]
    if missing:
        raise PrunelabError(
            f"architecture lacks {', '.join(missing)}; it needs {', '.join(ARCHITECTURE_KEYS)}, got {dict(architecture)!r}"
        )
    options = architecture["options"]
    if not isinstance(options, Mapping):
        raise PrunelabError(f"architecture options must be a mapping, got {options!r}")
    return build_model(
        str(architecture["name"]),
        tuple(int(d) for d in architecture["input_shape"]),
        int(architecture["num_classes"]),
        seed=seed,
        **dict(options),
    )


def check_loadable(model: nn.Module, architecture: Mapping[str, Any]) -> None:
    """Assert that a model rebuilt from ``architecture`` has exactly ``model``'s state-dict keys and shapes.

    This is how a pruned model is saved and loaded, so a mismatch is a bug in the widths description.
    """
    rebuilt = build_architecture(architecture, seed=0).state_dict()
    state = model.state_dict()
    got = {k: tuple(v.shape) for k, v in state.items()}
    want = {k: tuple(v.shape) for k, v in rebuilt.items()}
    if got != want:
        diff = sorted(set(got.items()) ^ set(want.items()))[:4]
        raise PrunelabError(f"internal error: the pruned model does not match its architecture ({diff})")


def _write_atomic(path: Path, write: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def save_state(
    path: Path, model: nn.Module, architecture: Mapping[str, Any], kept: Mapping[str, Any]
) -> None:
    """Write ``architecture.json``, ``kept.json`` and ``model.safetensors`` into directory ``path``."""
    path.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu().clone() for k, v in model.state_dict().items()}
    _write_atomic(path / "model.safetensors", lambda p: save_file(state, str(p)))
    _write_atomic(path / "kept.json", lambda p: p.write_text(json.dumps(jsonable(kept), indent=1) + "\n"))
    _write_atomic(
        path / "architecture.json",
        lambda p: p.write_text(json.dumps(jsonable(architecture), indent=1) + "\n"),
    )


def load_state(path: Path) -> tuple[nn.Module, dict[str, Any], dict[str, list[int]]]:
    """Read what :func:`save_state` wrote: (model on CPU, architecture, kept)."""
    arch_file = path / "architecture.json"
    if not arch_file.is_file():
        raise PrunelabError(f"{str(path)!r} is not a pruned-model directory (no architecture.json)")
    try:
        architecture = json.loads(arch_file.read_text())
        kept_file = path / "kept.json"
        kept = json.loads(kept_file.read_text()) if kept_file.is_file() else {}
        state = load_file(str(path / "model.safetensors"))
    except Exception as exc:  # JSON and safetensors raise several types for corrupt files
        raise PrunelabError(f"pruned model in {str(path)!r} is unreadable ({exc})") from None
    model = build_architecture(architecture, seed=0)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise PrunelabError(
            f"model.safetensors in {str(path)!r} does not fit its architecture ({first})"
        ) from None
    return model, architecture, kept
