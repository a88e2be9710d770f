"""Connection commands: input validation before any request, and each command against the Twilio emulator."""

# The input table reads best with one case per line.
# ruff: noqa: E501

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from twilio.rest import Client

from tests.emulator import (
    DEFAULT_ACCOUNT_SID,
    DEFAULT_API_KEY,
    DEFAULT_API_SECRET,
    Emulator,
    frozen_state,
    running_emulator,
)
from tests.servers import free_port
from zingyconn.config import Settings
from zingyconn.database import create_engine
from zingyconn.egress.ledger import Claim, SendLedger
from zingyconn.errors import (
    FlowNotAllowedError,
    IdempotencyConflictError,
    InvalidCommandError,
    TwilioError,
    TwilioUnreachableError,
)
from zingyconn.hosts.cli.command import command as command_cli
from zingyconn.runtime import Runtime
from zingyconn.secrets.keyring import Keyring, generate_key
from zingyconn.secrets.store import ConnectionStore
from zingyconn.twilio.commands import MESSAGE_FIELDS, ConnectionCommands
from zingyconn.twilio.emulator import RequestRecord
from zingyconn.twilio.emulator.accounts import Account, ApiKey
from zingyconn.twilio.profile import TwilioProfile

SERVICE = "MG" + "a" * 32
MESSAGE = "SM" + "b" * 32
SEND = {"toPhone": "+14155552671", "fromPhone": "+15005550006", "msg": "hi"}


class _NoClient:
    """A client factory that records every call: any call means a request could have been made."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def __call__(self, tenant: str, connection: str) -> Client:
        self.calls.append((tenant, connection))
        raise AssertionError("the client factory must not be called for this request")


def _send(**changes: Any) -> dict[str, Any]:
    return {key: value for key, value in {**SEND, **changes}.items() if value is not None}


#: (command, inputs, field, message fragment): every input rule, one bad input each.
BAD_INPUTS = [
    pytest.param("sendMessage", _send(toPhone=None), "toPhone", "toPhone is required.", id="to-missing"),
    pytest.param("sendMessage", _send(toPhone="5551234567"), "toPhone", "e.g. '+15551234567' if it is a US number", id="to-national-us"),
    pytest.param("sendMessage", _send(toPhone="07700 900123"), "toPhone", "dropping a leading 0", id="to-national-uk"),
    pytest.param("sendMessage", _send(toPhone="+1 800 FLOWERS"), "toPhone", "is not an E.164 phone number", id="to-letters"),
    pytest.param("sendMessage", _send(toPhone="whatsapp:5551234567"), "toPhone", "e.g. '+15551234567' if it is a US number", id="to-whatsapp-national"),
    pytest.param("sendMessage", _send(toPhone="+1234"), "toPhone", "is not an E.164 phone number", id="to-too-short"),
    pytest.param("sendMessage", _send(toPhone=14155552671), "toPhone", "toPhone must be a string, not int.", id="to-number"),
    pytest.param("sendMessage", _send(toPhone="+1 500 555 0006"), "toPhone", "toPhone and fromPhone are the same number", id="to-is-from"),
    pytest.param("sendMessage", _send(fromPhone=None), "fromPhone", "fromPhone (an E.164 number) or fromService", id="from-missing"),
    pytest.param("sendMessage", _send(fromPhone="15005550006"), "fromPhone", "it looks like a national number", id="from-no-plus"),
    pytest.param("sendMessage", _send(fromPhone=None, fromService="MG123"), "fromService", "'MG' followed by 32 hex digits", id="service-short"),
    pytest.param("sendMessage", _send(fromPhone=None, fromService="AC" + "a" * 32), "fromService", "'MG' followed by", id="service-account-sid"),
    pytest.param("sendMessage", _send(msg=None), "msg", "msg is required (it may be left out only when customProps.mediaUrl", id="msg-missing"),
    pytest.param("sendMessage", _send(msg=""), "msg", "msg is required", id="msg-empty"),
    pytest.param("sendMessage", _send(msg="x" * 1601), "msg", "msg is 1601 characters long; Twilio accepts at most 1600.", id="msg-too-long"),
    pytest.param("sendMessage", _send(msg=["hi"]), "msg", "msg must be a string, not list.", id="msg-list"),
    pytest.param("sendMessage", _send(customProps="x"), "customProps", "customProps must be a JSON object, not str.", id="props-not-object"),
    pytest.param("sendMessage", _send(customProps={"mediaURL": "https://x.test/a.png"}), "customProps.mediaURL", "valid keys are ['addressRetention', ", id="props-unknown"),
    pytest.param("sendMessage", _send(customProps={"to": "+14155552671"}), "customProps.to", "use the 'toPhone' input instead", id="props-to"),
    pytest.param("sendMessage", _send(customProps={"body": "hi"}), "customProps.body", "use the 'msg' input instead", id="props-body"),
    pytest.param("sendMessage", _send(customProps={"mediaUrl": "ftp://x.test/a.png"}), "customProps.mediaUrl[0]", "is not an http:// or https:// URL", id="media-ftp"),
    pytest.param("sendMessage", _send(customProps={"mediaUrl": [f"https://x.test/{i}.png" for i in range(11)]}), "customProps.mediaUrl", "at most 10", id="media-eleven"),
    pytest.param("sendMessage", _send(customProps={"mediaUrl": []}), "customProps.mediaUrl", "non-empty list of URLs", id="media-empty"),
    pytest.param("sendMessage", _send(customProps={"statusCallback": "example.com/cb"}), "customProps.statusCallback", "not an http:// or https:// URL", id="callback-no-scheme"),
    pytest.param("sendMessage", _send(customProps={"validityPeriod": 0}), "customProps.validityPeriod", "from 1 to 36000, not 0", id="validity-zero"),
    pytest.param("sendMessage", _send(customProps={"validityPeriod": True}), "customProps.validityPeriod", "whole number", id="validity-bool"),
    pytest.param("sendMessage", _send(customProps={"provideFeedback": "yes"}), "customProps.provideFeedback", "must be true or false", id="feedback-string"),
    pytest.param("sendMessage", _send(customProps={"riskCheck": "off"}), "customProps.riskCheck", "must be one of ['enable', 'disable']", id="risk-check"),
    pytest.param("sendMessage", _send(customProps={"sendAt": "2031-01-02T03:04:05Z"}), "customProps.sendAt", "give fromService as well", id="send-at-no-service"),
    pytest.param("sendMessage", _send(fromPhone=None, fromService=SERVICE, customProps={"sendAt": "2031-01-02 03:04"}), "customProps.sendAt", "with a time zone", id="send-at-naive"),
    pytest.param("sendMessage", _send(fromPhone=None, fromService=SERVICE, customProps={"scheduleType": "fixed"}), "customProps.scheduleType", "needs customProps.sendAt", id="schedule-no-send-at"),
    pytest.param("sendMessage", _send(customProps={"contentSid": "HX1"}), "customProps.contentSid", "'HX' followed by 32 hex digits", id="content-sid"),
    pytest.param("sendMessage", _send(to="+14155552671"), "to", "inputs key 'to' is not supported; valid keys are", id="input-unknown"),
    pytest.param("sendMessage", _send(idempotencyKey=""), "idempotencyKey", "1 to 180 characters", id="idempotency-empty"),
    pytest.param("sendMessage", ["hi"], "inputs", "inputs must be a JSON object, not list.", id="inputs-list"),
    pytest.param("listMessages", {"criteria": {"status": "sent"}}, "criteria.status", "valid keys are ['dateSent', 'dateSentAfter', 'dateSentBefore', 'from', 'to']", id="criteria-unknown"),
    pytest.param("listMessages", {"criteria": {"to": "4155552671"}}, "criteria.to", "national number", id="criteria-to"),
    pytest.param("listMessages", {"criteria": {"dateSent": "yesterday"}}, "criteria.dateSent", "is not a date (YYYY-MM-DD) or an ISO 8601 date-time", id="criteria-date"),
    pytest.param("listMessages", {"criteria": {"dateSentAfter": "2024-13-01"}}, "criteria.dateSentAfter", "is not a date", id="criteria-bad-month"),
    pytest.param("listMessages", {"criteria": []}, "criteria", "criteria must be a JSON object", id="criteria-list"),
    pytest.param("listMessages", {"limit": 0}, "limit", "limit must be a whole number from 1 to 1000, not 0.", id="limit-zero"),
    pytest.param("listMessages", {"limit": 1001}, "limit", "from 1 to 1000, not 1001", id="limit-big"),
    pytest.param("listMessages", {"limit": "10"}, "limit", "not '10'", id="limit-string"),
    pytest.param("listMessages", {"limit": 2.5}, "limit", "not 2.5", id="limit-float"),
    pytest.param("listMessages", {"pageSize": 2}, "pageSize", "valid keys are ['criteria', 'limit']", id="list-unknown"),
    pytest.param("readMessage", {}, "sid", "sid is required.", id="read-no-sid"),
    pytest.param("readMessage", {"sid": "SM123"}, "sid", "'SM' or 'MM' followed by 32 hex digits", id="read-short-sid"),
    pytest.param("readMessage", {"sid": "AC" + "b" * 32}, "sid", "is not a valid SID", id="read-account-sid"),
    pytest.param("readMessage", {"sid": MESSAGE + "0"}, "sid", "is not a valid SID", id="read-long-sid"),
    pytest.param("readMessage", {"sid": "SM" + "g" * 32}, "sid", "is not a valid SID", id="read-non-hex"),
    pytest.param("deleteMessage", {"sid": "MM12"}, "sid", "is not a valid SID", id="delete-short-sid"),
    pytest.param("deleteMessage", {"sid": MESSAGE, "force": True}, "force", "valid keys are ['sid']", id="delete-unknown"),
    pytest.param("updateMessage", {"sid": MESSAGE}, "customProps", "customProps is required.", id="update-no-props"),
    pytest.param("updateMessage", {"sid": MESSAGE, "customProps": {}}, "customProps", 'needs body: "" (to redact) or status: "canceled"', id="update-empty-props"),
    pytest.param("updateMessage", {"sid": MESSAGE, "customProps": {"body": "new text"}}, "customProps.body", "does not let a sent message be edited", id="update-edit-body"),
    pytest.param("updateMessage", {"sid": MESSAGE, "customProps": {"status": "sent"}}, "customProps.status", "can only be 'canceled'", id="update-status"),
    pytest.param("updateMessage", {"sid": MESSAGE, "customProps": {"to": "+14155552671"}}, "customProps.to", "valid keys are ['body', 'status']", id="update-unknown"),
    pytest.param("updateMessage", {"sid": "SM1", "customProps": {"body": ""}}, "sid", "is not a valid SID", id="update-bad-sid"),
    pytest.param("fetchMessage", {"sid": MESSAGE}, "command", "Unknown command 'fetchMessage'; the commands are ['sendMessage', ", id="unknown-command"),
]  # fmt: skip


@pytest.mark.parametrize(("command", "inputs", "field", "message"), BAD_INPUTS)
def test_bad_input_is_refused_before_the_connection_is_used(
    command: str, inputs: Any, field: str, message: str
) -> None:
    """Each bad input raises InvalidCommandError naming its field, and no Twilio client is ever built."""
    factory = _NoClient()

    with pytest.raises(InvalidCommandError) as caught:
        ConnectionCommands(factory).run("acme", "primary", command, inputs)

    assert caught.value.field == field
    assert message in str(caught.value)
    assert factory.calls == []


@pytest.mark.parametrize("command", ["sendMessage", "listMessages", "readMessage", "updateMessage", "deleteMessage"])
def test_page_flow_is_refused_before_anything_is_read(command: str) -> None:
    """A page-flow call is refused with the reason, before validation and before the connection is looked up."""
    factory = _NoClient()

    with pytest.raises(
        FlowNotAllowedError, match="not allowed in page flows: a page flow runs in the visitor's browser"
    ):
        ConnectionCommands(factory).run("acme", "primary", command, {}, flow="page")

    assert factory.calls == []


def test_unknown_flow_is_a_bad_input() -> None:
    """A flow other than cloud or page is an input error on the ``flow`` field."""
    with pytest.raises(InvalidCommandError, match=r"flow must be 'cloud' or 'page', not 'browser'\.") as caught:
        ConnectionCommands(_NoClient()).run("acme", "primary", "readMessage", {"sid": MESSAGE}, flow="browser")

    assert caught.value.field == "flow"


def test_idempotency_key_is_refused_for_commands_other_than_send() -> None:
    """Only sendMessage de-duplicates; a key on another command is an error, not silently ignored."""
    with pytest.raises(InvalidCommandError, match=r"Only sendMessage takes an idempotency key\."):
        ConnectionCommands(_NoClient()).run("acme", "primary", "readMessage", {"sid": MESSAGE}, idempotency_key="k1")


def test_idempotency_key_without_a_store_is_refused() -> None:
    """Without a send ledger an idempotency key cannot be honoured, so it is refused rather than ignored."""
    with pytest.raises(InvalidCommandError, match="needs a store") as caught:
        ConnectionCommands(_NoClient()).run("acme", "primary", "sendMessage", _send(idempotencyKey="k1"))

    assert caught.value.field == "idempotencyKey"


# A hex Auth Token: the connection store validates Auth Tokens as 32 hex digits, as Twilio issues them.
AUTH_TOKEN = "0123456789abcdef0123456789abcdef"
SENDER = "+15005550006"
RECIPIENT = "+15551234567"


@dataclass
class Harness:
    """The emulator, a real connection store holding one connection, and the commands wired to both."""

    emulator: Emulator
    store: ConnectionStore
    ledger: SendLedger
    commands: ConnectionCommands
    username: str
    store_reads: list[tuple[str, str]]
    first_request: int

    def run(self, command: str, inputs: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        output = self.commands.run("acme", "primary", command, inputs, **kwargs)
        assert isinstance(output, dict)
        return output

    def list_messages(self, inputs: dict[str, Any]) -> list[dict[str, Any]]:
        output = self.commands.run("acme", "primary", "listMessages", inputs)
        assert isinstance(output, list)
        return output

    def records(self) -> list[RequestRecord]:
        """The requests the emulator received since this harness was made."""
        return self.emulator.requests[self.first_request :]

    def requests(self) -> list[tuple[str, str]]:
        return [(record.method, record.path) for record in self.records()]

    def send(self, **changes: Any) -> dict[str, Any]:
        return self.run("sendMessage", {"toPhone": RECIPIENT, "fromPhone": SENDER, "msg": "hello", **changes})


@pytest.fixture(scope="module")
def running() -> Iterator[Emulator]:
    """One emulator for the module (each test looks only at its own messages and requests)."""
    accounts = [Account(DEFAULT_ACCOUNT_SID, AUTH_TOKEN)]
    keys = [ApiKey(DEFAULT_API_KEY, DEFAULT_API_SECRET, DEFAULT_ACCOUNT_SID)]
    with running_emulator(frozen_state(accounts=accounts, api_keys=keys)) as emulator:
        yield emulator


def _harness(emulator: Emulator, tmp_path: Path, profile: TwilioProfile, *, page_size: int = 100) -> Harness:
    engine = create_engine(f"sqlite:///{tmp_path / 'store.db'}")
    store = ConnectionStore(engine, Keyring([("k1", generate_key())]))
    store.put("acme", "primary", profile)
    reads: list[tuple[str, str]] = []

    def client_for(tenant: str, connection: str) -> Client:
        reads.append((tenant, connection))
        profile = store.get(tenant, connection)
        assert isinstance(profile, TwilioProfile)
        return profile.build_client(emulator.http_client())

    ledger = SendLedger(engine)
    commands = ConnectionCommands(client_for, ledger=ledger, page_size=page_size)
    return Harness(emulator, store, ledger, commands, profile.username, reads, len(emulator.requests))


@pytest.fixture(params=["auth-token", "api-key"])
def harness(request: pytest.FixtureRequest, running: Emulator, tmp_path: Path) -> Harness:
    """Commands against the emulator, through a connection that uses an Auth Token or an API key."""
    if request.param == "auth-token":
        return _harness(running, tmp_path, TwilioProfile(DEFAULT_ACCOUNT_SID, None, AUTH_TOKEN))
    return _harness(running, tmp_path, TwilioProfile(DEFAULT_ACCOUNT_SID, DEFAULT_API_KEY, DEFAULT_API_SECRET))


def test_send_message_posts_once_and_answers_the_message_resource(harness: Harness) -> None:
    """sendMessage is one POST with the connection's credentials; the answer has Twilio's fields and ISO dates."""
    message = harness.send(toPhone="+1 (555) 123-4567")

    assert list(message) == list(MESSAGE_FIELDS)
    assert message["to"] == RECIPIENT  # normalised to E.164
    assert message["from"] == SENDER
    assert message["body"] == "hello"
    assert message["status"] == "queued"
    assert message["date_created"] == datetime.fromtimestamp(harness.emulator.state.now(), UTC).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )
    assert message["sid"].startswith("SM")
    assert message["account_sid"] == DEFAULT_ACCOUNT_SID
    assert harness.requests() == [("POST", harness.emulator.messages_path)]
    assert harness.records()[0].username == harness.username


def test_send_message_to_whatsapp_keeps_the_channel_prefix(harness: Harness) -> None:
    """A ``whatsapp:`` address is validated like a phone number and sent with its prefix."""
    message = harness.send(toPhone="whatsapp:+1 555 123 4567", fromPhone="whatsapp:+15005550006")

    assert (message["to"], message["from"]) == ("whatsapp:+15551234567", "whatsapp:+15005550006")


def test_null_properties_count_as_absent(harness: Harness) -> None:
    """A customProps or criteria value of null is left out, as platforms send null for empty fields."""
    message = harness.send(customProps={"statusCallback": None, "validityPeriod": 600})
    listed = harness.list_messages({"criteria": {"to": RECIPIENT, "from": None, "dateSent": ""}, "limit": 1})

    assert dict(harness.records()[0].form)["ValidityPeriod"] == "600"
    assert "StatusCallback" not in dict(harness.records()[0].form)
    assert listed[0]["sid"] == message["sid"]


def test_send_message_with_media_and_no_text(harness: Harness) -> None:
    """msg may be left out when customProps.mediaUrl is given; the message is an MMS."""
    message = harness.run(
        "sendMessage",
        {"toPhone": RECIPIENT, "fromPhone": SENDER, "customProps": {"mediaUrl": "https://example.com/a.png"}},
    )

    assert message["sid"].startswith("MM")
    assert message["num_media"] == "1"
    form = dict(harness.records()[0].form)
    assert form["MediaUrl"] == "https://example.com/a.png"
    assert "Body" not in form


def test_read_message_returns_the_message(harness: Harness) -> None:
    """readMessage fetches one message by SID, with the fields sendMessage returned."""
    sent = harness.send()
    harness.emulator.state.advance(60)

    message = harness.run("readMessage", {"sid": sent["sid"]})

    assert message["sid"] == sent["sid"]
    assert message["status"] == "delivered"
    assert message["date_sent"] is not None
    assert harness.requests()[-1] == ("GET", f"/2010-04-01/Accounts/{DEFAULT_ACCOUNT_SID}/Messages/{sent['sid']}.json")


def test_list_messages_filters_and_limits(harness: Harness) -> None:
    """listMessages applies criteria and returns at most ``limit`` messages, newest first."""
    for text in ("one", "two", "three"):
        harness.send(msg=text)
        harness.emulator.state.advance(1)
    harness.send(toPhone="+15557654321", msg="other")

    listed = harness.list_messages({"criteria": {"to": RECIPIENT}, "limit": 2})

    assert [message["body"] for message in listed] == ["three", "two"]
    assert dict(harness.records()[-1].form) == {"To": RECIPIENT, "PageSize": "2"}


def test_list_messages_follows_pages_until_the_limit(running: Emulator, tmp_path: Path) -> None:
    """A limit larger than one page fetches just enough pages, following Twilio's next_page_uri."""
    harness = _harness(running, tmp_path, TwilioProfile(DEFAULT_ACCOUNT_SID, None, AUTH_TOKEN), page_size=2)
    sent = [harness.send(msg=f"m{index}", toPhone=f"+1555000{index:04d}") for index in range(5)]
    before = len(running.requests)

    listed = harness.list_messages({"criteria": {"from": SENDER}, "limit": 5})
    pages = [record for record in running.requests[before:] if record.method == "GET"]

    assert {message["sid"] for message in listed} >= {message["sid"] for message in sent}
    assert len(listed) == 5
    assert len(pages) == 3  # 2 + 2 + 1
    assert all(dict(record.form)["PageSize"] == "2" for record in pages)


def test_redact_then_read(harness: Harness) -> None:
    """updateMessage with body "" redacts the text, and a later read shows the empty body."""
    sent = harness.send(msg="secret code 1234")
    harness.emulator.state.advance(60)

    redacted = harness.run("updateMessage", {"sid": sent["sid"], "customProps": {"body": ""}})

    assert redacted["body"] == ""
    assert harness.run("readMessage", {"sid": sent["sid"]})["body"] == ""
    assert dict(harness.records()[-2].form) == {"Body": ""}


def test_cancel_a_scheduled_message(harness: Harness) -> None:
    """A message scheduled through a Messaging Service can be canceled with status "canceled"."""
    scheduled = harness.run(
        "sendMessage",
        {
            "toPhone": RECIPIENT,
            "fromService": SERVICE,
            "msg": "later",
            "customProps": {"sendAt": "2026-01-02T09:00:00+01:00"},
        },
    )
    assert scheduled["status"] == "scheduled"
    form = dict(harness.records()[0].form)
    assert (form["SendAt"], form["ScheduleType"]) == ("2026-01-02T08:00:00Z", "fixed")

    canceled = harness.run("updateMessage", {"sid": scheduled["sid"], "customProps": {"status": "canceled"}})

    assert canceled["status"] == "canceled"
    assert harness.run("readMessage", {"sid": scheduled["sid"]})["status"] == "canceled"


@pytest.mark.parametrize(
    ("senders", "form"),
    [
        pytest.param({"fromPhone": SENDER}, {"From": SENDER}, id="phone"),
        pytest.param({"fromPhone": None, "fromService": SERVICE}, {"MessagingServiceSid": SERVICE}, id="service"),
        pytest.param({"fromService": SERVICE}, {"From": SENDER, "MessagingServiceSid": SERVICE}, id="both"),
    ],
)
def test_send_passes_each_sender_combination(harness: Harness, senders: dict[str, Any], form: dict[str, str]) -> None:
    """fromPhone, fromService, or both: each is passed on as From and/or MessagingServiceSid."""
    message = harness.send(**senders)

    sent = dict(harness.records()[0].form)
    assert {key: sent.get(key) for key in ("From", "MessagingServiceSid") if key in sent} == form
    assert message["messaging_service_sid"] == form.get("MessagingServiceSid", message["messaging_service_sid"])
    if "From" in form:
        assert message["from"] == SENDER


def test_sender_outside_the_service_pool_is_twilios_21711(harness: Harness) -> None:
    """With both senders, a number outside the service's pool is Twilio's refusal, with its code and link."""
    with pytest.raises(TwilioError) as caught:
        harness.send(fromPhone="+15551230009", fromService=SERVICE)

    assert (caught.value.status, caught.value.code) == (400, 21711)
    assert caught.value.more_info == "https://www.twilio.com/docs/errors/21711"


def test_delete_then_read_is_a_twilio_404(harness: Harness) -> None:
    """deleteMessage answers success only; reading the message afterwards is Twilio's 404 error 20404."""
    sent = harness.send()
    harness.emulator.state.advance(60)

    assert harness.run("deleteMessage", {"sid": sent["sid"]}) == {"success": True}
    with pytest.raises(TwilioError) as caught:
        harness.run("readMessage", {"sid": sent["sid"]})

    error = caught.value
    assert (error.status, error.code) == (404, 20404)
    assert error.more_info == "https://www.twilio.com/docs/errors/20404"
    assert str(error).startswith("The requested resource /2010-04-01/Accounts/")
    assert error.to_json()["type"] == "TwilioError"


def test_twilio_refusal_carries_code_status_and_more_info(harness: Harness) -> None:
    """An error Twilio answers (here: the recipient opted out, 21610) comes back with Twilio's details."""
    with pytest.raises(TwilioError) as caught:
        harness.send(toPhone="+15005550004")

    assert caught.value.to_json() == {
        "type": "TwilioError",
        "message": "Attempt to send to unsubscribed recipient",
        "status": 400,
        "code": 21610,
        "more_info": "https://www.twilio.com/docs/errors/21610",
    }


def test_deleting_an_in_flight_message_is_refused_by_twilio(harness: Harness) -> None:
    """Twilio will not delete a message that is still being sent (20009); the error says so."""
    sent = harness.send()

    with pytest.raises(TwilioError) as caught:
        harness.run("deleteMessage", {"sid": sent["sid"]})

    assert caught.value.code == 20009


def test_list_with_wrong_credentials_is_a_twilio_401(running: Emulator, tmp_path: Path) -> None:
    """A failed list page (which the library reports without details) still comes back as Twilio's error."""
    harness = _harness(running, tmp_path, TwilioProfile(DEFAULT_ACCOUNT_SID, None, "f" * 32))

    with pytest.raises(TwilioError) as caught:
        harness.run("listMessages", {})

    assert (caught.value.status, caught.value.code, str(caught.value)) == (401, 20003, "Authenticate")


def test_unreachable_twilio_is_a_clear_error(tmp_path: Path) -> None:
    """With a plain client and nothing listening at the API's URL, the error says so and what to check."""
    closed = Emulator(base_url=f"http://127.0.0.1:{free_port()}", state=frozen_state(), responses=[])
    harness = _harness(closed, tmp_path, TwilioProfile(DEFAULT_ACCOUNT_SID, None, AUTH_TOKEN))

    with pytest.raises(TwilioUnreachableError, match="check ZINGYCONN_TWILIO_BASE_URL"):
        harness.run("readMessage", {"sid": MESSAGE})


def test_bad_inputs_make_no_http_request(running: Emulator, tmp_path: Path) -> None:
    """With a real connection and emulator, none of the bad inputs reaches the API or the store."""
    harness = _harness(running, tmp_path, TwilioProfile(DEFAULT_ACCOUNT_SID, None, AUTH_TOKEN))
    before = len(running.requests)

    for case in BAD_INPUTS:
        command, inputs, _field, _message = case.values
        with pytest.raises(InvalidCommandError):
            harness.run(str(command), inputs)  # type: ignore[arg-type]  # the table holds JSON-like values

    assert running.requests[before:] == []
    assert harness.store_reads == []


def test_idempotent_send_sends_once(harness: Harness) -> None:
    """The same idempotency key twice sends one message and answers the first result both times."""
    first = harness.send(idempotencyKey="order-42")
    second = harness.send(idempotencyKey="order-42")
    third = harness.commands.run(
        "acme",
        "primary",
        "sendMessage",
        {"toPhone": RECIPIENT, "fromPhone": SENDER, "msg": "hello"},
        idempotency_key="order-42",
    )

    assert first == second == third
    assert harness.requests() == [("POST", harness.emulator.messages_path)]


def test_idempotency_key_reused_for_another_message_is_refused(harness: Harness) -> None:
    """Reusing a key for different inputs is an error, not a replay of the wrong message."""
    harness.send(idempotencyKey="order-42")

    with pytest.raises(IdempotencyConflictError, match="already used for a different message"):
        harness.send(idempotencyKey="order-42", msg="something else")

    assert len(harness.requests()) == 1


def test_idempotency_key_is_released_when_twilio_refuses(harness: Harness) -> None:
    """When Twilio refuses a send nothing was sent, so retrying with the same key sends again."""
    for _ in range(2):
        with pytest.raises(TwilioError):
            harness.send(toPhone="+15005550004", idempotencyKey="retry-me")

    assert len(harness.requests()) == 2


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database URL for the send ledger: SQLite in a temporary directory, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.db'}"
    return str(request.getfixturevalue("postgres_url"))


def test_concurrent_claims_of_one_key_have_exactly_one_winner(ledger_url: str) -> None:
    """Eight threads claiming the same key at once: one may send, every other one is refused."""
    ledger = SendLedger(create_engine(ledger_url))
    barrier = threading.Barrier(8)

    def claim(_: int) -> str:
        barrier.wait()
        try:
            return "send" if isinstance(ledger.claim("acme", "k", "fp"), Claim) else "replay"
        except IdempotencyConflictError:
            return "refused"

    with ThreadPoolExecutor(8) as pool:
        outcomes = sorted(pool.map(claim, range(8)))

    assert outcomes == ["refused"] * 7 + ["send"]


def test_concurrent_duplicate_sends_make_one_request(harness: Harness) -> None:
    """Two sends with one key at the same time reach Twilio once; the other replays or is refused."""
    barrier = threading.Barrier(2)

    def send(_: int) -> str:
        barrier.wait()
        try:
            return str(harness.send(idempotencyKey="race")["sid"])
        except IdempotencyConflictError:
            return "refused"

    with ThreadPoolExecutor(2) as pool:
        outcomes = list(pool.map(send, range(2)))

    assert harness.requests() == [("POST", harness.emulator.messages_path)]
    assert len({outcome for outcome in outcomes if outcome != "refused"}) == 1


def test_concurrent_duplicate_send_is_refused_while_the_first_is_in_flight(tmp_path: Path) -> None:
    """A second claim of a key whose send has not finished is refused: two sends never both go out."""
    ledger = SendLedger(create_engine(f"sqlite:///{tmp_path / 'ledger.db'}"))

    claim = ledger.claim("acme", "k", "fp")
    assert isinstance(claim, Claim)
    with pytest.raises(IdempotencyConflictError, match="is being sent by another request right now"):
        ledger.claim("acme", "k", "fp")
    ledger.complete(claim, {"sid": MESSAGE})
    assert ledger.claim("acme", "k", "fp") == {"sid": MESSAGE}
    assert isinstance(ledger.claim("other-tenant", "k", "fp"), Claim)


def test_idempotency_key_expires_after_24_hours(tmp_path: Path) -> None:
    """After the 24-hour window a key is free again and the next send goes out."""
    now = [1000.0]
    ledger = SendLedger(create_engine(f"sqlite:///{tmp_path / 'ledger.db'}"), clock=lambda: now[0])
    claim = ledger.claim("acme", "k", "fp")
    assert isinstance(claim, Claim)
    ledger.complete(claim, {"sid": MESSAGE})

    now[0] += 24 * 3600 - 1
    assert ledger.claim("acme", "k", "fp") == {"sid": MESSAGE}
    now[0] += 1
    assert isinstance(ledger.claim("acme", "k", "fp"), Claim)
    assert ledger.purge() == 0


@pytest.fixture
def environment(running: Emulator, tmp_path: Path) -> dict[str, str]:
    """ZINGYCONN_* variables for a fresh data directory, pointed at the emulator, with connection 'primary'."""
    env = {"ZINGYCONN_DATA_DIR": str(tmp_path / "data"), "ZINGYCONN_TWILIO_BASE_URL": running.base_url,
           "ZINGYCONN_KEYS": f"k1:{base64.b64encode(generate_key()).decode()}"}  # fmt: skip
    ConnectionStore.from_settings(Settings.from_env(env)).put(
        "acme", "primary", TwilioProfile(DEFAULT_ACCOUNT_SID, DEFAULT_API_KEY, DEFAULT_API_SECRET)
    )
    return env


def test_runtime_command_goes_through_the_egress_broker(running: Emulator, environment: dict[str, str]) -> None:
    """Runtime.command sends with the stored connection through the broker and answers the Message dict."""
    before = len(running.requests)
    with Runtime.from_env(environment) as runtime:
        sent = runtime.command(
            "acme", "primary", "sendMessage", {"toPhone": RECIPIENT, "fromPhone": SENDER, "msg": "hi"}
        )
        assert isinstance(sent, dict)
        again = runtime.command("acme", "primary", "readMessage", {"sid": sent["sid"]})

    assert isinstance(again, dict)
    assert again["sid"] == sent["sid"]
    assert [(record.method, record.username) for record in running.requests[before:]] == [
        ("POST", DEFAULT_API_KEY),
        ("GET", DEFAULT_API_KEY),
    ]


def test_runtime_command_refuses_page_flow(environment: dict[str, str]) -> None:
    """The runtime refuses a page-flow command with FlowNotAllowedError."""
    with Runtime.from_env(environment) as runtime, pytest.raises(FlowNotAllowedError):
        runtime.command("acme", "primary", "readMessage", {"sid": MESSAGE}, flow="page")


def test_cli_prints_the_output_json(running: Emulator, environment: dict[str, str]) -> None:
    """``zingyconn command`` prints the command's output as JSON and exits 0."""
    inputs = json.dumps({"toPhone": RECIPIENT, "fromPhone": SENDER, "msg": "from the CLI"})

    result = CliRunner().invoke(
        command_cli, ["primary", "sendMessage", "--tenant", "acme", "--input", inputs], env=environment
    )

    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["body"] == "from the CLI"


def test_cli_reads_input_from_a_file(environment: dict[str, str], tmp_path: Path) -> None:
    """``--input @FILE`` reads the inputs from a file."""
    (tmp_path / "list.json").write_text(json.dumps({"limit": 1}))

    result = CliRunner().invoke(
        command_cli,
        ["primary", "listMessages", "--tenant", "acme", "--input", f"@{tmp_path / 'list.json'}"],
        env=environment,
    )

    assert result.exit_code == 0, result.output
    listed = json.loads(result.output)
    assert isinstance(listed, list)
    assert len(listed) <= 1


@pytest.mark.parametrize(
    ("args", "exit_code", "error"),
    [
        pytest.param(["readMessage", "--input", '{"sid": "SM1"}'], 2, {"type": "InvalidCommandError", "field": "sid"}, id="bad-input"),
        pytest.param(["readMessage", "--input", "{not json"], 2, {"type": "ValidationError", "field": "input"}, id="bad-json"),
        pytest.param(["readMessage", "--input", json.dumps({"sid": MESSAGE})], 1, {"type": "TwilioError", "status": 404, "code": 20404}, id="twilio-404"),
        pytest.param(["readMessage", "--flow", "page"], 1, {"type": "FlowNotAllowedError"}, id="page-flow"),
    ],
)  # fmt: skip
def test_cli_prints_the_error_object(
    environment: dict[str, str], args: list[str], exit_code: int, error: dict[str, Any]
) -> None:
    """A failed command prints ``{"ok": false, "error": {...}}``; exit 2 for bad input, 1 when the command failed."""
    result = CliRunner().invoke(command_cli, ["primary", *args, "--tenant", "acme"], env=environment)

    assert result.exit_code == exit_code, result.output
    printed = json.loads(result.output)
    assert printed["ok"] is False
    assert printed["error"].items() >= error.items()
