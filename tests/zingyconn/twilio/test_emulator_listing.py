"""List Messages: filters, newest first, PageSize/Page/PageToken paging and the envelope's keys."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime

import httpx
import pytest
from twilio.base.exceptions import TwilioException
from twilio.rest import Client

from tests.emulator import MAGIC_SENDER, RECIPIENT, START_TIME, Emulator, check_response, frozen_state, running_emulator
from zingyconn.twilio.emulator import DEFAULT_ACCOUNT, DEFAULT_KEY, Account

#: The records key plus twilio.base.page.Page.META_KEYS that the emulator uses.
ENVELOPE_KEYS = {"end", "first_page_uri", "next_page_uri", "page", "page_size", "previous_page_uri", "start", "uri"}
OTHER = Account("AC" + "d" * 32, "other-token")


@pytest.fixture(scope="module")
def seeded() -> Iterator[Emulator]:
    """Seven messages: three to RECIPIENT sent on 2026-01-01, four to +15557654321 sent a day later."""
    with running_emulator(frozen_state(accounts=[DEFAULT_ACCOUNT, OTHER], api_keys=[DEFAULT_KEY])) as running:
        client = running.client()
        for number in range(3):
            client.messages.create(to=RECIPIENT, from_=MAGIC_SENDER, body=f"a{number}")
        running.state.advance(86400)
        for number in range(4):
            client.messages.create(to="+15557654321", from_="+15005550006", body=f"b{number}")
        running.state.advance(10)
        Client(OTHER.sid, OTHER.auth_token, http_client=running.http_client()).messages.create(
            to=RECIPIENT, from_=MAGIC_SENDER, body="other account"
        )
        yield running
    for response in running.responses:
        check_response(response)


def get(emulator: Emulator, **params: str) -> httpx.Response:
    """GET the list resource with raw query parameters."""
    url = emulator.base_url + emulator.messages_path
    return httpx.get(url, params=params, auth=(emulator.account_sid, emulator.auth_token))


def test_list_is_newest_first_and_only_the_callers_account(seeded: Emulator) -> None:
    """All of the account's messages, newest first; another account's message is not listed."""
    bodies = [m.body for m in seeded.client().messages.list()]

    assert bodies == ["b3", "b2", "b1", "b0", "a2", "a1", "a0"]


def test_other_accounts_message_cannot_be_fetched(seeded: Emulator) -> None:
    """A SID of another account is 20404 for this account, as if it did not exist."""
    other = Client(OTHER.sid, OTHER.auth_token, http_client=seeded.http_client()).messages.list()[0]

    response = httpx.get(
        f"{seeded.base_url}/2010-04-01/Accounts/{seeded.account_sid}/Messages/{other.sid}.json",
        auth=(seeded.account_sid, seeded.auth_token),
    )

    assert (response.status_code, response.json()["code"]) == (404, 20404)


@pytest.mark.parametrize(
    ("filters", "bodies"),
    [
        pytest.param({"to": RECIPIENT}, ["a2", "a1", "a0"], id="to"),
        pytest.param({"from_": MAGIC_SENDER, "to": "+15557654321"}, ["b3", "b2", "b1", "b0"], id="from-and-to"),
        pytest.param({"date_sent": datetime(2026, 1, 1, tzinfo=UTC)}, ["a2", "a1", "a0"], id="date-sent-day"),
        pytest.param({"date_sent_after": date(2026, 1, 2)}, ["b3", "b2", "b1", "b0"], id="sent-on-or-after"),
        pytest.param({"date_sent_before": date(2026, 1, 1)}, [], id="sent-before-first"),
        pytest.param({"date_sent_before": "2026-01-01T23:59:59Z"}, ["a2", "a1", "a0"], id="sent-on-or-before"),
        pytest.param({"to": "+15550000000"}, [], id="no-match"),
    ],
)
def test_list_filters(seeded: Emulator, filters: dict[str, object], bodies: list[str]) -> None:
    """To, From, DateSent, DateSent< and DateSent> filter as Twilio documents."""
    assert [m.body for m in seeded.client().messages.list(**filters)] == bodies


def test_envelope_has_only_twilios_paging_keys(seeded: Emulator) -> None:
    """The first page of two: absolute start/end, Page=1 + PA token next, no previous, only known keys."""
    page = get(seeded, To=RECIPIENT, PageSize="2").json()

    assert set(page) == ENVELOPE_KEYS | {"messages"}
    assert (page["page"], page["page_size"], page["start"], page["end"]) == (0, 2, 0, 1)
    assert page["previous_page_uri"] is None
    assert page["first_page_uri"] == f"{seeded.messages_path}?To=%2B15551234567&PageSize=2&Page=0"
    assert page["next_page_uri"].endswith(f"PageSize=2&Page=1&PageToken=PA{page['messages'][-1]['sid']}")


def test_following_next_and_previous_page_uris(seeded: Emulator) -> None:
    """Page 1 via its token holds the next records; its previous_page_uri leads back to page 0's records."""
    first = get(seeded, PageSize="3").json()
    second = httpx.get(seeded.base_url + first["next_page_uri"], auth=(seeded.account_sid, seeded.auth_token)).json()
    back = httpx.get(seeded.base_url + second["previous_page_uri"], auth=(seeded.account_sid, seeded.auth_token)).json()

    assert [m["body"] for m in second["messages"]] == ["b0", "a2", "a1"]
    assert (second["start"], second["end"]) == (3, 5)
    assert [m["body"] for m in back["messages"]] == [m["body"] for m in first["messages"]]


def test_page_number_without_token_is_an_offset(seeded: Emulator) -> None:
    """Page=2 without a token skips two pages."""
    page = get(seeded, PageSize="3", Page="2").json()

    assert [m["body"] for m in page["messages"]] == ["a0"]
    assert page["next_page_uri"] is None


def test_library_page_and_limit(seeded: Emulator) -> None:
    """The library's page() and list(limit=) work against the emulator."""
    client = seeded.client()

    page = client.messages.page(page_size=2)

    assert [m.body for m in page] == ["b3", "b2"]
    assert [m.body for m in page.next_page()] == ["b1", "b0"]
    assert len(client.messages.list(limit=3)) == 3


@pytest.mark.parametrize(
    ("params", "code"),
    [
        pytest.param({"PageSize": "0"}, 20001, id="page-size-zero"),
        pytest.param({"PageSize": "1001"}, 20001, id="page-size-too-big"),
        pytest.param({"PageSize": "two"}, 20001, id="page-size-not-a-number"),
        pytest.param({"Page": "-1"}, 20001, id="negative-page"),
        pytest.param({"PageToken": "PAnope"}, 21481, id="unknown-token"),
        pytest.param({"PageToken": "XX" + "0" * 32}, 21481, id="bad-token"),
        pytest.param({"DateSent": "yesterday"}, 20001, id="bad-date"),
    ],
)
def test_bad_list_parameters_are_400_errors(seeded: Emulator, params: dict[str, str], code: int) -> None:
    """Bad paging or date parameters are Twilio-shaped 400 errors (the library raises TwilioException)."""
    response = get(seeded, **params)

    assert (response.status_code, response.json()["code"]) == (400, code)


def test_library_list_failure_is_a_twilio_exception(seeded: Emulator) -> None:
    """A failing list call surfaces in the library as TwilioException "Unable to fetch page"."""
    with pytest.raises(TwilioException, match="Unable to fetch page"):
        seeded.client().messages.list(date_sent_after="not a date")


def test_messages_not_yet_sent_are_excluded_by_date_filters(emulator: Emulator) -> None:
    """A queued message has no date_sent, so any DateSent filter leaves it out."""
    client = emulator.client()
    client.messages.create(to=RECIPIENT, from_=MAGIC_SENDER, body="queued")
    today = datetime.fromtimestamp(START_TIME, UTC)

    assert client.messages.list(date_sent=today) == []
    assert len(client.messages.list()) == 1
