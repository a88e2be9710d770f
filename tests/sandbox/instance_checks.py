"""What the warm-instance tests ask of a run and of a process: the pid a key's run ran in, and whether one ended."""

from __future__ import annotations

import time

import psutil

from sandbox import Limits, Sandbox

LIMITS = Limits(wall_seconds=5, cpu_seconds=5)


def run_pid(sandbox: Sandbox, key: object, limits: Limits = LIMITS) -> int:
    """Run ``return pid()`` (a hook of ``tests.sandbox.hooks``) in *key*'s instance and return the pid it ran in."""
    result = sandbox.run("return pid()", instance_key=key, limits=limits)
    assert result.ok, result.error
    return int(result.value)


def gone(pid: int, seconds: float = 5.0) -> bool:
    """Wait up to *seconds* for process *pid* to end (a zombie counts as ended); return whether it did."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.02)
    return False
