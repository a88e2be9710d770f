"""Length-prefixed JSON frames over a Unix socket: how the host and one child talk during a run.

A frame is a 4-byte big-endian length followed by that many bytes of UTF-8 JSON. The conversation of one run::

    host  -> child   {"t": "run", "code": <base64 marshal>, "event": ..., "limits": {...}, "context": {...}}
    child -> host    {"t": "request", "op": "echo", "payload": {...}}       # zero or more times, while running
    host  -> child   {"t": "answer", "value": ...} | {"t": "answer", "error": {"type": ..., "message": ...}}
    child -> host    {"t": "result", "result": <RunResult.to_json()>}      # last frame; the child then exits

The child is untrusted once a snippet has run in it, so the host reads with a deadline and a size cap on every
frame, and re-checks the request count the child already enforces on its side (:class:`HostRequests`).
"""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import time
from collections.abc import Mapping
from typing import Final

from sandbox.environment import JSON
from sandbox.errors import EgressDeniedError, QuotaExceededError
from sandbox.phase import PhaseMarker

_HEADER: Final = struct.Struct("!I")

#: Largest request a snippet may send to the host in one frame. Threat: a child flooding the host's memory or
#: JSON parser through the request path (the only path out of the child).
REQUEST_BYTES: Final = 1024 * 1024

#: Errors a host may answer with; anything else a handler raises is reported as EgressDeniedError.
ANSWER_ERRORS: Final[Mapping[str, type[Exception]]] = {
    error.__name__: error for error in (EgressDeniedError, QuotaExceededError)
}


class ChannelClosedError(ConnectionError):
    """Raised when the other end closed the channel (for the host: the child died)."""


class FrameTooLargeError(ValueError):
    """Raised when an incoming frame announces more bytes than the reader accepts."""


#: One encoder for every frame: ``json.dumps`` with options builds a new JSONEncoder on each call (encoding is
#: stateless, so threads share it).
_ENCODER: Final = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def encode_json(value: JSON) -> str:
    """Return *value* as compact JSON text, as frames carry it.

    Raises:
        TypeError: *value* is not JSON-serialisable.
    """
    return _ENCODER.encode(value)


def encode_frame(message: JSON) -> bytes:
    """Return *message* as one frame (length prefix + compact UTF-8 JSON)."""
    return frame_body(encode_json(message).encode())


def frame_body(body: bytes) -> bytes:
    """Return *body* (UTF-8 JSON already serialised) as one frame: its length prefix, then itself."""
    return _HEADER.pack(len(body)) + body


def send_frame(sock: socket.socket, message: JSON) -> None:
    """Send *message* as one frame."""
    sock.sendall(encode_frame(message))


def recv_frame(sock: socket.socket, *, max_bytes: int, deadline: float | None = None) -> JSON:
    """Read one frame and return its JSON value.

    Args:
        sock: A connected stream socket.
        max_bytes: Largest body accepted; checked before the body is read.
        deadline: ``time.monotonic()`` value after which reading gives up; ``None`` blocks.

    Raises:
        TimeoutError: The deadline passed.
        ChannelClosedError: The peer closed the socket.
        FrameTooLargeError: The frame is larger than *max_bytes*.
    """
    return json.loads(recv_body(sock, max_bytes=max_bytes, deadline=deadline))


def recv_body(sock: socket.socket, *, max_bytes: int, deadline: float | None = None) -> bytes:
    """Read one frame and return its undecoded body (same arguments and errors as :func:`recv_frame`)."""
    (size,) = _HEADER.unpack(_recv_exactly(sock, _HEADER.size, deadline))
    if size > max_bytes:
        raise FrameTooLargeError(f"A frame of {size} bytes is over the cap of {max_bytes} bytes.")
    return _recv_exactly(sock, size, deadline)


def _recv_exactly(sock: socket.socket, size: int, deadline: float | None) -> bytes:
    buffer = bytearray(size)
    view = memoryview(buffer)
    received = 0
    while received < size:
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("The deadline passed while waiting for a frame.")
            sock.settimeout(remaining)
        try:
            count = sock.recv_into(view[received:])
        except TimeoutError:
            raise TimeoutError("The deadline passed while waiting for a frame.") from None
        if count == 0:
            raise ChannelClosedError("The other end closed the channel.")
        received += count
    return bytes(buffer)


#: ``struct timeval``, as ``SO_RCVTIMEO`` and ``SO_SNDTIMEO`` take it.
_TIMEVAL: Final = struct.Struct("@ll")

#: What :class:`PeerReader` asks the kernel for at once: most frames, header and body, in one ``recv``.
_READ_BYTES: Final = 16 * 1024


class PeerReader:
    """The host's end of one child's channel, read and written by a deadline with as few system calls as possible.

    Every system call that may block releases the GIL, and a server's other threads wait for it: each release
    hands the GIL to one of them and back, two context switches on a loaded host. So the socket stays in blocking
    mode and the kernel enforces the deadline (``SO_RCVTIMEO``/``SO_SNDTIMEO``, set without releasing the GIL):
    a frame is one ``recv`` where :func:`recv_body` with a timeout makes six calls (``ioctl``, ``poll`` and ``recv``
    for the header, again for the body).

    The child sends one frame and then waits for the host, so one read never holds the start of a next frame: a
    read that does is the child breaking the protocol (``ValueError``, as for a malformed frame).
    """

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        if sock.gettimeout() is not None:  # a Python-level timeout would poll() before every call again
            sock.settimeout(None)

    def send(self, data: bytes, *, deadline: float) -> None:
        """Send *data* whole by *deadline* (``time.monotonic()``).

        Raises:
            TimeoutError: The deadline passed before the child took it all.
            OSError: The channel is broken (the child died).
        """
        view, sent = memoryview(data), 0
        while sent < len(data):  # not sendall(): each send() may wait the whole timeout, so it is set again each time
            self._set_timeout(socket.SO_SNDTIMEO, deadline)
            try:
                sent += self._sock.send(view[sent:])
            except BlockingIOError:  # SO_SNDTIMEO passed: the deadline did, unless the clocks disagree slightly
                continue

    def recv_body(self, *, max_bytes: int, deadline: float) -> bytes:
        """Read one frame by *deadline* and return its body (same errors as :func:`recv_body`).

        Raises:
            ValueError: The child sent more than one frame at once.
        """
        buffer = bytearray(_READ_BYTES)
        received = self._recv_into(memoryview(buffer), deadline)
        while received < _HEADER.size:
            received += self._recv_into(memoryview(buffer)[received:], deadline)
        (size,) = _HEADER.unpack_from(buffer)
        if size > max_bytes:
            raise FrameTooLargeError(f"A frame of {size} bytes is over the cap of {max_bytes} bytes.")
        end = _HEADER.size + size
        if received > end:
            raise ValueError("The child sent more than one frame before the host answered.")
        if end > len(buffer):
            buffer.extend(bytes(end - len(buffer)))
        view = memoryview(buffer)
        while received < end:
            received += self._recv_into(view[received:end], deadline)
        return bytes(view[_HEADER.size : end])

    def _recv_into(self, view: memoryview, deadline: float) -> int:
        while True:
            self._set_timeout(socket.SO_RCVTIMEO, deadline)
            try:
                count = self._sock.recv_into(view)
            except BlockingIOError:  # SO_RCVTIMEO passed: the deadline did, unless the clocks disagree slightly
                continue
            if count == 0:
                raise ChannelClosedError("The other end closed the channel.")
            return count

    def _set_timeout(self, option: int, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("The deadline passed while sending or waiting for a frame.")
        seconds = int(remaining)
        micros = max(1, int((remaining - seconds) * 1_000_000))  # never 0: a zero timeval means no timeout at all
        self._sock.setsockopt(socket.SOL_SOCKET, option, _TIMEVAL.pack(seconds, micros))


class HostRequests:
    """The child's side of the channel: the :class:`~sandbox.environment.HostChannel` a run's environment uses.

    Enforces the per-run request count and request size before anything leaves the child; the host checks both
    again because it cannot trust the child.
    """

    def __init__(
        self,
        sock: socket.socket,
        *,
        max_requests: int | None,
        max_request_bytes: int = REQUEST_BYTES,
        phase: PhaseMarker | None = None,
    ) -> None:
        self._sock = sock
        self._phase = phase  # marked as platform code while the host answers (see sandbox.phase)
        self._max_requests = max_requests  # None until the run order sets it (see allow_requests)
        self._max_request_bytes = max_request_bytes
        self.count = 0

    def allow_requests(self, max_requests: int) -> None:
        """Set the run's request cap (a spare child builds its channel before the order brings the cap)."""
        self._max_requests = max_requests

    def request(self, op: str, payload: Mapping[str, JSON]) -> JSON:
        """Send request *op* to the host, wait for its answer and return the answer's value.

        Raises:
            QuotaExceededError: The run already made ``limits.egress_requests`` requests.
            EgressDeniedError: The request is too large, the host refused it, or the run has not started yet
                (an environment factory asking while it builds the environment).
        """
        if self._max_requests is None:
            raise EgressDeniedError(
                f"Request {op!r} is not allowed before the run starts: an environment factory must not make requests."
            )
        if self.count >= self._max_requests:
            raise QuotaExceededError(
                f"Request {op!r} is not allowed because this run already made {self._max_requests} requests."
            )
        frame = encode_frame({"t": "request", "op": op, "payload": payload})
        if len(frame) > self._max_request_bytes:
            raise EgressDeniedError(
                f"Request {op!r} of {len(frame)} bytes is not allowed: the cap is {self._max_request_bytes} bytes."
            )
        self.count += 1
        with self._phase.platform() if self._phase is not None else contextlib.nullcontext():
            self._sock.sendall(frame)
            answer = recv_frame(self._sock, max_bytes=1 << 30)
        error = answer.get("error")
        if error is not None:
            raise ANSWER_ERRORS.get(error.get("type"), EgressDeniedError)(str(error.get("message")))
        return answer.get("value")
