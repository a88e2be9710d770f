"""Escapes in warm instances: what a snippet past the language wall leaves in its process, and what the host does.

The hooks of ``tests.sandbox.hooks`` stand in for a fallen language wall (they run host-chosen code in the child):
an ignored signal, an open descriptor, a thread, data kept in a module. The host reads each instance's state in
``/proc`` after every run and recycles one that changed; data kept in a module reaches only the same key's runs.
"""

from __future__ import annotations

from collections.abc import Iterator

import psutil
import pytest

from sandbox import Sandbox
from tests.sandbox.hooks import ENVIRONMENT
from tests.sandbox.instance_checks import LIMITS, gone, run_pid


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    """One hardened sandbox with the test hooks."""
    with Sandbox(environment=ENVIRONMENT) as sandbox:
        yield sandbox


@pytest.mark.parametrize(
    "escape",
    [
        "ignore_signal('SIGXCPU')",  # would defeat the next run's CPU limit
        "ignore_signal('SIGTERM')",
        "keep_file()",  # a descriptor left open for the next run
    ],
)
def test_changed_process_state_recycles_the_instance(sandbox: Sandbox, escape: str) -> None:
    """A run that leaves a signal disposition or an open descriptor behind ends its instance."""
    key = ("tenant-a", escape, 1)
    pid = run_pid(sandbox, key)

    result = sandbox.run(f"{escape}\nreturn pid()", instance_key=key, limits=LIMITS)

    assert (result.ok, result.value) == (True, pid)  # the run itself succeeds: the check is the host's, after it
    assert gone(pid)
    assert run_pid(sandbox, key) != pid


def test_a_thread_cannot_outlive_its_run(sandbox: Sandbox) -> None:
    """RLIMIT_NPROC refuses a thread in an instance as in a fresh child; the instance goes on serving its key."""
    key = ("tenant-a", "thread", 1)
    pid = run_pid(sandbox, key)

    result = sandbox.run("return start_thread()", instance_key=key, limits=LIMITS)

    assert result.error is not None
    assert "can't start new thread" in result.error.message
    assert psutil.Process(pid).num_threads() == 1


def test_a_thread_that_did_start_recycles_the_instance() -> None:
    """Without the OS wall (hardening off, root ignores RLIMIT_NPROC) a thread starts; the host then kills it all."""
    with Sandbox(environment=ENVIRONMENT, hardening=False) as sandbox:
        key = ("tenant-a", "thread", 1)
        pid = run_pid(sandbox, key)

        result = sandbox.run("return start_thread()", instance_key=key, limits=LIMITS)

        assert result.ok, result.error
        assert result.value["pid"] == pid
        assert gone(pid)
        assert run_pid(sandbox, key) != pid


def test_state_kept_in_a_module_reaches_only_the_same_key(sandbox: Sandbox) -> None:
    """Data an escaped run keeps in its process is seen by the same key's next run and by no other key's."""
    mine, other_script, other_tenant = ("tenant-a", "keeps", 1), ("tenant-a", "reads", 1), ("tenant-b", "keeps", 1)

    assert sandbox.run("stash('tenant-a data')", instance_key=mine, limits=LIMITS).ok

    assert sandbox.run("return stashed()", instance_key=mine, limits=LIMITS).value == ["tenant-a data"]
    assert sandbox.run("return stashed()", instance_key=other_script, limits=LIMITS).value == []
    assert sandbox.run("return stashed()", instance_key=other_tenant, limits=LIMITS).value == []
    assert sandbox.run("return stashed()", limits=LIMITS).value == []


def test_memory_kept_past_the_high_water_mark_recycles(sandbox: Sandbox) -> None:
    """Memory an escaped run keeps in its process past the high-water mark ends the instance after the run."""
    key = ("tenant-a", "hog", 1)
    pid = run_pid(sandbox, key)

    result = sandbox.run("hog(96)\nreturn pid()", instance_key=key, limits=LIMITS)

    assert (result.ok, result.value) == (True, pid)
    assert gone(pid)
