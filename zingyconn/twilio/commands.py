"""Connection commands: the platform's "Execute Connection Command" block for Twilio connections.

Five commands with the platform's input names (docs/commands.md): ``sendMessage``, ``listMessages``, ``readMessage``,
``updateMessage`` and ``deleteMessage``. Every command:

1. refuses a page (browser) flow before anything else, so the store is never read for one;
2. validates its inputs (:mod:`zingyconn.twilio.inputs`) before any HTTP request;
3. gets a ``twilio.rest.Client`` for (tenant, connection) from an injected factory: in the runtime that is the
   broker-backed client snippets use too (allowlist, credentials, rate limit, call records);
4. answers with Twilio's field names (the Message resource JSON), dates as ISO 8601, or raises
   :class:`~zingyconn.errors.TwilioError` with Twilio's HTTP status, ``code``, ``message`` and ``more_info``.

Output types follow the platform's documentation of each command: an *Object* (one Message) for sendMessage,
readMessage and updateMessage; a *List* (a JSON array of Messages, newest first) for listMessages; *Success/Fail*
(``{"success": true}``) for deleteMessage.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Final, Literal

import requests
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.rest import Client

from sandbox.errors import QuotaExceededError
from zingyconn.egress.ledger import (
    CLOCK_SKEW_SECONDS,
    Claim,
    SendLedger,
    SentQuery,
    created_seconds,
    find_sent,
    request_fingerprint,
)
from zingyconn.errors import (
    FlowNotAllowedError,
    InvalidCommandError,
    TwilioError,
    TwilioUnreachableError,
)
from zingyconn.twilio import inputs

#: (tenant, connection) -> a Twilio client for that connection.
ClientFactory = Callable[[str, str], Client]
Flow = Literal["cloud", "page"]
FLOWS: Final = ("cloud", "page")
COMMANDS: Final = ("sendMessage", "listMessages", "readMessage", "updateMessage", "deleteMessage")
#: A command's output: a Message or ``{"success": ...}`` (an object), or listMessages' array of Messages.
CommandOutput = dict[str, Any] | list[dict[str, Any]]
#: Messages per list request. Twilio allows up to 1000; 100 keeps one response small while a 1000-message
#: listMessages still needs only 10 requests.
DEFAULT_PAGE_SIZE: Final = 100
#: The Message resource's fields (OAI ``api.v2010.account.message``), in Twilio's documented (alphabetical) order.
MESSAGE_FIELDS: Final = (
    "account_sid", "api_version", "body", "date_created", "date_sent", "date_updated", "direction", "error_code",
    "error_message", "from", "messaging_service_sid", "num_media", "num_segments", "price", "price_unit", "sid",
    "status", "subresource_uris", "to", "uri",
)  # fmt: skip
#: Prefix of the ledger keys of sendMessage commands.
COMMAND_KEY_PREFIX: Final = "command:"
#: Messages read, newest first and at most, when reconciling a send of unknown outcome (the window is minutes).
RECONCILE_LIMIT: Final = 500
RECONCILE_PAGE: Final = 100
_LIBRARY_PREFIX: Final = re.compile(r"^Unable to \w+ (record|page): ")


def check_flow(flow: str) -> None:
    """Refuse anything but a cloud flow.

    Raises:
        FlowNotAllowedError: *flow* is ``"page"``: a page flow runs in the visitor's browser, and a command
            there would hand the connection's credentials' power (send, read, delete messages) to any visitor.
        InvalidCommandError: *flow* is neither ``"cloud"`` nor ``"page"``.
    """
    if flow == "page":
        raise FlowNotAllowedError(
            "Connection commands are not allowed in page flows: a page flow runs in the visitor's browser, so a "
            "command there would let any visitor use this connection's credentials. Call it from a cloud flow."
        )
    if flow not in FLOWS:
        raise InvalidCommandError(f"flow must be 'cloud' or 'page', not {flow!r}.", field="flow")


def message_to_json(message: Any) -> dict[str, Any]:
    """Return a ``MessageInstance`` as the Message resource JSON: Twilio's names, dates as ISO 8601 UTC."""
    result: dict[str, Any] = {}
    for name in MESSAGE_FIELDS:
        value = getattr(message, "from_" if name == "from" else name, None)
        result[name] = value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if isinstance(value, datetime) else value
    return result


def twilio_error(exc: TwilioRestException) -> TwilioError:
    """Turn the library's exception into a :class:`TwilioError` with Twilio's own message and help link.

    The library prefixes Twilio's message ("Unable to fetch record: ...") and drops ``more_info``; Twilio's
    ``more_info`` is always ``https://www.twilio.com/docs/errors/<code>``, so it is rebuilt from the code.
    """
    status = int(exc.status)
    code = _twilio_code(exc.code, status)
    return TwilioError(
        _LIBRARY_PREFIX.sub("", str(exc.msg)) or f"Twilio answered HTTP {status}.",
        status=status,
        code=code,
        more_info=None if code is None else f"https://www.twilio.com/docs/errors/{code}",
    )


def _twilio_code(value: object, status: int) -> int | None:
    # Without a JSON body the library reports the HTTP status as the code; that is not a Twilio error code.
    if isinstance(value, bool) or not isinstance(value, int | str) or not str(value).isdigit():
        return None
    return None if int(value) == status else int(value)


def _page_error(exc: TwilioException) -> TwilioError:
    # A failed list page is a plain TwilioException("Unable to fetch page", response): read Twilio's JSON ourselves.
    response = exc.args[1] if len(exc.args) > 1 else None
    status = int(getattr(response, "status_code", 0) or 0)
    try:
        body = json.loads(getattr(response, "text", "") or "{}")
    except ValueError:
        body = {}
    body = body if isinstance(body, dict) else {}
    return TwilioError(
        str(body.get("message") or "Twilio could not list the messages."),
        status=status,
        code=_twilio_code(body.get("code"), status),
        more_info=body.get("more_info"),
    )


@contextmanager
def _twilio_errors() -> Iterator[None]:
    try:
        yield
    except TwilioRestException as exc:
        raise twilio_error(exc) from None
    except TwilioException as exc:
        raise _page_error(exc) from None
    except requests.RequestException as exc:
        raise TwilioUnreachableError(
            f"Could not reach the Twilio API ({type(exc).__name__}); check ZINGYCONN_TWILIO_BASE_URL and the "
            "network, then try again."
        ) from None


class ConnectionCommands:
    """Runs the five Twilio connection commands for any tenant's connections.

    Args:
        client_for: Builds the Twilio client of (tenant, connection); called only after validation passed, so an
            invalid or page-flow request never reads (or decrypts) the connection.
        ledger: Where idempotency keys are remembered; without one, ``idempotencyKey`` is refused.
        page_size: Messages per list request (Twilio's ``PageSize``).
    """

    def __init__(
        self, client_for: ClientFactory, *, ledger: SendLedger | None = None, page_size: int = DEFAULT_PAGE_SIZE
    ) -> None:
        self._client_for = client_for
        self._ledger = ledger
        self._page_size = page_size

    def run(
        self,
        tenant: str,
        connection: str,
        command: str,
        command_inputs: Mapping[str, Any] | None,
        *,
        flow: str = "cloud",
        idempotency_key: str | None = None,
    ) -> CommandOutput:
        """Run *command* with *command_inputs* against *connection*; return its JSON output.

        Raises:
            FlowNotAllowedError: *flow* is ``"page"`` (checked first: nothing is read).
            InvalidCommandError: Unknown command or bad input, with ``field`` set; no HTTP request was made.
            IdempotencyConflictError: The idempotency key is in use by another send or was used for another message.
            TwilioError: Twilio answered with an error.
        """
        check_flow(flow)
        given = {} if command_inputs is None else command_inputs
        if command == "sendMessage":
            return self.send_message(tenant, connection, given, idempotency_key=idempotency_key)
        if idempotency_key is not None:
            raise InvalidCommandError("Only sendMessage takes an idempotency key.", field="idempotencyKey")
        if command == "listMessages":
            return self.list_messages(tenant, connection, given)
        if command == "readMessage":
            return self.read_message(tenant, connection, given)
        if command == "updateMessage":
            return self.update_message(tenant, connection, given)
        if command == "deleteMessage":
            return self.delete_message(tenant, connection, given)
        raise InvalidCommandError(f"Unknown command {command!r}; the commands are {list(COMMANDS)!r}.", field="command")

    def send_message(
        self, tenant: str, connection: str, given: Mapping[str, Any], *, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        """``sendMessage``: create a Message; with an idempotency key, at most once per key in 24 hours."""
        request = inputs.parse_send(given)
        key = self._idempotency_key(request.idempotency_key, inputs.idempotency_key(idempotency_key, "idempotency_key"))
        if key is None or self._ledger is None:
            return self._create(tenant, connection, request.kwargs)
        fingerprint = request_fingerprint({"connection": connection, "kwargs": request.kwargs})
        shown_as, key = key, COMMAND_KEY_PREFIX + key  # apart from the broker's keys for snippet runs ("{key}:{n}")
        claim = self._ledger.claim(tenant, key, fingerprint, shown_as=shown_as)
        if not isinstance(claim, Claim):
            return claim
        try:
            if claim.reconcile_since is not None:
                found = self._reconcile(tenant, connection, claim, request.kwargs)
                if found is not None:
                    return found
            self._ledger.start(claim)
        except BaseException:
            (self._ledger.release if claim.reconcile_since is None else self._ledger.unknown)(claim)
            raise
        try:
            message = self._create(tenant, connection, request.kwargs)
        except TwilioError as exc:
            if exc.status < 500:  # Twilio refused the request: nothing was sent, so a retry may send
                self._ledger.release(claim)
            else:
                self._ledger.unknown(claim)
            raise
        except (QuotaExceededError, InvalidCommandError, LookupError):  # refused before any request left
            self._ledger.release(claim)
            raise
        except BaseException:  # no answer (the connection dropped, a timeout): it may have been sent
            self._ledger.unknown(claim)
            raise
        self._ledger.complete(claim, message)
        return message

    def _reconcile(
        self, tenant: str, connection: str, claim: Claim, kwargs: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        """Find the message an earlier attempt with *claim*'s key may have created, and record it; None if none."""
        assert self._ledger is not None
        assert claim.reconcile_since is not None
        query = SentQuery(
            to=str(kwargs.get("to", "")),
            from_=kwargs.get("from_"),
            service=kwargs.get("messaging_service_sid"),
            body=str(kwargs.get("body") or ""),
            since=claim.reconcile_since,
        )
        filters = {"to": query.to} | ({} if query.from_ is None else {"from_": query.from_})
        client = self._client_for(tenant, connection)
        recent = []
        with _twilio_errors():
            for message in client.messages.stream(limit=RECONCILE_LIMIT, page_size=RECONCILE_PAGE, **filters):
                listed = message_to_json(message)
                recent.append(listed)
                if (created_seconds(listed) or 0.0) < query.since - CLOCK_SKEW_SECONDS:
                    break  # newest first: the rest is older than the window
        known = self._ledger.recorded_sids(tenant, [str(message.get("sid") or "") for message in recent])
        found = find_sent(recent, query, known)
        if found is not None:
            self._ledger.complete(claim, found)
        return found

    def _idempotency_key(self, from_inputs: str | None, from_argument: str | None) -> str | None:
        if from_inputs is not None and from_argument is not None and from_inputs != from_argument:
            raise InvalidCommandError(
                "idempotencyKey in the inputs and the idempotency key argument differ; give one.",
                field="idempotencyKey",
            )
        key = from_inputs if from_inputs is not None else from_argument
        if key is not None and self._ledger is None:
            raise InvalidCommandError(
                "idempotencyKey needs a store to remember sends in, and none is configured.", field="idempotencyKey"
            )
        return key

    def _create(self, tenant: str, connection: str, kwargs: Mapping[str, Any]) -> dict[str, Any]:
        client = self._client_for(tenant, connection)
        with _twilio_errors():
            return message_to_json(client.messages.create(**kwargs))

    def list_messages(self, tenant: str, connection: str, given: Mapping[str, Any]) -> list[dict[str, Any]]:
        """``listMessages``: a list of up to ``limit`` messages (newest first), fetching pages only as far as needed.

        ``limit`` caps the whole list, not one page: the pages Twilio is asked for are an internal detail and
        never show in the output.
        """
        request = inputs.parse_list(given)
        client = self._client_for(tenant, connection)
        page_size = min(request.limit, self._page_size)
        with _twilio_errors():
            stream = client.messages.stream(limit=request.limit, page_size=page_size, **request.filters)
            return [message_to_json(message) for message in stream]

    def read_message(self, tenant: str, connection: str, given: Mapping[str, Any]) -> dict[str, Any]:
        """``readMessage``: one Message by SID."""
        sid = inputs.parse_sid(given)
        client = self._client_for(tenant, connection)
        with _twilio_errors():
            return message_to_json(client.messages(sid).fetch())

    def update_message(self, tenant: str, connection: str, given: Mapping[str, Any]) -> dict[str, Any]:
        """``updateMessage``: redact the body (``body: ""``) and/or cancel a scheduled message."""
        request = inputs.parse_update(given)
        client = self._client_for(tenant, connection)
        with _twilio_errors():
            return message_to_json(client.messages(request.sid).update(**request.kwargs))

    def delete_message(self, tenant: str, connection: str, given: Mapping[str, Any]) -> dict[str, Any]:
        """``deleteMessage``: delete a Message and its media; answers ``{"success": true}``."""
        sid = inputs.parse_sid(given)
        client = self._client_for(tenant, connection)
        with _twilio_errors():
            return {"success": bool(client.messages(sid).delete())}
