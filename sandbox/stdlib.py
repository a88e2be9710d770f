"""What the standard-library façades leave out or replace, each with the threat it closes.

A façade (:mod:`sandbox.imports`) exposes a module's public names. Some public names would walk past the guards
(they read attributes by name in C, iterate in C, evaluate strings, write to objects the snippet does not own, or
build classes without :class:`~sandbox.guards.ClassBuilder`); those are either left out (:data:`EXCLUDED`) or
replaced by a guarded version (:data:`OVERRIDES`, and :func:`run_overrides` for the ones bound to a run's guards).

The analysis, module by module:

- ``operator``: ``attrgetter``/``methodcaller`` read attributes by name in C (the classic ``attrgetter("__class__")``
  bypass, RestrictedPython PR #330), ``itemgetter``/``getitem`` index in C, ``setitem``/``delitem`` and the
  in-place operators write in C past ``_write_``. All are replaced by versions that go through the run's guards;
  the rest compute on values the snippet already holds.
- ``functools``: ``reduce`` iterates in C (RestrictedPython #335), so it iterates through the guard;
  ``update_wrapper``/``wraps`` copy a foreign object's ``__dict__`` and names onto the wrapper (``wraps(host)(f)``
  would hand over a host object's hidden attributes) and write those to a foreign wrapper, so both objects must be
  the snippet's own (or the wrapped one attribute-free); ``total_ordering`` writes methods onto the class it is
  given, so only the snippet's own classes. ``partial`` needs nothing: it calls what it wraps, and every guarded
  builtin checks its arguments whoever calls it.
- ``copy``: copying runs an object's ``__reduce_ex__`` and rebuilds it from what that returns: a host object would
  be duplicated with its private state. Only plain data, known value types and the snippet's own objects (deeply)
  are copied.
- ``dataclasses``: ``dataclass`` generates ``__init__``/``__repr__``/... with ``exec`` and writes them onto the class,
  so only the snippet's own classes (field names are identifiers, values are passed as globals, never spliced into
  source; the snippet's module is not in ``sys.modules``, so no string annotation is evaluated). ``make_dataclass``
  builds a class from any namespace (any dunder), so it is left out. ``fields``/``asdict``/``astuple``/``replace``
  read every field, hidden or not, and deep-copy values, so only the snippet's own dataclasses.
- ``enum``: ``Enum('E', names)`` (the functional API) accepts dunder member names as plain class attributes, so the
  exposed enum classes check the names; the snippet's own enums get the same check from
  :class:`~sandbox.guards.SnippetEnumType`. ``EnumType`` is a metaclass (never a value). ``global_enum`` and the
  ``global_*`` helpers write into ``sys.modules[cls.__module__]``.
- ``typing``: ``get_type_hints`` and ``ForwardRef`` evaluate strings with ``eval`` (with the real builtins when the
  class's module is unknown): left out. ``no_type_check``/``dataclass_transform`` write attributes onto whatever they
  are given; ``final`` is kept for the snippet's own functions and classes only. ``reveal_type`` writes to the
  process's stderr; ``clear_overloads`` empties a process-wide registry. ``runtime_checkable`` is left out because
  ``isinstance(x, Proto)`` then calls ``hasattr`` on ``x`` for every member the snippet's protocol names, in C: it
  would tell whether a host object has a hidden or private attribute, and run a hidden property's code. (The
  standard library's own ``Supports*`` protocols name only dunders of the type and stay usable.)
- ``decimal``: ``setcontext`` and the shared contexts (``DefaultContext``, ``BasicContext``, ``ExtendedContext``)
  would change other runs' arithmetic; each run gets a private context instead (``sandbox.executor``).
- ``zoneinfo``: ``reset_tzpath`` changes where every later ``ZoneInfo`` is read from.
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import datetime
import decimal
import enum
import functools
import re
import types
import typing
import uuid
import zoneinfo
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, cast

from sandbox.guards import (
    SNIPPET_CLASSES,
    GuardedType,
    HiddenAttributes,
    checked_enum_names,
    guarded_getitem,
    guarded_iter,
    is_own_class,
    is_snippet_class,
    is_snippet_function,
    make_getattr,
    make_inplacevar,
    make_write,
    real_class,
)
from sandbox.policy import attribute_name_problem

__all__ = ["EXCLUDED", "OVERRIDES", "RunGuards", "run_overrides"]

#: Public names left out of façades, by module (see the module docstring for each threat).
EXCLUDED: Final[Mapping[str, frozenset[str]]] = {
    "dataclasses": frozenset({"make_dataclass"}),
    "decimal": frozenset({"setcontext", "DefaultContext", "BasicContext", "ExtendedContext"}),
    "enum": frozenset({"global_enum", "global_enum_repr", "global_flag_repr", "global_str"}),
    "typing": frozenset(
        {
            "get_type_hints",
            "ForwardRef",
            "no_type_check",
            "no_type_check_decorator",
            "dataclass_transform",
            "reveal_type",
            "clear_overloads",
            "runtime_checkable",
        }
    ),
    "zoneinfo": frozenset({"reset_tzpath"}),
}

#: Value types ``copy`` may rebuild: their ``__reduce_ex__`` is the standard library's own and holds only values.
_COPYABLE_VALUES: Final = (
    type(None),
    bool,
    int,
    float,
    complex,
    str,
    bytes,
    range,
    slice,
    datetime.date,
    datetime.time,
    datetime.timedelta,
    datetime.tzinfo,
    decimal.Decimal,
    uuid.UUID,
    zoneinfo.ZoneInfo,
    re.Pattern,
    enum.Enum,
    types.FunctionType,  # functions and builtins are copied as themselves (never their bound objects' state)
    types.BuiltinFunctionType,
)

#: Containers ``copy`` walks into (their items are checked in turn).
_COPYABLE_CONTAINERS: Final = (list, tuple, set, frozenset, dict, bytearray, collections.deque)


def _refuse_copy(value: object, action: str) -> TypeError:
    return TypeError(
        f"{action} cannot copy a {type(value).__name__!r} object in snippets: only plain data and the snippet's own "
        "objects can be copied; build a new object instead."
    )


def check_copyable(value: object, *, action: str, deep: bool) -> None:
    """Refuse *value* unless it (and, when *deep*, everything in it) is plain data or the snippet's own."""
    stack = [value]
    seen: set[int] = set()
    while stack:
        item = stack.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, _COPYABLE_VALUES) or is_snippet_function(item) or isinstance(item, type):
            continue  # classes and functions are copied as themselves
        kind = type(item)
        if not (isinstance(item, _COPYABLE_CONTAINERS) or is_own_class(kind)):
            raise _refuse_copy(item, action)
        if not deep:
            continue
        if isinstance(item, dict):
            stack.extend(guarded_iter(item))
            stack.extend(guarded_iter(item.values()))
        elif isinstance(item, _COPYABLE_CONTAINERS):
            stack.extend(guarded_iter(item))
        if is_snippet_class(kind):
            state = getattr(item, "__dict__", None)
            if isinstance(state, dict):
                stack.extend(state.values())


def _copy(value: Any) -> Any:
    check_copyable(value, action="copy.copy()", deep=False)
    return copy.copy(value)


def _deepcopy(value: Any, memo: dict[int, Any] | None = None) -> Any:
    check_copyable(value, action="copy.deepcopy()", deep=True)
    return copy.deepcopy(value, memo)


def _reduce(function: Callable[[Any, Any], Any], iterable: Iterable[Any], *initial: Any) -> Any:
    return functools.reduce(function, guarded_iter(iterable), *initial)


def _own_or_plain(value: object) -> bool:
    if is_snippet_function(value):
        return True
    klass = value if isinstance(value, type) else type(value)
    return is_own_class(klass)


def _update_wrapper(wrapper: Any, wrapped: Any) -> Any:
    if not _own_or_plain(wrapper):
        raise TypeError("functools.update_wrapper() can change only the snippet's own functions in snippets.")
    state = getattr(wrapped, "__dict__", None)
    if state and not _own_or_plain(wrapped):
        raise TypeError(
            "functools.wraps() copies the wrapped object's attributes; in snippets it can wrap only the snippet's "
            "own functions and functions without attributes."
        )
    return functools.update_wrapper(wrapper, wrapped)


def _wraps(wrapped: Any) -> Callable[[Any], Any]:
    return lambda wrapper: _update_wrapper(wrapper, wrapped)


def _singledispatch(func: Any) -> Any:
    """``functools.singledispatch`` whose ``register`` accepts the guarded builtins (``register(list)``)."""
    dispatcher = functools.singledispatch(func)
    register = dispatcher.register

    def register_real(cls: Any, func: Any = None) -> Any:
        return register(cast(Any, real_class(cls)), func)

    dispatcher.register = register_real  # type: ignore[method-assign]  # our own dispatcher object
    return dispatcher


def _own_class(cls: object, action: str) -> type:
    if not (isinstance(cls, type) and is_snippet_class(cls)):
        raise TypeError(f"{action} works only on the snippet's own classes in snippets.")
    return cls


def _total_ordering(cls: Any) -> Any:
    return functools.total_ordering(_own_class(cls, "functools.total_ordering()"))


def _dataclass(cls: Any = None, /, **options: Any) -> Any:
    def wrap(target: Any) -> Any:
        result: type = dataclasses.dataclass(**options)(_own_class(target, "dataclass()"))
        SNIPPET_CLASSES.add(result)  # slots=True builds a new class from the snippet's own
        return result

    return wrap if cls is None else wrap(cls)


def _own_dataclass(obj: Any, action: str) -> Any:
    klass = obj if isinstance(obj, type) else type(obj)
    _own_class(klass, action)
    return obj


def _fields(obj: Any) -> Any:
    return dataclasses.fields(_own_dataclass(obj, "dataclasses.fields()"))


def _asdict(obj: Any, *, dict_factory: Callable[..., Any] = dict) -> Any:
    check_copyable(_own_dataclass(obj, "dataclasses.asdict()"), action="dataclasses.asdict()", deep=True)
    return dataclasses.asdict(obj, dict_factory=dict_factory)


def _astuple(obj: Any, *, tuple_factory: Callable[..., Any] = tuple) -> Any:
    check_copyable(_own_dataclass(obj, "dataclasses.astuple()"), action="dataclasses.astuple()", deep=True)
    return dataclasses.astuple(obj, tuple_factory=tuple_factory)


def _replace(obj: Any, /, **changes: Any) -> Any:
    return dataclasses.replace(_own_dataclass(obj, "dataclasses.replace()"), **changes)


def _final(target: Any) -> Any:
    return typing.final(target) if _own_or_plain(target) else target


def _enum_class(real: type) -> GuardedType:
    """An exposed enum class whose functional API (``Enum('Color', 'RED GREEN')``) checks member names."""

    def construct(value: Any, names: Any = None, *args: Any, **kwargs: Any) -> Any:
        if names is None:
            return real(value, *args, **kwargs)
        return real(value, checked_enum_names(names), *args, **kwargs)

    return GuardedType(real, construct)


#: Guarded replacements that need no run state, by module.
OVERRIDES: Final[Mapping[str, Mapping[str, object]]] = {
    "copy": {"copy": _copy, "deepcopy": _deepcopy},
    "dataclasses": {
        "dataclass": _dataclass,
        "fields": _fields,
        "asdict": _asdict,
        "astuple": _astuple,
        "replace": _replace,
    },
    "enum": {
        name: _enum_class(getattr(enum, name)) for name in ("Enum", "IntEnum", "StrEnum", "Flag", "IntFlag", "ReprEnum")
    },
    "functools": {
        "reduce": _reduce,
        "wraps": _wraps,
        "update_wrapper": _update_wrapper,
        "total_ordering": _total_ordering,
        "singledispatch": _singledispatch,
    },
    "typing": {"final": _final},
}


@dataclass(frozen=True, slots=True)
class RunGuards:
    """The guards of one run that façade functions need (``operator.attrgetter`` reads through ``getattr``)."""

    getattr: Callable[[object, str], object]
    write: Callable[[object], object]
    inplacevar: Callable[[str, Any, Any], Any]

    @classmethod
    def default(cls) -> RunGuards:
        """Guards for an environment that hides nothing (what the process-wide façades use)."""
        hidden = HiddenAttributes({})
        write = make_write(hidden)
        return cls(getattr=make_getattr(hidden), write=write, inplacevar=make_inplacevar(write))


_IN_PLACE: Final = {
    "iadd": "+=",
    "iand": "&=",
    "iconcat": "+=",
    "ifloordiv": "//=",
    "ilshift": "<<=",
    "imatmul": "@=",
    "imod": "%=",
    "imul": "*=",
    "ior": "|=",
    "ipow": "**=",
    "irshift": ">>=",
    "isub": "-=",
    "itruediv": "/=",
    "ixor": "^=",
}


def _checked_attribute(name: object) -> str:
    if type(name) is not str:
        raise TypeError(f"attribute name must be a string, not {type(name).__name__!r}")
    for part in name.split("."):
        problem = attribute_name_problem(part, store=False)
        if problem:
            raise AttributeError(problem)
    return name


def _operator_overrides(guards: RunGuards) -> dict[str, object]:
    read = guards.getattr

    def attrgetter(attr: str, /, *attrs: str) -> Callable[[object], object]:
        paths = [_checked_attribute(name).split(".") for name in (attr, *attrs)]

        def resolve(obj: object, path: list[str]) -> object:
            for part in path:
                obj = read(obj, part)
            return obj

        if len(paths) == 1:
            return lambda obj: resolve(obj, paths[0])
        return lambda obj: tuple(resolve(obj, path) for path in paths)

    def methodcaller(name: str, /, *args: Any, **kwargs: Any) -> Callable[[object], object]:
        if "." in _checked_attribute(name):
            raise TypeError("method name must be a plain name")
        for key in kwargs:
            if key.startswith("_"):
                raise TypeError(f"Keyword argument {key!r} is not allowed in snippets because it starts with '_'.")
        return lambda obj: read(obj, name)(*args, **kwargs)  # type: ignore[operator]  # any callable attribute

    def itemgetter(item: Any, /, *items: Any) -> Callable[[object], object]:
        if not items:
            return lambda obj: guarded_getitem(obj, item)
        keys = (item, *items)
        return lambda obj: tuple(guarded_getitem(obj, key) for key in keys)

    def setitem(obj: Any, key: Any, value: Any, /) -> None:
        guards.write(obj)[key] = value  # type: ignore[index]  # any container; ReadOnly refuses

    def delitem(obj: Any, key: Any, /) -> None:
        del guards.write(obj)[key]  # type: ignore[attr-defined]  # any container; ReadOnly refuses

    overrides: dict[str, object] = {
        "attrgetter": attrgetter,
        "methodcaller": methodcaller,
        "itemgetter": itemgetter,
        "getitem": guarded_getitem,
        "setitem": setitem,
        "delitem": delitem,
    }
    for name, symbol in _IN_PLACE.items():
        overrides[name] = functools.partial(guards.inplacevar, symbol)
    return overrides


#: Replacements bound to a run's guards, by module: module name -> builder.
RUN_BOUND: Final[Mapping[str, Callable[[RunGuards], Mapping[str, object]]]] = {"operator": _operator_overrides}


def run_overrides(module: str, guards: RunGuards) -> Mapping[str, object]:
    """Return *module*'s replacements: :data:`OVERRIDES` plus those bound to *guards*."""
    bound = RUN_BOUND.get(module)
    return {**OVERRIDES.get(module, {}), **(bound(guards) if bound else {})}
