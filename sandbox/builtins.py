"""The builtins a snippet sees: an explicit allowlist, with every C-level iterator routed through the guard.

Builtins that iterate their argument in C (``sorted``, ``tuple``, ``zip``, ``bytes``, ... — RestrictedPython #335)
are wrapped so that the argument goes through :func:`sandbox.guards.guarded_iter` first. The type constructors
among them (``list``, ``dict``, ...) are wrapped in :class:`GuardedType`, which still works with ``isinstance``,
``issubclass``, as a base class and for class methods such as ``dict.fromkeys``.

Deliberately absent (see README "Snippets"): ``getattr``, ``setattr``, ``delattr``, ``type``, ``vars``, ``dir``,
``globals``, ``locals``, ``open``, ``compile``, ``eval``, ``exec``, ``help``, ``input``, ``breakpoint``, ``id``,
``memoryview``, ``super``, ``__import__`` (imports use the allowlist), ``BaseException``, ``SystemExit``,
``KeyboardInterrupt``, ``GeneratorExit``, ``ExceptionGroup`` (CVE-2025-22153), warnings and ``OSError``.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

from sandbox.guards import guarded_iter

_MISSING: Final = object()


class GuardedType:
    """A builtin type whose constructor iterates through the guard; ``isinstance``/``issubclass`` still work."""

    __slots__ = ("_construct", "_type")

    def __init__(self, real: type, construct: Callable[..., Any]) -> None:
        self._type = real
        self._construct = construct

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._construct(*args, **kwargs)

    def __instancecheck__(self, instance: object) -> bool:
        return isinstance(instance, self._type)

    def __subclasscheck__(self, subclass: type) -> bool:
        return issubclass(subclass, self._type)

    def __mro_entries__(self, bases: tuple[object, ...]) -> tuple[type]:
        return (self._type,)

    def __getattr__(self, name: str) -> Any:  # dict.fromkeys, bytes.fromhex, ...; _getattr_ checks the name first
        return getattr(self._type, name)

    def __getitem__(self, item: Any) -> Any:  # list[int] in annotations
        return self._type[item]  # type: ignore[index]  # builtin generics

    def __or__(self, other: Any) -> Any:
        return self._type | other

    def __ror__(self, other: Any) -> Any:
        return other | self._type

    def __repr__(self) -> str:
        return repr(self._type)


def _single_iterable(real: type) -> GuardedType:
    def construct(iterable: Iterable[Any] = (), /) -> Any:
        return real(guarded_iter(iterable))

    return GuardedType(real, construct)


def _dict(*args: Any, **kwargs: Any) -> dict[Any, Any]:
    if len(args) > 1:
        raise TypeError(f"dict expected at most 1 argument, got {len(args)}")
    if not args:
        return dict(**kwargs)
    source = args[0]
    if isinstance(source, dict | Mapping):  # keys through the guard, and every value checked like an item
        return {key: _checked_item(source[key]) for key in guarded_iter(source)} | kwargs
    return dict(guarded_iter(source), **kwargs)  # type: ignore[arg-type]  # pairs, checked by dict()


def _checked_item(value: Any) -> Any:
    for checked in guarded_iter((value,)):
        return checked
    raise AssertionError  # pragma: no cover  # a one-item tuple always yields


def _bytes_like(real: type) -> GuardedType:
    def construct(source: Any = _MISSING, *args: Any) -> Any:
        if source is _MISSING:
            return real()
        if isinstance(source, int | str | bytes | bytearray | memoryview):
            return real(source, *args)
        return real(guarded_iter(source), *args)

    return GuardedType(real, construct)


def _sorted(iterable: Iterable[Any], /, *, key: Callable[[Any], Any] | None = None, reverse: bool = False) -> list[Any]:
    return sorted(guarded_iter(iterable), key=key, reverse=reverse)


def _extreme(real: Callable[..., Any]) -> Callable[..., Any]:
    def extreme(*args: Any, **kwargs: Any) -> Any:
        if len(args) == 1:
            return real(guarded_iter(args[0]), **kwargs)
        return real(*(guarded_iter(args) if args else ()), **kwargs)

    extreme.__name__ = real.__name__
    return extreme


def _sum(iterable: Iterable[Any], /, start: Any = 0) -> Any:
    return sum(guarded_iter(iterable), start)  # type: ignore[arg-type]  # any summable items


def _any(iterable: Iterable[Any], /) -> bool:
    return any(guarded_iter(iterable))


def _all(iterable: Iterable[Any], /) -> bool:
    return all(guarded_iter(iterable))


def _enumerate(iterable: Iterable[Any], start: int = 0) -> Any:
    return enumerate(guarded_iter(iterable), start)


def _zip(*iterables: Iterable[Any], strict: bool = False) -> Any:
    return zip(*(guarded_iter(it) for it in iterables), strict=strict)


def _map(function: Callable[..., Any], *iterables: Iterable[Any]) -> Any:
    return map(function, *(guarded_iter(it) for it in iterables))


def _filter(function: Callable[[Any], Any] | None, iterable: Iterable[Any], /) -> Any:
    return filter(function, guarded_iter(iterable))


def _reversed(sequence: Any, /) -> Any:
    guarded_iter(sequence)  # refuses forbidden containers before reversed() looks inside
    return guarded_iter(reversed(sequence))


def _iter(obj: Any, sentinel: Any = _MISSING, /) -> Any:
    if sentinel is _MISSING:
        return guarded_iter(obj)
    return guarded_iter(iter(obj, sentinel))


#: Plain builtins that are safe as they are (no attribute access by name, no iteration in C, no I/O).
_PLAIN: Final = (
    "abs",
    "ascii",
    "bin",
    "bool",
    "callable",
    "chr",
    "classmethod",
    "complex",
    "divmod",
    "float",
    "format",
    "hash",
    "hex",
    "int",
    "isinstance",
    "issubclass",
    "len",
    "next",
    "object",
    "oct",
    "ord",
    "pow",
    "property",
    "range",
    "repr",
    "round",
    "slice",
    "staticmethod",
    "str",
)

#: Exceptions a snippet may raise and catch: the Exception subtree only (SystemExit, KeyboardInterrupt,
#: GeneratorExit and BaseException stay unreachable so `except Exception` always means "everything").
_EXCEPTIONS: Final = (
    "ArithmeticError",
    "AssertionError",
    "AttributeError",
    "Exception",
    "ImportError",
    "IndexError",
    "KeyError",
    "LookupError",
    "ModuleNotFoundError",
    "NameError",
    "NotImplementedError",
    "OverflowError",
    "RecursionError",
    "RuntimeError",
    "StopIteration",
    "TimeoutError",
    "TypeError",
    "UnboundLocalError",
    "UnicodeDecodeError",
    "UnicodeEncodeError",
    "UnicodeError",
    "ValueError",
    "ZeroDivisionError",
)

SAFE_BUILTINS: Final[Mapping[str, Any]] = {
    **{name: getattr(builtins, name) for name in (*_PLAIN, *_EXCEPTIONS)},
    "None": None,
    "True": True,
    "False": False,
    "Ellipsis": Ellipsis,
    "NotImplemented": NotImplemented,
    "__build_class__": builtins.__build_class__,  # class statements; rewritten to metaclass=__metaclass__
    "list": _single_iterable(list),
    "tuple": _single_iterable(tuple),
    "set": _single_iterable(set),
    "frozenset": _single_iterable(frozenset),
    "dict": GuardedType(dict, _dict),
    "bytes": _bytes_like(bytes),
    "bytearray": _bytes_like(bytearray),
    "enumerate": GuardedType(enumerate, _enumerate),
    "zip": GuardedType(zip, _zip),
    "map": GuardedType(map, _map),
    "filter": GuardedType(filter, _filter),
    "reversed": GuardedType(reversed, _reversed),
    "iter": _iter,
    "sorted": _sorted,
    "min": _extreme(min),
    "max": _extreme(max),
    "sum": _sum,
    "any": _any,
    "all": _all,
}


def make_builtins(*, getattr_guard: Callable[[object, str], object], importer: Callable[..., object]) -> dict[str, Any]:
    """Return a fresh builtins namespace for one run, with ``hasattr`` and ``__import__`` bound to its guards."""

    def guarded_hasattr(obj: object, name: str, /) -> bool:
        try:
            getattr_guard(obj, name)
        except AttributeError:
            return False
        return True

    return {**SAFE_BUILTINS, "hasattr": guarded_hasattr, "__import__": importer}
