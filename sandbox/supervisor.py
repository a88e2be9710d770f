"""The host side of process isolation: :class:`Sandbox` runs each snippet in its own child of a warm zygote.

The host never forks (it will hold keys): it starts ``python -I -m sandbox.zygote`` with :mod:`subprocess`, keeps
``spare_children`` children forked ahead of demand, and for each run takes one, sends it the compiled code, answers
its requests, and enforces the wall-clock deadline by having the zygote SIGKILL it. How a child ended decides the
error: SIGXCPU is the CPU limit, a kill we ordered is the wall limit, a fault signal while the child ran snippet
code is the snippet's crash (:mod:`sandbox.phase`), anything else unexplained is ours (``WorkerCrashedError``).

A run given an ``instance_key`` runs in a warm instance of that key instead (:mod:`sandbox.instance`): a child kept
for the key's next runs, recycled on any failure that is not the snippet's own exception.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import functools
import json
import logging
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Hashable, Mapping
from types import TracebackType
from typing import Any, Final

from sandbox.channel import (
    REQUEST_BYTES,
    ChannelClosedError,
    FrameTooLargeError,
    PeerReader,
    encode_frame,
    encode_json,
    frame_body,
)
from sandbox.compiler import CompiledSnippet, compile_snippet
from sandbox.environment import JSON
from sandbox.errors import (
    CompileError,
    EgressDeniedError,
    InvalidResultTextError,
    OutputLimitExceededError,
    QuotaExceededError,
    SandboxError,
    SnippetCrashedError,
    SnippetError,
    TimeLimitExceededError,
    WorkerCrashedError,
)
from sandbox.instance import (
    Hold,
    Instance,
    InstancePolicy,
    InstancePool,
    Placement,
    PoolKey,
    changed_since,
)
from sandbox.limits import Limits
from sandbox.output import MAX_RESULT_DEPTH
from sandbox.phase import FAULT_SIGNALS
from sandbox.pool import ChildProcess, ZygoteProcess
from sandbox.protocol import INSTANCE_ORDER, result_frame_bytes
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


def _order_frame(
    compiled: CompiledSnippet,
    limits: Limits,
    event: JSON,
    context: Mapping[str, JSON] | None,
    *,
    instance_cpu_seconds: float | None = None,
) -> bytes:
    """Return the run order frame; only *event* and *context* are serialised per run.

    *instance_cpu_seconds* (an instance's first order) makes the child an instance whose whole life may use that
    much CPU (see :mod:`sandbox.child`).

    Raises:
        TypeError: *event* or *context* is not JSON-serialisable.
    """
    tail_fields: dict[str, JSON] = {"event": event, "context": dict(context or {})}
    if instance_cpu_seconds is not None:
        tail_fields["instance_cpu_seconds"] = instance_cpu_seconds
    tail = encode_json(tail_fields)
    return frame_body(_order_head(compiled, limits) + tail[1:].encode())


def _replacement_lead(policy: InstancePolicy) -> int:
    """Runs before an instance's last at which its replacement starts being set up (:meth:`Sandbox._replace_ahead`):
    enough for the start to finish before the old one is recycled, under load."""
    return max(1, min(policy.max_runs // 10, 20))


@dataclasses.dataclass(frozen=True, slots=True)
class _Run:
    """One keyed run's inputs, as :meth:`Sandbox.run` hands them to the instance paths."""

    compiled: CompiledSnippet
    limits: Limits
    event: JSON
    context: Mapping[str, JSON] | None
    on_request: RequestHandler | None
    on_started: Callable[[], object] | None
    started: float

    def order(self, *, instance_cpu_seconds: float | None = None) -> bytes:
        """Return the run's order frame (see :func:`_order_frame`)."""
        return _order_frame(
            self.compiled, self.limits, self.event, self.context, instance_cpu_seconds=instance_cpu_seconds
        )


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


#: Failures after which an instance still serves its key: the snippet's own exceptions and refused requests, which
#: the language wall turned into data while the process stayed in a known state. Anything else recycles it.
_INSTANCE_SURVIVES: Final = (SnippetError, EgressDeniedError, InvalidResultTextError)


#: The host's answer to an instance's ``ready`` frame: its state was read, the run may start.
_GO: Final = encode_frame({"t": "go"})


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
        instances: When the warm instances of runs given an ``instance_key`` are recycled, and how many may live.
    """

    def __init__(
        self,
        *,
        environment: str | None = None,
        spare_children: int = 2,
        hardening: bool = True,
        instances: InstancePolicy | None = None,
    ) -> None:
        if spare_children < 1:
            raise ValueError(f"spare_children must be at least 1, got {spare_children!r}.")
        self._environment = environment
        self._spare_children = spare_children
        self._hardening = hardening
        self._zygote: ZygoteProcess | None = None
        self._lock = threading.Lock()
        self._instance_policy = instances or InstancePolicy()
        self._instances = InstancePool(self._instance_policy)

    # -- lifecycle ---------------------------------------------------------------------------------------------
    def start(self) -> Sandbox:
        """Start the zygote now (otherwise the first run does). Raises WorkerCrashedError if it cannot start."""
        self._live_zygote()
        return self

    def close(self) -> None:
        """Stop the zygote; its children (and every instance) die with it. The sandbox may be started again."""
        with self._lock:
            zygote, self._zygote = self._zygote, None
            instances, self._instances = self._instances, InstancePool(self._instance_policy)
        instances.close()
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
    def instances(self) -> InstancePool:
        """The live warm instances (see :mod:`sandbox.instance`)."""
        return self._instances

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
        instance_key: Hashable | None = None,
        instance_hold: Hold | None = None,
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
            instance_key: Run in a warm instance kept for this key (with these *limits*), reused by the key's later
                runs and never by another key's (:mod:`sandbox.instance`); None runs in a fresh child.
            instance_hold: Called when a process starts serving *instance_key* (a new instance, or a fresh child
                when the pool is full), so that the host counts what it holds against its owner (e.g. a tenant's
                memory) for as long as it lives; returns the function that releases the hold. What it raises
                propagates, and nothing runs.

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
        if instance_key is not None:
            run = _Run(compiled, limits, event, context, on_request, on_started, started)
            return self._run_keyed((instance_key, limits), run, instance_hold)
        order = _order_frame(compiled, limits, event, context)
        return self._run_fresh(order, limits, on_request, on_started, started)

    def _run_keyed(self, key: PoolKey, run: _Run, instance_hold: Hold | None) -> RunResult:
        """Run in an instance of *key*: an idle one, a new one, or (waiting for one within the wall-clock limit)
        the next one its other runs hand back; a fresh child when the pool is full of running instances."""
        limits = run.limits
        # The pool the run's place is counted in, to the end: close() may replace self._instances meanwhile.
        pool = self._instances
        # The wait for an instance counts against the run's wall-clock limit: the caller waits no longer in all.
        deadline = time.monotonic() + limits.wall_seconds
        order = run.order()
        started_on: list[Instance] = []

        def start(instance: Instance) -> bool:
            """Send this run's order to *instance* (called by the run handing it back, when this one waits)."""
            try:
                PeerReader(instance.child.sock).send(order, deadline=deadline)
            except OSError:  # TimeoutError too: a child that does not take its order is not kept
                return False
            started_on.append(instance)
            return True

        placement = pool.acquire(key, deadline=deadline, start=start)
        if isinstance(placement, Instance):
            return self._run_instance(pool, placement, run, deadline, None if placement in started_on else order)
        if placement is Placement.TIMED_OUT:
            message = (
                f"No warm instance of this script came free within the run's wall-clock limit of "
                f"{limits.wall_seconds:g} s ({self._instance_policy.max_per_key} computing at once per process, "
                "besides runs waiting on a request); "
                "nothing ran. Raise the limit or the instances per script, or run it in fresh processes."
            )
            return _failed(TimeLimitExceededError, message, run.started)
        try:
            release = instance_hold() if instance_hold is not None else None  # may raise: then nothing runs
        except BaseException:
            if placement is Placement.START:
                pool.unreserve(key)
            raise
        kept = False
        try:
            if placement is Placement.START:
                result, kept = self._start_instance(pool, key, run, release, deadline, instance_hold)
                return result
            return self._run_fresh(order, limits, run.on_request, run.on_started, run.started)
        finally:
            if not kept and release is not None:
                release()

    def _run_fresh(
        self,
        order: bytes,
        limits: Limits,
        on_request: RequestHandler | None,
        on_started: Callable[[], object] | None,
        started: float,
    ) -> RunResult:
        child = self._take_child()
        if child is None:
            return _failed(WorkerCrashedError, "No sandbox child process could be started.", started)
        try:
            return self._converse(child, order, limits, on_request, on_started, started)[0]
        finally:
            child.sock.close()
            child.finish()  # SIGKILL if still there (a wall-clock overrun, or an escape that kept it alive)

    def _start_instance(
        self,
        pool: InstancePool,
        key: PoolKey,
        run: _Run,
        release: Callable[[], object] | None,
        deadline: float,
        hold: Hold | None,
    ) -> tuple[RunResult, bool]:
        """Run in a spare child that becomes an instance of *key* (a place in *pool* is reserved), by *deadline*.

        Returns the result and whether the instance was kept; a kept instance owns *release* from then on, and
        *hold* for a replacement of its own.
        """
        started = time.monotonic()
        # The CPU the instance's whole life may use: its rlimit's hard cap, which no later run can raise.
        order = run.order(instance_cpu_seconds=self._lifetime_cpu_seconds(run.limits))
        child = self._take_child()
        if child is None:
            pool.unreserve(key)
            return _failed(WorkerCrashedError, "No sandbox child process could be started.", started), False
        instance = Instance(key=key, child=child, hold=hold)
        kept = False
        try:
            result, answered = self._converse(
                child,
                order,
                run.limits,
                run.on_request,
                run.on_started,
                started,
                instance.read_baseline,
                deadline=deadline,
                host_wait=self._host_wait(pool, key, run),
            )
            instance.runs = 1
            kept = self._recycle_reason(instance, result, answered) is None
        finally:
            if not kept:
                pool.unreserve(key)
                instance.close_reader()
                child.sock.close()
                child.finish()  # it was a spare until now: its replacement is ordered as for any run
        if kept:
            instance.release = release
            child.zygote.keep()
            pool.put_back(instance)
        return result, kept

    def _run_instance(
        self, pool: InstancePool, instance: Instance, run: _Run, deadline: float, order: bytes | None
    ) -> RunResult:
        """Run *order* (None: already sent) in an instance taken from *pool*, by *deadline*; put it back or
        recycle it."""
        try:
            result, answered = self._converse(
                instance.child,
                order,
                run.limits,
                run.on_request,
                run.on_started,
                run.started,
                deadline=deadline,
                host_wait=self._host_wait(pool, instance.key, run),
            )
        except BaseException:
            pool.discard(instance, "the run was interrupted")
            raise
        instance.runs += 1
        why = self._recycle_reason(instance, result, answered)
        if why is None:
            pool.put_back(instance)
            if instance.runs == self._instance_policy.max_runs - _replacement_lead(self._instance_policy):
                self._replace_ahead(pool, instance)
        else:
            pool.discard(instance, why)
        return result

    def _host_wait(
        self, pool: InstancePool, key: PoolKey, run: _Run
    ) -> Callable[[], contextlib.AbstractContextManager[None]]:
        """Return what marks an instance of *key* in *pool* waiting on the host while it answers one of *run*'s
        requests (:meth:`InstancePool.waiting_on_host`); nothing when the run has no handler, whose refusals take
        no time."""
        if run.on_request is None:
            return contextlib.nullcontext
        return functools.partial(pool.waiting_on_host, key)

    def _lifetime_cpu_seconds(self, limits: Limits) -> int:
        """The CPU an instance's whole life may use: its rlimit's hard cap, which no later run can raise."""
        return self._instance_policy.max_runs * max(1, math.ceil(limits.cpu_seconds)) + 1

    def _replace_ahead(self, pool: InstancePool, instance: Instance) -> None:
        """Set up a replacement of *instance*, soon recycled after ``max_runs``, in a thread of its own, when runs of
        its key wait: the start (a spare child made an instance, under a hold of its own) stays off their
        latency, and the key never runs with an instance less (:meth:`InstancePool.reserve_replacement`)."""
        if pool.reserve_replacement(instance.key):
            threading.Thread(
                target=self._set_up_instance,
                args=(pool, instance.key, instance.hold),
                name="sandbox-instance-start",
                daemon=True,  # bounded by the wall-clock limit; an exiting host does not wait for it
            ).start()

    def _set_up_instance(self, pool: InstancePool, key: PoolKey, hold: Hold | None) -> None:
        """Make a spare child an instance of *key* without a run (an instance order) and hand it to *pool*, whose
        place for it is reserved; give the place back when that fails."""
        limits = key[1]
        release: Callable[[], object] | None = None
        child: ChildProcess | None = None
        instance: Instance | None = None
        try:
            release = hold() if hold is not None else None
            child = self._take_child()
            if child is not None:
                instance = Instance(key=key, child=child, hold=hold)
                order: dict[str, JSON] = {
                    "t": INSTANCE_ORDER,
                    "limits": dataclasses.asdict(limits),
                    "instance_cpu_seconds": self._lifetime_cpu_seconds(limits),
                }
                peer = PeerReader(child.sock)
                deadline = time.monotonic() + limits.wall_seconds
                peer.send(encode_frame(order), deadline=deadline)
                if _parse_frame(peer.recv_body(max_bytes=1024, deadline=deadline)) == {"t": "ready"}:
                    instance.read_baseline()
                    if instance.baseline is not None:
                        peer.send(_GO, deadline=deadline)
                        instance.release, release = release, None
                        child.zygote.keep()
                        pool.put_back(instance)
                        return
        except Exception:  # the key's runs carry on as they were; a new instance starts on demand
            _LOGGER.debug("A replacement sandbox instance could not be set up.", exc_info=True)
        if instance is not None:
            instance.close_reader()
        if child is not None:
            child.sock.close()
            child.finish()
        if release is not None:
            release()
        pool.unreserve(key)

    def _recycle_reason(self, instance: Instance, result: RunResult, answered: bool) -> str | None:
        """Return why *instance* must not serve another run after *result* (None when it may)."""
        if not answered:
            return "the run ended without a result from it"
        if instance.baseline is None or instance.reader is None:
            return "its state could not be read before its first run"
        if result.error is not None and not any(result.error.is_a(survives) for survives in _INSTANCE_SURVIVES):
            return f"the run failed with {result.error.type}"
        if instance.runs >= self._instances.policy.max_runs:
            return f"it served {instance.runs} runs"
        return changed_since(instance.baseline, instance.reader.read(), self._instances.policy)

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
        order: bytes | None,
        limits: Limits,
        on_request: RequestHandler | None,
        on_started: Callable[[], object] | None,
        started: float,
        on_ready: Callable[[], object] | None = None,
        *,
        deadline: float | None = None,
        host_wait: Callable[[], contextlib.AbstractContextManager[None]] = contextlib.nullcontext,
    ) -> tuple[RunResult, bool]:
        """Carry out one run's conversation with *child*; return its result and whether the child sent it.

        *order* is None when it was sent already (an instance handed from one run to the next, see
        :meth:`InstancePool.acquire`).

        *on_ready* is called when a child becoming an instance reports it is set up, before its first snippet runs.
        *deadline* (``time.monotonic()``) is when the wall-clock limit passes (default: its length from now).
        *host_wait* (an instance's run) gives the block within which the child waits for the answer to a request.
        """
        if deadline is None:
            deadline = time.monotonic() + limits.wall_seconds
        requests = 0
        peer = PeerReader(child.sock)
        try:
            if order is not None:
                peer.send(order, deadline=deadline)
        except TimeoutError:
            return self._timed_out(limits, started), False
        except OSError:
            return self._death(child, limits, started), False
        if on_started is not None:
            on_started()  # outside the try below: its exceptions are the caller's, not a child's failure
        try:
            while True:
                body = peer.recv_body(max_bytes=result_frame_bytes(limits), deadline=deadline)
                frame = _parse_frame(body)
                if not isinstance(frame, dict):
                    raise ValueError("a frame must be a JSON object")
                if frame.get("t") == "result":
                    return self._result(frame.get("result"), started), True
                if frame.get("t") == "ready" and on_ready is not None:  # an instance's, before any snippet code ran
                    on_ready()
                    on_ready = None
                    peer.send(_GO, deadline=deadline)
                    continue
                if frame.get("t") != "request" or len(body) > REQUEST_BYTES:
                    message = "The sandbox child process sent a request that is not allowed."
                    return _failed(EgressDeniedError, message, started), False
                requests += 1
                if requests > limits.egress_requests:
                    # The child counts its own requests and never sends one over the cap: this one is lying.
                    # Threat: a flood of refused requests keeping a host thread busy until the wall deadline.
                    message = (
                        f"The sandbox child process made more than {limits.egress_requests} requests; the run was "
                        "stopped."
                    )
                    return _failed(QuotaExceededError, message, started), False
                with host_wait():
                    peer.send(self._answer(frame, requests, limits, on_request), deadline=deadline)
        except TimeoutError:
            return self._timed_out(limits, started), False
        except FrameTooLargeError:
            return _failed(OutputLimitExceededError, "The run's output and result are over their caps.", started), False
        except (ChannelClosedError, OSError):
            return self._death(child, limits, started), False
        except ValueError:
            return _failed(WorkerCrashedError, "The sandbox child process sent a malformed frame.", started), False

    def _timed_out(self, limits: Limits, started: float) -> RunResult:
        message = f"The snippet ran longer than its wall-clock limit of {limits.wall_seconds:g} s."
        return _failed(TimeLimitExceededError, message, started)

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
