"""Messaging Services in the emulator: From with MessagingServiceSid, sender pools and Twilio's error 21711."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from click.testing import CliRunner
from twilio.base.exceptions import TwilioRestException

from tests.emulator import MAGIC_SENDER, RECIPIENT, Emulator, check_response, frozen_state, running_emulator
from zingyconn.hosts.cli import main
from zingyconn.twilio.emulator import MessagingService, parse_service

DEFAULT_POOL_SERVICE = "MG" + "a" * 32
POOLED = "MG" + "c" * 32
POOL = ("+15551230001", "+15551230002")


@pytest.fixture(scope="module")
def shared() -> Iterator[Emulator]:
    """An emulator that knows one service with a two-number pool; every response is checked against the spec."""
    with running_emulator(frozen_state(services=[MessagingService(POOLED, POOL)])) as running:
        yield running
    for response in running.responses:
        check_response(response)


def test_from_in_the_pool_sends_from_it_through_the_service(shared: Emulator) -> None:
    """From and MessagingServiceSid together: the message is the service's and is sent from From."""
    client = shared.client()
    created = client.messages.create(to=RECIPIENT, from_=POOL[1], messaging_service_sid=POOLED, body="hi")
    shared.state.advance(1)

    assert (created.status, created.from_, created.messaging_service_sid) == ("accepted", POOL[1], POOLED)
    assert client.messages(created.sid).fetch().from_ == POOL[1]


def test_service_alone_sends_from_the_first_number_of_its_pool(shared: Emulator) -> None:
    """Without From, the service picks the sender from its pool once the message is queued."""
    client = shared.client()
    created = client.messages.create(to=RECIPIENT, messaging_service_sid=POOLED, body="hi")
    shared.state.advance(1)

    assert created.from_ is None
    assert client.messages(created.sid).fetch().from_ == POOL[0]


@pytest.mark.parametrize(
    ("service", "sender"),
    [
        pytest.param(POOLED, MAGIC_SENDER, id="configured-pool"),
        pytest.param(DEFAULT_POOL_SERVICE, "+15551230001", id="default-pool"),
    ],
)
def test_from_outside_the_pool_is_twilios_21711(shared: Emulator, service: str, sender: str) -> None:
    """A From that is not in the service's sender pool is refused with 400/21711, and nothing is created."""
    before = len(shared.state.messages(shared.account_sid))

    with pytest.raises(TwilioRestException) as caught:
        shared.client().messages.create(to=RECIPIENT, from_=sender, messaging_service_sid=service, body="hi")

    assert (caught.value.status, caught.value.code) == (400, 21711)
    assert service in caught.value.msg
    assert len(shared.state.messages(shared.account_sid)) == before


def test_unconfigured_service_has_the_magic_sender_in_its_pool(shared: Emulator) -> None:
    """Any other service SID has the pool [+15005550006], so Twilio's test sender works with it."""
    created = shared.client().messages.create(
        to=RECIPIENT, from_=MAGIC_SENDER, messaging_service_sid=DEFAULT_POOL_SERVICE, body="hi"
    )

    assert (created.from_, created.messaging_service_sid) == (MAGIC_SENDER, DEFAULT_POOL_SERVICE)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        pytest.param("MG123:+15551230001", "is not 'MG' followed by 32 hex digits", id="bad-sid"),
        pytest.param(POOLED, "is not SID:NUMBER", id="no-pool"),
        pytest.param(POOLED + ":", "is not SID:NUMBER", id="empty-pool"),
    ],
)
def test_service_option_errors_name_the_format(value: str, message: str) -> None:
    """A malformed --service is a usage error (exit 2) that names the expected format."""
    with pytest.raises(ValueError, match=message):
        parse_service(value)
    result = CliRunner().invoke(main, ["emulator", "--port", "1", "--service", value])

    assert result.exit_code == 2
    assert result.output.startswith("Error: --service:")
