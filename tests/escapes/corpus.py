"""Checks shared by the escape corpora: each case ends in its one expected error, and a corpus keeps its size."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sandbox.result import RunResult

#: What stops a case: ``("CompileError", "Line N: ...")`` or ``(exception type, exact message)``.
Expected = tuple[str, str]


def assert_refused(result: RunResult, expected: Expected) -> None:
    """Fail unless *result* is the expected compile error, or a SnippetError with the exact exception and message."""
    kind, message = expected
    assert not result.ok
    assert result.value is None
    error = result.error
    assert error is not None
    if kind == "CompileError":
        assert error.type == "CompileError"
        assert message in error.errors
    else:
        assert (error.type, error.exception, error.message) == ("SnippetError", kind, message)


def assert_corpus_size(cases: Sequence[Any], minimum: int) -> None:
    """Fail unless the pytest params in *cases* have distinct ids and there are at least *minimum* of them."""
    ids = [case.id for case in cases]
    assert len(ids) == len(set(ids))
    assert len(ids) >= minimum
