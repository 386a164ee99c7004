"""Validation of dataset, model and method options, with the one-line errors users see (options may
arrive from YAML or the CLI as strings)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from prunelab.errors import PrunelabError


def as_int(value: object, what: str, *, minimum: int | None = None) -> int:
    """``value`` as an int (bools and non-integral numbers rejected), at least ``minimum`` if given."""
    if isinstance(value, bool) or not isinstance(value, int | str | float):
        raise PrunelabError(f"{what} must be an integer, got {value!r}")
    try:
        number = int(value)
    except ValueError:
        raise PrunelabError(f"{what} must be an integer, got {value!r}") from None
    if isinstance(value, float) and number != value:
        raise PrunelabError(f"{what} must be an integer, got {value!r}")
    if minimum is not None and number < minimum:
        raise PrunelabError(f"{what} must be >= {minimum}, got {value!r}")
    return number


def as_number(value: object, what: str, *, valid: str, accept: Callable[[float], bool]) -> float:
    """``value`` as a float for which ``accept`` holds; ``valid`` names the range in the error,
    e.g. ``"in (0, 1]"`` or ``">= 0"``."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise PrunelabError(f"{what} must be a number {valid}, got {value!r}") from None
    if not accept(number):
        raise PrunelabError(f"{what} must be {valid}, got {value!r}")
    return number


def as_fraction(value: object, what: str) -> float:
    """``value`` as a float strictly between 0 and 1."""
    return as_number(value, what, valid="in (0, 1)", accept=lambda x: 0.0 < x < 1.0)


def merge_options(
    defaults: Mapping[str, Any], overrides: Mapping[str, Any] | None, owner: str
) -> dict[str, Any]:
    """``defaults`` updated with ``overrides``; a name not in ``defaults`` is a one-line error that
    lists the valid names (``owner`` says whose options they are, e.g. ``"method 'snip'"``)."""
    merged = dict(defaults)
    for key, value in (overrides or {}).items():
        if key not in merged:
            valid = ", ".join(sorted(merged)) or "none"
            raise PrunelabError(f"unknown option {key!r} for {owner}; valid options: {valid}")
        merged[key] = value
    return merged


def as_bool(value: object, what: str) -> bool:
    """``value`` as a bool; accepts real bools and the strings true/false/yes/no/1/0."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "yes", "1", "on"):
        return True
    if text in ("false", "no", "0", "off"):
        return False
    raise PrunelabError(f"{what} must be true or false, got {value!r}")


def as_shape(value: object, what: str) -> tuple[int, ...]:
    """``value`` as a non-empty tuple of positive ints, e.g. ``(1, 16)`` or ``(3, 8, 8)``."""
    if isinstance(value, str) or not isinstance(value, Sequence) or len(value) == 0:
        raise PrunelabError(f"{what} must be a non-empty list of positive integers, got {value!r}")
    return tuple(as_int(v, what, minimum=1) for v in value)


def as_positive_float(value: object, what: str) -> float:
    """``value`` as a float > 0."""
    return as_number(value, what, valid="> 0", accept=lambda x: x > 0)
