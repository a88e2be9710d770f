"""One run in one freshly forked process: rlimits, the snippet, a capped JSON reply, ``os._exit``.

The zygote calls :func:`serve` right after ``fork()``, with the child's end of its channel on :data:`CHANNEL_FD`
and every other descriptor closed. The child waits for the host's run order, applies the run's limits, runs the
snippet through :func:`sandbox.executor.execute`, serialises the result to JSON **here** (never a rich object
across the boundary), sends one result frame and exits without running any finaliser. Nothing it did can
survive: its threads, memory and descriptors end with the process.

An order carrying ``instance_cpu_seconds`` makes the child an *instance* (:mod:`sandbox.instance`): after its
result it waits for the next order on the same channel instead of exiting (an order of type
:data:`~sandbox.protocol.INSTANCE_ORDER` does the same without a run, and without a result frame). Each of its runs
gets a freshly built environment and fresh globals, and its own CPU budget (the ``RLIMIT_CPU`` soft limit moved to
the CPU used so far plus the run's ``cpu_seconds``); the other rlimits, set by the first order, hold for the
process's life.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import gc
import json
import math
import os
import resource
import select
import signal
import socket
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, NoReturn

from sandbox import hardening
from sandbox.channel import ChannelClosedError, HostRequests, encode_frame, recv_frame
from sandbox.environment import Environment, EnvironmentFactory, HostChannel, RunContext, WarmUpRun
from sandbox.errors import (
    EgressDeniedError,
    MemoryLimitExceededError,
    OutputLimitExceededError,
    SandboxError,
    WorkerCrashedError,
)
from sandbox.limits import Limits
from sandbox.output import printable_text
from sandbox.phase import PhaseMarker
from sandbox.protocol import INSTANCE_ORDER, result_frame_bytes
from sandbox.result import RunError, RunResult

if TYPE_CHECKING:
    from sandbox.compiler import CompiledSnippet

#: Descriptor of the child's channel to the host (0-2 are /dev/null).
CHANNEL_FD: Final = 3

#: Descriptors a run may hold open: the channel plus a few for lazy imports. Threat: a language escape opening
#: many sockets or files; with no network namespace and an unprivileged uid there is little to open anyway.
OPEN_FILES: Final = 16

#: Error text crossing the boundary is cut to these sizes. Threat: a huge exception message or traceback used
#: as an output flood that bypasses the ``print`` cap.
MESSAGE_CHARS: Final = 4096
TRACEBACK_CHARS: Final = 16384


#: How long a spare forked under load waits for an order before it warms up after all. Under load orders come
#: within a few milliseconds, and warming up would only spend CPU the runs need; after a burst, the spares left
#: over warm up instead of serving the next quiet run cold.
DEFERRED_WARM_UP_SECONDS: Final = 0.1


def _failure(error_class: type[SandboxError], message: str) -> dict[str, Any]:
    return RunResult(ok=False, error=RunError.of(error_class, message)).to_json()


# Built before any run: when memory is exhausted there may be nothing left to build this reply with.
_OUT_OF_MEMORY: Final = encode_frame(
    {"t": "result", "result": _failure(MemoryLimitExceededError, "The snippet used more memory than its limit.")}
)


#: An instance's first frame: it is set up and waits for the host to read its state (see :mod:`sandbox.instance`).
_INSTANCE_READY: Final = encode_frame({"t": "ready"})


def open_statm() -> int:
    """Open this process's ``/proc/<pid>/statm`` and return the descriptor.

    The zygote opens it before its hardening (Landlock leaves ``/proc`` unreadable after it) and reads it before
    each fork: a child's address space at the fork is the zygote's.
    """
    return os.open("/proc/self/statm", os.O_RDONLY | os.O_CLOEXEC)


def address_space_bytes(statm_fd: int) -> int:
    """Return the address-space size, in bytes, of the process whose ``statm`` is open as *statm_fd*.

    ``RLIMIT_AS`` counts a run's memory above the size its child had at the fork.
    """
    pages = int(os.pread(statm_fd, 128, 0).split()[0])
    return pages * resource.getpagesize()


#: The rlimits every run gets, in the order apply_rlimits() sets them.
_RLIMITS: Final = (
    resource.RLIMIT_CORE,
    resource.RLIMIT_CPU,
    resource.RLIMIT_AS,
    resource.RLIMIT_FSIZE,
    resource.RLIMIT_NOFILE,
    resource.RLIMIT_NPROC,
)


def apply_rlimits(limits: Limits, *, address_space_bytes: int, cpu_hard_seconds: float | None = None) -> None:
    """Apply the run's limits to this process (the kernel enforces them from here on).

    ``RLIMIT_AS`` is counted above the zygote's own footprint (*address_space_bytes*). ``RLIMIT_CPU`` is whole
    seconds: SIGXCPU at the soft limit, SIGKILL one second later. ``RLIMIT_NPROC=0`` refuses threads and
    processes, but only when the child is not root. An instance passes *cpu_hard_seconds*, the CPU its whole life
    may use: an unprivileged process can never raise a hard limit again, and each of its runs moves the soft limit
    (:func:`set_run_cpu_limit`).
    """
    cpu = max(1, math.ceil(limits.cpu_seconds))
    cpu_hard = cpu + 1 if cpu_hard_seconds is None else max(cpu + 1, math.ceil(cpu_hard_seconds))
    memory = address_space_bytes + limits.memory_bytes
    values = ((0, 0), (cpu, cpu_hard), (memory, memory), (0, 0), (OPEN_FILES, OPEN_FILES), (0, 0))
    for limit, value in zip(_RLIMITS, values, strict=True):
        resource.setrlimit(limit, value)


def set_run_cpu_limit(limits: Limits) -> None:
    """Move the ``RLIMIT_CPU`` soft limit to the CPU this process used so far plus the run's ``cpu_seconds``.

    An instance's runs share one process, so each run's budget starts where the last one left off. SIGXCPU comes
    at the soft limit, which never passes the hard one set for the instance's life.
    """
    usage = resource.getrusage(resource.RUSAGE_SELF)
    _soft, hard = resource.getrlimit(resource.RLIMIT_CPU)
    soft = math.ceil(usage.ru_utime + usage.ru_stime + limits.cpu_seconds)
    resource.setrlimit(resource.RLIMIT_CPU, (soft if hard == resource.RLIM_INFINITY else min(soft, hard), hard))


def _clip(text: str | None, limit: int) -> str | None:
    if text is None or len(text) <= limit:
        return text
    return text[:limit] + f"... ({len(text) - limit} more characters cut)"


def encode_result(result: RunResult, limits: Limits) -> bytes:
    """Return the result frame for *result*, with error text clipped and the frame size capped."""
    data = result.to_json()
    error = data.get("error")
    if error is not None:
        error["message"] = _clip(error.get("message"), MESSAGE_CHARS)
        if "traceback" in error:
            error["traceback"] = _clip(error["traceback"], TRACEBACK_CHARS)
    try:
        frame = encode_frame({"t": "result", "result": data})
    except UnicodeEncodeError:  # printed or logged lone surrogates (a returned one is the run's InvalidResultTextError)
        frame = encode_frame({"t": "result", "result": printable_text(data)})
    if len(frame) > result_frame_bytes(limits):
        message = f"The run's output and result are over their caps ({len(frame)} bytes)."
        return encode_frame({"t": "result", "result": _failure(OutputLimitExceededError, message)})
    return frame


class _CannedHost:
    """The host channel of a warm-up run: canned answers by op, and no host behind them."""

    def __init__(self, answers: Mapping[str, Any]) -> None:
        self._answers = answers

    def request(self, op: str, payload: Mapping[str, Any]) -> Any:
        if op not in self._answers:
            raise EgressDeniedError(f"Request {op!r} is not allowed during a warm-up run.")
        # Through JSON, as a real answer arrives: the warm-up then also covers the channel's decoding.
        return json.loads(json.dumps(self._answers[op]))


#: The warm-up orders, each with its canned answers; built once in the zygote, so every child shares them.
_warm_orders: list[tuple[dict[str, Any], Mapping[str, Any]]] = []


def prepare_warm_up(runs: Sequence[WarmUpRun] = ()) -> None:
    """Build the warm-up orders: an empty run, then the environment's *runs* (called once, in the zygote)."""
    from sandbox import compiler

    limits = dataclasses.asdict(Limits())
    _warm_orders.clear()
    for run in (WarmUpRun(source="return None"), *runs):
        compiled = base64.b64encode(compiler.compile_snippet(run.source).to_bytes()).decode()
        order = {"t": "run", "compiled": compiled, "event": run.event, "context": {}, "limits": limits}
        _warm_orders.append((order, dict(run.answers)))


def warm_up(factory: EnvironmentFactory, *, order_waiting: Callable[[], bool] | None = None) -> None:
    """Make the warm-up runs (see :mod:`sandbox.environment`) before the order comes.

    After ``fork()`` every page a run writes to (reference counts, the allocator, the JSON codec, the rlimit
    calls) is copied on first write; doing that ahead of demand takes most of a run's page faults off its latency.
    When *order_waiting* says the order is already there (the host is busy and took this child at once), the
    remaining warm-up runs are skipped: they would only delay the run and spend CPU on paths it may not take.
    """
    with contextlib.suppress(OSError, ValueError):
        for limit in _RLIMITS:  # the same calls as apply_rlimits(), setting each limit to what it already is
            resource.setrlimit(limit, resource.getrlimit(limit))
    for order, answers in _warm_orders:
        if order_waiting is not None and order_waiting():
            return
        with contextlib.suppress(Exception):
            run_order(json.loads(json.dumps(order)), factory, _CannedHost(answers))


def run_order(order: dict[str, Any], factory: EnvironmentFactory, channel: HostChannel) -> bytes:
    """Carry out one warm-up order with the canned host *channel* (no rlimits) and return the result frame."""
    limits = Limits(**order["limits"])
    environment = prepare_environment(factory, RunContext(host=channel, context=order.get("context") or {}))
    return execute_order(order, environment, limits)


def prepare_environment(factory: EnvironmentFactory, run: RunContext) -> Environment | RunResult:
    """Call the environment factory; a SandboxError it raises becomes the run's failed result."""
    try:
        return factory(run)
    except SandboxError as error:
        return RunResult(ok=False, error=RunError(type=type(error).__name__, message=str(error)))


def execute_order(
    order: dict[str, Any], environment: Environment | RunResult, limits: Limits, *, phase: PhaseMarker | None = None
) -> bytes:
    """Run the order's snippet in *environment* (or report the factory's failure) and return the result frame.

    *phase* is marked as snippet code while the snippet runs (see :mod:`sandbox.phase`).
    """
    from sandbox import executor  # pre-imported by the zygote; a dictionary lookup

    if isinstance(environment, RunResult):
        return encode_result(environment, limits)
    compiled = order_snippet(order["compiled"])
    # The event was decoded from this order's frame, for this run alone: the snippet may have it as it is.
    result = executor.execute(
        compiled, event=order.get("event"), environment=environment, limits=limits, phase=phase, fresh_event=True
    )
    return encode_result(result, limits)


#: The snippet this process last unmarshalled, by its text in the order: an instance runs one snippet (one source
#: version) run after run, and unmarshalling it again would cost each run more than the snippet itself often does.
#: Sharing the code object between runs is safe: it is immutable, no snippet can reach it (code objects are never
#: values in snippets, see sandbox.guards), and each run executes it into fresh globals, so every function and
#: class a run sees is made anew.
_last_compiled: tuple[str, CompiledSnippet] | None = None


def order_snippet(text: str) -> CompiledSnippet:
    """Return the snippet the order's ``compiled`` *text* holds (base64 of marshal, from our own host)."""
    global _last_compiled  # one slot; a child runs one order at a time
    from sandbox.compiler import CompiledSnippet  # pre-imported by the zygote; a dictionary lookup

    if _last_compiled is not None and _last_compiled[0] == text:
        return _last_compiled[1]
    compiled = CompiledSnippet.from_bytes(base64.b64decode(text))
    _last_compiled = (text, compiled)
    return compiled


class PendingOrder:
    """The run order on the child's socket, received on first use.

    The environment is built before the order comes (while the host has nothing for this child to do), so the
    order's ``context`` reaches the factory as an :class:`OrderContext` that waits for the order when first read.
    """

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._order: dict[str, Any] | None = None

    def get(self) -> dict[str, Any]:
        """Return the order, receiving it now if it has not been read yet."""
        if self._order is None:
            self._order = recv_frame(self._sock, max_bytes=1 << 30)
        return self._order


class OrderContext(Mapping[str, Any]):
    """The ``context`` of a :class:`PendingOrder`: reading it waits for the order (see :class:`RunContext`)."""

    def __init__(self, order: PendingOrder) -> None:
        self._order = order

    def _context(self) -> Mapping[str, Any]:
        context = self._order.get().get("context")
        return context if isinstance(context, dict) else {}

    def __getitem__(self, key: str) -> Any:
        return self._context()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._context())

    def __len__(self) -> int:
        return len(self._context())


@dataclasses.dataclass
class InstanceState:
    """Whether this child became an instance (its first order said so), and so serves further orders."""

    active: bool = False


def serve_order(
    sock: socket.socket,
    factory: EnvironmentFactory,
    *,
    address_space_bytes: int,
    phase: PhaseMarker | None = None,
    instance: InstanceState | None = None,
) -> bytes:
    """Build the run's environment, then wait for the order on *sock*, apply its rlimits, run it; return the frame.

    *address_space_bytes* is this process's footprint at its fork, before any warm-up (``RLIMIT_AS`` counts above it).
    No snippet code runs before the order's rlimits are applied. *phase* records whose code runs (the snippet's,
    or the platform's during requests to the host) for the zygote to read if the process dies of a fault.
    *instance* is set active by a first order that makes this child an instance; a later order of an active
    instance only moves the CPU limit (:func:`set_run_cpu_limit`).
    """
    pending = PendingOrder(sock)
    # No request can leave before the order sets the run's cap.
    host = HostRequests(sock, max_requests=None, phase=phase)
    environment = prepare_environment(factory, RunContext(host=host, context=OrderContext(pending)))
    order = pending.get()
    limits = Limits(**order["limits"])
    if instance is not None and instance.active:
        set_run_cpu_limit(limits)
    else:
        lifetime_cpu = order.get("instance_cpu_seconds")
        is_instance = instance is not None and type(lifetime_cpu) in (int, float)
        apply_rlimits(
            limits, address_space_bytes=address_space_bytes, cpu_hard_seconds=lifetime_cpu if is_instance else None
        )
        if is_instance and instance is not None:
            instance.active = True
            set_run_cpu_limit(limits)
            # The host reads this process's state (threads, signals, descriptors, memory) now, before any snippet
            # code ran in it, as what the instance must still look like after each run; it answers when done.
            sock.sendall(_INSTANCE_READY)
            recv_frame(sock, max_bytes=1024)
            if order.get("t") == INSTANCE_ORDER:  # set up ahead of demand: no run, the first comes as the next order
                return b""
    host.allow_requests(limits.egress_requests)
    return execute_order(order, environment, limits, phase=phase)


def serve(
    sock: socket.socket,
    factory: EnvironmentFactory,
    *,
    zygote_pid: int,
    address_space_bytes: int,
    warm: bool = True,
    phase: PhaseMarker | None = None,
) -> NoReturn:
    """Serve one run on *sock* (or an instance's runs, one after another), then exit. Called right after ``fork()``.

    *address_space_bytes* is the zygote's address space, read just before the fork (``RLIMIT_AS`` counts above it).

    With *warm* (the host was idle when it ordered this child), the child makes the warm-up runs (:func:`warm_up`)
    at once; without, only if no order came within :data:`DEFERRED_WARM_UP_SECONDS` (the burst that kept the host
    busy is over, and the CPU is idle again). Either way it then builds the run's environment before it reads the
    order (:func:`serve_order`): a spare child that waits for its order has it ready, which takes the factory off
    the run's latency. *phase* is this child's phase byte, shared with the zygote (:mod:`sandbox.phase`).

    An instance (see the module docstring) sends each result and waits for its next order; it exits when the host
    closes the channel, or after the first run that failed outside the snippet (its state is then unknown).
    """
    frame = b""
    instance = InstanceState()
    try:
        hardening.enter_child_identity()  # first: it resets the parent-death signal
        hardening.die_with_parent()
        if os.getppid() != zygote_pid:  # the zygote died before PR_SET_PDEATHSIG took effect
            os._exit(0)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # RLIMIT_FSIZE=0: a write fails with EFBIG, no signal death
        if warm or not select.select([sock], [], [], DEFERRED_WARM_UP_SECONDS)[0]:
            warm_up(factory, order_waiting=lambda: bool(select.select([sock], [], [], 0)[0]))
        frame = serve_order(sock, factory, address_space_bytes=address_space_bytes, phase=phase, instance=instance)
        while instance.active:
            if frame:  # none after an instance order
                sock.sendall(frame)
            frame = b""
            gc.collect()  # the last run's cyclic garbage (its globals, functions, classes) goes before the next order
            frame = serve_order(sock, factory, address_space_bytes=address_space_bytes, phase=phase, instance=instance)
    except (ChannelClosedError, BrokenPipeError, ConnectionResetError):
        os._exit(0)  # the host closed this spare child (or recycled this instance): nothing to run
    except MemoryError:
        frame = _OUT_OF_MEMORY
    except BaseException as error:  # noqa: BLE001 - the child must answer whatever happened, then exit
        frame = _crash_frame(error)
    try:
        sock.sendall(frame)
        # Exiting tears down a big address space (about a millisecond). Wait for the host to hang up first, and as
        # SCHED_BATCH, whose wake-up never preempts the host: the teardown stays off the run's latency.
        with contextlib.suppress(OSError):
            os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
        sock.recv(1)
    finally:
        os._exit(0)


def _crash_frame(error: BaseException) -> bytes:
    try:
        return encode_frame(
            {
                "t": "result",
                "result": _failure(
                    WorkerCrashedError,
                    _clip(f"The sandbox child process failed: {type(error).__name__}: {error}", 500) or "",
                ),
            }
        )
    except MemoryError:
        return _OUT_OF_MEMORY
