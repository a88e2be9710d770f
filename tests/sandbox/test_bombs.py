"""Resource bombs: each ends in its own specific error, and the sandbox's next run still works."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from sandbox import Limits, Sandbox
from tests.sandbox.hooks import ENVIRONMENT

#: Short limits keep the suite fast; wall 2 s > CPU 1 s so the CPU limit shows as its own failure mode.
LIMITS = Limits(wall_seconds=2, cpu_seconds=5, memory_bytes=64 * 1024 * 1024, output_bytes=64 * 1024)


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    """One warm sandbox (with the test hooks) for the whole module."""
    with Sandbox(environment=ENVIRONMENT) as sandbox:
        yield sandbox


def assert_still_works(sandbox: Sandbox) -> None:
    result = sandbox.run("return event['x'] * 2", event={"x": 21})
    assert (result.ok, result.value) == (True, 42)


BUSY_LOOP_IN_TRY = """
while True:
    try:
        while True:
            pass
    except Exception:
        pass
    finally:
        while True:
            pass
"""


@pytest.mark.parametrize(
    ("source", "error_type"),
    [
        pytest.param("while True:\n    pass", "TimeLimitExceededError", id="busy-loop"),
        pytest.param(BUSY_LOOP_IN_TRY, "TimeLimitExceededError", id="busy-loop-in-try-finally"),
        pytest.param("return 10**10**10", "TimeLimitExceededError", id="huge-power"),
        pytest.param(
            "import re\nreturn bool(re.match(r'(a+)+$', 'a' * 64 + 'b'))", "TimeLimitExceededError", id="regex"
        ),
        pytest.param("return 'a' * 10**10", "MemoryLimitExceededError", id="string-repeat"),
        pytest.param("x = [0] * 10**9\nreturn len(x)", "MemoryLimitExceededError", id="list-repeat"),
        pytest.param(
            "x = [i for i in range(10**9)]\nreturn len(x)", "MemoryLimitExceededError", id="comprehension-ramp"
        ),
        pytest.param("x = 'a'\nwhile True:\n    x = x + x", "MemoryLimitExceededError", id="doubling-ramp"),
        pytest.param("while True:\n    print('x' * 1000)", "OutputLimitExceededError", id="print-flood"),
        pytest.param("return ['x' * 1000] * 10**4", "OutputLimitExceededError", id="huge-result"),
    ],
)
def test_bomb_ends_in_its_error_and_next_run_works(sandbox: Sandbox, source: str, error_type: str) -> None:
    """A CPU, memory, regex or output bomb is stopped with the error naming its limit; the next run is normal."""
    result = sandbox.run(source, limits=LIMITS.replace(result_bytes=64 * 1024))

    assert result.ok is False
    assert result.error is not None
    assert result.error.type == error_type
    assert_still_works(sandbox)


def test_wall_clock_kill_comes_within_a_generous_bound(sandbox: Sandbox) -> None:
    """A busy loop with wall_seconds=1 is reported as TimeLimitExceededError well within 5 s."""
    started = time.monotonic()
    result = sandbox.run("while True:\n    pass", limits=LIMITS.replace(wall_seconds=1))

    assert result.error is not None
    assert result.error.type == "TimeLimitExceededError"
    assert "wall-clock limit of 1 s" in result.error.message
    assert time.monotonic() - started < 5


def test_cpu_limit_ends_a_busy_loop_before_the_wall_clock(sandbox: Sandbox) -> None:
    """RLIMIT_CPU (SIGXCPU) stops a busy loop when the CPU limit is shorter than the wall-clock limit."""
    result = sandbox.run("while True:\n    pass", limits=LIMITS.replace(cpu_seconds=1, wall_seconds=30))

    assert result.error is not None
    assert result.error.type == "TimeLimitExceededError"
    assert "CPU limit of 1 s" in result.error.message
    assert_still_works(sandbox)


def test_deep_recursion_is_a_snippet_error(sandbox: Sandbox) -> None:
    """Unbounded recursion ends as SnippetError(RecursionError), not a crash of the worker."""
    result = sandbox.run("def f(n):\n    return f(n + 1)\nreturn f(0)", limits=LIMITS)

    assert result.error is not None
    assert (result.error.type, result.error.exception) == ("SnippetError", "RecursionError")
    assert_still_works(sandbox)


def test_huge_exception_message_is_clipped(sandbox: Sandbox) -> None:
    """A 10 MB exception message reaches the host clipped to a few kilobytes."""
    result = sandbox.run("raise ValueError('x' * 10**7)", limits=LIMITS)

    assert result.error is not None
    assert (result.error.type, result.error.exception) == ("SnippetError", "ValueError")
    assert len(result.error.message) < 5000
    assert len(result.error.traceback or "") < 20000
    assert_still_works(sandbox)


@pytest.mark.parametrize("name", ["SystemExit", "KeyboardInterrupt"])
def test_system_exit_and_keyboard_interrupt_are_refused(sandbox: Sandbox, name: str) -> None:
    """Snippets cannot raise SystemExit or KeyboardInterrupt: the names do not exist for them."""
    result = sandbox.run(f"raise {name}", limits=LIMITS)

    assert result.error is not None
    assert (result.error.type, result.error.exception) == ("SnippetError", "NameError")
    assert_still_works(sandbox)


def test_threading_is_not_importable(sandbox: Sandbox) -> None:
    """A snippet cannot import threading, so it cannot start a thread that outlives the run."""
    result = sandbox.run("import threading\nreturn 1", limits=LIMITS)

    assert result.error is not None
    assert result.error.exception == "ImportError"


def test_thread_cannot_start_under_rlimit_nproc(sandbox: Sandbox) -> None:
    """Even host code in the child cannot start a thread: RLIMIT_NPROC=0 applies to the unprivileged child."""
    result = sandbox.run("return start_thread()", limits=LIMITS)

    assert result.error is not None
    assert (result.error.exception, result.error.message) == ("RuntimeError", "can't start new thread")
    assert_still_works(sandbox)


def test_thread_started_in_the_child_dies_with_it() -> None:
    """Without hardening (root ignores RLIMIT_NPROC) a thread does start, and it ends with its run's process."""
    with Sandbox(environment=ENVIRONMENT, hardening=False) as sandbox:
        result = sandbox.run("return start_thread()", limits=LIMITS)
        assert result.ok, result.error
        pid = result.value["pid"]
        deadline = time.monotonic() + 5
        while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not os.path.exists(f"/proc/{pid}")
        assert_still_works(sandbox)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        pytest.param("hard_exit(3)", "The sandbox child process exited with code 3 before it answered.", id="os-exit"),
    ],
)
def test_worker_crash_is_reported_and_next_run_works(sandbox: Sandbox, source: str, message: str) -> None:
    """An os._exit in the child is WorkerCrashedError for that run only (segfaults: test_fault_attribution)."""
    result = sandbox.run(source, limits=LIMITS)

    assert result.error is not None
    assert (result.error.type, result.error.message) == ("WorkerCrashedError", message)
    assert_still_works(sandbox)
