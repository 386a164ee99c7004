"""Channel selection (Liu et al. 2017/2019, ``network-slimming/models/channel_selection.py``).

In a pre-activation network a BatchNorm normalises a block's *input*, which the residual sum (PreResNet)
or the concatenation (DenseNet) shares with other layers, so its channels cannot be removed. Network
slimming still prunes them for the one conv that reads this BN: a :class:`ChannelSelection` right after
the BN passes on only the selected channels, and that conv takes fewer input channels. The BN and the
shared path keep every channel.

Which channels are selected is architecture, not a weight: it is the model option ``selected`` (one
entry per selection layer, in module order), so a fresh build of a pruned architecture (Scratch-E/B)
selects the same channels. The 0/1 vector is therefore a non-persistent buffer, absent from state dicts.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from prunelab.errors import PrunelabError
from prunelab.options import as_int


class ChannelSelection(nn.Module):
    """Keep the selected channels of a ``(B, C, ...)`` tensor: output ``(B, len(selected), ...)``.

    ``indexes`` is the 0/1 (bool) vector of length ``C`` as in Liu et al.'s ``channel_selection``;
    with every channel selected the module is the identity (no indexing op, so tracing sees a plain
    BN -> ReLU -> conv chain).
    """

    indexes: torch.Tensor
    kept: torch.Tensor

    def __init__(self, channels: int, selected: Sequence[int] | None = None) -> None:
        super().__init__()
        self.channels = int(channels)
        self.register_buffer("indexes", torch.ones(self.channels, dtype=torch.bool), persistent=False)
        self.register_buffer("kept", torch.arange(self.channels), persistent=False)
        if selected is not None:
            self.select_(selected)

    @property
    def full(self) -> bool:
        """Whether every channel is selected."""
        return int(self.kept.numel()) == self.channels

    def selected(self) -> list[int]:
        """The selected channel indices, ascending."""
        return [int(i) for i in self.kept.tolist()]

    def select_(self, selected: Sequence[int]) -> None:
        """Select exactly ``selected`` (indices into the ``C`` input channels), in place.

        Raises:
            PrunelabError: for an empty selection or an index outside ``0..C-1``.
        """
        chosen = sorted({as_int(i, "selected channel", minimum=0) for i in selected})
        if not chosen or chosen[-1] >= self.channels:
            raise PrunelabError(
                f"a channel selection of {self.channels} channels needs a non-empty subset of "
                f"0..{self.channels - 1}, got {list(selected)!r}"
            )
        device = self.indexes.device
        mask = torch.zeros(self.channels, dtype=torch.bool, device=device)
        index = torch.as_tensor(chosen, dtype=torch.long, device=device)
        mask[index] = True
        self.indexes = mask
        self.kept = index

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, ...)`` -> ``(B, len(selected), ...)``."""
        return x if self.full else x.index_select(1, self.kept)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, selected={int(self.kept.numel())}"


def selected_option(value: object, counts: Sequence[int], model: str) -> list[list[int] | None]:
    """Validate a ``selected`` option: one entry per selection layer (of ``counts[i]`` channels).

    Each entry is a list of channel indices, or None for all channels; a missing option (None)
    selects everything everywhere.
    """
    if value is None:
        return [None] * len(counts)
    if isinstance(value, str | bytes) or not isinstance(value, Sequence) or len(value) != len(counts):
        raise PrunelabError(
            f"{model} option selected must give {len(counts)} entries (one per channel selection layer, "
            f"each a list of channel indices or null), got {value!r}"
        )
    out: list[list[int] | None] = []
    for i, (entry, channels) in enumerate(zip(value, counts, strict=True)):
        if entry is None:
            out.append(None)
            continue
        if isinstance(entry, str | bytes) or not isinstance(entry, Sequence):
            raise PrunelabError(
                f"{model} option selected[{i}] must be a list of channel indices, got {entry!r}"
            )
        chosen = sorted({as_int(c, f"{model} option selected[{i}]", minimum=0) for c in entry})
        if not chosen or chosen[-1] >= channels:
            raise PrunelabError(
                f"{model} option selected[{i}] must be a non-empty subset of 0..{channels - 1}, got {entry!r}"
            )
        out.append(None if len(chosen) == channels else chosen)
    return out


def selected_count(selected: Sequence[int] | None, channels: int) -> int:
    """How many channels a selection entry passes on (all ``channels`` for None)."""
    return channels if selected is None else len(selected)


def selection_entries(model: nn.Module) -> list[list[int] | None]:
    """The ``selected`` option describing ``model``'s selection layers (None where all are selected)."""
    return [None if m.full else m.selected() for m in model.modules() if isinstance(m, ChannelSelection)]
