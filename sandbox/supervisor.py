"""The host side of process isolation: :class:`Sandbox` runs each snippet in its own child of a warm zygote.

The host never forks (it will hold keys): it starts ``python -I -m sandbox.zygote`` with :mod:`subprocess`, keeps
``spare_children`` children forked ahead of demand, and for each run takes one, sends it the compiled code, answers
its requests, and enforces the wall-clock deadline by having the zygote SIGKILL it. How a child ended decides the
error: SIGXCPU is the CPU limit, a kill we ordered is the wall limit, a fault signal while the child ran snippet
code is the snippet's crash (:mod:`sandbox.phase`), anything else unexplained is ours (``WorkerCrashedError``).
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import functools
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Final

from sandbox.channel import (
    REQUEST_BYTES,
    ChannelClosedError,
    FrameTooLargeError,
    encode_frame,
    encode_json,
    frame_body,
    recv_body,
)
from sandbox.compiler import CompiledSnippet, compile_snippet
from sandbox.environment import JSON
from sandbox.errors import (
    CompileError,
    EgressDeniedError,
    OutputLimitExceededError,
    QuotaExceededError,
    SandboxError,
    SnippetCrashedError,
    TimeLimitExceededError,
    WorkerCrashedError,
)
from sandbox.limits import Limits
from sandbox.output import MAX_RESULT_DEPTH
from sandbox.phase import FAULT_SIGNALS
from sandbox.pool import ChildProcess, ZygoteProcess
from sandbox.protocol import result_frame_bytes
from sandbox.result import RunError, RunResult

RequestHandler = Callable[[str, JSON], JSON]

_LOGGER: Final = logging.getLogger(__name__)

#: How long the host waits for the zygote's exit report of a child whose channel closed early.
_EXIT_REPORT_SECONDS: Final = 5.0
#: How long a run waits for a spare child (covers a zygote restart with heavy imports).
_SPARE_WAIT_SECONDS: Final = 60.0


@functools.lru_cache(maxsize=256)
def _order_head(compiled: CompiledSnippet, limits: Limits) -> bytes:
    """Return the start of a run order's JSON body: the snippet (marshalled, base64) and the limits.

    Cached per snippet and limits: built afresh, these cost about 0.1 ms of each run's latency on a CPU that
    was idle (dataclasses.asdict, base64, and JSON-escaping a kilobyte or more of code).
    """
    code = base64.b64encode(compiled.to_bytes()).decode()
    head = {"t": "run", "compiled": code, "limits": dataclasses.asdict(limits)}
    return encode_json(head).encode()[:-1] + b","


def _order_frame(compiled: CompiledSnippet, limits: Limits, event: JSON, context: Mapping[str, JSON] | None) -> bytes:
    """Return the run order frame; only *event* and *context* are serialised per run.

    Raises:
        TypeError: *event* or *context* is not JSON-serialisable.
    """
    tail = encode_json({"event": event, "context": dict(context or {})})
    return frame_body(_order_head(compiled, limits) + tail[1:].encode())


#: Deepest JSON a well-behaved child sends: a result or log fields nested MAX_RESULT_DEPTH deep, plus the frame.
#: Threat: a child whose language wall fell sending JSON nested deep enough to exhaust the host's recursion limit
#: in whatever processes the result next (masking, storing, answering a webhook).
_MAX_FRAME_DEPTH: Final = MAX_RESULT_DEPTH + 8

_OPTIONAL_TEXT_FIELDS: Final = ("exception", "traceback")


def _parse_frame(body: bytes) -> Any:
    """Decode one frame from the (untrusted) child; any failure is a ValueError (a malformed frame)."""
    try:
        return json.loads(body)
    except RecursionError:  # nested deeper than the JSON parser's own limit
        raise ValueError("a frame is nested too deeply") from None


def _well_formed_error(error: object) -> bool:
    """Return True when *error* has the shape of ``RunError.to_json()`` (checked before RunError.from_json)."""
    if (
        not isinstance(error, dict)
        or not isinstance(error.get("type"), str)
        or not isinstance(error.get("message"), str)
    ):
        return False
    line, errors = error.get("line"), error.get("errors", [])
    return (
        (line is None or type(line) is int)
        and all(error.get(name) is None or isinstance(error[name], str) for name in _OPTIONAL_TEXT_FIELDS)
        and isinstance(errors, list)
        and all(isinstance(item, str) for item in errors)
    )


def _nested_deeper_than(value: object, limit: int) -> bool:
    """Return True when *value* (parsed JSON) nests containers more than *limit* levels deep (iteratively)."""
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth >= limit:
                return True
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return False


def _failed(error_class: type[SandboxError], message: str, started: float, **details: Any) -> RunResult:
    error = RunError.of(error_class, message, **details)
    return RunResult(ok=False, error=error, duration_ms=(time.monotonic() - started) * 1000)


class Sandbox:
    """Run snippets in fresh processes forked from a warm, clean zygote.

    Thread-safe: any number of threads (or ``await run_async``) may run at once, each in its own child.

    Args:
        environment: ``"package.module:function"`` naming the environment factory the zygote imports, or None.
        spare_children: Children kept forked (and warmed up) ahead of demand; a run that finds one ready skips the
            fork. The default, 2, means a run never takes the last spare: with one, each run would have its
            replacement forked and warmed up while it runs, competing with it for the CPU (about 2 ms of latency
            on 2 cores). Raise it for bursts of concurrent runs; each spare costs a few MiB of unique memory.
        hardening: Apply the OS hardening steps of :mod:`sandbox.hardening` (reported in :attr:`hardening`).
    """

    def __init__(self, *, environment: str | None = None, spare_children: int = 2, hardening: bool = True) -> None:
        if spare_children < 1:
            raise ValueError(f"spare_children must be at least 1, got {spare_children!r}.")
        self._environment = environment
        self._spare_children = spare_children
        self._hardening = hardening
        self._zygote: ZygoteProcess | None = None
        self._lock = threading.Lock()

    # -- lifecycle ---------------------------------------------------------------------------------------------
    def start(self) -> Sandbox:
        """Start the zygote now (otherwise the first run does). Raises WorkerCrashedError if it cannot start."""
        self._live_zygote()
        return self

    def close(self) -> None:
        """Stop the zygote; its children die with it. The sandbox may be started again."""
        with self._lock:
            zygote, self._zygote = self._zygote, None
        if zygote is not None:
            zygote.close()

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    @property
    def hardening(self) -> Mapping[str, str]:
        """Each OS hardening step of the running zygote: ``"active"`` or ``"unavailable: why"``."""
        return dict(self._live_zygote().hardening)

    @property
    def zygote_pid(self) -> int:
        """Process id of the running zygote (for monitoring; starts it if needed)."""
        return self._live_zygote().pid

    def _live_zygote(self) -> ZygoteProcess:
        with self._lock:
            if self._zygote is None or not self._zygote.alive:
                if self._zygote is not None:
                    _LOGGER.warning("The sandbox zygote (pid %d) died; starting a new one.", self._zygote.pid)
                    self._zygote.close()
                self._zygote = ZygoteProcess.start(
                    environment=self._environment, spare_children=self._spare_children, hardening=self._hardening
                )
            return self._zygote

    # -- runs --------------------------------------------------------------------------------------------------
    def run(
        self,
        source: str,
        *,
        event: JSON = None,
        limits: Limits | None = None,
        context: Mapping[str, JSON] | None = None,
        on_request: RequestHandler | None = None,
        on_started: Callable[[], object] | None = None,
    ) -> RunResult:
        """Run *source* once in a fresh child and return what happened, failures included, as a RunResult.

        Args:
            source: The snippet (a function body).
            event: JSON passed to the snippet as ``event``.
            limits: Limits of this run (default: :class:`Limits`'s defaults).
            context: JSON passed to the environment factory in the child; never secrets.
            on_request: Called in the host (in this thread) for each request the child makes; raise
                EgressDeniedError or QuotaExceededError to refuse one.
            on_started: Called in this thread once the child has its order, while it runs: work the caller needs
                anyway (reading what *on_request* will use) then overlaps with the run. The child's requests
                wait until it returns; if it raises, the child is killed and the exception propagates.

        Raises:
            TypeError: *event* or *context* is not JSON-serialisable (checked before any process work).
            WorkerCrashedError: The zygote had to be (re)started and could not be.
        """
        started = time.monotonic()
        limits = limits or Limits()
        try:
            compiled = compile_snippet(source)
        except CompileError as error:
            line = error.errors[0].partition(":")[0].removeprefix("Line ") if error.errors else ""
            line_number = int(line) if line.isdigit() else None
            return _failed(CompileError, str(error), started, line=line_number, errors=error.errors)
        order = _order_frame(compiled, limits, event, context)
        child = self._take_child()
        if child is None:
            return _failed(WorkerCrashedError, "No sandbox child process could be started.", started)
        try:
            return self._converse(child, order, limits, on_request, on_started, started)
        finally:
            child.sock.close()
            child.finish()  # SIGKILL if still there (a wall-clock overrun, or an escape that kept it alive)

    async def run_async(
        self,
        source: str,
        *,
        event: JSON = None,
        limits: Limits | None = None,
        context: Mapping[str, JSON] | None = None,
        on_request: RequestHandler | None = None,
        on_started: Callable[[], object] | None = None,
    ) -> RunResult:
        """Like :meth:`run`, awaited; the run (and *on_request*) happens in the loop's default executor."""
        call = functools.partial(
            self.run,
            source,
            event=event,
            limits=limits,
            context=context,
            on_request=on_request,
            on_started=on_started,
        )
        return await asyncio.get_running_loop().run_in_executor(None, call)

    def _take_child(self) -> ChildProcess | None:
        for _ in range(2):  # a zygote that dies while we wait is replaced once per run
            child = self._live_zygote().take(timeout=_SPARE_WAIT_SECONDS)
            if child is not None:
                return child
        return None

    def _converse(
        self,
        child: ChildProcess,
        order: bytes,
        limits: Limits,
        on_request: RequestHandler | None,
        on_started: Callable[[], object] | None,
        started: float,
    ) -> RunResult:
        deadline = time.monotonic() + limits.wall_seconds
        requests = 0
        try:
            child.sock.sendall(order)
        except OSError:
            return self._death(child, limits, started)
        if on_started is not None:
            on_started()  # outside the try below: its exceptions are the caller's, not a child's failure
        try:
            while True:
                body = recv_body(child.sock, max_bytes=result_frame_bytes(limits), deadline=deadline)
                frame = _parse_frame(body)
                if not isinstance(frame, dict):
                    raise ValueError("a frame must be a JSON object")
                if frame.get("t") == "result":
                    return self._result(frame.get("result"), started)
                if frame.get("t") != "request" or len(body) > REQUEST_BYTES:
                    return _failed(
                        EgressDeniedError, "The sandbox child process sent a request that is not allowed.", started
                    )
                requests += 1
                if requests > limits.egress_requests:
                    # The child counts its own requests and never sends one over the cap: this one is lying.
                    # Threat: a flood of refused requests keeping a host thread busy until the wall deadline.
                    message = (
                        f"The sandbox child process made more than {limits.egress_requests} requests; the run was "
                        "stopped."
                    )
                    return _failed(QuotaExceededError, message, started)
                child.sock.sendall(self._answer(frame, requests, limits, on_request))
        except TimeoutError:
            return _failed(
                TimeLimitExceededError,
                f"The snippet ran longer than its wall-clock limit of {limits.wall_seconds:g} s.",
                started,
            )
        except FrameTooLargeError:
            return _failed(OutputLimitExceededError, "The run's output and result are over their caps.", started)
        except (ChannelClosedError, OSError):
            return self._death(child, limits, started)
        except ValueError:
            return _failed(WorkerCrashedError, "The sandbox child process sent a malformed frame.", started)

    def _answer(self, frame: dict[str, Any], requests: int, limits: Limits, on_request: RequestHandler | None) -> bytes:
        """Return the answer frame to one request (the handler runs here, in the caller's thread)."""
        op = frame.get("op")
        try:
            if requests > limits.egress_requests:
                raise QuotaExceededError(f"This run already made {limits.egress_requests} requests.")
            if on_request is None or not isinstance(op, str):
                raise EgressDeniedError(f"Request {op!r} is not allowed: this sandbox answers no requests.")
            return encode_frame({"t": "answer", "value": on_request(op, frame.get("payload"))})
        except (EgressDeniedError, QuotaExceededError) as error:
            return encode_frame({"t": "answer", "error": {"type": type(error).__name__, "message": str(error)}})
        except Exception:
            _LOGGER.exception("The request handler failed on request %r.", op)
            message = f"The host could not answer the {op!r} request."
            return encode_frame({"t": "answer", "error": {"type": EgressDeniedError.__name__, "message": message}})

    def _death(self, child: ChildProcess, limits: Limits, started: float) -> RunResult:
        status, cpu_seconds = child.wait_exit(_EXIT_REPORT_SECONDS)
        if status is None:
            return _failed(WorkerCrashedError, "The sandbox child process vanished before it answered.", started)
        if os.WIFSIGNALED(status):
            signum = os.WTERMSIG(status)
            if signum == signal.SIGXCPU or (signum == signal.SIGKILL and cpu_seconds >= limits.cpu_seconds):
                message = f"The snippet used more than its CPU limit of {limits.cpu_seconds:g} s."
                return _failed(TimeLimitExceededError, message, started)
            name = signal.Signals(signum).name
            if signum in FAULT_SIGNALS and child.in_snippet:
                message = (
                    f"The snippet crashed its process ({name}) while its own code ran: most often recursion inside "
                    "C code that Python does not count, such as hash() of a tuple nested hundreds of thousands deep "
                    "(or a dict key or set member made of one). Flatten the data; retrying will crash the same way."
                )
                return _failed(SnippetCrashedError, message, started, exception=name)
            return _failed(WorkerCrashedError, f"The sandbox child process died from signal {name}.", started)
        code = os.WEXITSTATUS(status)
        return _failed(
            WorkerCrashedError, f"The sandbox child process exited with code {code} before it answered.", started
        )

    def _result(self, data: object, started: float) -> RunResult:
        # The child is untrusted: check the shape of what it sent before building a RunResult from it.
        if not isinstance(data, dict) or not isinstance(data.get("ok"), bool):
            return _failed(WorkerCrashedError, "The sandbox child process sent a malformed result.", started)
        stdout, logs, error = data.get("stdout", ""), data.get("logs") or [], data.get("error")
        well_formed = (
            isinstance(stdout, str)
            and isinstance(logs, list)
            and all(isinstance(record, dict) for record in logs)
            and (error is None) is data["ok"]
            and (error is None or _well_formed_error(error))
            and not _nested_deeper_than(data, _MAX_FRAME_DEPTH)
        )
        if not well_formed:
            return _failed(WorkerCrashedError, "The sandbox child process sent a malformed result.", started)
        return RunResult(
            ok=data["ok"],
            value=data.get("result"),
            stdout=stdout,
            logs=tuple(logs),
            error=None if error is None else RunError.from_json(error),
            duration_ms=(time.monotonic() - started) * 1000,
        )
