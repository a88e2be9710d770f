"""Run-time guards: the hooks that RestrictedPython's rewritten code calls, each with a real policy.

Inside a snippet a guard raises the exception Python itself would raise (``AttributeError``, ``TypeError``), so a
snippet can catch it. The policy in one place:

- no module, frame, code object, traceback, metaclass, ``__new__`` or the ``builtins`` namespace ever reaches
  snippet code, whether by attribute, item, iteration, unpacking or call arguments;
- attribute names that expose interpreter internals (``gi_frame``, ``__globals__``, ...) are refused, and so are
  the attributes an environment hides on its own types (``Environment.hidden_attributes``) and
  ``AttributeError.obj`` (CVE-2024-47532);
- private attributes (``_x``) are read and written only on the snippet's *own* objects: instances of classes its
  ``class`` statements made, where the attribute lives in the instance or in one of those classes (never in a
  foreign base class, so subclassing a host or library class does not open its private state), plus the documented
  ones of namedtuples and enum members. Threat: ``client._http_client``, ``facade._attributes``;
- dunder reads are limited to names (``__name__``, ``__qualname__``, ``__doc__``: str or None), ``__class__`` (what
  :func:`make_class_of` gives: foreign classes only as a :class:`ClassView`) and the dunder methods a snippet class
  may define, only on the snippet's own objects; an unbound one from a foreign class (``Exception.__init__``) only
  accepts the snippet's own objects as ``self``. Threat: ``HostClass.__init__(host_object, ...)`` re-initialising a
  host object, ``dict.__setitem__(readonly, ...)`` bypassing ``_write_``;
- ``super()`` works only inside the snippet's own classes. Threat: ``super(HostSub, host).password`` skips the
  hidden-attribute check of the subclass and reaches an overridden method;
- ``str.format``/``format_map`` resolve fields through these same guards (CVE-2023-41039);
- writes go only to plain containers and to the snippet's own classes and objects; everything else is read-only;
- ``class`` statements go through :class:`ClassBuilder`, which chooses the metaclass from the bases (so
  ``Enum``/``NamedTuple``/``Protocol`` subclasses work) but refuses metaclass bases, ``BaseException`` outside
  ``Exception``, ``super`` and non-class bases, and dunder names a class may not define. Enum classes get
  :class:`SnippetEnumType`, whose functional API refuses member names starting with ``_``. Threat:
  ``Enum('E', [('__getattr__', f)])`` defines any dunder method, which ``_EnumDict`` accepts as a plain attribute;
- ``match`` class patterns read attributes in C: :func:`make_match` checks each read through the guard first.
"""

from __future__ import annotations

import _string  # type: ignore[import-not-found]  # CPython's field parser behind string.Formatter; no stub
import abc
import builtins
import enum
import inspect
import operator
import string
import types
import typing
import weakref
from collections import UserDict, UserList, deque
from collections.abc import Callable, Collection, Iterator, Mapping
from decimal import Context as DecimalContext
from typing import Any, Final, cast

from RestrictedPython.transformer import INSPECT_ATTRIBUTES

from sandbox.policy import (
    DUNDER_METHODS,
    EXCEPTION_DUNDERS,
    NAME_DUNDERS,
    SNIPPET_FILENAME,
    attribute_name_problem,
    is_dunder,
)

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

#: Threat: a decimal context is per thread, so one snippet's ``getcontext().prec = 2`` would change every later
#: run in the same thread. Writable only because each run gets a private context (executor ``decimal_context``)
#: and the façade leaves out the shared ones (``DefaultContext``, ``BasicContext``, ``ExtendedContext``).
_DECIMAL_TYPES: Final = (DecimalContext, type(DecimalContext().traps))

#: Containers a snippet may change in place (its own data: event, results, parsed JSON), and its decimal context.
WRITABLE_TYPES: Final = (dict, list, set, bytearray, deque, UserDict, UserList, *_DECIMAL_TYPES)

#: Public attribute names refused on every object, with the reason a snippet sees.
#: Threat: ``Exception.mro()`` returns BaseException, whose instances escape ``except Exception`` (Odoo bans it too).
#: Threat: ``SomeABC.register(cls)`` changes ``isinstance`` answers for every later run and for our own guards
#: (refused on ABC classes only: ``functools.singledispatch(f).register`` changes the snippet's own function).
REFUSED_ATTRIBUTES: Final[Mapping[str, str]] = {
    "mro": "it walks up to classes snippets must not reach",
    "register": "it changes a class that every run shares",
}

#: Private names documented as public API: namedtuple's methods and fields, an enum member's name and value.
#: Readable on any such object the environment does not hide attributes of.
NAMEDTUPLE_API: Final = frozenset({"_asdict", "_replace", "_fields", "_field_defaults", "_make"})
ENUM_MEMBER_API: Final = frozenset({"_name_", "_value_"})

#: Foreign bases that keep no private state in an instance's ``__dict__``: the snippet's own subclasses of them
#: still own every private attribute their instances hold. Any other Python-defined base (a host or library class)
#: might have put its private state there, so such instances' private attributes stay closed.
STATELESS_BASES: Final = frozenset(
    {typing.Generic, typing.Protocol, enum.Enum, enum.ReprEnum, enum.IntEnum, enum.StrEnum, enum.Flag, enum.IntFlag}
)

_HEAP_TYPE: Final = 1 << 9  # Py_TPFLAGS_HEAPTYPE: classes defined in Python (static C types hold no __dict__ state)
_MATCH_SELF: Final = 1 << 22  # Py_TPFLAGS_MATCH_SELF: int(x) in a pattern matches the subject itself

_FORMAT_METHODS: Final = frozenset({"format", "format_map"})

#: Classes created by snippet ``class`` statements (through :class:`ClassBuilder`); their instances are writable.
SNIPPET_CLASSES: weakref.WeakSet[type] = weakref.WeakSet()

#: Dunder keys a class body may hold: what Python adds, and the dunder methods the policy allows.
_ALLOWED_CLASS_KEYS: Final = frozenset(
    {
        "__module__",
        "__qualname__",
        "__doc__",
        "__orig_bases__",
        "__classcell__",
        "__annotations__",
        *DUNDER_METHODS,
    }
)


#: Exact types whose values are never forbidden (the common case, answered with one set lookup).
_PLAIN_VALUE_TYPES: Final = frozenset(
    {int, float, str, bool, type(None), bytes, list, tuple, set, frozenset, types.MethodType, types.FunctionType}
)


def forbidden_reason(value: object) -> str | None:
    """Return why *value* must not reach snippet code, or ``None`` when it may."""
    if type(value) in _PLAIN_VALUE_TYPES:
        return None
    if isinstance(value, type):
        if value in FORBIDDEN_CLASSES:
            return f"the {value.__name__!r} class"
        if issubclass(value, type):  # a metaclass builds classes past ClassBuilder's checks (EnumType(...), ...)
            return f"the metaclass {value.__name__!r}"
        if issubclass(value, BaseException) and not issubclass(value, Exception):
            return f"the {value.__name__!r} class"  # SystemExit & co. would escape `except Exception` in the runner
        return None
    if isinstance(value, types.ModuleType):
        return f"module {value.__name__!r}"
    if isinstance(value, FORBIDDEN_TYPES):
        return f"a {type(value).__name__} object"
    if value is builtins.__dict__:
        return "the builtins namespace"
    if type(value) is types.BuiltinMethodType and value.__name__ == "__new__":
        # Threat: object.__new__(HostClass) makes a host object that skipped its __init__ (Enum._new_member_).
        return "a class's '__new__'"
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
    """Answers whether an attribute is hidden on an object, by walking its type's MRO (cached per type).

    One instance serves every run of an environment (:meth:`shared`), so a class's answer is computed once per
    process (in the zygote, for the classes its warm-up runs touch) instead of once per run. Sharing it is safe: it
    holds only classes and frozensets of names, never a snippet's object (no run can reach it: the guards that use
    it are closures snippets cannot name), and an answer never changes: it depends on the class's MRO (fixed,
    since no snippet may assign ``__bases__``) and on the hidden mapping (never changed once handed out, see
    :meth:`shared`). Classes built while a run runs (the snippet's own, a run's brokered client class) are held
    weakly, so a long-lived process does not keep every run's classes alive.
    """

    def __init__(self, hidden: Mapping[type, frozenset[str]]) -> None:
        self._hidden = {**ALWAYS_HIDDEN, **hidden}
        # Static (C) types live as long as the process and are few: a plain dict, the fast path for str, dict, ...
        self._by_static_type: dict[type, frozenset[str]] = {}
        self._by_class: weakref.WeakKeyDictionary[type, frozenset[str]] = weakref.WeakKeyDictionary()

    @classmethod
    def shared(cls, hidden: Mapping[type, frozenset[str]]) -> HiddenAttributes:
        """Return the process's instance for the mapping *hidden* (a new one when *hidden* is another object).

        Keyed by identity: an environment hands out the same mapping every run (a module constant) and must never
        change it afterwards; a host that wants other hidden names passes another mapping.
        """
        global _last_hidden  # one slot, replaced whole (atomic for threads)
        last = _last_hidden
        if last is not None and last[0] is hidden:
            return last[1]
        answers = cls(hidden)
        _last_hidden = (hidden, answers)
        return answers

    def names_for(self, obj: object) -> frozenset[str]:
        """Return the hidden names of *obj* (for a class: of the class itself, so unbound methods are hidden too)."""
        klass = obj if isinstance(obj, type) else type(obj)
        names = self._by_static_type.get(klass)
        if names is not None:
            return names
        heap = klass.__flags__ & _HEAP_TYPE
        names = self._by_class.get(klass) if heap else None
        if names is None:
            names = frozenset().union(*(self._hidden.get(base, frozenset()) for base in klass.__mro__))
            if heap:
                self._by_class[klass] = names
            else:
                self._by_static_type[klass] = names
        return names


#: The last (mapping, answers) :meth:`HiddenAttributes.shared` handed out; a host has one environment per process.
_last_hidden: tuple[Mapping[type, frozenset[str]], HiddenAttributes] | None = None


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


class GuardedType:
    """A class handed to snippets in place of the real one: its constructor is the given (guarded) function.

    ``isinstance``/``issubclass``, subclassing (``__mro_entries__``), class methods (``dict.fromkeys``) and
    generics (``list[int]``) still work. Dunder and private reads are redirected to the real class by the guard,
    so ``dict.__init__`` is the real one and this wrapper can never be re-initialised.
    """

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

    def __eq__(self, other: object) -> bool:
        return other is self or other is self._type

    def __hash__(self) -> int:
        return hash(self._type)

    def __repr__(self) -> str:
        return repr(self._type)


class ClassView:
    """What ``type(x)`` gives for a class a snippet may not use: it compares, hashes, ``isinstance``-checks and
    names itself like the class, and does nothing else (no call, no subclassing, no attributes).

    Threat: ``type(host_object)(...)`` building host objects with snippet-chosen arguments, and class attributes
    of internal types (``type(f)`` is ``FunctionType``, which builds functions from code objects).
    """

    __slots__ = ("_class",)
    _class: type

    def __init__(self, klass: type) -> None:
        object.__setattr__(self, "_class", klass)

    def __setattr__(self, name: str, value: object) -> None:
        raise TypeError(f"Changing attribute {name!r} of {self!r} is not allowed in snippets.")

    def __instancecheck__(self, instance: object) -> bool:
        return isinstance(instance, self._class)

    def __subclasscheck__(self, subclass: type) -> bool:
        return issubclass(subclass, self._class)

    def __eq__(self, other: object) -> bool:
        return other is self or other is self._class

    def __hash__(self) -> int:
        return hash(self._class)

    def __repr__(self) -> str:
        return repr(self._class)


_views: dict[type, ClassView] = {}


def class_view(klass: type) -> ClassView:
    """Return the one :class:`ClassView` of *klass* (one per class, so ``type(a) is type(b)`` still works)."""
    view = _views.get(klass)
    if view is None:
        view = _views.setdefault(klass, ClassView(klass))
    return view


def real_class(obj: object) -> object:
    """Return the class behind a :class:`GuardedType` or :class:`ClassView`, else *obj* itself."""
    if type(obj) is GuardedType:
        return object.__getattribute__(obj, "_type")
    if type(obj) is ClassView:
        return object.__getattribute__(obj, "_class")
    return obj


def type_of(obj: object) -> type:
    """``type(obj)``, where the stand-ins for classes count as classes (their type is ``type``)."""
    return type if type(obj) in (GuardedType, ClassView) else type(obj)


def make_class_of(
    guarded_types: Mapping[type, GuardedType], known: Callable[[], Collection[type]]
) -> Callable[[type], object]:
    """Return what ``type(x)`` and ``x.__class__`` give for a class: the class itself when the snippet may use it.

    Usable classes are the snippet's own, the builtins and the classes the run's façades and names expose
    (*known*, computed on first use); a builtin that iterates in C is its :class:`GuardedType`; any other class
    (host classes, internal types, metaclasses) is a :class:`ClassView`.
    """
    cache: list[Collection[type]] = []

    def class_of(klass: type) -> object:
        wrapper = guarded_types.get(klass)
        if wrapper is not None:
            return wrapper
        if forbidden_reason(klass) is None:
            if is_snippet_class(klass):
                return klass
            if not cache:
                cache.append(known())
            if klass in cache[0]:
                return klass
        return class_view(klass)

    return class_of


def is_snippet_class(klass: object) -> bool:
    """Return whether the snippet made *klass*: a ``class`` statement, or an enum it built (even mid-creation:
    ``EnumType`` creates the members, running the snippet's ``__init__``, before the class is registered)."""
    return klass in SNIPPET_CLASSES or isinstance(klass, SnippetEnumType)


def is_own_class(klass: type) -> bool:
    """Return whether instances of *klass* hold only the snippet's own private state.

    The snippet made *klass*, and every base in its MRO is the snippet's own, a C type (no ``__dict__`` state) or
    a :data:`STATELESS_BASES` class.
    """
    if not is_snippet_class(klass):
        return False
    return all(
        is_snippet_class(base) or base in STATELESS_BASES or not base.__flags__ & _HEAP_TYPE for base in klass.__mro__
    )


def _is_data_descriptor(value: object) -> bool:
    return hasattr(type(value), "__set__") or hasattr(type(value), "__delete__")


def _private_is_own(obj: object, name: str) -> bool:
    """Return whether private attribute *name* of *obj* is the snippet's own (see the module docstring)."""
    if isinstance(obj, type):
        for base in obj.__mro__:
            if name in base.__dict__:
                return is_snippet_class(base)
        return is_snippet_class(obj)  # missing: reading it raises AttributeError, as in CPython
    klass = type(obj)
    owner = next((base for base in klass.__mro__ if name in base.__dict__), None)
    if owner is not None and is_snippet_class(owner):
        return True
    if owner is not None and _is_data_descriptor(owner.__dict__[name]):
        return False  # a foreign property/slot wins over the instance dict
    try:
        instance_dict = object.__getattribute__(obj, "__dict__")
    except AttributeError:
        instance_dict = None
    if isinstance(instance_dict, dict) and name in instance_dict:
        return is_own_class(klass)
    return owner is None and is_own_class(klass)


def _is_documented_private(obj: object, name: str) -> bool:
    if name in NAMEDTUPLE_API:
        klass = obj if isinstance(obj, type) else type(obj)
        return issubclass(klass, tuple) and any("_fields" in base.__dict__ for base in klass.__mro__)
    return name in ENUM_MEMBER_API and isinstance(obj, enum.Enum)


def is_snippet_function(value: object) -> bool:
    """Return whether *value* is a function the snippet's own source defined."""
    return isinstance(value, types.FunctionType) and value.__code__.co_filename == SNIPPET_FILENAME


def _plain_getattr(obj: object, name: str) -> object:
    try:
        return getattr(obj, name)
    except AttributeError as exc:  # a fresh error: never the original's .obj (CVE-2024-47532)
        raise AttributeError(str(exc)) from None


def _private_refused(name: str) -> AttributeError:
    return AttributeError(
        f"Attribute {name!r} is not available here: names starting with '_' are private, and snippets can read "
        "them only on their own objects; use the object's public attributes."
    )


def _super_parts(obj: super) -> tuple[type, type]:
    """Return ``super()``'s class and the class of its object, refusing a ``super`` outside the snippet's classes."""
    this_class = cast(Any, obj).__thisclass__  # typeshed's super lacks these attributes
    self_class = cast(Any, obj).__self_class__
    if not is_snippet_class(this_class) or self_class is None:
        raise AttributeError(
            "super() is available only inside the snippet's own classes, on their own objects; call the method "
            "on the object itself."
        )
    return this_class, self_class


class _OwnReceiver:
    """An unbound method of a foreign class (``Exception.__init__``) that accepts only writable objects as self."""

    __slots__ = ("_method", "_name", "_writable")

    def __init__(self, method: Callable[..., Any], name: str, writable: Callable[[object], bool]) -> None:
        self._method = method
        self._name = name
        self._writable = writable

    def __call__(self, receiver: object, /, *args: Any, **kwargs: Any) -> Any:
        if not self._writable(receiver):
            raise TypeError(
                f"{self._name}() of another class can be called only on the snippet's own objects, not on "
                f"{_describe(receiver)}; use the operation itself (len(x), x == y, str(x))."
            )
        return self._method(receiver, *args, **kwargs)

    def __repr__(self) -> str:
        return f"<method {self._name!r}>"


def make_getattr(
    hidden: HiddenAttributes,
    class_of: Callable[[type], object] | None = None,
    writable: Callable[[object], bool] | None = None,
) -> Callable[[object, str], object]:
    """Return the ``_getattr_`` hook for a run whose environment hides *hidden*.

    *class_of* gives ``x.__class__`` (default: foreign classes as views, see :func:`make_class_of`); *writable*
    says which objects are the snippet's to change (default: :func:`make_writable`).
    """
    formatter = _GuardedFormatter(
        lambda obj, name: guarded_getattr(obj, name), lambda obj, key: guarded_getitem(obj, key)
    )
    class_of = class_of or make_class_of({}, frozenset)
    writable = writable or make_writable(hidden)

    def read_dunder(obj: object, name: str) -> object:
        problem = attribute_name_problem(name, store=False)
        if problem:
            raise AttributeError(problem)
        if name == "__class__":
            return class_of(type_of(obj))
        target = real_class(obj)
        if name in EXCEPTION_DUNDERS:
            value = _plain_getattr(obj, name)
            if value is None or isinstance(value, Exception):
                return value
            raise AttributeError(f"Attribute {name!r} of {_describe(obj)} is not available in snippets.")
        if name in NAME_DUNDERS:
            value = _plain_getattr(target, name)
            if value is None or type(value) is str:
                return value
            raise AttributeError(f"Attribute {name!r} of {_describe(obj)} is not a plain string; it is not available.")
        if type(obj) is ClassView:
            raise AttributeError(f"{obj!r} is not available in snippets; only its name can be read.")
        if type(obj) is super:
            _super_parts(obj)
            value = _plain_getattr(obj, name)
            if isinstance(cast(Any, obj).__self__, type) and not is_snippet_function(value):
                value = _OwnReceiver(value, name, writable)  # type: ignore[arg-type]  # any callable
            return _refuse_value(value, f"Attribute {name!r}", AttributeError)
        if isinstance(target, type):
            value = _plain_getattr(target, name)
            if not is_snippet_function(value):
                value = _OwnReceiver(value, name, writable)  # type: ignore[arg-type]  # any callable
            return _refuse_value(value, f"Attribute {name!r}", AttributeError)
        if not writable(obj):
            raise AttributeError(
                f"Attribute {name!r} can be read only on the snippet's own objects, not on {_describe(obj)}; use "
                "the operation itself (len(x), x == y, str(x))."
            )
        return _refuse_value(_plain_getattr(obj, name), f"Attribute {name!r}", AttributeError)

    def read_private(obj: object, name: str) -> object:
        if is_dunder(name):
            return read_dunder(obj, name)
        if isinstance(obj, types.ModuleType):
            raise _private_refused(name)
        if type(obj) is super:
            this_class, self_class = _super_parts(obj)
            mro = self_class.__mro__
            for base in mro[mro.index(this_class) + 1 :]:
                if name in base.__dict__:
                    if not is_snippet_class(base):
                        raise _private_refused(name)
                    break
        elif hidden.names_for(obj) - ALWAYS_HIDDEN[AttributeError] or not (
            _is_documented_private(obj, name) or _private_is_own(obj, name)
        ):
            raise _private_refused(name)
        return _refuse_value(_plain_getattr(obj, name), f"Attribute {name!r}", AttributeError)

    def guarded_getattr(obj: object, name: str) -> object:
        if type(name) is not str:  # a str subclass could lie in startswith() (RestrictedPython 7.2)
            raise TypeError(f"Attribute names must be str, got {type(name).__name__!r}.")
        if name.startswith("_"):
            return read_private(obj, name)
        if name in INSPECT_ATTRIBUTES:
            raise AttributeError(
                f"Attribute {name!r} is not allowed in snippets: it exposes the interpreter's frames and code."
            )
        if name in REFUSED_ATTRIBUTES and (name != "register" or isinstance(obj, abc.ABCMeta)):
            raise AttributeError(f"Attribute {name!r} is not allowed in snippets: {REFUSED_ATTRIBUTES[name]}.")
        if isinstance(obj, types.ModuleType):
            raise AttributeError(f"Reading attributes of module {obj.__name__!r} is not allowed in snippets.")
        names = hidden.names_for(_super_parts(obj)[1] if type(obj) is super else obj)
        if name in names:
            raise AttributeError(f"Attribute {name!r} of {type(obj).__name__!r} objects is not available in snippets.")
        if name in _FORMAT_METHODS:
            special = _format_method(obj, name, formatter)
            if special is not None:
                return special
        try:
            value = getattr(obj, name)
        except AttributeError as exc:  # a fresh error: never the original's .obj (CVE-2024-47532)
            raise AttributeError(str(exc)) from None
        if type(value) in _PLAIN_VALUE_TYPES:
            return value
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


def make_writable(hidden: HiddenAttributes) -> Callable[[object], bool]:
    """Return the test behind ``_write_``: plain containers, decimal contexts and the snippet's own objects."""

    def writable(obj: object) -> bool:
        if any(base in WRITABLE_TYPES for base in type(obj).__mro__):  # the real MRO: ABC registration cannot fake it
            return True
        klass = obj if isinstance(obj, type) else type(obj)
        return is_snippet_class(klass) and len(hidden.names_for(obj) - ALWAYS_HIDDEN[AttributeError]) == 0

    return writable


def make_write(hidden: HiddenAttributes) -> Callable[[object], object]:
    """Return the ``_write_`` hook: plain containers and snippet objects are writable, the rest is read-only."""
    writable = make_writable(hidden)

    def guarded_write(obj: object) -> object:
        return obj if writable(obj) else ReadOnly(obj)

    return guarded_write


def make_write_private(hidden: HiddenAttributes) -> Callable[[object], object]:
    """Return ``_write_private_`` (``obj._x = v``): private state is written only on the snippet's own objects."""

    def write_private(obj: object) -> object:
        klass = obj if isinstance(obj, type) else type(obj)
        if is_own_class(klass) and not hidden.names_for(obj) - ALWAYS_HIDDEN[AttributeError]:
            return obj
        raise TypeError(
            f"Changing private attributes of {_describe(obj)} is not allowed in snippets: only the snippet's own "
            "objects keep private state; use the object's public methods."
        )

    return write_private


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


def _metaclass_for(bases: tuple[type, ...]) -> type:
    """Return the metaclass Python would pick for *bases*, with :class:`SnippetEnumType` in place of EnumType."""
    winner: type = type
    for base in bases:
        meta = type(base)
        if issubclass(winner, meta):
            continue
        if issubclass(meta, winner):
            winner = meta
            continue
        raise TypeError("The bases of this class have conflicting metaclasses; use one base.")
    if issubclass(winner, enum.EnumType) and not issubclass(winner, SnippetEnumType):
        winner = SnippetEnumType
    return winner


class ClassBuilder:
    """Implement ``__metaclass__`` for ``class`` statements, registering each class as the snippet's own.

    ``__prepare__`` and the call both go to the metaclass the bases call for (``EnumType``'s namespace is what makes
    ``class Color(Enum)`` work), after the checks in the module docstring.
    """

    __slots__ = ()

    def __prepare__(self, name: str, bases: tuple[type, ...], **keywords: Any) -> Mapping[str, object]:
        _check_class_keywords(keywords)
        _check_bases(bases)
        return _metaclass_for(bases).__prepare__(name, bases)

    def __call__(self, name: str, bases: tuple[type, ...], namespace: dict[str, Any], **keywords: Any) -> type:
        _check_class_keywords(keywords)
        _check_bases(bases)
        for key in namespace:
            if is_dunder(key) and key not in _ALLOWED_CLASS_KEYS:
                raise TypeError(
                    f"Class attribute {key!r} is not allowed in snippets: it changes how Python itself treats the "
                    "class; use an ordinary name."
                )
        if "__exit__" in namespace:
            namespace["__exit__"] = _guarded_exit(namespace["__exit__"])
        cls: type = _metaclass_for(bases)(name, bases, namespace)
        SNIPPET_CLASSES.add(cls)
        return cls

    def __repr__(self) -> str:
        return "<class builder>"


#: The ``__metaclass__`` of every run (stateless).
build_class: Final = ClassBuilder()


def _check_class_keywords(keywords: Mapping[str, object]) -> None:
    if keywords:
        raise TypeError(
            f"Class keywords ({', '.join(keywords)}) are not allowed in snippets: they run class-creation hooks."
        )


def _check_bases(bases: tuple[object, ...]) -> None:
    for base in bases:  # after __mro_entries__
        if not isinstance(base, type):
            name = getattr(base, "__name__", type(base).__name__)
            raise TypeError(f"Only classes can be base classes in snippets; {name!r} is not a class.")
        if issubclass(base, BaseException) and not issubclass(base, Exception):
            raise TypeError(f"Subclassing {base.__name__!r} is not allowed in snippets; subclass Exception.")
        if issubclass(base, type):
            raise TypeError("Metaclasses are not allowed in snippets: they would build classes without checks.")
        if issubclass(base, super):
            raise TypeError("Subclassing 'super' is not allowed in snippets.")


class SnippetEnumType(enum.EnumType):
    """The metaclass of the snippet's enums: the functional API refuses member names starting with ``_``.

    Threat: ``_EnumDict`` treats a dunder member name as a plain class attribute, so ``MyEnum('E',
    [('__getattr__', f)])`` would define any dunder method on a class, past :class:`ClassBuilder`'s checks.
    """

    def __call__(cls, value: Any, names: Any = None, *args: Any, **kwargs: Any) -> Any:
        if names is not None:
            names = checked_enum_names(names)
        return super().__call__(value, names, *args, **kwargs)


def checked_enum_names(names: Any) -> Any:
    """Return *names* (the functional API's member names) after refusing any that start with ``_``."""
    if isinstance(names, str):
        items: list[Any] = names.replace(",", " ").split()
    elif isinstance(names, Mapping):
        items = list(guarded_iter(names))
    else:
        names = list(guarded_iter(names))
        items = [item if isinstance(item, str) else guarded_getitem(item, 0) for item in names]
    for item in items:
        if not isinstance(item, str) or item.startswith("_"):
            raise ValueError(
                f"Enum member name {item!r} is not allowed in snippets: names starting with '_' belong to Python "
                "and the enum module; choose a plain name."
            )
    return names


class _MatchClass(type):
    """Metaclass of the stand-in a class pattern matches against (see :func:`make_match`)."""

    _real: type
    _reads: tuple[str, ...]
    _check: Callable[[object, str], None]

    def __instancecheck__(cls, subject: object) -> bool:
        if not isinstance(subject, cls._real):
            return False
        for name in cls._reads:
            cls._check(subject, name)
        return True


def _is_missing(subject: object, name: str) -> bool:
    """Return whether *subject* certainly has no attribute *name*, without running any of its code.

    A static lookup (no property, no ``__getattr__``): an attribute that may exist dynamically counts as present, so
    a refused read is never mistaken for a missing one (CPython would then read it in C, unguarded).
    """
    try:
        inspect.getattr_static(subject, name)
    except AttributeError:
        return not hasattr(type(subject), "__getattr__")
    return False


class _MatchHolder:
    """What ``_match0_`` is: reads each class and dotted value of one ``match`` statement when a case needs it."""

    __slots__ = ("_match_class", "_spec")

    def __init__(self, spec: Mapping[str, tuple[Callable[[], object], int | None, tuple[str, ...]]], match_class: Any):
        self._spec = spec
        self._match_class = match_class

    def __getattr__(self, key: str) -> object:
        thunk, positional, keywords = self._spec[key]
        value = thunk()
        return value if positional is None else self._match_class(value, positional, keywords)


def make_match(getattr_guard: Callable[[object, str], object]) -> Callable[[Mapping[str, Any]], object]:
    """Return the ``_match_`` hook: class patterns read the subject's attributes only through *getattr_guard*.

    A class pattern ``Point(x, y=0)`` matches against a stand-in class whose ``isinstance`` check reads, through
    the guard, every attribute CPython is about to read in C (``__match_args__[:1]`` and ``y``): a refused read
    raises, a missing one (found missing without running the subject's code) lets the pattern fail as in CPython.
    The attributes are then read again by CPython (a property of the snippet's own class runs twice).
    """

    def check_read(subject: object, name: str) -> None:
        try:
            getattr_guard(subject, name)
        except AttributeError:
            if _is_missing(subject, name):
                return  # CPython's own read fails too, and the pattern simply does not match
            raise

    def match_class(cls: object, positional: int, keywords: tuple[str, ...]) -> type:
        real = real_class(cls)
        if not isinstance(real, type):
            raise TypeError("called match pattern must be a class")
        if real.__flags__ & _MATCH_SELF:  # int(x), str(s), ...: the subject itself; no attribute read
            if not keywords:
                return real
            if positional:
                raise TypeError(
                    f"A pattern of {real.__name__!r} cannot mix positional and keyword sub-patterns in snippets; "
                    "match the keywords in a second pattern."
                )
            match_args: tuple[str, ...] = ()
        else:
            match_args = getattr(real, "__match_args__", ())
            if not isinstance(match_args, tuple) or not all(type(arg) is str for arg in match_args):
                raise TypeError(f"{real.__name__}.__match_args__ must be a tuple of str")
        namespace = {
            "__match_args__": match_args,
            "_real": real,
            "_reads": (*match_args[:positional], *keywords),
            "_check": staticmethod(check_read),
        }
        return _MatchClass(real.__name__, (), namespace)

    def match(spec: Mapping[str, Any]) -> object:
        return _MatchHolder(spec, match_class)

    return match


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
