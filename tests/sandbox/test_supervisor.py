"""The isolated sandbox as the host sees it: results, hardening, concurrency, recovery and memory stability."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Iterator

import psutil
import pytest

from sandbox import Limits, Sandbox
from sandbox.file_access import landlock_abi
from sandbox.hardening import CHILD_ID_BASE
from tests.sandbox.hooks import ENVIRONMENT

LIMITS = Limits(wall_seconds=5, cpu_seconds=5)


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    """One warm sandbox (with the test hooks) for the whole module."""
    with Sandbox(environment=ENVIRONMENT, spare_children=2) as sandbox:
        yield sandbox


def test_run_returns_value_and_output(sandbox: Sandbox) -> None:
    """A run returns the snippet's value and its captured print output."""
    result = sandbox.run(
        "print('hello', event['name'])\nreturn {'twice': event['n'] * 2}", event={"name": "ann", "n": 4}
    )

    assert result.ok
    assert result.value == {"twice": 8}
    assert result.stdout == "hello ann\n"
    assert result.duration_ms > 0


def test_compile_error_is_data_and_needs_no_process(sandbox: Sandbox) -> None:
    """A snippet the policy rejects comes back as a CompileError result with every message."""
    result = sandbox.run("x = y.__dict__\nz = _q_")

    assert result.error is not None
    assert (result.error.type, result.error.line) == ("CompileError", 1)
    assert len(result.error.errors) == 2


def test_snippet_error_carries_line_and_type(sandbox: Sandbox) -> None:
    """An exception in the snippet is a SnippetError with its type name and snippet line."""
    result = sandbox.run("x = 1\nreturn x / 0")

    assert result.error is not None
    assert (result.error.type, result.error.exception, result.error.line) == ("SnippetError", "ZeroDivisionError", 2)


def _landlock_state() -> str:
    """What the file_access step must report on this kernel: active wherever the kernel has Landlock."""
    try:
        landlock_abi()
    except OSError as error:
        return f"unavailable: {error}"
    return "active"


def test_every_hardening_step_is_active_as_root(sandbox: Sandbox) -> None:
    """Run as root (as in CI), every OS hardening step is reported active (Landlock wherever the kernel has it)."""
    if os.geteuid() != 0:
        pytest.skip("the uid drop and network namespace need root here")
    assert dict(sandbox.hardening) == {
        "network_namespace": "active",
        "unprivileged_uid": "active",
        "no_new_privs": "active",
        "non_dumpable": "active",
        "file_access": _landlock_state(),
        "syscall_filter": "active",
        "rlimit_nproc": "active",
    }


def test_disabled_hardening_is_reported_unavailable() -> None:
    """hardening=False reports each step as unavailable, with the reason."""
    with Sandbox(hardening=False) as sandbox:
        report = sandbox.hardening

    assert report["network_namespace"] == "unavailable: disabled by the host (hardening=False)"
    assert report["unprivileged_uid"].startswith("unavailable")
    assert report["file_access"] == "unavailable: disabled by the host (hardening=False)"
    assert report["syscall_filter"] == "unavailable: disabled by the host (hardening=False)"


def test_child_has_no_network_secrets_or_extra_descriptors(sandbox: Sandbox) -> None:
    """The child runs as its own uid, with an empty environment, only its channel open, no network, no file writes."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    path = f"/tmp/sandbox-probe-{uuid.uuid4().hex}"
    try:
        event = {"port": listener.getsockname()[1], "path": path}
        result = sandbox.run("return probe(event['port'], event['path'])", event=event, limits=LIMITS)
    finally:
        listener.close()
        if os.path.exists(path):
            os.remove(path)

    assert result.ok, result.error
    probe = result.value
    assert set(probe["environ"]) <= {"LC_CTYPE"}  # set by Python itself (PEP 538 locale coercion), not inherited
    assert probe["network"] != "connected"
    # Landlock refuses opening /tmp for writing (PermissionError); without it, RLIMIT_FSIZE=0 refuses the write (EFBIG).
    assert probe["write"] == ("PermissionError" if sandbox.hardening["file_access"] == "active" else "OSError")
    assert probe["cwd"] in ([], "PermissionError")  # the zygote's working directory: empty, deleted, root's
    assert probe["fds"] == [0, 1, 2, 3]  # stdio (/dev/null) and the channel: not the zygote's control socket or statm
    if os.geteuid() == 0:  # each child has a uid of its own: it cannot signal the zygote or a sibling run
        assert probe["uid"] == CHILD_ID_BASE + probe["pid"]


def test_run_context_reaches_an_environment_built_before_the_order(sandbox: Sandbox) -> None:
    """A spare child builds its environment before its order: the context is there when the snippet reads it."""
    for tenant in ("acme", "globex"):  # each run its own context, in its own child
        result = sandbox.run("return context()", context={"tenant": tenant})
        assert result.ok, result.error
        assert result.value == {"tenant": tenant}


def test_factory_reading_the_context_waits_for_the_order() -> None:
    """A factory that reads run.context itself (instead of at use) still gets it: it waits for the order."""
    with Sandbox(environment="tests.sandbox.hooks:eager_context_environment") as eager:
        assert eager.run("return 'warm'").ok  # the spare of this run was built before any order was waiting
        result = eager.run("return context", context={"tenant": "acme"})
    assert result.ok, result.error
    assert result.value == {"tenant": "acme"}


def test_factory_requests_before_the_order_are_refused() -> None:
    """A request made while the environment is built, before the order set the run's cap, never reaches the host."""
    asked: list[str] = []

    def on_request(op: str, payload: object) -> object:
        asked.append(op)
        return payload

    with Sandbox(environment="tests.sandbox.hooks:early_request_environment") as early:
        result = early.run("return early", on_request=on_request)
    assert result.ok, result.error
    assert result.value.startswith("EgressDeniedError: Request 'echo' is not allowed before the run starts")
    assert asked == []


@pytest.mark.parametrize("warm", [True, False])
def test_kill_order_is_the_json_the_zygote_reads(warm: bool) -> None:
    """The per-run kill order is formatted by hand (it is on every run's path); it must still be that JSON."""
    from sandbox.pool import kill_order

    assert json.loads(kill_order(4242, 2, warm=warm)) == {"t": "kill", "pid": 4242, "forks": 2, "warm": warm}


def test_each_run_gets_a_fresh_process(sandbox: Sandbox) -> None:
    """Two runs never share a process."""
    first = sandbox.run("return probe(1)", limits=LIMITS)
    second = sandbox.run("return probe(1)", limits=LIMITS)

    assert first.value["pid"] != second.value["pid"]


def test_run_async_from_asyncio(sandbox: Sandbox) -> None:
    """run_async can be awaited, and several awaited runs proceed together."""

    async def main() -> list[object]:
        results = await asyncio.gather(*(sandbox.run_async("return event * 3", event=n) for n in range(8)))
        return [result.value for result in results]

    assert asyncio.run(main()) == [n * 3 for n in range(8)]


def test_many_threads_at_once(sandbox: Sandbox) -> None:
    """Eight threads running 15 snippets each all get their own, correct results."""
    failures: list[str] = []

    def worker(number: int) -> None:
        for index in range(15):
            result = sandbox.run("return [event['t'], event['i']]", event={"t": number, "i": index})
            if result.value != [number, index]:
                failures.append(f"{number}/{index}: {result}")

    threads = [threading.Thread(target=worker, args=(number,)) for number in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert failures == []


def _is_running(pid: int) -> bool:
    """Whether *pid* is alive and not a zombie (it may be reaped while we look)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_killed_zygote_is_restarted_transparently() -> None:
    """After the zygote is SIGKILLed, the next run starts a new one and works."""
    with Sandbox() as sandbox:
        old_pid = sandbox.zygote_pid
        os.kill(old_pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while _is_running(old_pid):
            assert time.monotonic() < deadline
            time.sleep(0.01)

        result = sandbox.run("return 7")

        assert (result.ok, result.value) == (True, 7)
        assert sandbox.zygote_pid != old_pid


def test_run_in_progress_when_zygote_dies_is_a_worker_crash() -> None:
    """A run whose zygote is killed under it ends as WorkerCrashedError; the sandbox then recovers."""
    with Sandbox() as sandbox:
        zygote_pid = sandbox.zygote_pid
        timer = threading.Timer(0.5, os.kill, (zygote_pid, signal.SIGKILL))
        timer.start()
        result = sandbox.run("while True:\n    pass", limits=LIMITS)
        timer.join()

        assert result.error is not None
        assert result.error.type == "WorkerCrashedError"
        assert sandbox.run("return 1").value == 1


def test_bad_environment_fails_at_start() -> None:
    """A zygote that cannot import its environment fails start() with WorkerCrashedError naming the problem."""
    from sandbox import WorkerCrashedError

    with pytest.raises(WorkerCrashedError, match="no_such_module"):
        Sandbox(environment="no_such_module:environment").start()


def test_thousand_runs_do_not_grow_host_or_zygote_memory(sandbox: Sandbox) -> None:
    """1000 runs in a row grow neither the host's nor the zygote's RSS by more than 10 %."""
    source = "rows = [{'n': n, 's': str(n) * 10} for n in range(200)]\nprint(len(rows))\nreturn rows[-1]"
    host, zygote = psutil.Process(), psutil.Process(sandbox.zygote_pid)
    for _ in range(100):
        sandbox.run(source)
    host_before, zygote_before = host.memory_info().rss, zygote.memory_info().rss

    for _ in range(1000):
        result = sandbox.run(source)
        assert result.ok

    assert host.memory_info().rss <= host_before * 1.10
    assert zygote.memory_info().rss <= zygote_before * 1.10


def test_unavailable_hardening_step_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    """An unavailable step is logged as a warning the first time it is reported, not on every zygote restart."""
    from sandbox.hardening import report_once

    report = {"network_namespace": "unavailable: test reason", "no_new_privs": "active"}
    with caplog.at_level("WARNING", logger="sandbox.hardening"):
        report_once(report)
        report_once(report)

    assert [record.getMessage() for record in caplog.records] == [
        "Sandbox hardening step 'network_namespace' is unavailable: test reason."
    ]
