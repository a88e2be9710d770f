"""Warm-up runs: declared next to an environment, made by the zygote and by each spare child, never by a host."""

from __future__ import annotations

import time

import pytest

from sandbox import Sandbox, child
from sandbox.child import DEFERRED_WARM_UP_SECONDS
from sandbox.environment import WarmUpRun, load_environment_factory, load_warm_up_runs
from tests.sandbox import warm_up_hooks

ENVIRONMENT = "tests.sandbox.warm_up_hooks:environment"


def test_zygote_and_spare_child_both_warm_up_with_canned_answers() -> None:
    """A run sees two notes: the zygote's (before the fork) and its own child's, each with the canned answer."""
    with Sandbox(environment=ENVIRONMENT) as sandbox:
        sandbox.run("return 1")
        deadline = time.monotonic() + 10
        while True:  # a spare that got its order while warming up skips the rest; an idle one has finished
            time.sleep(0.2)
            result = sandbox.run("return notes()")
            assert result.ok, result.error
            if len(result.value) == 2 or time.monotonic() > deadline:
                break

        zygote_note, child_note = result.value
        assert zygote_note == [sandbox.zygote_pid, {"hi": [1]}, "EgressDeniedError", False]
        assert child_note[1:] == [{"hi": [1]}, "EgressDeniedError", True]


def test_warm_up_stops_when_the_order_is_already_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    """A child whose order is already there skips the warm-up runs (they would only delay it)."""
    monkeypatch.setattr(warm_up_hooks, "NOTES", [])
    factory = load_environment_factory(ENVIRONMENT)
    child.prepare_warm_up(load_warm_up_runs(ENVIRONMENT))
    try:
        child.warm_up(factory, order_waiting=lambda: True)
        assert warm_up_hooks.NOTES == []

        child.warm_up(factory, order_waiting=lambda: False)
        assert [answer for _, answer, _ in warm_up_hooks.NOTES] == [{"hi": [1]}]
    finally:
        child.prepare_warm_up()


def test_environment_without_warm_up_runs_has_none() -> None:
    """An environment module that lists no runs, and no environment at all, give an empty tuple."""
    assert load_warm_up_runs("tests.sandbox.hooks:echo_environment") == ()
    assert load_warm_up_runs(None) == ()
    assert load_warm_up_runs(ENVIRONMENT) == warm_up_hooks.WARM_UP_RUNS


@pytest.mark.parametrize("runs", [["return 1"], WarmUpRun(source="return 1"), [WarmUpRun("return 1"), None]])
def test_malformed_warm_up_runs_are_refused(monkeypatch: pytest.MonkeyPatch, runs: object) -> None:
    """WARM_UP_RUNS must be a sequence of WarmUpRun; anything else is a ValueError naming the attribute."""
    monkeypatch.setattr(warm_up_hooks, "WARM_UP_RUNS", runs)
    with pytest.raises(ValueError, match=r"warm_up_hooks\.WARM_UP_RUNS must be a sequence of"):
        load_warm_up_runs(ENVIRONMENT)


def test_malformed_warm_up_runs_fail_the_zygote_start(monkeypatch: pytest.MonkeyPatch) -> None:
    """The zygote imports the module itself, so the check happens there too: start() names the problem."""
    from sandbox import WorkerCrashedError

    with pytest.raises(WorkerCrashedError, match="WARM_UP_RUNS"):
        Sandbox(environment="tests.sandbox.bad_warm_up_hooks:environment").start()


def test_spare_forked_during_a_run_warms_up_once_no_order_comes() -> None:
    """A spare forked while a run is in flight defers its warm-up, and makes it once the host is quiet again."""
    with Sandbox(environment=ENVIRONMENT, spare_children=1) as sandbox:
        time.sleep(0.3)
        # Taking the only spare forks its replacement at once, while this run is in flight: that one defers.
        assert sandbox.run("return 1").ok
        time.sleep(DEFERRED_WARM_UP_SECONDS + 0.4)

        result = sandbox.run("return notes()")

        assert result.ok, result.error
        assert [note[3] for note in result.value] == [False, True]  # the zygote's note, then its own
