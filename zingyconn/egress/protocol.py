"""The host operations a sandboxed child may request over its channel: every one, its payload and who answers it.

A snippet's only way out of its child is a request ``(op, payload)`` on the channel; the host answers it or refuses
it. This module is the one list of those operations. The child side (``zingyconn.snippet``, the brokered Twilio
client) sends them by these names; on the host, the run's egress session answers the ``twilio.*`` requests to
Twilio, the runtime answers the :attr:`Handler.RUN` ones with the run's own state, and
each :attr:`Handler.REGISTERED` operation is answered by the handler the composition root registers with
:meth:`zingyconn.runtime.Runtime.register_op` (a run of a runtime without one refuses it). An operation not listed
here is refused.

It holds declarations only (no I/O, no secret, nothing but the standard library), so the child's side imports it
too: the one module of ``zingyconn.egress`` a child may load.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Final


class Handler(StrEnum):
    """Who answers an operation on the host."""

    #: The run's egress session (:class:`zingyconn.egress.broker.EgressSession`), always present.
    EGRESS = "egress"
    #: The runtime, with the run's own state (its tenant's connections, its counts): see ``zingyconn.runtime``.
    RUN = "run"
    #: A handler the composition root registers on the runtime (``Runtime.register_op``), when the host offers it.
    REGISTERED = "registered"


@dataclass(frozen=True, slots=True)
class Operation:
    """One operation a child may request.

    Attributes:
        name: The ``op`` string on the channel.
        request: The payload's shape (JSON).
        answer: The answer's shape (JSON); refusals raise ``EgressDeniedError`` or ``QuotaExceededError``.
        handler: Who answers it on the host.
        answered_by: The class or function that answers it, for readers.
    """

    name: str
    request: str
    answer: str
    handler: Handler
    answered_by: str


#: The connection type (:mod:`zingyconn.connection_types`) whose connections the ``twilio.*`` operations reach.
CHANNEL_TYPE: Final = "twilio"
OP_CONNECT: Final = "twilio.connect"
OP_CREDENTIALS: Final = "twilio.credentials"
OP_HTTP: Final = "twilio.http"
OP_ENQUEUE: Final = "tasks.enqueue"
OP_ACCESS_TOKEN: Final = "twilio.access_token"  # noqa: S105  # an operation's name, not a secret
OP_HTTP_REQUEST: Final = "http.request"

#: The run context key under which the host passes the tenant's variables (name -> value, never a secret) with the
#: run's order, so ``zingyConn.vars`` needs no request (:mod:`zingyconn.variables`).
VARIABLES_CONTEXT_KEY: Final = "vars"

#: Every operation, by name.
OPERATIONS: Final[Mapping[str, Operation]] = {
    operation.name: operation
    for operation in (
        Operation(
            OP_CONNECT,
            request='{"connection": name, "type"?: connection type (default: the channel type, Twilio)}',
            answer='{"found": true, ...the connection\'s directory entry} or {"found": false}',
            handler=Handler.EGRESS,
            answered_by="zingyconn.egress.broker.EgressSession",
        ),
        Operation(
            OP_CREDENTIALS,
            request='{"username", "password"} (a snippet\'s own twilio.Client(sid, token))',
            answer='{"credential": n}',
            handler=Handler.EGRESS,
            answered_by="zingyconn.egress.broker.EgressSession",
        ),
        Operation(
            OP_HTTP,
            request='{"method", "url", "params": [[k, v]...], "data": [[k, v]...], "headers", "connection" | null, '
            '"credential" | null}',
            answer='{"status", "text", "headers"}',
            handler=Handler.EGRESS,
            answered_by="zingyconn.egress.broker.EgressSession",
        ),
        Operation(
            OP_ACCESS_TOKEN,
            request='{"connection": name, "identity", "grants": [{"type": "voice"|"video"|"chat"|"conversations"|'
            '"sync", field: value...}], "ttl": seconds | null}',
            answer='{"token": JWT} (signed on the host with the connection\'s API key secret)',
            handler=Handler.RUN,
            answered_by="zingyconn.twilio.access_tokens.RunAccessTokens",
        ),
        Operation(
            OP_HTTP_REQUEST,
            request='{"connection": name, "method", "path", "params": [[k, v]...], "headers": [[k, v]...], '
            '"json": JSON | null, "data": str | [[k, v]...] | null} (zingyConn.http(name).get/post/...)',
            answer='{"status", "headers", "text"} (every form of the connection\'s secret masked)',
            handler=Handler.RUN,
            answered_by="zingyconn.http.broker.RunHttpRequests",
        ),
        Operation(
            OP_ENQUEUE,
            request='{"script": name, "payload": JSON} (zingyConn.enqueue)',
            answer='{"task_id"}',
            handler=Handler.REGISTERED,
            answered_by="zingyconn.tasks.queue.TaskQueue.enqueue_from_snippet",
        ),
    )
}
