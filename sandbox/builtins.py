"""The builtins a snippet sees: an explicit allowlist, with every C-level iterator routed through the guard.

Builtins that iterate their argument in C (``sorted``, ``tuple``, ``zip``, ``bytes``, ... — RestrictedPython #335)
are wrapped so that the argument goes through :func:`sandbox.guards.guarded_iter` first. The type constructors
among them (``list``, ``dict``, ...) are wrapped in :class:`GuardedType`, which still works with ``isinstance``,
``issubclass``, as a base class and for class methods such as ``dict.fromkeys``.

Bound to each run's guards (:func:`make_builtins`):

- ``getattr``/``hasattr``/``setattr``/``delattr`` obey exactly the rules of attribute syntax: the compile-time name
  rules (:func:`sandbox.policy.attribute_name_problem`) and then the run-time guards. Threat: a computed name
  (``getattr(x, "__glo" + "bals__")``) skipping the compile-time check;
- ``type(x)`` gives what ``x.__class__`` gives (:func:`sandbox.guards.make_class_of`: foreign classes as a view);
  the three-argument form (building a class from a dict, past every class check) is refused;
- ``super`` is the real one (zero-argument ``super()`` needs the caller's frame); the guard allows reads through
  it only inside the snippet's own classes.

Deliberately absent (see docs "Snippets"): ``vars``, ``dir``, ``globals``, ``locals``, ``open``, ``compile``,
``eval``, ``exec``, ``help``, ``input``, ``breakpoint``, ``id``, ``memoryview``, ``__import__`` (imports use the
allowlist), ``BaseException``, ``SystemExit``, ``KeyboardInterrupt``, ``GeneratorExit``, ``ExceptionGroup``
(CVE-2025-22153), warnings and ``OSError``.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

__all__ = [
    "GUARDED_TYPES",
    "SAFE_BUILTINS",
    "UNAVAILABLE_BUILTINS",
    "GuardedType",
    "make_builtins",
    "unavailable_message",
]

from sandbox.guards import GuardedType, guarded_iter, real_class, type_of
from sandbox.policy import attribute_name_problem

_MISSING: Final = object()


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


_NO_CODE: Final = "snippets cannot run code built from strings; write the code directly"
_NO_NAMESPACES: Final = "snippets cannot list or change namespaces; name what you need directly"
_ESCAPES_EXCEPT: Final = "it would escape 'except Exception' and end the runner; raise an Exception subclass"

#: Builtins a snippet does not have, with why and what to write instead (the run's error says so).
UNAVAILABLE_BUILTINS: Final[Mapping[str, str]] = {
    "open": "snippets have no files; return the data instead",
    "eval": _NO_CODE,
    "exec": _NO_CODE,
    "compile": _NO_CODE,
    "input": "snippets have no console; read what you need from event",
    "help": "snippets have no console; see the snippets documentation",
    "breakpoint": "snippets cannot be debugged interactively; use print() or log",
    "globals": _NO_NAMESPACES,
    "locals": _NO_NAMESPACES,
    "vars": _NO_NAMESPACES,
    "dir": _NO_NAMESPACES,
    "id": "object addresses belong to the host; compare objects with 'is'",
    "memoryview": "it exposes raw memory; use bytes or bytearray",
    "exit": "a snippet ends with 'return'",
    "quit": "a snippet ends with 'return'",
    "BaseException": _ESCAPES_EXCEPT,
    "SystemExit": _ESCAPES_EXCEPT,
    "KeyboardInterrupt": _ESCAPES_EXCEPT,
    "GeneratorExit": _ESCAPES_EXCEPT,
    "ExceptionGroup": "exception groups can crash the interpreter (CVE-2025-22153); raise one exception",
    "BaseExceptionGroup": "exception groups can crash the interpreter (CVE-2025-22153); raise one exception",
}


def unavailable_message(name: str) -> str | None:
    """Return the plain-words error for a snippet naming an unavailable builtin, or ``None`` for other names."""
    why = UNAVAILABLE_BUILTINS.get(name)
    return None if why is None else f"name {name!r} is not defined: it is not available in snippets: {why}."


#: The real builtin types behind their guarded wrappers: ``type([])`` gives the wrapper, never the bare ``list``.
GUARDED_TYPES: Final[Mapping[type, GuardedType]] = {
    real_class(value): value  # type: ignore[misc]  # real_class of a GuardedType is its type
    for value in SAFE_BUILTINS.values()
    if type(value) is GuardedType
}

_NO_DEFAULT: Final = object()


def make_builtins(
    *,
    getattr_guard: Callable[[object, str], object],
    importer: Callable[..., object],
    write: Callable[[object], object] | None = None,
    write_private: Callable[[object], object] | None = None,
    class_of: Callable[[type], object] | None = None,
) -> dict[str, Any]:
    """Return a fresh builtins namespace for one run, with attribute builtins and ``__import__`` bound to its guards."""

    def check_name(name: object, *, store: bool) -> str:
        if type(name) is not str:
            raise TypeError(f"attribute name must be string, not {type(name).__name__!r}")
        problem = attribute_name_problem(name, store=store)
        if problem:
            raise AttributeError(problem)
        return name

    def guarded_getattr(obj: object, name: str, default: object = _NO_DEFAULT, /) -> object:
        try:
            return getattr_guard(obj, check_name(name, store=False))
        except AttributeError:
            if default is _NO_DEFAULT:
                raise
            return default

    def guarded_hasattr(obj: object, name: str, /) -> bool:
        try:
            getattr_guard(obj, check_name(name, store=False))
        except AttributeError:
            return False
        return True

    def writer(obj: object, name: str) -> object:
        hook = write_private if name.startswith("_") else write
        if hook is None:
            raise TypeError("Changing attributes with setattr() is not available here.")
        return hook(obj)

    def guarded_setattr(obj: object, name: str, value: object, /) -> None:
        name = check_name(name, store=True)
        setattr(writer(obj, name), name, value)

    def guarded_delattr(obj: object, name: str, /) -> None:
        name = check_name(name, store=True)
        delattr(writer(obj, name), name)

    def guarded_type(*args: object) -> object:
        if len(args) != 1:
            raise TypeError(
                "type() with three arguments builds a class, which is not available in snippets; write a class "
                "statement instead."
            )
        klass = type_of(args[0])
        return class_of(klass) if class_of is not None else klass.__name__

    return {
        **SAFE_BUILTINS,
        "getattr": guarded_getattr,
        "hasattr": guarded_hasattr,
        "setattr": guarded_setattr,
        "delattr": guarded_delattr,
        "type": guarded_type,
        "super": super,
        "__import__": importer,
    }
