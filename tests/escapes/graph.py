"""Walk what a snippet can reach from an object through the attribute names the ``_getattr_`` guard allows.

The walk reads the raw values of public attributes (it does not apply the guard's own value check), so it tests
the façades and hidden-attribute policies as an independent layer: a module found here is a hole even if the guard
would still refuse it at run time. Private and dunder names are walked wherever the guard itself allows them (the
snippet's own objects, ``__class__``, ``__name__``, the dunder methods), with the values the guard hands out.

Reusable by every façade's tests (stdlib here; twilio in tests/escapes/test_twilio_*.py)::

    from tests.escapes.graph import assert_no_escape_reachable
    assert_no_escape_reachable(facade, hidden={Client: frozenset({"password"})})
"""

from __future__ import annotations

import builtins
import sys
import types
from collections.abc import Callable, Mapping

from RestrictedPython.transformer import INSPECT_ATTRIBUTES

from sandbox.builtins import GUARDED_TYPES
from sandbox.guards import REFUSED_ATTRIBUTES, HiddenAttributes, make_class_of, make_getattr, make_writable
from sandbox.imports import Importer

#: Values that are never walked further: their public attributes are methods of immutable primitives.
_LEAVES = (str, bytes, int, float, complex, bool, type(None))


def _escape_kind(value: object, module_namespaces: set[int]) -> str | None:
    if isinstance(value, types.ModuleType):
        return f"module {value.__name__!r}"
    if isinstance(value, types.FrameType | types.CodeType | types.TracebackType):
        return type(value).__name__
    if value is builtins.__dict__ or value is builtins:
        return "builtins"
    if isinstance(value, dict) and id(value) in module_namespaces:
        return "a module's globals"
    if isinstance(value, type) and issubclass(value, BaseException) and not issubclass(value, Exception):
        return f"class {value.__name__}"
    return None


def reachable_escapes(
    root: object, *, depth: int = 6, hidden: Mapping[type, frozenset[str]] | None = None
) -> tuple[list[str], int]:
    """Return (paths that reach a module/frame/code/builtins/globals, number of objects visited)."""
    policy = HiddenAttributes(hidden or {})
    guard = make_getattr(policy, make_class_of(GUARDED_TYPES, Importer().public_classes), make_writable(policy))
    module_namespaces = {id(vars(module)) for module in list(sys.modules.values())}
    seen: set[int] = {id(root)}
    keep_alive: list[object] = [root]  # ids stay unique while we hold every visited object
    frontier: list[tuple[str, object]] = [("root", root)]
    escapes: list[str] = []
    for _ in range(depth):
        next_frontier: list[tuple[str, object]] = []
        for path, obj in frontier:
            for name, value in _children(obj, policy, guard):
                child_path = f"{path}.{name}"
                kind = _escape_kind(value, module_namespaces)
                if kind is not None:
                    escapes.append(f"{child_path} -> {kind}")
                    continue
                if id(value) in seen or isinstance(value, _LEAVES):
                    continue
                seen.add(id(value))
                keep_alive.append(value)
                next_frontier.append((child_path, value))
        frontier = next_frontier
    return escapes, len(seen)


def _children(
    obj: object, policy: HiddenAttributes, guard: Callable[[object, str], object]
) -> list[tuple[str, object]]:
    """Attributes whose names the guard allows, plus the values of read-only mappings (façade constants)."""
    children: list[tuple[str, object]] = []
    try:
        names = dir(obj)
    except Exception:  # noqa: BLE001  # an object that cannot list itself has nothing to walk
        names = []
    for name in names:
        if name.startswith("_"):
            try:
                children.append((name, guard(obj, name)))
            except Exception:  # noqa: BLE001  # refused or failing: not reachable
                continue
            continue
        if name in INSPECT_ATTRIBUTES or name in REFUSED_ATTRIBUTES:
            continue
        if name in policy.names_for(obj):
            continue
        try:
            value = getattr(obj, name)
        except Exception:  # noqa: BLE001  # failing attributes are not reachable
            continue
        children.append((name, value))
    if isinstance(obj, types.MappingProxyType | tuple | frozenset):
        items = obj.items() if isinstance(obj, types.MappingProxyType) else enumerate(obj)
        children.extend((f"[{key!r}]", value) for key, value in items)
    return children


def assert_no_escape_reachable(
    obj: object, *, depth: int = 6, hidden: Mapping[type, frozenset[str]] | None = None
) -> int:
    """Fail if a module, frame, code object, builtins or real globals is reachable from *obj*; return objects seen."""
    escapes, visited = reachable_escapes(obj, depth=depth, hidden=hidden)
    assert not escapes, f"{len(escapes)} escape paths, e.g. {escapes[:5]}"
    return visited
