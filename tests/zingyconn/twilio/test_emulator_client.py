"""The real ``twilio`` library (sync and async clients) drives the emulator for every Messages operation."""

from __future__ import annotations

import asyncio
import base64

import httpx
import pytest
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.rest import Client

from tests.emulator import MAGIC_SENDER, RECIPIENT, Emulator
from zingyconn.twilio.emulator import AsyncEmulatorHttpClient, EmulatorHttpClient
from zingyconn.twilio.emulator.http_client import rewrite


def test_create_returns_a_queued_message_with_twilio_fields(emulator: Emulator) -> None:
    """create() answers 201 with an SM SID, queued status, numeric strings and RFC 2822 dates the library parses."""
    message = emulator.client().messages.create(to=RECIPIENT, from_=MAGIC_SENDER, body="Hello")

    assert message.sid.startswith("SM")
    assert len(message.sid) == 34
    assert message.status == "queued"
    assert message.num_segments == "1"
    assert message.num_media == "0"
    assert message.date_created is not None
    assert message.date_created.tzinfo is not None
    assert message.date_sent is None
    assert message.from_ == MAGIC_SENDER
    assert message.account_sid == emulator.account_sid
    assert message.direction == "outbound-api"
    assert message.messaging_service_sid.startswith("MG")  # Twilio's default service when none is named


def test_create_keeps_repeated_media_urls_and_uses_an_mm_sid(emulator: Emulator) -> None:
    """Several MediaUrl values are all kept (num_media) and a message with media gets an MM SID."""
    urls = ["https://example.com/a.png", "https://example.com/b.jpg"]
    message = emulator.client().messages.create(to=RECIPIENT, from_=MAGIC_SENDER, media_url=urls)

    assert message.sid.startswith("MM")
    assert message.num_media == "2"
    assert emulator.requests[-1].form.count(("MediaUrl", urls[1])) == 1


def test_fetch_returns_the_same_message(emulator: Emulator) -> None:
    """fetch() returns the stored message."""
    client = emulator.client()
    created = client.messages.create(to=RECIPIENT, from_=MAGIC_SENDER, body="x")

    fetched = client.messages(created.sid).fetch()

    assert (fetched.sid, fetched.body, fetched.to) == (created.sid, "x", RECIPIENT)


def test_list_pages_through_every_message_newest_first(emulator: Emulator) -> None:
    """list() with a small page size follows next_page_uri and yields all messages, newest first."""
    client = emulator.client()
    for number in range(5):
        client.messages.create(to=RECIPIENT, from_=MAGIC_SENDER, body=f"n{number}")

    bodies = [message.body for message in client.messages.list(page_size=2)]

    assert bodies == ["n4", "n3", "n2", "n1", "n0"]
    assert [r.form for r in emulator.requests if r.method == "GET"][1][-1][0] == "PageToken"


def test_update_with_empty_body_redacts(emulator: Emulator) -> None:
    """update(body="") sends ``Body=`` (kept blank) and the message's body becomes empty."""
    client = emulator.client()
    sid = client.messages.create(to=RECIPIENT, from_=MAGIC_SENDER, body="secret").sid
    emulator.state.advance(10)

    redacted = client.messages(sid).update(body="")

    assert redacted.body == ""
    assert emulator.requests[-1].form == (("Body", ""),)
    assert client.messages(sid).fetch().body == ""


def test_delete_removes_a_finished_message(emulator: Emulator) -> None:
    """delete() answers 204 (the library returns True) and a later fetch is 20404."""
    client = emulator.client()
    sid = client.messages.create(to=RECIPIENT, from_=MAGIC_SENDER, body="bye").sid
    emulator.state.advance(10)

    assert client.messages(sid).delete() is True
    with pytest.raises(TwilioRestException) as caught:
        client.messages(sid).fetch()

    assert (caught.value.status, caught.value.code) == (404, 20404)


def test_api_key_credentials_work_for_their_account(emulator: Emulator) -> None:
    """An API key (SK + secret) with the account SID in the path can create and list."""
    client = emulator.client(api_key=True)

    client.messages.create(to=RECIPIENT, from_=MAGIC_SENDER, body="via key")

    assert [m.body for m in client.messages.list()] == ["via key"]
    assert emulator.requests[-1].username == emulator.api_key


@pytest.mark.parametrize(
    ("username", "password"),
    [
        pytest.param("ACc0ffee00000000000000000000000001", "wrong", id="wrong-token"),
        pytest.param("SKc0ffee00000000000000000000000001", "wrong", id="wrong-secret"),
        pytest.param("AC" + "1" * 32, "emulator0auth0token0000000000000", id="unknown-account"),
        pytest.param("SK" + "1" * 32, "emulator0api0key0secret000000000", id="unknown-key"),
    ],
)
def test_wrong_credentials_are_refused_with_20003(emulator: Emulator, username: str, password: str) -> None:
    """Wrong or unknown credentials get 401 / 20003 "Authenticate" and no message is stored."""
    client = Client(username, password, emulator.account_sid, http_client=emulator.http_client())

    with pytest.raises(TwilioRestException) as caught:
        client.messages.create(to=RECIPIENT, from_=MAGIC_SENDER, body="x")

    assert (caught.value.status, caught.value.code) == (401, 20003)
    assert emulator.state.messages(emulator.account_sid) == []


def test_missing_authorization_is_refused(emulator: Emulator) -> None:
    """A request without Basic credentials (or with garbage) is 20003/401."""
    url = f"{emulator.base_url}{emulator.messages_path}"
    plain = httpx.get(url)
    garbage = httpx.get(url, headers={"Authorization": "Basic !!!"})
    no_colon = httpx.get(url, headers={"Authorization": "Basic " + base64.b64encode(b"nocolon").decode()})

    assert [r.status_code for r in (plain, garbage, no_colon)] == [401, 401, 401]
    assert plain.json()["code"] == 20003


def test_path_account_that_is_not_the_callers_is_refused(emulator: Emulator) -> None:
    """Valid credentials for account A cannot use account B's path (20003)."""
    other = "AC" + "2" * 32
    client = Client(emulator.account_sid, emulator.auth_token, other, http_client=emulator.http_client())

    with pytest.raises(TwilioException, match="Unable to fetch page"):  # a list failure is a plain TwilioException
        client.messages.list()
    with pytest.raises(TwilioRestException) as created:
        client.messages.create(to=RECIPIENT, from_=MAGIC_SENDER, body="x")
    assert (created.value.status, created.value.code) == (401, 20003)


def test_unknown_route_and_method_are_twilio_errors(emulator: Emulator) -> None:
    """An unknown path is 20404 and an unsupported method on a Messages route is 20004/405."""
    auth = (emulator.account_sid, emulator.auth_token)
    unknown = httpx.get(f"{emulator.base_url}/2010-04-01/Accounts/{emulator.account_sid}/Calls.json", auth=auth)
    wrong_method = httpx.put(f"{emulator.base_url}{emulator.messages_path}", auth=auth)

    assert (unknown.status_code, unknown.json()["code"]) == (404, 20404)
    assert (wrong_method.status_code, wrong_method.json()["code"]) == (405, 20004)


def test_http_client_refuses_urls_that_are_not_twilio() -> None:
    """The rewriting client never sends the account's credentials to a host that is not Twilio's."""
    assert rewrite("https://api.twilio.com/2010-04-01/x.json?a=1", "http://127.0.0.1:9") == (
        "http://127.0.0.1:9/2010-04-01/x.json?a=1"
    )
    with pytest.raises(ValueError, match="only Twilio API URLs"):
        EmulatorHttpClient("http://127.0.0.1:9").request("GET", "https://evil.example/steal")
    with pytest.raises(ValueError, match="only Twilio API URLs"):
        rewrite("http://api.twilio.com/x", "http://127.0.0.1:9")


def test_async_client_creates_fetches_and_deletes(emulator: Emulator) -> None:
    """The async client (AsyncTwilioHttpClient subclass) can create, fetch and delete."""

    async def scenario() -> tuple[str, str, bool]:
        http_client = AsyncEmulatorHttpClient(emulator.base_url)
        try:
            client = Client(emulator.account_sid, emulator.auth_token, http_client=http_client)
            created = await client.messages.create_async(to=RECIPIENT, from_=MAGIC_SENDER, body="async")
            fetched = await client.messages(created.sid).fetch_async()
            await asyncio.to_thread(emulator.state.advance, 10)
            deleted = await client.messages(created.sid).delete_async()
        finally:
            await http_client.close()
        return created.status, fetched.body, deleted

    assert asyncio.run(scenario()) == ("queued", "async", True)
    assert emulator.state.messages(emulator.account_sid) == []


def test_every_request_is_logged_even_unknown_or_unauthenticated(emulator: Emulator) -> None:
    """The request log holds every request (method, path, form), so tests can assert that none was made."""
    assert emulator.requests == []
    httpx.post(f"{emulator.base_url}/nowhere", content=b"a=1&a=&b=2")
    httpx.get(f"{emulator.base_url}{emulator.messages_path}?To=%2B1")

    assert [(r.method, r.path, r.form) for r in emulator.requests] == [
        ("POST", "/nowhere", (("a", "1"), ("a", ""), ("b", "2"))),
        ("GET", emulator.messages_path, (("To", "+1"),)),
    ]


def test_http_client_reaches_the_emulator_even_with_region_and_edge(emulator: Emulator) -> None:
    """region/edge only rename the *.twilio.com host; the rewriting client still sends to the emulator."""
    client = Client(
        emulator.account_sid, emulator.auth_token, region="au1", edge="sydney", http_client=emulator.http_client()
    )

    client.messages.create(to=RECIPIENT, from_=MAGIC_SENDER, body="x")

    assert [r.path for r in emulator.requests] == [emulator.messages_path]
