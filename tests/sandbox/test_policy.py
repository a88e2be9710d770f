"""The compile-time policy: snippets are function bodies; errors come all at once; limits on size and depth."""

from __future__ import annotations

import hashlib
import marshal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sandbox.compiler import MAX_AST_DEPTH, CompiledSnippet, compile_snippet
from sandbox.errors import CompileError
from sandbox.policy import ENTRY_POINT, READABLE_DUNDERS


def test_snippet_compiles_into_the_entry_point_function() -> None:
    """The body becomes a function named ENTRY_POINT, so ``return`` at the top level is valid."""
    compiled = compile_snippet("return 1")
    namespace: dict[str, object] = {}
    exec(compiled.code, namespace)  # no guards needed: the body touches nothing
    assert ENTRY_POINT in namespace


def test_compile_is_cached_by_source() -> None:
    """The same source (even a different str object) gives the same compiled object; the digest is its sha256."""
    first = compile_snippet("return 'cached'")
    assert compile_snippet("".join(["return ", "'cached'"])) is first
    assert first.digest == hashlib.sha256(b"return 'cached'").hexdigest()


def test_oversize_sources_are_refused_and_never_cached() -> None:
    """A source over the size cap is refused each time and never kept as a cache key (it could be any size)."""
    from sandbox import compiler

    oversize = "#" * (compiler.MAX_SOURCE_BYTES + 1)
    for _ in range(2):
        with pytest.raises(CompileError, match="the limit is"):
            compile_snippet(oversize)
    assert oversize not in compiler._cache


def test_compiled_snippet_round_trips_through_bytes() -> None:
    """to_bytes/from_bytes carry the marshalled code to a child unchanged."""
    compiled = compile_snippet("x = 2\nreturn x * 21")
    again = CompiledSnippet.from_bytes(compiled.to_bytes())
    assert (again.source, again.digest, again.code) == (compiled.source, compiled.digest, compiled.code)
    assert marshal.loads(marshal.dumps(compiled.code)) == compiled.code


def test_from_bytes_refuses_other_data() -> None:
    """Bytes that do not hold a compiled snippet are refused."""
    with pytest.raises(ValueError, match="Not a compiled snippet"):
        CompiledSnippet.from_bytes(marshal.dumps(("a", "b", "c")))


def test_every_policy_error_is_reported_at_once() -> None:
    """All violations come back together, each with its line."""
    with pytest.raises(CompileError) as info:
        compile_snippet("a = x.__dict__\nb = _write_\nimport os as __os__")
    assert info.value.errors == (
        "Line 1: Attribute '__dict__' is not allowed in snippets: Python's special attributes reach the interpreter's "
        "internals; only __name__, __qualname__, __doc__, __class__, __cause__, __context__ and the methods a class "
        "may define can be read.",
        'Line 2: "_write_" cannot be used as a name in snippets: names that start and end with "_" are reserved for '
        'the sandbox; use "write" instead.',
        'Line 3: "__os__" cannot be used as a name in snippets: names that start and end with "__" belong to Python '
        "itself; choose another name.",
    )


def test_syntax_error_names_its_line() -> None:
    """A syntax error is a CompileError with RestrictedPython's message format."""
    with pytest.raises(CompileError) as info:
        compile_snippet("x = 1\nif x\n    pass")
    assert info.value.errors == ("Line 2: SyntaxError: expected ':' at statement: 'if x'",)


def test_rejected_source_is_cached_too() -> None:
    """A rejected source raises the same errors again (from the cache)."""
    for _ in range(2):
        with pytest.raises(CompileError, match="reserved for the sandbox"):
            compile_snippet("_x_ = 1")


def test_depth_limit_is_an_error_not_a_crash() -> None:
    """An AST deeper than MAX_AST_DEPTH is refused with a message; just below it compiles."""
    compile_snippet("return " + "[" * (MAX_AST_DEPTH - 5) + "]" * (MAX_AST_DEPTH - 5))
    with pytest.raises(CompileError, match="nests more than"):
        compile_snippet("return " + "[" * (MAX_AST_DEPTH + 5) + "]" * (MAX_AST_DEPTH + 5))


def test_source_must_be_str() -> None:
    """compile_snippet refuses bytes (a programming error of the host, not the snippet's)."""
    with pytest.raises(TypeError, match="must be str"):
        compile_snippet(b"return 1")  # type: ignore[arg-type]  # the point of the test


@pytest.mark.parametrize(
    "source",
    [
        pytest.param(
            "class C:\n    def __init__(self):\n        self.n = 0\n    def inc(self):\n        self.n += 1", id="attr"
        ),
        pytest.param("d = {}\nd['k'] = 0\nd['k'] += 1", id="subscript"),
        pytest.param("def f():\n    n = 0\n    def g():\n        nonlocal n\n        n += 1", id="nonlocal"),
        pytest.param(
            "class C:\n    def __repr__(self):\n        return 'c'\n    def __len__(self):\n        return 0",
            id="dunders",
        ),
    ],
)
def test_harmless_syntax_compiles(source: str) -> None:
    """Syntax that stock RestrictedPython refuses but that cannot reach anything compiles under our policy."""
    assert compile_snippet(source).code is not None


def test_augmented_slice_assignment_is_refused_with_advice() -> None:
    """``xs[1:2] += ...`` is refused with a message saying what to do instead."""
    with pytest.raises(CompileError) as info:
        compile_snippet("xs = [1]\nxs[0:1] += [2]")
    assert info.value.errors == (
        "Line 2: Augmented assignment of slices is not allowed in snippets; assign the new slice instead "
        "(xs[1:3] = xs[1:3] + more).",
    )


def test_augmented_assignment_checks_the_attribute_name() -> None:
    """The rewrite keeps RestrictedPython's name checks: ``x.__dict__ += ...`` is refused."""
    with pytest.raises(CompileError, match="Changing attribute '__dict__' is not allowed"):
        compile_snippet("x.__dict__ += 1")


@given(st.from_regex(r"_[A-Za-z0-9_]{0,12}_", fullmatch=True))
@settings(max_examples=60, deadline=None)
def test_every_sandbox_shaped_name_is_rejected(name: str) -> None:
    """Any name starting and ending with '_' (the guard hooks' shape) is a compile error, wherever it is bound."""
    for source in (f"{name} = 1", f"return {name}", f"def f({name}):\n    pass", f"import json as {name}"):
        with pytest.raises(CompileError):
            compile_snippet(source)


@given(st.from_regex(r"__[A-Za-z0-9_]{1,12}__", fullmatch=True).filter(lambda name: name not in READABLE_DUNDERS))
@settings(max_examples=60, deadline=None)
def test_every_other_dunder_attribute_is_rejected(name: str) -> None:
    """A dunder attribute outside READABLE_DUNDERS is a compile error to read; any dunder is one to write."""
    for source in (f"return event.{name}", f"event.{name} = 1", "event.__class__ = 1", "del event.__doc__"):
        with pytest.raises(CompileError):
            compile_snippet(source)
