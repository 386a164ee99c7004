"""A tiny name -> object registry with helpful errors; every plug-in point uses it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from prunelab.errors import PrunelabError, invalid_choice

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps lower-case names to objects; ``get`` raises a one-line error listing valid names."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def add(self, name: str, item: T, *, overwrite: bool = False) -> T:
        key = name.lower()
        if key in self._items and not overwrite:
            raise PrunelabError(f"{self.kind} {name!r} is already registered")
        self._items[key] = item
        return item

    def register(self, name: str, *, overwrite: bool = False) -> Callable[[T], T]:
        """Decorator form of :meth:`add`."""

        def decorate(item: T) -> T:
            return self.add(name, item, overwrite=overwrite)

        return decorate

    def get(self, name: str) -> T:
        key = str(name).lower()
        if key not in self._items:
            raise invalid_choice(self.kind, name, self._items)
        return self._items[key]

    def remove(self, name: str) -> None:
        self._items.pop(name.lower(), None)

    def names(self) -> list[str]:
        return list(self._items)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def items(self) -> list[tuple[str, T]]:
        return list(self._items.items())
