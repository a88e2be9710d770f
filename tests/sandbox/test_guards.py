"""Run-time guards: each hook has a policy, and refusals are ordinary Python exceptions."""

from __future__ import annotations

import collections
import gc
import json
import weakref

import pytest

from sandbox.guards import (
    HiddenAttributes,
    ReadOnly,
    build_class,
    forbidden_reason,
    guarded_apply,
    guarded_getitem,
    guarded_iter,
    guarded_unpack_sequence,
    make_getattr,
    make_inplacevar,
    make_write,
)


class Secretive:
    """Stands in for a capability object whose transport internals an environment hides."""

    def __init__(self) -> None:
        self.password = "s3cret"
        self.name = "main"

    def request(self) -> str:
        return "sent"


HIDDEN = HiddenAttributes({Secretive: frozenset({"password", "request"})})
getattr_guard = make_getattr(HIDDEN)


def test_getattr_returns_public_values() -> None:
    """Ordinary attribute reads work."""
    assert getattr_guard(Secretive(), "name") == "main"
    assert getattr_guard("abc", "upper")() == "ABC"  # type: ignore[operator]  # the guard returns object


@pytest.mark.parametrize(
    ("obj", "name", "message"),
    [
        pytest.param(
            len,
            "__globals__",
            "Attribute '__globals__' is not allowed in snippets: Python's special attributes reach the interpreter's "
            "internals; only __name__, __qualname__, __doc__, __class__, __cause__, __context__ and the methods a "
            "class may define can be read.",
            id="dunder",
        ),
        pytest.param(
            1,
            "gi_frame",
            "Attribute 'gi_frame' is not allowed in snippets: it exposes the interpreter's frames and code.",
            id="inspect",
        ),
        pytest.param(json, "dumps", "Reading attributes of module 'json' is not allowed in snippets.", id="module"),
        pytest.param(
            Secretive(),
            "password",
            "Attribute 'password' of 'Secretive' objects is not available in snippets.",
            id="hidden",
        ),
        pytest.param(
            Secretive,
            "request",
            "Attribute 'request' of 'type' objects is not available in snippets.",
            id="hidden-unbound",
        ),
        pytest.param(
            AttributeError("x"),
            "obj",
            "Attribute 'obj' of 'AttributeError' objects is not available in snippets.",
            id="attributeerror-obj",
        ),
        pytest.param(
            int,
            "mro",
            "Attribute 'mro' is not allowed in snippets: it walks up to classes snippets must not reach.",
            id="mro",
        ),
        pytest.param(1, "nope", "'int' object has no attribute 'nope'", id="missing"),
    ],
)
def test_getattr_refuses(obj: object, name: str, message: str) -> None:
    """Refused reads raise AttributeError with a message that says why."""
    with pytest.raises(AttributeError) as info:
        getattr_guard(obj, name)
    assert str(info.value) == message


def test_getattr_error_never_carries_the_object() -> None:
    """The AttributeError a snippet sees is fresh: its ``obj`` is not the object looked at (CVE-2024-47532)."""
    target = object()
    with pytest.raises(AttributeError) as info:
        getattr_guard(target, "nope")
    assert info.value.obj is not target


def test_getattr_requires_an_exact_str_name() -> None:
    """A str subclass cannot lie about its prefix."""

    class Liar(str):
        def startswith(self, *args: object, **kwargs: object) -> bool:
            return False

    with pytest.raises(TypeError, match="Attribute names must be str"):
        getattr_guard(1, Liar("__class__"))


def test_format_goes_through_the_guards() -> None:
    """str.format resolves ``{0.attr}`` and ``{0[key]}`` with the guards, and plain fields as usual."""
    fmt = getattr_guard("{0.name}/{1[k]}/{2:>3}", "format")
    assert fmt(Secretive(), {"k": "v"}, 7) == "main/v/  7"  # type: ignore[operator]  # a callable
    with pytest.raises(AttributeError, match="'password' of 'Secretive'"):
        getattr_guard("{0.password}", "format")(Secretive())  # type: ignore[operator]


def test_getitem_refuses_forbidden_items() -> None:
    """Items that are modules are refused; everything else is returned."""
    assert guarded_getitem({"a": 1}, "a") == 1
    with pytest.raises(TypeError, match="Item 0 would give module 'json'"):
        guarded_getitem([json], 0)


def test_iteration_checks_every_item() -> None:
    """The iteration guard passes ordinary items and refuses a module in any position."""
    assert list(guarded_iter([1, "a"])) == [1, "a"]
    assert list(guarded_iter("ab")) == ["a", "b"]
    with pytest.raises(TypeError, match="Iterating would give module 'json'"):
        list(guarded_iter([1, json]))
    with pytest.raises(TypeError, match="Iterating over this value would give module 'json'"):
        guarded_iter(json)


def test_unpack_sequence_guards_nested_parts() -> None:
    """Nested unpacking goes through the guard at every level."""
    spec = {"min_len": 2, "childs": ((1, {"min_len": 2, "childs": ()}),)}
    assert guarded_unpack_sequence([1, (2, 3)], spec) == [1, [2, 3]]
    with pytest.raises(TypeError):
        guarded_unpack_sequence([1, (2, json)], spec)


def test_write_allows_containers_and_snippet_objects_only() -> None:
    """Plain containers and snippet classes are writable; any other object is wrapped read-only."""
    write = make_write(HIDDEN)
    data: dict[str, int] = {}
    assert write(data) is data
    snippet_class = build_class("Thing", (), {"__module__": "snippet", "__qualname__": "Thing"})
    thing = snippet_class()
    assert write(thing) is thing
    wrapped = write(Secretive())
    assert isinstance(wrapped, ReadOnly)
    with pytest.raises(TypeError, match="Changing attribute 'name' of a 'Secretive' object is not allowed"):
        wrapped.name = "x"
    with pytest.raises(TypeError, match="Changing items of a 'tuple' object"):
        write((1,))[0] = 2  # type: ignore[index]  # ReadOnly refuses item writes


def test_write_ignores_abc_registration() -> None:
    """A class registered as a virtual UserDict is still read-only: writability follows the real MRO."""

    class Host:
        pass

    collections.UserDict.register(Host)
    assert isinstance(Host(), collections.UserDict)
    assert isinstance(make_write(HIDDEN)(Host()), ReadOnly)


def test_snippet_subclass_of_a_hidden_type_stays_read_only() -> None:
    """Subclassing a capability class does not make its hidden attributes writable."""
    subclass = build_class("Mine", (Secretive,), {"__module__": "snippet", "__qualname__": "Mine"})
    assert isinstance(make_write(HIDDEN)(subclass()), ReadOnly)


def test_inplacevar_mutates_only_writable_values() -> None:
    """``+=`` extends a list in place, and falls back to the plain operator for everything else."""
    inplace = make_inplacevar(make_write(HIDDEN))
    items = [1]
    assert inplace("+=", items, [2]) is items
    assert items == [1, 2]
    assert inplace("*=", 3, 4) == 12
    assert inplace("+=", (1,), (2,)) == (1, 2)


def test_apply_refuses_private_keywords_and_forbidden_arguments() -> None:
    """Calls with ``**kwargs`` cannot pass private keywords or modules."""
    assert guarded_apply(dict, a=1) == {"a": 1}
    private = {"_x": 1}
    with pytest.raises(TypeError, match="Keyword argument '_x'"):
        guarded_apply(dict, **private)
    with pytest.raises(TypeError, match="module 'json'"):
        guarded_apply(print, json)


@pytest.mark.parametrize(
    ("bases", "namespace", "message"),
    [
        pytest.param((type,), {}, "Metaclasses are not allowed in snippets.", id="metaclass"),
        pytest.param((KeyboardInterrupt,), {}, "Subclassing 'KeyboardInterrupt' is not allowed", id="base-exception"),
        pytest.param(
            (), {"__getattr__": len}, "Class attribute '__getattr__' is not allowed in snippets.", id="dunder"
        ),
    ],
)
def test_build_class_refuses(bases: tuple[type, ...], namespace: dict[str, object], message: str) -> None:
    """The ``__metaclass__`` hook builds plain classes only."""
    with pytest.raises(TypeError, match=message):
        build_class("X", bases, {"__module__": "snippet", **namespace})


def test_build_class_refuses_keywords() -> None:
    """Class keywords (other metaclass arguments) are refused."""
    with pytest.raises(TypeError, match="Class keywords"):
        build_class("X", (), {}, flag=True)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (json, "module 'json'"),
        (type, "the 'type' class"),
        (SystemExit, "the 'SystemExit' class"),
        ((lambda: 0).__code__, "a code object"),
    ],
)
def test_forbidden_values_are_named(value: object, reason: str) -> None:
    """forbidden_reason says what a refused value is."""
    assert forbidden_reason(value) == reason


def test_ordinary_values_are_not_forbidden() -> None:
    """Everyday values, classes and exceptions pass."""
    assert [forbidden_reason(v) for v in (1, "a", [json.dumps], ValueError, dict)] == [None] * 5


def test_hidden_attributes_are_shared_per_mapping() -> None:
    """Runs of one environment share one HiddenAttributes (answers computed once); another mapping gets its own."""
    mapping: dict[type, frozenset[str]] = {Secretive: frozenset({"password"})}
    shared = HiddenAttributes.shared(mapping)
    assert HiddenAttributes.shared(mapping) is shared
    other = HiddenAttributes.shared({Secretive: frozenset({"request"})})
    assert other is not shared
    assert other.names_for(Secretive()) == {"request"}
    assert shared.names_for(Secretive()) == {"password"}


def test_hidden_attributes_keep_no_run_class_alive() -> None:
    """A class made during a run (a snippet's own, a subclass of a host class) dies with the run, answer or not."""
    hidden = HiddenAttributes.shared({Secretive: frozenset({"password"})})

    class RunSubclass(Secretive):
        pass

    assert hidden.names_for(RunSubclass()) == {"password"}
    assert hidden.names_for(RunSubclass) == {"password"}
    gone = weakref.ref(RunSubclass)
    del RunSubclass
    gc.collect()
    assert gone() is None
