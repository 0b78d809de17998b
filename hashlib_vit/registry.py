"""A tiny name -> factory registry, shared by losses, backbones, heads and protocols."""
from __future__ import annotations

from typing import Callable, Dict, Generic, Iterator, TypeVar

from .errors import bad_choice

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to objects (classes or factories). `kind` is the parameter name used in errors."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: Dict[str, T] = {}

    def register(self, name: str, obj: T | None = None, *, replace: bool = False):
        """Register `obj` under `name`; usable as a decorator: ``@REG.register("dsh")``.

        A name registered twice raises KeyError unless ``replace=True`` (a notebook that defines a data set
        from its parameters registers it again on every run)."""

        def add(o: T) -> T:
            if name in self._items and not replace:
                raise KeyError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = o
            return o

        return add(obj) if obj is not None else add

    def get(self, name: str) -> T:
        if name not in self._items:
            raise bad_choice(self.kind, name, self._items)
        return self._items[name]

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def names(self) -> list[str]:
        return sorted(self._items)

    def items(self):
        return sorted(self._items.items())
