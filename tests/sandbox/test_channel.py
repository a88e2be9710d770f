"""The host channel: length-prefixed JSON frames, and requests a running child makes to the host."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from sandbox import EgressDeniedError, Limits, QuotaExceededError, Sandbox
from sandbox.channel import (
    REQUEST_BYTES,
    ChannelClosedError,
    FrameTooLargeError,
    HostRequests,
    PeerReader,
    encode_frame,
    recv_frame,
    send_frame,
)
from tests.sandbox.hooks import ENVIRONMENT


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A connected pair of Unix stream sockets."""
    left, right = socket.socketpair()
    with left, right:
        yield left, right


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    """One warm sandbox (with the test hooks) for the whole module."""
    with Sandbox(environment=ENVIRONMENT) as sandbox:
        yield sandbox


@pytest.mark.parametrize("message", [None, 0, "héllo ✓", [1, 2.5, True], {"a": {"b": ["c"]}}])
def test_frame_round_trip(pair: tuple[socket.socket, socket.socket], message: Any) -> None:
    """Any JSON value sent as a frame is received unchanged."""
    send_frame(pair[0], message)

    assert recv_frame(pair[1], max_bytes=1024) == message


def test_frame_over_the_cap_is_refused_before_reading(pair: tuple[socket.socket, socket.socket]) -> None:
    """A frame announcing more bytes than the reader accepts raises FrameTooLargeError."""
    pair[0].sendall(encode_frame("x" * 100))

    with pytest.raises(FrameTooLargeError, match="102 bytes"):
        recv_frame(pair[1], max_bytes=50)


def test_reading_past_the_deadline_times_out(pair: tuple[socket.socket, socket.socket]) -> None:
    """No frame before the deadline raises TimeoutError."""
    with pytest.raises(TimeoutError):
        recv_frame(pair[1], max_bytes=1024, deadline=time.monotonic() + 0.05)


def test_closed_peer_is_reported(pair: tuple[socket.socket, socket.socket]) -> None:
    """EOF in the middle of a frame raises ChannelClosedError."""
    pair[0].sendall(encode_frame("abcdef")[:6])
    pair[0].close()

    with pytest.raises(ChannelClosedError):
        recv_frame(pair[1], max_bytes=1024)


@pytest.mark.parametrize("size", [10, 100_000], ids=["one-read", "many-reads"])
def test_the_host_reads_a_frame_of_any_size(pair: tuple[socket.socket, socket.socket], size: int) -> None:
    """PeerReader returns the body of a small frame (one read) and of one larger than a read (several)."""
    message = {"t": "result", "text": "x" * size}
    pair[0].sendall(encode_frame(message))

    body = PeerReader(pair[1]).recv_body(max_bytes=1 << 20, deadline=time.monotonic() + 5)

    assert json.loads(body) == message


def test_the_host_reads_a_frame_sent_in_pieces(pair: tuple[socket.socket, socket.socket]) -> None:
    """A frame whose header and body arrive apart is still read whole."""
    frame = encode_frame({"t": "result"})

    def send_slowly() -> None:
        for piece in (frame[:2], frame[2:7], frame[7:]):
            time.sleep(0.05)
            pair[0].sendall(piece)

    sender = threading.Thread(target=send_slowly)
    sender.start()
    body = PeerReader(pair[1]).recv_body(max_bytes=1024, deadline=time.monotonic() + 5)
    sender.join()

    assert json.loads(body) == {"t": "result"}


def test_the_host_gives_up_at_the_deadline(pair: tuple[socket.socket, socket.socket]) -> None:
    """With no frame (or half of one) by the deadline, PeerReader raises TimeoutError about then."""
    pair[0].sendall(encode_frame({"t": "result"})[:6])
    started = time.monotonic()

    with pytest.raises(TimeoutError):
        PeerReader(pair[1]).recv_body(max_bytes=1024, deadline=started + 0.2)

    assert 0.15 < time.monotonic() - started < 1.0


def test_the_host_refuses_a_second_frame_sent_without_waiting(pair: tuple[socket.socket, socket.socket]) -> None:
    """A child that sends two frames at once breaks the protocol: ValueError (a malformed frame)."""
    pair[0].sendall(encode_frame({"t": "request"}) + encode_frame({"t": "result"}))

    with pytest.raises(ValueError, match="more than one frame"):
        PeerReader(pair[1]).recv_body(max_bytes=1024, deadline=time.monotonic() + 5)


def test_the_host_sees_a_closed_child_and_a_frame_over_its_cap(pair: tuple[socket.socket, socket.socket]) -> None:
    """PeerReader raises FrameTooLargeError for a frame over the cap and ChannelClosedError once the child hung
    up."""
    reader = PeerReader(pair[1])
    pair[0].sendall(encode_frame("x" * 100))
    with pytest.raises(FrameTooLargeError):
        reader.recv_body(max_bytes=50, deadline=time.monotonic() + 5)

    pair[0].close()
    with pytest.raises(ChannelClosedError):
        PeerReader(pair[1]).recv_body(max_bytes=1024, deadline=time.monotonic() + 5)


def test_the_host_stops_sending_at_the_deadline(pair: tuple[socket.socket, socket.socket]) -> None:
    """A child that does not read its order makes PeerReader.send raise TimeoutError at the deadline, not hang."""
    started = time.monotonic()

    with pytest.raises(TimeoutError):
        PeerReader(pair[1]).send(b"x" * (64 << 20), deadline=started + 0.2)

    assert time.monotonic() - started < 2.0


def test_child_channel_refuses_requests_until_the_order_sets_the_cap(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    """A spare child's channel exists before its order: nothing is sent until allow_requests() sets the cap."""
    child_end, host_end = pair
    channel = HostRequests(child_end, max_requests=None)
    with pytest.raises(EgressDeniedError, match="before the run starts"):
        channel.request("echo", {"value": 1})
    host_end.setblocking(False)
    with pytest.raises(BlockingIOError):
        host_end.recv(1)  # nothing left the child
    channel.allow_requests(1)
    send_frame(host_end, {"t": "answer", "value": "ok"})
    assert channel.request("echo", {"value": 1}) == "ok"
    with pytest.raises(QuotaExceededError):
        channel.request("echo", {"value": 2})


def test_child_requests_reach_the_host_handler(sandbox: Sandbox) -> None:
    """A running child asks the host over its channel and gets the handler's answer back."""
    calls: list[tuple[str, Any]] = []

    def handler(op: str, payload: Any) -> Any:
        calls.append((op, payload))
        return {"echoed": payload["value"]}

    result = sandbox.run("return [echo('a'), echo(event)]", event=[1, 2], on_request=handler)

    assert result.value == [{"echoed": "a"}, {"echoed": [1, 2]}]
    assert calls == [("echo", {"value": "a"}), ("echo", {"value": [1, 2]})]


def test_request_count_is_capped_per_run(sandbox: Sandbox) -> None:
    """Request egress_requests + 1 raises QuotaExceededError in the child; the host sees only the allowed ones."""
    calls: list[str] = []

    def handler(op: str, payload: Any) -> Any:
        calls.append(op)
        return payload

    source = "for i in range(5):\n    echo(i)\nreturn 1"
    result = sandbox.run(source, limits=Limits(egress_requests=3), on_request=handler)

    assert result.error is not None
    assert result.error.type == "QuotaExceededError"
    assert calls == ["echo"] * 3


def test_host_enforces_the_request_cap_even_if_the_child_does_not(sandbox: Sandbox) -> None:
    """A frame written past the child-side check ends the run: the child is lying (a flood would busy the host)."""
    result = sandbox.run("return raw_requests(4)", limits=Limits(egress_requests=2), on_request=lambda op, p: p)

    assert result.error is not None
    assert result.error.type == "QuotaExceededError"
    assert "more than 2 requests; the run was stopped" in result.error.message


def test_snippet_can_catch_a_refused_request(sandbox: Sandbox) -> None:
    """A refusal raised by the host handler is raised inside the snippet, which may handle it."""

    def handler(op: str, payload: Any) -> Any:
        raise EgressDeniedError("Host 'evil.example' is not allowed.")

    source = "try:\n    echo(1)\nexcept Exception as error:\n    return str(error)"
    result = sandbox.run(source, on_request=handler)

    assert result.value == "Host 'evil.example' is not allowed."


@pytest.mark.parametrize(
    ("handler", "error_type", "message"),
    [
        pytest.param(
            None,
            "EgressDeniedError",
            "Request 'echo' is not allowed: this sandbox answers no requests.",
            id="no-handler",
        ),
        pytest.param(
            lambda op, payload: 1 / 0,
            "EgressDeniedError",
            "The host could not answer the 'echo' request.",
            id="handler-bug",
        ),
        pytest.param(
            lambda op, payload: (_ for _ in ()).throw(QuotaExceededError("Tenant over its rate.")),
            "QuotaExceededError",
            "Tenant over its rate.",
            id="quota",
        ),
    ],
)
def test_refusals_reach_the_snippet_as_errors(sandbox: Sandbox, handler: Any, error_type: str, message: str) -> None:
    """No handler, a failing handler and a quota refusal each end the run with the matching error."""
    result = sandbox.run("return echo(1)", on_request=handler)

    assert result.error is not None
    assert (result.error.type, result.error.message) == (error_type, message)


def test_oversized_request_is_refused_in_the_child(sandbox: Sandbox) -> None:
    """A request larger than REQUEST_BYTES never reaches the host."""
    calls: list[str] = []
    result = sandbox.run(
        "return echo('x' * event)", event=REQUEST_BYTES, on_request=lambda op, payload: calls.append(op)
    )

    assert result.error is not None
    assert result.error.type == "EgressDeniedError"
    assert "cap is" in result.error.message
    assert calls == []


def test_on_started_runs_while_the_child_has_its_order_and_before_any_request(sandbox: Sandbox) -> None:
    """on_started is called once the order is sent; the child's first request waits for it to return."""
    events: list[str] = []

    def started() -> None:
        time.sleep(0.2)  # the child has its order: it reaches echo() and its request waits in the channel
        events.append("started")

    def handler(op: str, payload: Any) -> Any:
        events.append(f"request {payload['value']}")
        return payload["value"]

    result = sandbox.run("return echo(1)", on_request=handler, on_started=started)

    assert (result.ok, result.value) == (True, 1)
    assert events == ["started", "request 1"]


def test_on_started_failure_is_the_callers_and_the_child_is_killed(sandbox: Sandbox) -> None:
    """An exception from on_started propagates as is (not a worker failure); the sandbox goes on working."""

    def started() -> None:
        raise LookupError("the caller's own failure")

    with pytest.raises(LookupError, match="the caller's own failure"):
        sandbox.run("while True:\n    pass", on_started=started, limits=Limits(wall_seconds=30, cpu_seconds=30))

    assert sandbox.run("return 2").value == 2


def test_on_started_is_not_called_when_no_child_runs(sandbox: Sandbox) -> None:
    """A compile error needs no child, so nothing was started."""
    calls: list[int] = []
    result = sandbox.run("return (", on_started=lambda: calls.append(1))

    assert result.error is not None
    assert result.error.type == "CompileError"
    assert calls == []
