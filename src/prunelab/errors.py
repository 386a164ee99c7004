"""User-facing errors: one line, naming the bad value and the valid choices.

Every error a user can cause with bad input is a :class:`PrunelabError` (a ``ValueError``), so the
Python API raises something catchable and the CLI turns it into a one-line message and exit code 2.
"""

from __future__ import annotations

from collections.abc import Iterable


class PrunelabError(ValueError):
    """Bad input or an unusable environment, explained in one line."""


class DataError(PrunelabError):
    """A dataset is unknown, missing, corrupt or fails its checksum."""


def invalid_choice(kind: str, value: object, choices: Iterable[str]) -> PrunelabError:
    """Build the standard error for an unknown name: ``unknown method 'x'; valid: a, b, c``."""
    return PrunelabError(f"unknown {kind} {value!r}; valid choices: {', '.join(sorted(choices))}")


def check_density(density: float, *, what: str = "density") -> float:
    """Validate a density (fraction of prunable weights kept) in (0, 1]; return it as float."""
    try:
        value = float(density)
    except (TypeError, ValueError):
        raise PrunelabError(f"{what} must be a number in (0, 1], got {density!r}") from None
    if not (0.0 < value <= 1.0):
        raise PrunelabError(
            f"{what} must be in (0, 1] (the fraction of prunable weights kept), got {density!r}"
        )
    return value
