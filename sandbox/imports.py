"""Imports in snippets: an allowlist of modules, each handed out as a read-only façade, never a module object.

A façade exposes a module's public functions, classes and constants and nothing else: no submodules, no
module-valued attributes (``json.codecs``, ``datetime.sys``, ``uuid.os``), no ``__dict__``, and it cannot be
changed (``json.dumps = evil`` raises ``TypeError``). Mutable constants are copied into immutable ones, so no
snippet can change what the next one sees. ``from m import name`` is checked here, because CPython's
``IMPORT_FROM`` reads the attribute without ``_getattr_``.
"""

from __future__ import annotations

import ast
import functools
import importlib
import types
from collections.abc import Collection, Iterable, Mapping
from typing import Any, Final

from sandbox.environment import LazyModule
from sandbox.guards import forbidden_reason
from sandbox.stdlib import EXCLUDED, RUN_BOUND, RunGuards, run_overrides

#: The standard-library modules a snippet may import (docs/snippets.md), name -> the names its façade exposes
#: (``None``: the module's ``__all__``, or every public name when it has none), minus ``_EXCLUDED``.
STDLIB_MODULES: Final[Mapping[str, tuple[str, ...] | None]] = {
    "base64": None,
    "collections": None,
    "copy": None,
    "dataclasses": None,
    "datetime": None,
    "decimal": None,
    "enum": None,
    "functools": None,
    "hashlib": None,
    "hmac": ("HMAC", "compare_digest", "digest", "digest_size", "new"),
    "html": None,
    "itertools": None,
    "json": None,
    "math": None,
    "operator": None,
    "random": None,
    "re": None,
    "statistics": None,
    # Threat: string.Formatter walks attributes in C (CVE-2023-41039, CVE-2026-76825); only the safe parts.
    "string": (
        "Template",
        "ascii_letters",
        "ascii_lowercase",
        "ascii_uppercase",
        "capwords",
        "digits",
        "hexdigits",
        "octdigits",
        "printable",
        "punctuation",
        "whitespace",
    ),
    "textwrap": None,
    # Threat: time.tzset/clock_settime change process state; the rest reads clocks and formats.
    "time": (
        "altzone",
        "asctime",
        "ctime",
        "daylight",
        "gmtime",
        "localtime",
        "mktime",
        "monotonic",
        "monotonic_ns",
        "perf_counter",
        "perf_counter_ns",
        "process_time",
        "process_time_ns",
        "sleep",
        "strftime",
        "strptime",
        "struct_time",
        "time",
        "time_ns",
        "timezone",
        "tzname",
    ),
    "typing": None,
    "urllib.parse": None,
    # Threat: uuid1/getnode reveal the host's MAC address and may run a subprocess (ifconfig) to find it.
    "uuid": (
        "NAMESPACE_DNS",
        "NAMESPACE_OID",
        "NAMESPACE_URL",
        "NAMESPACE_X500",
        "SafeUUID",
        "UUID",
        "uuid3",
        "uuid4",
        "uuid5",
    ),
    "zoneinfo": None,
}

#: Modules that façade functions import lazily on first use (``time.strptime``, ``datetime.strptime``); imported
#: with the façades so a hardened child (few file descriptors, empty environment) never has to find them on disk.
#: The C code of those functions imports them through the run's ``__import__``, which answers with an empty
#: façade (C code then takes the real module from ``sys.modules``); snippet code cannot name them (the policy
#: refuses module names starting with ``_``, and ``__import__`` itself).
_LAZY_IMPORTS: Final = ("_strptime",)

#: Modules that façade functions import lazily from their own module code (``Counter.most_common`` imports
#: ``heapq``; a missing ``ZoneInfo`` key looks into ``importlib.resources``): imported with the façades for the
#: same reason, never exposed to snippets.
_LAZY_DEPENDENCIES: Final = ("heapq", "importlib.resources")


class Facade:
    """A read-only view of a module's public names; what ``import json`` gives a snippet."""

    __slots__ = ("_attributes", "_label")
    _attributes: Mapping[str, object]
    _label: str

    def __init__(self, label: str, attributes: Mapping[str, object]) -> None:
        object.__setattr__(self, "_label", label)
        object.__setattr__(self, "_attributes", types.MappingProxyType(dict(attributes)))

    def __getattr__(self, name: str) -> Any:
        try:
            return self._attributes[name]
        except KeyError:
            raise AttributeError(f"module {self._label!r} has no attribute {name!r} in snippets") from None

    def __setattr__(self, name: str, value: object) -> None:
        raise TypeError(f"Changing attribute {name!r} of module {self._label!r} is not allowed in snippets.")

    def __delattr__(self, name: str) -> None:
        raise TypeError(f"Deleting attribute {name!r} of module {self._label!r} is not allowed in snippets.")

    def __dir__(self) -> list[str]:
        return sorted(self._attributes)

    @property
    def __name__(self) -> str:  # what a module's __name__ gives; a property, as on modules
        """The module's name, as ``json.__name__`` gives it."""
        return self._label

    def __repr__(self) -> str:
        return f"<module {self._label!r}>"


def facade_values(facade: Facade) -> tuple[object, ...]:
    """Return the values *facade* exposes (so the host can tell which classes a run's façades hand out)."""
    return tuple(object.__getattribute__(facade, "_attributes").values())


def _freeze(value: object) -> object:
    """Return an immutable copy of a mutable module constant (so one run cannot change what the next one sees)."""
    if isinstance(value, list):
        return tuple(value)
    if isinstance(value, set):
        return frozenset(value)
    if isinstance(value, dict):
        return types.MappingProxyType(dict(value))
    return value


def make_facade(
    module: object,
    names: Iterable[str] | None = None,
    *,
    label: str | None = None,
    overrides: Mapping[str, object] | None = None,
) -> Facade:
    """Return a read-only façade of *module*'s public functions, classes and constants.

    Args:
        module: A module (or any object) whose attributes the façade exposes.
        names: The names to expose; ``None`` means ``module.__all__``, or every name not starting with ``_``.
            Module-valued attributes are always left out.
        label: Module name shown in messages (default: ``module.__name__``).
        overrides: Names to expose with a different value (e.g. a brokered client class), or extra names.

    Raises:
        ValueError: A requested name starts with ``_`` or its value is a module, frame or code object.
    """
    label = label or str(getattr(module, "__name__", "module"))
    explicit = names is not None
    if names is None:
        names = getattr(module, "__all__", None) or [name for name in dir(module) if not name.startswith("_")]
    attributes: dict[str, object] = {}
    for name in (*names, *(overrides or {})):
        if name.startswith("_"):
            raise ValueError(f"Façade {label!r} cannot expose {name!r}: names starting with '_' stay private.")
        value = (overrides or {}).get(name, getattr(module, name, None))
        reason = forbidden_reason(value)
        if reason is not None:
            if explicit or (overrides and name in overrides):
                raise ValueError(f"Façade {label!r} cannot expose {name!r}: it is {reason}.")
            continue
        attributes[name] = _freeze(value)
    return Facade(label, attributes)


@functools.cache
def stdlib_facades() -> Mapping[str, Facade]:
    """Return the façades of :data:`STDLIB_MODULES` (built once per process; the zygote builds them before forking).

    Names that take a run's guards (``operator.attrgetter``) are bound to guards that hide nothing here; each run's
    :class:`Importer` rebinds them to its own.
    """
    return types.MappingProxyType(_stdlib_registry())  # type: ignore[arg-type]  # every value is a Facade


@functools.cache
def _stdlib_registry() -> dict[str, object]:
    """The façades of :data:`STDLIB_MODULES` as a plain dict, which each run's :class:`Importer` copies.

    Never changed after it is built (only copied), so every run starts from the same read-only façades; a plain
    dict because copying one is a memory copy, where copying a mapping proxy looks up every key again.
    """
    for lazy in (*_LAZY_IMPORTS, *_LAZY_DEPENDENCIES):
        importlib.import_module(lazy)
    guards = RunGuards.default()
    return {name: stdlib_facade(name, guards) for name in STDLIB_MODULES}


def stdlib_facade(name: str, guards: RunGuards) -> Facade:
    """Build the façade of allowed module *name*, with its replacements bound to *guards*."""
    module = importlib.import_module(name)
    names = STDLIB_MODULES[name]
    chosen = list(names) if names is not None else list(getattr(module, "__all__", None) or _public(module))
    excluded = EXCLUDED.get(name, frozenset())
    overrides = run_overrides(name, guards)
    kept = [
        n
        for n in chosen
        if n not in excluded
        and n not in overrides
        and hasattr(module, n)
        and (names is not None or forbidden_reason(getattr(module, n)) is None)  # __all__ may list a metaclass
    ]
    return make_facade(module, kept, label=name, overrides=overrides)


@functools.cache
def _stdlib_classes() -> frozenset[type]:
    return frozenset(
        value for facade in stdlib_facades().values() for value in facade_values(facade) if isinstance(value, type)
    )


def _public(module: types.ModuleType) -> list[str]:
    return [
        name for name, value in vars(module).items() if not name.startswith("_") and forbidden_reason(value) is None
    ]


_EMPTY: Final = Facade("(internal)", {})


class _Package(Facade):
    """A dotted package (``urllib``, ``twilio``): its registered façade's names plus its allowed submodules."""

    __slots__ = ()


class Importer:
    """The ``__import__`` of a run: allowlisted names only, façades only, ``fromlist`` checked."""

    def __init__(self, modules: Mapping[str, object] | None = None, *, guards: RunGuards | None = None) -> None:
        registry = _stdlib_registry().copy()
        for name, facade in (modules or {}).items():
            if type(facade) is not LazyModule:  # checked when built (_built)
                _check_module(name, facade)
            registry[name] = facade
        self._registry = registry
        self._guards = guards
        self._objects: dict[str, object] = {}

    @functools.cached_property
    def allowed(self) -> tuple[str, ...]:
        """The importable module names, sorted (what a refused import lists)."""
        return tuple(sorted(self._registry))

    def public_classes(self) -> frozenset[type]:
        """Return the classes this run's façades expose (what ``type(x)`` may hand out as itself)."""
        extra = {
            value
            for name in list(self._registry)  # _built replaces values
            if name not in STDLIB_MODULES
            for facade in (self._built(name),)
            if isinstance(facade, Facade)
            for value in facade_values(facade)
            if isinstance(value, type)
        }
        return _stdlib_classes() | extra

    def _built(self, name: str) -> object:
        """Return the registered façade of *name*, building a :class:`LazyModule` now (once per run)."""
        facade = self._registry.get(name)
        if type(facade) is LazyModule:
            facade = facade.build()
            _check_module(name, facade)
            self._registry[name] = facade
        return facade

    def __call__(
        self,
        name: str,
        globals: object = None,  # shadows the builtin: the __import__ signature
        locals: object = None,
        fromlist: Iterable[str] | None = (),
        level: int = 0,
    ) -> object:
        """Import *name* for a snippet, as ``import`` and ``from ... import`` call it."""
        if level:
            raise ImportError("Relative imports are not allowed in snippets.")
        if name in _LAZY_IMPORTS:  # C code of a façade function (datetime.strptime); see _LAZY_IMPORTS
            return _EMPTY
        if type(name) is not str or not self._is_importable(name):
            raise ImportError(
                f"Import of {name!r} is not allowed in snippets. Allowed modules: {', '.join(self.allowed)}."
            )
        if not fromlist:
            return self._object(name.partition(".")[0])
        target = self._object(name)
        for item in fromlist:
            if type(item) is not str or item.startswith("_") or not self._has(target, item):
                raise ImportError(f"cannot import name {item!r} from {name!r} in snippets")
        return target

    def _is_importable(self, name: str) -> bool:
        return is_importable(name, self._registry)

    def _has(self, target: object, item: str) -> bool:
        try:
            value = getattr(target, item)
        except AttributeError:
            return False
        return forbidden_reason(value) is None

    def _object(self, name: str) -> object:
        """Return the façade for *name*, or a package façade when allowed submodules live under it."""
        cached = self._objects.get(name)
        if cached is not None:
            return cached
        prefix = name + "."
        children = {other[len(prefix) :].partition(".")[0] for other in self._registry if other.startswith(prefix)}
        own = self._built(name)
        if own is not None and name in RUN_BOUND and self._guards is not None:
            own = stdlib_facade(name, self._guards)
        if not children:
            result = own
        else:
            attributes = {} if own is None else {n: getattr(own, n) for n in dir(own) if not n.startswith("_")}
            attributes.update({child: self._object(prefix + child) for child in sorted(children)})
            result = _Package(name, attributes)
        self._objects[name] = result
        return result


def _check_module(name: str, facade: object) -> None:
    reason = forbidden_reason(facade)
    if reason is not None:
        raise ValueError(f"Environment module {name!r} must be a façade, not {reason}.")


def is_importable(name: str, allowed: Collection[str]) -> bool:
    """Return whether ``import name`` succeeds with *allowed* modules (a module, or a package of allowed ones)."""
    return name in allowed or any(other.startswith(name + ".") for other in allowed)


def check_imports(source: str, allowed: Collection[str]) -> list[str]:
    """Return ``Line N: ...`` for every import in *source* that the run-time importer would refuse.

    The policy cannot know the modules a host adds (the environment is chosen at run time), so the host calls this
    before saving a snippet: a blocked import is then reported with the compile errors instead of failing later.
    Call it on source that :func:`sandbox.compiler.compile_snippet` accepted.
    """
    listed = ", ".join(sorted(allowed))
    errors: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [node.module]
        else:
            continue
        errors.extend(
            f"Line {node.lineno}: Import of {name!r} is not allowed in snippets. Allowed modules: {listed}."
            for name in names
            if not is_importable(name, allowed)
        )
    return errors
