"""A small named registry: the house replacement for if/elif chains on strings."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from pydantic import AfterValidator

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to objects. An unknown name raises ``ValueError`` listing the known ones."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that registers ``obj`` under ``name``."""

        def decorate(obj: T) -> T:
            self.add(name, obj)
            return obj

        return decorate

    def add(self, name: str, obj: T) -> None:
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._items[name] = obj

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise ValueError(
                f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}"
            ) from None

    def names(self) -> tuple[str, ...]:
        return tuple(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)


def registered(registry: Registry[Any]) -> AfterValidator:
    """A pydantic validator for a config field that names an entry of ``registry``:
    ``shadow: Annotated[str, registered(SHADOWS)] = Field(...)``; an unknown name lists the known ones."""

    def check(value: str) -> str:
        registry.get(value)
        return value

    return AfterValidator(check)
