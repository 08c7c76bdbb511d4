"""Named extension points, fed by a decorator and by package entry points.

Every kind of plug-in (steps, LLM clients, sink formats, quality metric sets) has one registry.
A package outside this repository adds one by declaring an entry point in its own metadata,
e.g. in its pyproject.toml:

    [project.entry-points."fastdistill.steps"]
    my_step = "my_package.steps:MyStep"

or, in code that is imported anyway, with `@REGISTRY.register("my_step")`. Entry points are
loaded one by one when first asked for, so listing the catalogue imports nothing and using
one step does not import the dependencies of all the others.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import metadata
from typing import Generic, TypeVar

T = TypeVar("T")


class UnknownName(KeyError):
    """A name no registration and no entry point provides; KeyError's own str() would quote it."""

    def __str__(self) -> str:
        return str(self.args[0])


class Registry(Generic[T]):
    def __init__(self, group: str, kind: str) -> None:
        #: the entry-point group, e.g. "fastdistill.steps"
        self.group = group
        #: what a thing of this registry is called in messages, e.g. "step"
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(item: T) -> T:
            self.add(name, item)
            return item

        return add

    def add(self, name: str, item: T) -> None:
        known = self._items.get(name)
        if known is not None and known is not item:
            raise ValueError(f"{self.kind} {name!r} is registered twice ({known!r} and {item!r})")
        self._items[name] = item

    def _entry_points(self) -> dict[str, metadata.EntryPoint]:
        return {ep.name: ep for ep in metadata.entry_points(group=self.group)}

    def names(self) -> list[str]:
        return sorted(set(self._items) | set(self._entry_points()))

    def get(self, name: str) -> T:
        if name not in self._items:
            entry = self._entry_points().get(name)
            if entry is None:
                raise UnknownName(f"unknown {self.kind} {name!r}; {self._suggest(name)}")
            self._items[name] = entry.load()
        return self._items[name]

    def _suggest(self, name: str) -> str:
        """A misspelling's likely meaning first (a newcomer reads one name, not the catalogue)."""
        import difflib

        near = difflib.get_close_matches(name, self.names(), n=1)
        return f"did you mean {near[0]!r}?" if near else f"known: {', '.join(self.names()) or 'none'}"

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self.names()
