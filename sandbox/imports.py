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

from sandbox.guards import forbidden_reason

#: The standard-library modules a snippet may import (DESIGN §3), name -> the names its façade exposes
#: (``None``: the module's ``__all__``, or every public name when it has none), minus ``_EXCLUDED``.
STDLIB_MODULES: Final[Mapping[str, tuple[str, ...] | None]] = {
    "base64": None,
    "collections": None,
    "datetime": None,
    "decimal": None,
    "hashlib": None,
    "hmac": ("HMAC", "compare_digest", "digest", "digest_size", "new"),
    "html": None,
    "itertools": None,
    "json": None,
    "math": None,
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

#: Public names left out of façades built from ``__all__``, each with its threat.
_EXCLUDED: Final[Mapping[str, frozenset[str]]] = {
    "decimal": frozenset({"setcontext", "DefaultContext"}),  # process-wide decimal defaults shared by later runs
    "zoneinfo": frozenset({"reset_tzpath"}),  # changes where every later ZoneInfo is read from
}


#: Modules that façade functions import lazily on first use (``time.strptime``, ``datetime.strptime``); imported
#: with the façades so a hardened child (few file descriptors, empty environment) never has to find them on disk.
_LAZY_IMPORTS: Final = ("_strptime",)


class Facade:
    """A read-only view of a module's public names; what ``import json`` gives a snippet."""

    __slots__ = ("_attributes", "_label")

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

    def __repr__(self) -> str:
        return f"<module {self._label!r}>"


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
    """Return the façades of :data:`STDLIB_MODULES` (built once per process; the zygote builds them before forking)."""
    for lazy in _LAZY_IMPORTS:
        importlib.import_module(lazy)
    facades: dict[str, Facade] = {}
    for name, names in STDLIB_MODULES.items():
        module = importlib.import_module(name)
        chosen = list(names) if names is not None else list(getattr(module, "__all__", None) or _public(module))
        excluded = _EXCLUDED.get(name, frozenset())
        facades[name] = make_facade(module, [n for n in chosen if n not in excluded and hasattr(module, n)], label=name)
    return types.MappingProxyType(facades)


def _public(module: types.ModuleType) -> list[str]:
    return [
        name for name, value in vars(module).items() if not name.startswith("_") and forbidden_reason(value) is None
    ]


class _Package(Facade):
    """A dotted package (``urllib``, ``twilio``): its registered façade's names plus its allowed submodules."""

    __slots__ = ()


class Importer:
    """The ``__import__`` of a run: allowlisted names only, façades only, ``fromlist`` checked."""

    def __init__(self, modules: Mapping[str, object] | None = None) -> None:
        registry: dict[str, object] = dict(stdlib_facades())
        for name, facade in (modules or {}).items():
            reason = forbidden_reason(facade)
            if reason is not None:
                raise ValueError(f"Environment module {name!r} must be a façade, not {reason}.")
            registry[name] = facade
        self._registry = registry
        self._objects: dict[str, object] = {}
        self.allowed: tuple[str, ...] = tuple(sorted(registry))

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
        own = self._registry.get(name)
        if not children:
            result = own
        else:
            attributes = {} if own is None else {n: getattr(own, n) for n in dir(own) if not n.startswith("_")}
            attributes.update({child: self._object(prefix + child) for child in sorted(children)})
            result = _Package(name, attributes)
        self._objects[name] = result
        return result


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
