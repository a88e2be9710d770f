"""A test environment whose ``WARM_UP_RUNS`` is malformed (plain strings): the zygote must refuse to start."""

from __future__ import annotations

from sandbox.environment import Environment, RunContext

WARM_UP_RUNS = ("return 1",)


def environment(run: RunContext) -> Environment:
    """Add nothing."""
    del run
    return Environment()
