"""A test environment with warm-up runs: each run appends what it saw to :data:`NOTES`, which a later run reads.

The zygote's warm-up (before any fork) and the spare child's (after its fork) both append, so a real run sees
both notes: the zygote's pid first, then its own.
"""

from __future__ import annotations

import os
from typing import Any, Final

from sandbox.environment import Environment, RunContext, WarmUpRun
from sandbox.errors import EgressDeniedError

#: ``(pid, canned answer, error type of the refused request)`` per warm-up run in this process's history.
NOTES: list[tuple[int, Any, str]] = []

WARM_UP_RUNS: Final = (
    WarmUpRun(source="note(event['ask'], 'unlisted')", event={"ask": "greeting"}, answers={"greeting": {"hi": [1]}}),
)


def environment(run: RunContext) -> Environment:
    """``note(op, refused_op)`` asks the host for *op* and *refused_op* and notes both outcomes; ``notes()`` reads."""

    def note(op: str, refused_op: str) -> None:
        answer = run.host.request(op, {})
        try:
            run.host.request(refused_op, {})
            refused = "nothing"
        except EgressDeniedError as error:
            refused = type(error).__name__
        NOTES.append((os.getpid(), answer, refused))

    def notes() -> list[list[Any]]:
        return [[pid, answer, refused, pid == os.getpid()] for pid, answer, refused in NOTES]

    return Environment(names={"note": note, "notes": notes})
