"""Faults a run causes by itself are the snippet's errors; faults of the platform stay WorkerCrashedError.

The rule (see :mod:`sandbox.phase`): a child that dies of a fault signal while its phase byte says it runs snippet
code crashed by the snippet's doing; text with no UTF-8 form in the return value is the snippet's; the same text
printed, logged or raised is shown with a replacement character instead.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator

import pytest

from sandbox import InvalidResultTextError, Limits, Sandbox, SnippetCrashedError, SnippetError
from sandbox.channel import HostRequests, encode_frame, recv_frame
from sandbox.phase import PhaseMarker
from tests.sandbox.hooks import ENVIRONMENT
from tests.sandbox.test_bombs import assert_still_works

LIMITS = Limits(wall_seconds=20, cpu_seconds=20, memory_bytes=512 * 1024 * 1024)


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    """One warm sandbox with the test hooks for the module."""
    with Sandbox(environment=ENVIRONMENT) as sandbox:
        yield sandbox


DEEP_TUPLE_HASH = """
nested = ()
for _ in range(1000000):
    nested = (nested,)
return hash(nested)
"""

DEEP_TUPLE_AS_KEY = """
nested = ()
for _ in range(1000000):
    nested = (nested,)
return len({nested: 1})
"""


@pytest.mark.parametrize("source", [DEEP_TUPLE_HASH, DEEP_TUPLE_AS_KEY], ids=["hash", "dict-key"])
def test_c_recursion_in_snippet_code_is_the_snippets_crash(sandbox: Sandbox, source: str) -> None:
    """hash() of a tuple nested 10**6 deep (or using it as a key) overflows the C stack: SnippetCrashedError."""
    result = sandbox.run(source, limits=LIMITS)

    assert result.error is not None
    assert result.error.type == "SnippetCrashedError", result.error
    assert result.error.exception == "SIGSEGV"
    assert "while its own code ran" in result.error.message
    assert "nested" in result.error.message
    with pytest.raises(SnippetError) as raised:
        result.raise_for_error()
    assert type(raised.value) is SnippetCrashedError
    assert_still_works(sandbox)


def test_a_crash_in_code_the_snippet_called_is_the_snippets(sandbox: Sandbox) -> None:
    """Library code the snippet calls runs in the snippet's phase: its fault is the snippet's (documented rule)."""
    result = sandbox.run("crash()", limits=LIMITS)

    assert result.error is not None
    assert result.error.type == "SnippetCrashedError"
    assert_still_works(sandbox)


def test_a_crash_while_the_platform_sets_up_the_run_is_the_workers() -> None:
    """A fault outside snippet code (the environment factory, after the order came) stays WorkerCrashedError."""
    with Sandbox(environment="tests.sandbox.hooks:setup_crash_environment") as sandbox:
        crashed = sandbox.run("return 1", context={"crash_in_setup": True}, limits=LIMITS)
        normal = sandbox.run("return 1", limits=LIMITS)

    assert crashed.error is not None
    assert (crashed.error.type, crashed.error.message) == (
        "WorkerCrashedError",
        "The sandbox child process died from signal SIGSEGV.",
    )
    assert (normal.ok, normal.value) == (True, 1)


def test_an_exit_in_snippet_code_is_not_called_a_crash_of_the_snippet(sandbox: Sandbox) -> None:
    """Only fault signals are attributed by phase: an exit code stays a worker failure."""
    result = sandbox.run("hard_exit(3)", limits=LIMITS)

    assert result.error is not None
    assert result.error.type == "WorkerCrashedError"


@pytest.mark.parametrize(
    ("source", "where", "code"),
    [
        pytest.param("return '\\ud800'", "result", "\\ud800", id="string"),
        pytest.param("return {'a': ['ok', 'x\\udc00y']}", "result['a'][1]", "\\udc00", id="nested"),
        pytest.param("return {'\\udfff': 1}", "a key of result", "\\udfff", id="key"),
    ],
)
def test_returning_a_lone_surrogate_is_the_snippets_error(sandbox: Sandbox, source: str, where: str, code: str) -> None:
    """Text with no UTF-8 form cannot be returned: InvalidResultTextError names where it is and what it holds."""
    result = sandbox.run(source, limits=LIMITS)

    assert result.error is not None
    assert result.error.type == "InvalidResultTextError"
    assert f"{where} holds the lone surrogate '{code}'" in result.error.message
    with pytest.raises(InvalidResultTextError):
        result.raise_for_error()
    assert_still_works(sandbox)


def test_printed_logged_and_raised_surrogates_are_shown_replaced(sandbox: Sandbox) -> None:
    """What a run shows people keeps going: a replacement character stands for each lone surrogate."""
    printed = sandbox.run("print('a\\ud800b')\nlog.info('c\\udc00', field='\\udfff')\nreturn 1", limits=LIMITS)
    raised = sandbox.run("raise ValueError('bad \\ud800')", limits=LIMITS)

    assert (printed.ok, printed.value, printed.stdout) == (True, 1, "a\ufffdb\n")
    assert printed.logs[0]["message"] == "c\ufffd"
    assert printed.logs[0]["fields"] == {"field": "\ufffd"}
    assert raised.error is not None
    assert (raised.error.type, raised.error.exception) == ("SnippetError", "ValueError")
    assert raised.error.message == "bad \ufffd"


def test_the_phase_is_the_platforms_while_the_host_answers_a_request() -> None:
    """A request made from snippet code switches the phase to the platform's until the answer is read."""
    marker = PhaseMarker()
    child_end, host_end = socket.socketpair()
    seen: list[bool] = []

    def host() -> None:
        recv_frame(host_end, max_bytes=1 << 20)
        seen.append(marker.in_snippet)
        host_end.sendall(encode_frame({"t": "answer", "value": 7}))

    thread = threading.Thread(target=host)
    thread.start()
    try:
        with marker.snippet():
            answer = HostRequests(child_end, max_requests=1, phase=marker).request("echo", {})
            after = marker.in_snippet
    finally:
        thread.join()
        child_end.close()
        host_end.close()
        marker.close()

    assert (answer, seen, after) == (7, [False], True)


def _shared_zero_pages() -> int:
    """Return how many shared anonymous mappings (``/dev/zero``, as a phase page is) this process has."""
    with open("/proc/self/maps") as maps:
        return sum(1 for line in maps if line.split()[1] == "rw-s" and "/dev/zero" in line)


def test_a_forked_childs_phase_page_is_in_no_later_fork() -> None:
    """Once its child is forked, a phase page is kept out of later forks: no sibling can reach it."""
    marker = PhaseMarker()
    read_end, write_end = os.pipe()
    try:
        marker.forked()
        in_zygote = _shared_zero_pages()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the forked child reports through the pipe and exits
            os.write(write_end, str(_shared_zero_pages()).encode())
            os._exit(0)
        os.waitpid(pid, 0)
        in_later_child = int(os.read(read_end, 64))
    finally:
        marker.close()
        os.close(read_end)
        os.close(write_end)

    assert in_later_child == in_zygote - 1
