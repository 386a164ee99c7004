"""Named random streams derived from one run seed, so every random source is recorded and independent.

A run has one integer seed; each consumer (weight init, data order, mask sampling, scoring batch,
sanity-check randomness) draws from its own stream ``derive_seed(seed, name)``. Changing one
consumer's use of randomness never shifts another's.
"""

from __future__ import annotations

import hashlib

import torch

STREAMS = ("init", "data_order", "scoring_data", "mask", "check", "reinit", "reinit_fan")


def derive_seed(seed: int, stream: str) -> int:
    """A 63-bit seed for ``stream`` derived deterministically from the run ``seed``."""
    digest = hashlib.sha256(f"{int(seed)}:{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def generator(seed: int, stream: str, device: str | torch.device = "cpu") -> torch.Generator:
    """A torch.Generator seeded for ``stream``."""
    gen = torch.Generator(device=device)
    gen.manual_seed(derive_seed(seed, stream))
    return gen


def seed_table(seed: int) -> dict[str, int]:
    """Every stream's derived seed, for the run record."""
    return {name: derive_seed(seed, name) for name in STREAMS}
