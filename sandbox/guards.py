"""Run-time guards: the hooks that RestrictedPython's rewritten code calls, each with a real policy.

Inside a snippet a guard raises the exception Python itself would raise (``AttributeError``, ``TypeError``), so a
snippet can catch it. The policy in one place:

- no module, frame, code object, traceback or the ``builtins`` namespace ever reaches snippet code, whether by
  attribute, item, iteration, unpacking or call arguments;
- attribute names that start with ``_`` or expose interpreter internals (``gi_frame``, ...) are refused, and so are
  the attributes an environment hides on its own types (``Environment.hidden_attributes``) and
  ``AttributeError.obj`` (CVE-2024-47532);
- ``str.format``/``format_map`` resolve fields through these same guards (CVE-2023-41039);
- writes go only to plain containers and to the snippet's own classes and objects; everything else is read-only.
"""

from __future__ import annotations

import _string  # type: ignore[import-not-found]  # CPython's field parser behind string.Formatter; no stub
import builtins
import operator
import string
import types
import weakref
from collections import UserDict, UserList, deque
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Final

from RestrictedPython.transformer import ALLOWED_FUNC_NAMES, INSPECT_ATTRIBUTES

from sandbox.policy import EXTRA_DUNDER_METHODS

#: Threat: every module-graph escape (``json.codecs.builtins.eval``, ``datetime.sys.modules``) and every frame
#: walk (CVE-2023-37271) ends in one of these; none may become a value in snippet code.
FORBIDDEN_TYPES: Final = (types.ModuleType, types.FrameType, types.CodeType, types.TracebackType)

#: Threat: classes that build code, functions, frames or modules from data, or new classes without our checks.
FORBIDDEN_CLASSES: Final = frozenset(
    {type, types.FunctionType, types.CodeType, types.ModuleType, types.FrameType, types.TracebackType, types.CellType}
)

#: Attributes refused on every object, whatever the environment says. CVE-2024-47532: ``AttributeError.obj``
#: handed back the real module behind a façade.
ALWAYS_HIDDEN: Final[Mapping[type, frozenset[str]]] = {AttributeError: frozenset({"obj"})}

#: Containers a snippet may change in place (its own data: event, results, parsed JSON).
WRITABLE_TYPES: Final = (dict, list, set, bytearray, deque, UserDict, UserList)

#: Public attribute names refused on every object, with the reason a snippet sees.
#: Threat: ``Exception.mro()`` returns BaseException, whose instances escape ``except Exception`` (Odoo bans it too).
#: Threat: ``SomeABC.register(cls)`` changes ``isinstance`` answers for every later run and for our own guards.
REFUSED_ATTRIBUTES: Final[Mapping[str, str]] = {
    "mro": "it walks up to classes snippets must not reach",
    "register": "it changes a class that every run shares",
}

_FORMAT_METHODS: Final = frozenset({"format", "format_map"})

#: Classes created by snippet ``class`` statements (through :func:`build_class`); their instances are writable.
SNIPPET_CLASSES: weakref.WeakSet[type] = weakref.WeakSet()

#: What a class body may define with a leading underscore: what Python adds, and the dunders the policy allows.
_ALLOWED_CLASS_KEYS: Final = frozenset(
    {"__module__", "__qualname__", "__doc__", "__orig_bases__", *ALLOWED_FUNC_NAMES, *EXTRA_DUNDER_METHODS}
)


def forbidden_reason(value: object) -> str | None:
    """Return why *value* must not reach snippet code, or ``None`` when it may."""
    if isinstance(value, types.ModuleType):
        return f"module {value.__name__!r}"
    if isinstance(value, FORBIDDEN_TYPES):
        return f"a {type(value).__name__} object"
    if value is builtins.__dict__:
        return "the builtins namespace"
    if isinstance(value, type) and value in FORBIDDEN_CLASSES:
        return f"the {value.__name__!r} class"
    if isinstance(value, type) and issubclass(value, BaseException) and not issubclass(value, Exception):
        return f"the {value.__name__!r} class"  # SystemExit & co. would escape `except Exception` in the runner
    return None


def _refuse_value(value: object, action: str, error: type[Exception]) -> object:
    reason = forbidden_reason(value)
    if reason is not None:
        raise error(f"{action} would give {reason}; that is not allowed in snippets.")
    return value


def _describe(obj: object) -> str:
    if type(obj).__module__.startswith("sandbox."):
        return repr(obj)
    return f"a {type(obj).__name__!r} object"


class HiddenAttributes:
    """Answers whether an attribute is hidden on an object, by walking its type's MRO (cached per type)."""

    def __init__(self, hidden: Mapping[type, frozenset[str]]) -> None:
        self._hidden = {**ALWAYS_HIDDEN, **hidden}
        self._by_type: dict[type, frozenset[str]] = {}

    def names_for(self, obj: object) -> frozenset[str]:
        """Return the hidden names of *obj* (for a class: of the class itself, so unbound methods are hidden too)."""
        klass = obj if isinstance(obj, type) else type(obj)
        names = self._by_type.get(klass)
        if names is None:
            names = frozenset().union(*(self._hidden.get(base, frozenset()) for base in klass.__mro__))
            self._by_type[klass] = names
        return names


class _GuardedFormatter(string.Formatter):
    """``str.format`` whose ``{0.attr}`` and ``{0[key]}`` fields go through the snippet's guards."""

    def __init__(self, getattr_: Callable[[object, str], object], getitem: Callable[[object, object], object]) -> None:
        self._getattr = getattr_
        self._getitem = getitem

    def get_field(self, field_name: str, args: Any, kwargs: Any) -> tuple[Any, str]:
        first, rest = _string.formatter_field_name_split(field_name)
        obj = self.get_value(first, args, kwargs)
        for is_attr, key in rest:
            obj = self._getattr(obj, key) if is_attr else self._getitem(obj, key)
        return obj, first


def make_getattr(hidden: HiddenAttributes) -> Callable[[object, str], object]:
    """Return the ``_getattr_`` hook for a run whose environment hides *hidden*."""
    formatter = _GuardedFormatter(
        lambda obj, name: guarded_getattr(obj, name), lambda obj, key: guarded_getitem(obj, key)
    )

    def guarded_getattr(obj: object, name: str) -> object:
        if type(name) is not str:  # a str subclass could lie in startswith() (RestrictedPython 7.2)
            raise TypeError(f"Attribute names must be str, got {type(name).__name__!r}.")
        if name.startswith("_"):
            raise AttributeError(f"Attribute {name!r} is not allowed in snippets because it starts with '_'.")
        if name in INSPECT_ATTRIBUTES:
            raise AttributeError(f"Attribute {name!r} is not allowed in snippets: it exposes interpreter internals.")
        if name in REFUSED_ATTRIBUTES:
            raise AttributeError(f"Attribute {name!r} is not allowed in snippets: {REFUSED_ATTRIBUTES[name]}.")
        if isinstance(obj, types.ModuleType):
            raise AttributeError(f"Reading attributes of module {obj.__name__!r} is not allowed in snippets.")
        if name in hidden.names_for(obj):
            raise AttributeError(f"Attribute {name!r} of {type(obj).__name__!r} objects is not available in snippets.")
        if name in _FORMAT_METHODS:
            special = _format_method(obj, name, formatter)
            if special is not None:
                return special
        try:
            value = getattr(obj, name)
        except AttributeError as exc:  # a fresh error: never the original's .obj (CVE-2024-47532)
            raise AttributeError(str(exc)) from None
        return _refuse_value(value, f"Attribute {name!r}", AttributeError)

    return guarded_getattr


def _format_method(obj: object, name: str, formatter: _GuardedFormatter) -> Callable[..., str] | None:
    """Return a guarded ``format``/``format_map`` when *obj* is a str (or the str class) using str's own method."""
    if isinstance(obj, str) and getattr(type(obj), name) is getattr(str, name):
        template = str.__str__(obj)
        if name == "format":
            return lambda *args, **kwargs: formatter.vformat(template, args, kwargs)
        return lambda mapping: formatter.vformat(template, (), mapping)
    if isinstance(obj, type) and issubclass(obj, str) and getattr(obj, name) is getattr(str, name):
        if name == "format":
            return lambda template, *args, **kwargs: formatter.vformat(_as_str(template), args, kwargs)
        return lambda template, mapping: formatter.vformat(_as_str(template), (), mapping)
    return None


def _as_str(template: object) -> str:
    if not isinstance(template, str):
        raise TypeError(f"format() needs a str template, got {type(template).__name__!r}.")
    return str.__str__(template)


def guarded_getitem(obj: object, key: object) -> object:
    """Implement ``_getitem_``: ``obj[key]``, refusing items that are modules, frames or code."""
    if isinstance(obj, types.ModuleType):
        raise TypeError(f"Indexing module {obj.__name__!r} is not allowed in snippets.")
    return _refuse_value(obj[key], f"Item {key!r}", TypeError)  # type: ignore[index]  # any subscriptable


class _CheckedIterator:
    """Iterator that refuses forbidden items; a class, not a generator, so it has no frame to walk."""

    __slots__ = ("_iterator",)

    def __init__(self, iterator: Iterator[object]) -> None:
        self._iterator = iterator

    def __iter__(self) -> _CheckedIterator:
        return self

    def __next__(self) -> object:
        return _refuse_value(next(self._iterator), "Iterating", TypeError)


_PRIMITIVE_ITERABLES: Final = (str, bytes, bytearray, range)


def guarded_iter(obj: object) -> Iterator[object]:
    """Implement ``_getiter_`` (and the guarded builtins' iteration): refuse forbidden containers and items."""
    if type(obj) in _PRIMITIVE_ITERABLES:  # exact types (a subclass may override __iter__): items are str/int
        return iter(obj)  # type: ignore[call-overload,no-any-return]  # str, bytes, bytearray or range
    _refuse_value(obj, "Iterating over this value", TypeError)
    return _CheckedIterator(iter(obj))  # type: ignore[call-overload]  # any iterable; iter() raises TypeError


def guarded_unpack_sequence(value: object, spec: Mapping[str, Any], getiter: object = None) -> list[object]:
    """Implement ``_unpack_sequence_``: unpack through :func:`guarded_iter`, nested children too."""
    del getiter  # always our own guarded_iter, never a snippet-supplied one
    items = list(guarded_iter(value))
    if len(items) >= spec["min_len"]:
        for index, child in spec["childs"]:
            items[index] = guarded_unpack_sequence(items[index], child)
    return items


def guarded_iter_unpack_sequence(value: object, spec: Mapping[str, Any], getiter: object = None) -> Iterator[object]:
    """Implement ``_iter_unpack_sequence_``: ``for a, b in value`` with every item unpacked by the guard."""
    del getiter
    return (guarded_unpack_sequence(item, spec) for item in guarded_iter(value))


def make_write(hidden: HiddenAttributes) -> Callable[[object], object]:
    """Return the ``_write_`` hook: plain containers and snippet objects are writable, the rest is read-only."""

    def guarded_write(obj: object) -> object:
        if any(base in WRITABLE_TYPES for base in type(obj).__mro__):  # the real MRO: ABC registration cannot fake it
            return obj
        klass = obj if isinstance(obj, type) else type(obj)
        if klass in SNIPPET_CLASSES and len(hidden.names_for(obj) - ALWAYS_HIDDEN[AttributeError]) == 0:
            return obj
        return ReadOnly(obj)

    return guarded_write


class ReadOnly:
    """What ``_write_`` returns for objects a snippet may not change: every write raises ``TypeError``."""

    __slots__ = ("_target",)

    def __init__(self, target: object) -> None:
        object.__setattr__(self, "_target", target)

    def _refuse(self, what: str) -> TypeError:
        target = object.__getattribute__(self, "_target")
        return TypeError(f"Changing {what} of {_describe(target)} is not allowed in snippets.")

    def __setattr__(self, name: str, value: object) -> None:
        raise self._refuse(f"attribute {name!r}")

    def __delattr__(self, name: str) -> None:
        raise self._refuse(f"attribute {name!r}")

    def __setitem__(self, key: object, value: object) -> None:
        raise self._refuse("items")

    def __delitem__(self, key: object) -> None:
        raise self._refuse("items")


_INPLACE: Final[Mapping[str, tuple[Callable[[Any, Any], Any], Callable[[Any, Any], Any]]]] = {
    "+=": (operator.iadd, operator.add),
    "-=": (operator.isub, operator.sub),
    "*=": (operator.imul, operator.mul),
    "/=": (operator.itruediv, operator.truediv),
    "//=": (operator.ifloordiv, operator.floordiv),
    "%=": (operator.imod, operator.mod),
    "**=": (operator.ipow, operator.pow),
    "<<=": (operator.ilshift, operator.lshift),
    ">>=": (operator.irshift, operator.rshift),
    "|=": (operator.ior, operator.or_),
    "^=": (operator.ixor, operator.xor),
    "&=": (operator.iand, operator.and_),
    "@=": (operator.imatmul, operator.matmul),
}


def make_inplacevar(write: Callable[[object], object]) -> Callable[[str, Any, Any], Any]:
    """Return ``_inplacevar_``: in-place only on values ``_write_`` lets the snippet change, else the plain operator."""

    def inplacevar(op: str, target: Any, value: Any) -> Any:
        in_place, plain = _INPLACE[op]
        return _refuse_value(
            (in_place if write(target) is target else plain)(target, value), "This operation", TypeError
        )

    return inplacevar


def guarded_apply(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Implement ``_apply_`` (calls with ``*args``/``**kwargs``): refuse forbidden arguments and private keywords."""
    for key in kwargs:
        if type(key) is not str or key.startswith("_"):  # a str subclass could lie in startswith()
            raise TypeError(f"Keyword argument {key!r} is not allowed in snippets because it starts with '_'.")
    for arg in (*args, *kwargs.values()):
        _refuse_value(arg, "Passing this argument", TypeError)
    return func(*args, **kwargs)


def build_class(name: str, bases: tuple[type, ...], namespace: dict[str, Any], **keywords: Any) -> type:
    """Implement ``__metaclass__`` for ``class`` statements: plain classes only, registered as snippet classes."""
    if keywords:
        raise TypeError(f"Class keywords ({', '.join(keywords)}) are not allowed in snippets.")
    for base in bases:  # after __mro_entries__, always classes
        if issubclass(base, BaseException) and not issubclass(base, Exception):
            raise TypeError(f"Subclassing {base.__name__!r} is not allowed in snippets; subclass Exception.")
        if issubclass(base, type):
            raise TypeError("Metaclasses are not allowed in snippets.")
    for key in namespace:
        if key.startswith("_") and key not in _ALLOWED_CLASS_KEYS:
            raise TypeError(f"Class attribute {key!r} is not allowed in snippets.")
    body = dict(namespace)
    if "__exit__" in body:
        body["__exit__"] = _guarded_exit(body["__exit__"])
    cls = type(name, bases, body)
    SNIPPET_CLASSES.add(cls)
    return cls


def _guarded_exit(method: object) -> Callable[..., Any]:
    """Wrap a snippet's ``__exit__``, which the interpreter calls with the live exception and its traceback.

    Threat: the traceback is a FORBIDDEN_TYPES object handed straight to snippet code, and a generator closed inside
    ``with`` hands over ``GeneratorExit`` (a BaseException the snippet could re-raise past every ``except
    Exception``, ours included). The snippet's method sees ``tb=None``, and nothing at all for a BaseException.
    """
    if not isinstance(method, types.FunctionType):
        raise TypeError("__exit__ must be a plain method (def __exit__(self, exc_type, exc, tb)) in snippets.")

    def __exit__(self: object, exc_type: object, exc: object, tb: object) -> Any:  # noqa: N807  # the dunder itself
        del tb
        if exc is not None and not isinstance(exc, Exception):
            method(self, None, None, None)
            return False  # never suppressed: it keeps unwinding as if the snippet had not seen it
        return method(self, exc_type, exc, None)

    __exit__.__qualname__ = method.__qualname__
    return __exit__
