"""The runtime: connection store + keyring + sandbox + egress broker + run history, behind one object.

Every host (CLI, webhooks, task worker, console) runs snippets through :meth:`Runtime.run`, which:

1. opens an egress session for the run's tenant (the tenant comes from the caller, never from the snippet);
2. runs the snippet in a fresh sandbox child (or, for a hook or script saved with isolation ``instance``, in a warm
   instance kept for that tenant, name and version) whose Twilio requests the session answers, with the tenant's
   variables (:mod:`zingyconn.variables`) in its context;
3. masks every secret of the tenant (and any the snippet passed to ``twilio.Client``) in result, stdout, logs,
   errors and egress records;
4. records the masked run in the history and returns it as a :class:`MaskedRunResult`.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType, TracebackType
from typing import Any, Final

import sqlalchemy as sa

from sandbox.environment import JSON
from sandbox.limits import Limits
from sandbox.result import RunError, RunResult
from sandbox.supervisor import Sandbox
from zingyconn.admission import TenantLimits, TenantSlots
from zingyconn.config import Settings
from zingyconn.connection_types import ConnectionType, Profile, connection_type, connection_types
from zingyconn.database import create_engine, read_only
from zingyconn.egress.broker import EgressBroker, EgressSession
from zingyconn.egress.ledger import SendLedger
from zingyconn.egress.protocol import CHANNEL_TYPE, OPERATIONS, VARIABLES_CONTEXT_KEY, Handler
from zingyconn.egress.ratelimit import Rate, RateLimiter, rate_limiter_for
from zingyconn.errors import ConfigurationError, TenantBusyError, ValidationError, ZingyConnError
from zingyconn.group_commit import GroupWriter
from zingyconn.history import FAILED, OK, RunHistory, new_run_id
from zingyconn.kinds import limits_for
from zingyconn.names import validate_name
from zingyconn.redaction import redact_message
from zingyconn.secrets.keyring import Keyring
from zingyconn.secrets.masking import Masker
from zingyconn.secrets.store import ConnectionStore
from zingyconn.variables import TenantVariables

#: The snippet environment every runtime sandbox is started with (``zingyConn``, the twilio façades).
SNIPPET_ENVIRONMENT: Final = "zingyconn.snippet.environment:environment"

#: How long a runtime reuses a tenant's variables between runs. A change made elsewhere (the CLI, another server)
#: reaches this process's runs within this time. (Its decrypted connections are reused while the store's change
#: counter has not moved, :mod:`zingyconn.changes`: reading and decrypting them costs about as much as a short run.)
VARIABLES_MAX_AGE_SECONDS: Final = 1.0

#: HTTP requests one connection command may make (listMessages with limit 1000 needs 10 pages of 100).
COMMAND_MAX_REQUESTS: Final = 20

_LOGGER: Final = logging.getLogger(__name__)

#: A host operation beyond Twilio egress (raise EgressDeniedError to refuse), called with the run's tenant, the
#: snippet's payload and the call's idempotency key: the run's key, the operation and how many times the run called
#: it, the same in every retry of the run (``None`` for a run without a key), so a retried run repeats no effect.
HostOp = Callable[[str, Any, str | None], Any]


@dataclass(frozen=True, slots=True)
class MaskedRunResult(RunResult):
    """A :class:`~sandbox.result.RunResult` with secrets masked, the egress calls, and the stored run's id.

    Attributes:
        run_id: Id of the run in the history (``run_...``), also set when the run was not recorded.
    """

    run_id: str = ""

    def to_json(self) -> dict[str, JSON]:
        """Return the result as ``zingyconn run --json`` prints it (with ``run_id``)."""
        return {**RunResult.to_json(self), "run_id": self.run_id}


#: The former name of :class:`MaskedRunResult`, kept so that code written against it still imports.
ZRunResult = MaskedRunResult


class Runtime:
    """Store, keyring, sandbox, broker and history for one process; thread-safe.

    The sandbox (a zygote process) is started on the first run, or passed in. Close the runtime (or use it as a
    context manager) to stop it.

    Args:
        settings: Configuration (:meth:`Settings.from_env`).
        engine: Database engine (default: one for ``settings.db_url``).
        keyring: Master keys (default: from ``settings``).
        sandbox: A sandbox started with :data:`SNIPPET_ENVIRONMENT` (default: one is started on first use).
        rate_limiter: Message-creation rate limiter (default: Redis when ``settings.queue_url`` is set, else SQL).
        message_rate: The per-tenant message-creation rate (default: ``settings.quotas``, else the default quota).
        host_ops: Handlers of the :attr:`~zingyconn.egress.protocol.Handler.REGISTERED` operations this runtime's runs
            may request, by op name (more with :meth:`register_op`); a run requesting one without a handler is
            refused.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        engine: Any = None,
        keyring: Keyring | None = None,
        sandbox: Sandbox | None = None,
        rate_limiter: RateLimiter | None = None,
        message_rate: Rate | None = None,
        host_ops: Mapping[str, HostOp] | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine if engine is not None else create_engine(settings.db_url)
        self.keyring = keyring if keyring is not None else Keyring.from_settings(settings)
        self.store = ConnectionStore(self.engine, self.keyring)
        self.variables = TenantVariables(self.engine)
        #: Writes run history (and the webhook host's replay records) in batches (:mod:`zingyconn.group_commit`).
        self.writer = GroupWriter(self.engine)
        self.history = RunHistory(self.engine, quota_bytes=settings.retention.history_quota_bytes, writer=self.writer)
        self.ledger = SendLedger(self.engine)
        channel_type = connection_type(CHANNEL_TYPE)
        self.broker = EgressBroker(
            self.store,
            base_url=settings.twilio_base_url,
            rate_limiter=rate_limiter
            if rate_limiter is not None
            else rate_limiter_for(self.engine, settings.queue_url),
            quotas={
                **_quota_rates(channel_type, settings.quotas),
                **({} if message_rate is None else {"messages": message_rate}),
            },
            ledger=self.ledger,
            max_rate_wait_seconds=settings.max_rate_wait_seconds,
            channel_type=channel_type,
        )
        #: Aggregate limits per tenant (runs at once, their memory), over every kind of run and every process that
        #: shares the data directory.
        self.slots = TenantSlots(settings.data_dir / "run-slots", TenantLimits.from_settings(settings))
        self._sandbox = sandbox
        self._owns_sandbox = sandbox is None
        self._lock = threading.Lock()
        self._host_ops: dict[str, HostOp] = {}
        for op, handler in (host_ops or {}).items():
            self.register_op(op, handler)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Runtime:
        """Build a runtime from ``ZINGYCONN_*`` variables in *environ* (``os.environ`` by default)."""
        return cls(Settings.from_env(environ))

    @property
    def host_ops(self) -> Mapping[str, HostOp]:
        """The registered host operations' handlers, by op name (read-only: use :meth:`register_op`)."""
        return MappingProxyType(self._host_ops)

    def register_op(self, op: str, handler: HostOp) -> None:
        """Answer the children's *op* requests with *handler* (called with the run's tenant, payload and call key).

        Raises:
            ValueError: *op* is not a :attr:`~zingyconn.egress.protocol.Handler.REGISTERED` operation of
                :mod:`zingyconn.egress.protocol` (the broker answers the others; unknown ones are refused).
        """
        operation = OPERATIONS.get(op)
        if operation is None or operation.handler is not Handler.REGISTERED:
            registrable = sorted(name for name, item in OPERATIONS.items() if item.handler is Handler.REGISTERED)
            raise ValueError(f"Cannot register a handler for {op!r}; the registrable operations are {registrable}.")
        self._host_ops[op] = handler

    @property
    def sandbox(self) -> Sandbox:
        """The sandbox, started on first use."""
        with self._lock:
            if self._sandbox is None:
                self._sandbox = Sandbox(environment=SNIPPET_ENVIRONMENT, instances=self.settings.instances).start()
            return self._sandbox

    def run(
        self,
        tenant: str,
        source: str,
        *,
        event: JSON = None,
        kind: str = "console",
        limits: Limits | None = None,
        name: str | None = None,
        idempotency_key: str | None = None,
        record: bool = True,
        attempt: int = 1,
        task_id: str | None = None,
        replay_of: str | None = None,
        stored_event: JSON = None,
        version: int | None = None,
        isolation: str = "run",
    ) -> MaskedRunResult:
        """Run *source* for *tenant* and return its masked result (also stored in the history when *record*).

        Args:
            tenant: Whose connections ``zingyConn.twilio(name)`` reaches.
            source: The snippet (a function body).
            event: JSON given to the snippet as ``event``.
            kind: ``"webhook"``, ``"task"`` or ``"console"``: picks the default limits.
            limits: Limits of this run (default: ``zingyconn.kinds.limits_for(kind)``).
            name: Hook or script name, for the history.
            idempotency_key: De-duplicates the run's message sends across retries of the same work (the n-th
                message of a run with key K is sent at most once per 24 h under ``K:n``).
            record: Store the run in the history.
            attempt: Attempt number (tasks).
            task_id: The task this run belongs to.
            replay_of: The run this one replays.
            stored_event: What the history keeps as the event, when not *event* itself (a webhook keeps its
                parsed form or its raw body, not both).
            version: The version of hook or script *name* that runs, for the history.
            isolation: ``"run"`` (a fresh sandbox process) or ``"instance"``: a warm process kept for (*tenant*,
                *kind*, *name*, *version*) and reused by its next runs; without a *name* and *version* it runs as
                ``"run"``. Each such process's memory limit counts against the tenant's memory for its whole life
                (:meth:`TenantSlots.hold_memory`), idle or not; the tenant's idle instances are ended when a run of
                the tenant finds no room.

        Raises:
            ValidationError: Bad tenant name or kind (nothing ran).
            TenantBusyError: The tenant's runs at once, or their memory, are at its limit (nothing ran).
        """
        limits = _limits_of(kind, limits)
        validate_name(tenant, field="tenant")
        # A warm instance holds its memory for its whole life (TenantSlots.hold_memory): its runs hold none.
        warm = isolation == "instance" and name is not None and version is not None
        # A task is not made to wait here: its worker puts it back and takes other tenants' tasks meanwhile.
        release = self._admit(tenant, memory_bytes=0 if warm else limits.memory_bytes, wait=kind != "task")
        try:
            return self._run(
                tenant,
                source,
                event=event,
                kind=kind,
                limits=limits,
                name=name,
                idempotency_key=idempotency_key,
                record=record,
                attempt=attempt,
                task_id=task_id,
                replay_of=replay_of,
                stored_event=stored_event,
                version=version,
                warm=warm,
            )
        finally:
            release()

    def _run(
        self,
        tenant: str,
        source: str,
        *,
        event: JSON,
        kind: str,
        limits: Limits,
        name: str | None,
        idempotency_key: str | None,
        record: bool,
        attempt: int,
        task_id: str | None,
        replay_of: str | None,
        stored_event: JSON,
        version: int | None,
        warm: bool,
    ) -> MaskedRunResult:
        run_id, started_at = new_run_id(), time.time()
        session = self.broker.session(
            tenant,
            max_requests=limits.egress_requests,
            deadline=self.broker.clock() + limits.wall_seconds,
            idempotency_key=idempotency_key,
        )
        connections = _RunConnections(
            self.store.cached_profiles(tenant),
            functools.partial(self._tenant_profiles, tenant),
            session,
        )
        raw = self.sandbox.run(
            source,
            event=event,
            limits=limits,
            context={
                **connections.context(kind),
                VARIABLES_CONTEXT_KEY: self.variables.cached(tenant, max_age_seconds=VARIABLES_MAX_AGE_SECONDS),
            },
            on_request=self._request_handler(tenant, connections.request, idempotency_key),
            on_started=None if connections.loaded else connections.load,
            # Never shared across tenants, hooks and scripts (the kind tells them apart) or versions.
            instance_key=(tenant, kind, name, version) if warm else None,
            instance_hold=functools.partial(self._hold_memory, tenant, limits.memory_bytes, wait=kind != "task")
            if warm
            else None,
        )
        if not connections.loaded:  # no child started (a compile error, say): the error text is masked all the same
            connections.load()
        masker = connections.masker()
        result = _masked_result(raw, masker, egress=session.egress(), run_id=run_id)
        if record:
            self.history.record(
                run_id=run_id,
                tenant=tenant,
                kind=kind,
                name=name,
                status=OK if result.ok else FAILED,
                started_at=started_at,
                duration_ms=result.duration_ms,
                event=masker.mask(event if stored_event is None else stored_event),
                result=result.value,
                stdout=result.stdout,
                logs=result.logs,
                error=None if result.error is None else result.error.to_json(),
                egress=result.egress,
                attempt=attempt,
                task_id=task_id,
                replay_of=replay_of,
                source=source,
                version=version,
            )
        return result

    def _admit(self, tenant: str, *, memory_bytes: int, wait: bool) -> Callable[[], None]:
        """Hold one of *tenant*'s run slots (:meth:`TenantSlots.hold_run`) until the returned function is called,
        ending the tenant's idle warm instances first when their memory is what leaves no room."""
        try:
            return self.slots.hold_run(tenant, memory_bytes=memory_bytes, wait=False)
        except TenantBusyError:
            self._end_idle_instances(tenant)
            return self.slots.hold_run(tenant, memory_bytes=memory_bytes, wait=wait)

    def _hold_memory(self, tenant: str, memory_bytes: int, *, wait: bool) -> Callable[[], None]:
        """Hold *memory_bytes* of *tenant*'s memory for a warm instance's life, as :meth:`_admit` admits a run."""
        try:
            return self.slots.hold_memory(tenant, memory_bytes=memory_bytes, wait=False)
        except TenantBusyError:
            self._end_idle_instances(tenant)
            return self.slots.hold_memory(tenant, memory_bytes=memory_bytes, wait=wait)

    def _end_idle_instances(self, tenant: str) -> int:
        """End *tenant*'s idle warm instances (their memory holds go with them); return how many there were.

        An idle instance saves its next run a fork; it must not keep the tenant's new work out.
        """
        with self._lock:
            sandbox = self._sandbox
        if sandbox is None:
            return 0
        return sandbox.instances.end_idle(lambda key: isinstance(key, tuple) and key[:1] == (tenant,))

    def command(
        self,
        tenant: str,
        connection: str,
        command: str,
        inputs: Mapping[str, Any] | None,
        *,
        flow: str = "cloud",
        idempotency_key: str | None = None,
        actor: str = "unknown",
    ) -> JSON:
        """Run connection command *command* (``sendMessage``...) of *tenant*'s *connection*; return its JSON output.

        The command's Twilio client is the broker's, as in snippets: same allowlist, credentials injection, rate
        limit and call records. See :mod:`zingyconn.twilio.commands` for inputs, outputs and errors. Every call,
        refused or not, is a run of kind ``command`` in the history: *actor* (who asked: ``token:<id>``,
        ``console:operator``, ``cli:<user>``), inputs and output masked, outcome, duration and Twilio's request ids.

        Raises:
            ValidationError: Bad tenant name (nothing ran, nothing recorded).
            FlowNotAllowedError: *flow* is ``"page"`` (the store is not read).
            InvalidCommandError: Bad input, named by ``field`` (no request was made).
            ConnectionNotFoundError: The tenant has no such connection.
            IdempotencyConflictError: The idempotency key is busy, or was used for another message.
            TwilioError: Twilio answered with an error.
            TenantBusyError: The tenant's runs at once are at its limit (nothing ran, nothing recorded).
        """
        validate_name(tenant, field="tenant")
        with self.slots.admit(tenant, memory_bytes=0):  # a command runs in this process: it counts as a run only
            return self._command(tenant, connection, command, inputs, flow, idempotency_key, actor)

    def _command(
        self,
        tenant: str,
        connection: str,
        command: str,
        inputs: Mapping[str, Any] | None,
        flow: str,
        idempotency_key: str | None,
        actor: str,
    ) -> JSON:
        session = self.broker.session(tenant, max_requests=COMMAND_MAX_REQUESTS)
        channel_type = self.broker.channel_type
        if channel_type.commands is None:
            raise ConfigurationError(f"Connection type {channel_type.name!r} offers no connection commands.")
        commands = channel_type.load(channel_type.commands)(  # its HTTP library loads with the first command
            lambda _tenant, name: self.broker.client(tenant, name, session=session), ledger=self.ledger
        )
        run_id, started_at, started = new_run_id(), time.time(), time.perf_counter()
        output: JSON = None
        error: dict[str, Any] | None = None
        try:
            output = commands.run(tenant, connection, command, inputs, flow=flow, idempotency_key=idempotency_key)
        except Exception as exc:  # recorded whatever it is, then re-raised unchanged
            error = (
                exc.to_json() if isinstance(exc, ZingyConnError) else {"type": type(exc).__name__, "message": str(exc)}
            )
            raise
        finally:
            masker = Masker(session.secrets)
            event = {
                "actor": actor,
                "connection": connection,
                "command": command,
                "flow": flow,
                "idempotency_key": idempotency_key,
                "inputs": dict(inputs) if isinstance(inputs, Mapping) else inputs,
            }
            try:
                self.history.record(
                    run_id=run_id,
                    tenant=tenant,
                    kind="command",
                    name=command[:100],  # the column's width; an unknown command's name comes from the caller
                    status=FAILED if error is not None else OK,
                    started_at=started_at,
                    duration_ms=(time.perf_counter() - started) * 1000,
                    event=masker.mask(event),
                    result=masker.mask(output),
                    error=masker.mask(error),
                    egress=masker.mask(session.egress()),
                )
            except sa.exc.SQLAlchemyError as exc:  # the command's outcome stands; the missing record is logged
                _LOGGER.error("Command %s of tenant %r (run %s) was not recorded: %s", command, tenant, run_id, exc)
        if command == "updateMessage" and _redacts_body(inputs):
            self._redact_copies(tenant, str(dict(inputs or {})["sid"]))
        return masker.mask(output)

    def _redact_copies(self, tenant: str, sid: str) -> None:
        """Redact the stored copies of message *sid*'s body, now that Twilio redacted it (:mod:`zingyconn.redaction`).

        Raises:
            ZingyConnError: The store could not be updated (the message is redacted at Twilio; run it again).
        """
        try:
            redact_message(self.engine, tenant, sid)
        except sa.exc.SQLAlchemyError as exc:
            raise ZingyConnError(
                f"Message {sid} was redacted at Twilio, but its copies in the run history could not be redacted "
                f"({str(exc).splitlines()[0]}); run updateMessage again to finish."
            ) from None

    def tenants(self) -> list[str]:
        """Return every tenant that has a connection or a stored run, sorted."""
        from zingyconn.schema import connections, runs

        query = sa.union(sa.select(connections.c.tenant), sa.select(runs.c.tenant))
        with read_only(self.engine).connect() as conn:
            return sorted(str(tenant) for tenant in conn.execute(query).scalars())

    def test_connection(self, tenant: str, name: str) -> str:
        """Check *tenant*'s connection *name* against Twilio (or the emulator); return what answered."""
        profile = self.store.get(tenant, name)
        return connection_type(profile.connection_type).check(
            profile, base_url=self.settings.twilio_base_url, what=repr(name)
        )

    def close(self) -> None:
        """Write what the history writer holds, stop the sandbox (if this runtime started it), close connections and
        the run slot files kept open."""
        self.writer.close()
        with self._lock:
            if self._sandbox is not None and self._owns_sandbox:
                self._sandbox.close()
                self._sandbox = None
        self.broker.close()
        self.slots.close()
        close_limiter = getattr(self.broker.rate_limiter, "close", None)
        if close_limiter is not None:
            close_limiter()

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def _request_handler(
        self, tenant: str, egress: Callable[[str, Any], Any], run_key: str | None
    ) -> Callable[[str, Any], Any]:
        if not self._host_ops:
            return egress
        calls: dict[str, int] = {}

        def handle(op: str, payload: Any) -> Any:
            handler = self._host_ops.get(op)
            if handler is None:
                return egress(op, payload)
            calls[op] = calls.get(op, 0) + 1  # the n-th call of op: the same n when a retry replays the run
            return handler(tenant, payload, None if run_key is None else f"{run_key}:{op}:{calls[op]}")

        return handle

    def _tenant_profiles(self, tenant: str) -> dict[str, Profile] | None:
        """Read every connection of *tenant* once per run: for the broker's lookups and for masking."""
        try:
            return self.store.profiles(tenant, cached=True)
        except ValidationError:
            raise
        except ZingyConnError as exc:  # an undecryptable record: the session then reads connections one by one
            _LOGGER.error("Connections of tenant %r could not all be read: %s", tenant, exc)
            return None


class _RunConnections:
    """The tenant's connections during one run: preloaded into its egress session, their secrets kept for masking.

    They are read once per run: *cached* ones before the child gets its order (the child then gets the directory of
    names and asks for none of them), or else by *read* while the child starts, before it can make a request. Its
    :meth:`request` answers the run's requests: the :attr:`~zingyconn.egress.protocol.Handler.RUN` operations here
    (access tokens, signed with a connection's secret), the rest by the egress session.
    """

    def __init__(
        self,
        cached: Mapping[str, Profile] | None,
        read: Callable[[], Mapping[str, Profile] | None],
        session: EgressSession,
    ) -> None:
        self._read = read
        self._session = session
        self._secrets: list[str] = []
        self._cached = cached
        self._run_answers: dict[str, Any] = {}  # op -> the connection type's answerer of this run's requests
        self.loaded = False
        if self._cached is not None:
            self._use(self._cached)

    def context(self, kind: str) -> dict[str, JSON]:
        """Return the run's context for the child: its kind, and each connection type's directory when already
        known."""
        context: dict[str, JSON] = {"kind": kind}
        if self._cached is not None:
            for declared in connection_types():
                context[declared.directory_context_key] = {
                    name: profile.directory_entry()
                    for name, profile in self._cached.items()
                    if profile.connection_type == declared.name
                }
        return context

    def load(self) -> None:
        """Read the tenant's connections (the sandbox calls this once the child started)."""
        # Read while the child runs (on_started), before it can make a request: the read costs about as much as a
        # short run, and the masking needs the secrets anyway.
        self._use(self._read())

    def request(self, op: str, payload: Any) -> Any:
        """Answer one request of the run's child (the sandbox's ``on_request``)."""
        declared = _run_operation_types().get(op)
        if declared is None:
            return self._session.request(op, payload)
        answers = self._run_answers.get(op)
        if answers is None:
            # The type's module (twilio.jwt for access tokens) loads only for a run that asks: most runs never do,
            # and zingyconn run starts faster.
            session = self._session
            answers = self._run_answers[op] = declared.load(declared.run_operations[op])(
                functools.partial(session.profile, type_name=declared.name), session
            )
        return answers.answer(payload if isinstance(payload, Mapping) else {})

    def masker(self) -> Masker:
        """Return the masker of every secret the run could have seen: its tenant's and those the snippet passed."""
        return Masker([*self._secrets, *self._session.secrets])

    def _use(self, profiles: Mapping[str, Profile] | None) -> None:
        if profiles is not None:
            self._session.preload(profiles)
            self._secrets.extend(secret for profile in profiles.values() for secret in profile.secrets())
        self.loaded = True


def _quota_rates(channel_type: ConnectionType, configured: Mapping[str, tuple[float, int]]) -> dict[str, Any]:
    """Return every registered type's per-tenant rates, each ``ZINGYCONN_QUOTA_*`` applied to the type whose bucket
    it names (``HTTP`` to HTTP connections); a name no type has is *channel_type*'s ConfigurationError.
    """
    left, rates = dict(configured), dict[str, Any]()
    for declared in connection_types():
        if declared is not channel_type:
            rates.update(declared.quota_rates({bucket: left.pop(bucket) for bucket in declared.quota_rates({})
                                               if bucket in left}))  # fmt: skip
    return {**rates, **channel_type.quota_rates(left)}


@functools.cache
def _run_operation_types() -> dict[str, ConnectionType]:
    """Return the connection type answering each :attr:`~zingyconn.egress.protocol.Handler.RUN` operation."""
    return {op: declared for declared in connection_types() for op in declared.run_operations}


def _limits_of(kind: str, limits: Limits | None) -> Limits:
    """Return *limits*, or the default limits of *kind* (a bad kind is the caller's ValidationError)."""
    try:
        return limits if limits is not None else limits_for(kind)
    except ValueError as exc:
        raise ValidationError(str(exc), field="kind") from None


def _masked_result(raw: RunResult, masker: Masker, *, egress: list[dict[str, Any]], run_id: str) -> MaskedRunResult:
    """Return the sandbox's *raw* result with every secret masked in its value, output, logs, error and egress."""
    return MaskedRunResult(
        ok=raw.ok,
        value=masker.mask(raw.value),
        stdout=masker.mask_text(raw.stdout),
        logs=tuple(masker.mask(list(raw.logs))),
        error=_mask_error(raw.error, masker),
        duration_ms=raw.duration_ms,
        egress=tuple(masker.mask(egress)),
        run_id=run_id,
    )


def _redacts_body(inputs: Mapping[str, Any] | None) -> bool:
    """Whether updateMessage *inputs* (already accepted by the command) redact the message's body."""
    props = (inputs or {}).get("customProps")
    return isinstance(props, Mapping) and props.get("body") == ""


def _mask_error(error: RunError | None, masker: Masker) -> RunError | None:
    if error is None or not masker:
        return error
    return dataclasses.replace(
        error,
        message=masker.mask_text(error.message),
        traceback=None if error.traceback is None else masker.mask_text(error.traceback),
        errors=tuple(masker.mask_text(item) for item in error.errors),
    )
