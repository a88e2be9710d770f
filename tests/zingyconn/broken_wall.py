"""A test-only snippet environment that pretends the language wall has fallen: it hands snippets raw sockets.

Used by tests/escapes/test_twilio_theft.py to show that the OS wall (the zygote's private network namespace)
still leaves such a child with no network at all. Never use it outside tests.
"""

from __future__ import annotations

import encodings.idna  # noqa: F401  # socket encodes str hosts with it; the child cannot import it late
import socket

from sandbox.environment import Environment, RunContext


def raw_connect(host: str, port: int) -> str:
    """Open a TCP connection the way an escaped snippet would; return ``"connected"`` or the OS error."""
    try:
        with socket.create_connection((host, port), timeout=2):
            return "connected"
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"


def environment(run: RunContext) -> Environment:
    """Give the snippet ``raw_connect`` (a socket in all but name)."""
    del run
    return Environment(names={"raw_connect": raw_connect})
