"""CPython is the oracle: everyday snippets give the same result in the sandbox as in plain Python.

Each snippet in ``oracle_corpus.txt`` runs through the sandbox's language wall (policy, guards, façades,
in-process, one test per snippet), through the whole runtime (one warm ``Sandbox`` for the corpus: a hardened child
per run), and as the body of a plain CPython function ``_snippet_(event)`` defined in a module named like the
sandbox's. The results must agree: the same JSON value and printed output, or the same exception type. Nothing is
written by hand: the comparison is the test.
"""

from __future__ import annotations

import contextlib
import copy
import decimal
import io
import textwrap
from pathlib import Path
from typing import Any

import pytest

from sandbox import Limits, Sandbox
from sandbox.executor import SNIPPET_MODULE, run_source
from sandbox.output import to_json_value
from sandbox.policy import ENTRY_POINT

CORPUS_FILE = Path(__file__).with_name("oracle_corpus.txt")

EVENT = {"n": 21, "text": "hi", "items": [1, 2, 3]}


def load_corpus() -> list[tuple[str, str]]:
    """Return ``(name, source)`` for every ``### name`` section of the corpus file."""
    snippets: list[tuple[str, str]] = []
    for block in CORPUS_FILE.read_text(encoding="utf-8").split("\n### ")[1:]:
        name, _, source = block.partition("\n")
        snippets.append((name.strip(), source.rstrip("\n")))
    return snippets


CORPUS = load_corpus()

Outcome = tuple[str, Any, str]


def run_in_cpython(source: str, event: Any) -> Outcome:
    """Run *source* as a plain function's body: ``("value", json, stdout)`` or ``("error", type, stdout)``."""
    code = compile(
        f"def {ENTRY_POINT}(event):\n{textwrap.indent(source, '    ')}\n", "<oracle>", "exec", dont_inherit=True
    )
    namespace: dict[str, Any] = {"__name__": SNIPPET_MODULE}
    exec(code, namespace)  # the oracle: our own corpus in plain CPython
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout), decimal.localcontext(decimal.Context()):
        try:
            value = namespace[ENTRY_POINT](event)
        except Exception as exc:  # noqa: BLE001  # the exception type is the outcome
            return ("error", type(exc).__name__, stdout.getvalue())
    try:
        return ("value", to_json_value(value), stdout.getvalue())
    except (TypeError, ValueError) as exc:
        return ("error", type(exc).__name__, stdout.getvalue())


def run_in_sandbox(source: str, event: Any, sandbox: Sandbox | None = None) -> Outcome:
    """Run *source* in-process (or in *sandbox*'s child); the same outcome shape as :func:`run_in_cpython`."""
    if sandbox is None:
        result = run_source(source, event=event)
    else:  # generous limits: a loaded CI machine must not turn a slow run into a mismatch
        result = sandbox.run(source, event=event, limits=Limits(wall_seconds=60, cpu_seconds=60))
    if result.ok:
        return ("value", result.value, result.stdout)
    error = result.error
    assert error is not None
    assert error.type == "SnippetError", f"refused by the sandbox: {error.type}: {error.message}"
    return ("error", error.exception, result.stdout)


@pytest.mark.parametrize(("name", "source"), CORPUS, ids=[name for name, _ in CORPUS])
def test_snippet_behaves_as_in_cpython(name: str, source: str) -> None:
    """The sandbox's outcome (value and output, or exception type) equals CPython's."""
    expected = run_in_cpython(source, copy.deepcopy(EVENT))
    assert run_in_sandbox(source, copy.deepcopy(EVENT)) == expected


def test_corpus_behaves_as_in_cpython_in_isolated_runs() -> None:
    """The whole corpus through one warm, hardened sandbox (a child process per run) agrees with CPython too."""
    mismatches: list[str] = []
    with Sandbox() as sandbox:
        for name, source in CORPUS:
            expected = run_in_cpython(source, copy.deepcopy(EVENT))
            try:
                actual = run_in_sandbox(source, copy.deepcopy(EVENT), sandbox)
            except AssertionError as exc:
                actual = ("refused", str(exc), "")
            if actual != expected:
                mismatches.append(f"{name}: sandbox {actual!r} != CPython {expected!r}")
    assert mismatches == []


def test_corpus_is_large_and_varied() -> None:
    """At least 150 distinct snippets, and both outcomes (values and exceptions) are represented."""
    names = [name for name, _ in CORPUS]
    assert len(names) == len(set(names))
    assert len(names) >= 150
    outcomes = {run_in_cpython(source, copy.deepcopy(EVENT))[0] for _, source in CORPUS}
    assert outcomes == {"value", "error"}
