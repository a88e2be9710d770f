"""The in-process executor: fresh globals per run, captured output, JSON results, errors as data."""

from __future__ import annotations

import datetime

import pytest

from sandbox.compiler import compile_snippet
from sandbox.environment import Environment
from sandbox.errors import EgressDeniedError, QuotaExceededError
from sandbox.executor import execute, run_source
from sandbox.limits import Limits
from sandbox.result import RunError


def test_returns_json_result_with_stdout_logs_and_duration() -> None:
    """A successful run carries the JSON value, printed text, log records and a duration."""
    result = run_source("print('hi')\nlog.info('m', k=[1])\nreturn {'double': event['x'] * 2}", event={"x": 21})
    assert result.ok
    assert result.value == {"double": 42}
    assert result.stdout == "hi\n"
    assert result.logs == ({"level": "info", "message": "m", "fields": {"k": [1]}},)
    assert result.duration_ms > 0


def test_snippet_exception_becomes_snippet_error_with_snippet_only_traceback() -> None:
    """An uncaught exception is reported with its type, message, line and a traceback of snippet lines."""
    result = run_source("def f(x):\n    return 1 / x\n\nreturn f(0)")
    assert result.error == RunError(
        type="SnippetError",
        message="division by zero",
        line=2,
        exception="ZeroDivisionError",
        traceback=(
            "Traceback (most recent call last, snippet lines only):\n"
            "  Line 4, in <snippet>\n    return f(0)\n"
            "  Line 2, in f\n    return 1 / x\n"
            "ZeroDivisionError: division by zero"
        ),
    )


def test_compile_error_is_reported_as_data() -> None:
    """run_source turns a CompileError into the result's error with every message."""
    result = run_source("a = _b_\nc = d.__e__")
    assert result.error is not None
    assert result.error.type == "CompileError"
    assert result.error.line == 1
    assert len(result.error.errors) == 2


def test_recursion_error_is_a_snippet_error() -> None:
    """Unbounded recursion is the snippet's RecursionError, not a crash."""
    result = run_source("def f(n):\n    return f(n + 1)\nreturn f(0)")
    assert result.error is not None
    assert (result.error.type, result.error.exception) == ("SnippetError", "RecursionError")


@pytest.mark.parametrize("error", [EgressDeniedError, QuotaExceededError])
def test_egress_errors_keep_their_type(error: type[Exception]) -> None:
    """A refused host request that the snippet does not catch ends the run with that error type."""

    def refuse() -> None:
        raise error("refused by the host")

    result = run_source("call()\nreturn 1", environment=Environment(names={"call": refuse}))
    assert result.error == RunError(type=error.__name__, message="refused by the host", line=1)


def test_egress_error_can_be_caught_by_the_snippet() -> None:
    """The refusal is an ordinary exception inside the snippet."""

    def refuse() -> None:
        raise EgressDeniedError("no")

    source = "try:\n    call()\nexcept Exception as e:\n    return str(e)"
    assert run_source(source, environment=Environment(names={"call": refuse})).value == "no"


def test_output_cap_fails_the_run_even_when_caught() -> None:
    """Going over output_bytes fails the run; catching the error inside the snippet does not help."""
    source = "try:\n    print('x' * 100)\nexcept Exception:\n    pass\nreturn 1"
    result = run_source(source, limits=Limits(output_bytes=10))
    assert result.error is not None
    assert result.error.type == "OutputLimitExceededError"
    assert result.stdout == "x" * 10


def test_result_cap_and_unserialisable_results() -> None:
    """A result over result_bytes, or without a JSON form, is an error naming the problem."""
    big = run_source("return 'x' * 100", limits=Limits(result_bytes=50))
    assert big.error is not None
    assert big.error.type == "OutputLimitExceededError"
    odd = run_source("return object()")
    assert odd.error is not None
    assert odd.error.message == (
        "The snippet's return value cannot be sent back: A 'object' value has no JSON form; "
        "return dicts, lists, str, numbers, bool or None."
    )
    assert run_source("x = []\nx.append(x)\nreturn x").error is not None  # a cycle


def test_result_converters_apply_by_type() -> None:
    """Environment converters and the default ones (datetime, Decimal) produce JSON primitives."""

    class Markup:
        def xml(self) -> str:
            return "<Response/>"

    environment = Environment(names={"Markup": Markup}, result_converters={Markup: Markup.xml})
    source = "import datetime, decimal\nreturn [Markup(), datetime.date(2026, 1, 2), decimal.Decimal('1.5'), (1, 2)]"
    result = run_source(source, environment=environment)
    assert result.value == ["<Response/>", "2026-01-02", "1.5", [1, 2]]


def test_every_run_gets_fresh_globals() -> None:
    """A global set by one run is gone in the next; the event is copied, not shared."""
    compiled = compile_snippet("global seen\ntry:\n    return seen\nexcept NameError:\n    seen = 1\n    return None")
    event = {"k": [1]}
    for _ in range(2):
        result = execute(compiled, event=event, environment=Environment(), limits=Limits())
        assert result.value is None
    mutated = run_source("event['k'].append(2)\nreturn event", event=event)
    assert mutated.value == {"k": [1, 2]}
    assert event == {"k": [1]}


def test_fresh_event_is_handed_over_without_a_copy() -> None:
    """An event decoded for this run alone (a child's order) reaches the snippet as that very object."""
    event = {"k": [1]}
    compiled = compile_snippet("event['k'].append(2)\nreturn len(event['k'])")
    result = execute(compiled, event=event, environment=Environment(), limits=Limits(), fresh_event=True)
    assert result.value == 2
    assert event == {"k": [1, 2]}


def test_environment_converter_wins_over_the_default_one_for_its_class() -> None:
    """An environment may convert a class the defaults convert (a date) its own way."""
    environment = Environment(result_converters={datetime.date: lambda day: day.strftime("%d/%m/%Y")})
    result = run_source("import datetime\nreturn datetime.date(2026, 1, 2)", environment=environment)
    assert result.value == "02/01/2026"


def test_environment_names_must_be_public_identifiers() -> None:
    """An environment cannot inject a name that would shadow a guard hook."""
    with pytest.raises(ValueError, match="must be identifiers not starting with '_'"):
        run_source("return 1", environment=Environment(names={"_getattr_": getattr}))


def test_broken_exception_message_does_not_crash_the_runner() -> None:
    """An exception whose own __str__ fails is still reported, with a placeholder message."""
    result = run_source("class E(Exception):\n    def __str__(self):\n        return str(self)\nraise E()")
    assert result.error is not None
    assert (result.error.exception, result.error.message) == ("E", "<E whose message could not be printed>")


def test_result_conversion_ignores_subclass_overrides() -> None:
    """Converting the result reads a list subclass's real items, never its own __iter__."""
    result = run_source("class L(list):\n    def __iter__(self):\n        return iter([1])\nreturn L([5, 6])")
    assert result.value == [5, 6]
