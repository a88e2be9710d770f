"""A test-only snippet environment for the red-team corpus: the language wall is assumed broken.

It hands snippets what an escaped child could do with its own process: write raw bytes to its channel to the host
(fd 3), read files, and send signals. Used by tests/escapes/test_redteam.py to show that the host, the broker and
the OS wall still hold. Never use it outside tests.
"""

from __future__ import annotations

import os
import socket
import struct

from sandbox.channel import encode_frame, recv_frame
from sandbox.child import CHANNEL_FD
from sandbox.environment import Environment, RunContext


def send_raw(body: str, *, length: int | None = None) -> str:
    """Write one frame with *body* (text) to the host, with a lying *length* prefix when given; then exit."""
    data = body.encode()
    os.write(CHANNEL_FD, struct.pack("!I", len(data) if length is None else length) + data)
    os._exit(0)


def read_file(path: str) -> str:
    """Read a file the way an escaped snippet would; return its first bytes or the OS error."""
    try:
        with open(path, "rb") as handle:
            return handle.read(64).hex()
    except OSError as exc:
        return f"{type(exc).__name__}"


def signal_pid(pid: int, signum: int) -> str:
    """Send *signum* to *pid*; return ``"sent"`` or the OS error."""
    try:
        os.kill(pid, signum)
    except OSError as exc:
        return f"{type(exc).__name__}"
    return "sent"


def flood(count: int) -> int:
    """Send *count* requests over the raw channel, ignoring the child's own cap; return how many were answered."""
    sock = socket.socket(fileno=os.dup(CHANNEL_FD))
    answered = 0
    try:
        for _ in range(count):
            sock.sendall(encode_frame({"t": "request", "op": "twilio.connect", "payload": {"connection": "x"}}))
            recv_frame(sock, max_bytes=1 << 20)
            answered += 1
    except (OSError, ValueError):
        pass
    return answered


def identity() -> list[int]:
    """Return this child's ``[pid, uid, parent pid]``."""
    return [os.getpid(), os.getuid(), os.getppid()]


def environment(run: RunContext) -> Environment:
    """Give the snippet what an escaped child could do: raw frames, floods, file reads, signals, its identity."""
    del run
    names = {"send_raw": send_raw, "read_file": read_file, "signal_pid": signal_pid, "identity": identity}
    names["flood"] = flood
    return Environment(names=names)
