"""Plain mutable records for the engine's option bags, without :mod:`dataclasses`.

Importing dataclasses costs ~7 ms (it pulls in :mod:`inspect`) and each class it
decorates ~0.3 ms of code generation; every netsync process paid both at start-up,
about a fifth of a small no-op sync. Option bags are built once per run, so a generic
``__init__`` is fast enough; per-file messages spell theirs out instead.

A record's fields are its annotated class attributes, in order (bases first); a field
without a default is required, a mutable default is given as ``factory(list)``.
Records take positional or keyword arguments, run ``__post_init__`` if they have one,
and compare and print by their fields.
"""

from __future__ import annotations

from collections.abc import Callable

TYPE_CHECKING = False  # (typing costs ~3 ms at start-up; only the type checker needs it)
if TYPE_CHECKING:
    from typing import Any

__all__ = ["Record", "factory"]


class _Factory:
    __slots__ = ("make",)

    def __init__(self, make: Callable[[], Any]) -> None:
        self.make = make


def factory(make: Callable[[], Any]) -> Any:
    """A default built afresh for each record (``field(default_factory=...)``)."""
    return _Factory(make)


_MISSING = object()


class Record:
    _fields: tuple[str, ...] = ()
    _defaults: dict[str, Any] = {}

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        fields = list(cls._fields)
        defaults = dict(cls._defaults)
        for name, ann in cls.__dict__.get("__annotations__", {}).items():
            if "ClassVar" in str(ann):
                continue
            if name not in fields:
                fields.append(name)
            value = cls.__dict__.get(name, _MISSING)
            if value is not _MISSING:
                defaults[name] = value
                if isinstance(value, _Factory):
                    delattr(cls, name)  # the instance always gets its own
        cls._fields = tuple(fields)
        cls._defaults = defaults

    def __init__(self, *args: Any, **kw: Any) -> None:
        fields = self._fields
        if len(args) > len(fields):
            raise TypeError(f"{type(self).__name__}() takes at most {len(fields)} arguments")
        for name, value in zip(fields, args, strict=False):
            setattr(self, name, value)
        defaults = self._defaults
        for name in fields[len(args):]:
            if name in kw:
                value = kw.pop(name)
            else:
                value = defaults.get(name, _MISSING)
                if value is _MISSING:
                    raise TypeError(f"{type(self).__name__}() missing argument {name!r}")
                if isinstance(value, _Factory):
                    value = value.make()
            setattr(self, name, value)
        if kw:
            raise TypeError(f"{type(self).__name__}() got unexpected {', '.join(kw)}")
        post = getattr(self, "__post_init__", None)
        if post is not None:
            post()

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in self._fields)

    def copy(self) -> Any:
        """A shallow copy (without importing :mod:`copy`, ~1 ms at start-up)."""
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        return new

    __hash__ = None  # type: ignore[assignment]  # mutable, as a dataclass without frozen

    def __repr__(self) -> str:
        inner = ", ".join(f"{n}={getattr(self, n)!r}" for n in self._fields)
        return f"{type(self).__name__}({inner})"
