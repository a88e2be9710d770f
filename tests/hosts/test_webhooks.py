"""Webhooks on a real uvicorn: event shape, responses, errors, signatures, proxies, idempotency, concurrency."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import ClassVar
from urllib.parse import urlencode

import httpx
import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st
from starlette.requests import Request

from tests.hosts.live_server import (
    ACCOUNT_SID,
    API_KEY,
    API_SECRET,
    AUTH_TOKEN,
    LiveServer,
    live_server,
    sign,
)
from tests.servers import free_port, wait_for_port
from zingyconn.catalog import Catalog
from zingyconn.config import Settings
from zingyconn.database import create_engine
from zingyconn.group_commit import GroupWriter
from zingyconn.hosts.logs import record_fields
from zingyconn.hosts.replay import ReplayStore, StoredResponse
from zingyconn.hosts.webhooks import build_event
from zingyconn.leases import LEASE_SECONDS, LeaseKeeper
from zingyconn.runtime import Runtime
from zingyconn.schema import runs
from zingyconn.twilio.profile import TwilioProfile

ECHO = "return {'id': event['query'].get('id'), 'event': event}"
TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response><Message>Thanks!</Message></Response>'
FORM = {"From": "+15551234567", "To": "+15005550006", "Body": "hello ☃", "MessageSid": "SM" + "0" * 32}


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    """One runtime (sandbox, store) for the module, with connections 'main' (Auth Token) and 'keyed' (API key)."""
    data_dir: Path = tmp_path_factory.mktemp("webhooks")
    # As many runs of a tenant at once as the server lets in (tenant_concurrency=64 below): the burst tests here
    # are about answers, not the aggregate limits (tests/hosts/test_tenant_limits.py).
    env = {"ZINGYCONN_DATA_DIR": str(data_dir), "ZINGYCONN_TENANT_MAX_RUNS": "64"}
    with Runtime(Settings.from_env({**env, "ZINGYCONN_TENANT_MAX_MEMORY_MB": str(64 * 256)})) as rt:
        for tenant in ("acme", "globex"):
            rt.store.put(tenant, "main", TwilioProfile(account_sid=ACCOUNT_SID, secret=AUTH_TOKEN))
            rt.store.put(tenant, "keyed", TwilioProfile(account_sid=ACCOUNT_SID, api_key=API_KEY, secret=API_SECRET))
        yield rt


@pytest.fixture(scope="module")
def catalog(runtime: Runtime) -> Catalog:
    return Catalog(runtime.engine)


@pytest.fixture(scope="module")
def server(runtime: Runtime) -> Iterator[LiveServer]:
    """The default server: no public URL, no trusted proxy."""
    with live_server(runtime, tenant_concurrency=64) as live:
        yield live


def test_event_carries_the_request_and_dict_result_is_json(server: LiveServer, catalog: Catalog) -> None:
    """The snippet sees method, path, query and form (repeated fields as lists), headers without credentials."""
    catalog.put_hook("acme", "echo", ECHO)
    body = urlencode([("Body", "hi"), ("MediaUrl", "a"), ("MediaUrl", "b")])
    response = httpx.post(
        server.url("/hooks/acme/echo?id=7&tag=x&tag=y"),
        content=body,
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "Authorization": "Bearer secret",
            "Cookie": "session=1",
            "X-Custom": "yes",
        },
    )

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    event = response.json()["event"]
    assert (event["method"], event["path"], event["hook"]) == ("POST", "/hooks/acme/echo", "echo")
    assert event["query"] == {"id": "7", "tag": ["x", "y"]}
    assert event["form"] == {"Body": "hi", "MediaUrl": ["a", "b"]}
    assert (event["json"], event["body"]) == (None, body)
    assert event["headers"]["x-custom"] == "yes"
    assert not {"authorization", "cookie", "x-twilio-signature"} & set(event["headers"])
    with server.runtime.engine.connect() as conn:
        row = conn.execute(sa.select(runs).where(runs.c.id == response.headers["x-zingy-run-id"])).one()
    assert (row.kind, row.tenant, row.name, row.status) == ("webhook", "acme", "echo", "ok")
    assert "Bearer secret" not in json.dumps(row.event)


@given(
    st.sampled_from(["/", "//", ""]),
    st.text(st.sampled_from("ab/?#\\%\t\r\n é"), max_size=12),
    st.sampled_from([[(b"host", b"example.com")], [(b"host", b"bad host")], []]),
    st.sampled_from([("127.0.0.1", 8000), None]),
)
def test_the_event_path_is_what_starlettes_url_says(
    prefix: str, tail: str, headers: list[tuple[bytes, bytes]], server: tuple[str, int] | None
) -> None:
    """Whatever the path holds (characters Starlette escapes or URL parsing drops, double slashes, no Host nor
    server address), the event's path is ``request.url.path``."""
    scope = {"type": "http", "method": "GET", "scheme": "http", "path": prefix + tail, "query_string": b"",
             "headers": headers, "server": server}  # fmt: skip

    event = build_event(Request(scope), hook="h", body=b"", form=None)

    assert (event["path"], event["query"]) == (Request(scope).url.path, {})


def test_json_body_is_parsed_into_event_json(server: LiveServer, catalog: Catalog) -> None:
    """A JSON request body arrives parsed as event['json'] (GET works too, with form None)."""
    catalog.put_hook("acme", "json", "return [event['json'], event['form'], event['method']]")

    assert httpx.post(server.url("/hooks/acme/json"), json={"a": [1, 2]}).json() == [{"a": [1, 2]}, None, "POST"]
    assert httpx.get(server.url("/hooks/acme/json")).json() == [None, None, "GET"]


@pytest.mark.parametrize(
    ("source", "content_type", "body"),
    [
        pytest.param(f"return {TWIML!r}", "text/xml; charset=utf-8", TWIML, id="twiml-string"),
        pytest.param(
            "from twilio.twiml.messaging_response import MessagingResponse\n"
            "r = MessagingResponse()\nr.message('Thanks!')\nreturn r",
            "text/xml; charset=utf-8",
            TWIML,
            id="twiml-object",
        ),
        pytest.param("return '<Response/>'", "text/xml; charset=utf-8", "<Response/>", id="bare-response"),
        pytest.param("return 'plain'", "text/plain; charset=utf-8", "plain", id="text"),
        pytest.param("return 42", "application/json", "42", id="number"),
    ],
)
def test_result_is_rendered_by_type(
    server: LiveServer, catalog: Catalog, source: str, content_type: str, body: str
) -> None:
    """TwiML (string or object) is text/xml, other strings text/plain, everything else JSON."""
    catalog.put_hook("acme", "render", source)
    response = httpx.post(server.url("/hooks/acme/render"))

    assert (response.status_code, response.headers["content-type"], response.text) == (200, content_type, body)


def test_none_is_empty_twiml_for_twilio_and_204_otherwise(server: LiveServer, catalog: Catalog) -> None:
    """Returning None answers Twilio (a signed request) with an empty <Response/>, and others with 204."""
    catalog.put_hook("acme", "quiet", "log.info('got it')")
    url = server.url("/hooks/acme/quiet")

    signed = httpx.post(url, data=FORM, headers={"X-Twilio-Signature": sign(url, FORM)})
    plain = httpx.post(url)

    assert (signed.status_code, signed.headers["content-type"]) == (200, "text/xml; charset=utf-8")
    assert signed.text == '<?xml version="1.0" encoding="UTF-8"?><Response/>'
    assert (plain.status_code, plain.content) == (204, b"")


def test_snippet_error_is_500_with_run_id_and_no_stack(server: LiveServer, catalog: Catalog) -> None:
    """An exception in the snippet answers 500 in the JSON error shape, naming the line, with no traceback."""
    catalog.put_hook("acme", "broken", "x = 1\nreturn x / 0")
    response = httpx.post(server.url("/hooks/acme/broken"))

    assert response.status_code == 500
    error = response.json()["error"]
    assert response.json()["ok"] is False
    assert (error["type"], error["exception"], error["line"]) == ("SnippetError", "ZeroDivisionError", 2)
    assert error["run_id"] == response.headers["x-zingy-run-id"]
    assert "traceback" not in error
    assert "Traceback" not in response.text
    assert "zingyconn" not in response.text


def test_time_limit_is_504(server: LiveServer, catalog: Catalog) -> None:
    """A snippet that outruns its hook's wall limit answers 504 TimeLimitExceededError."""
    catalog.put_hook("acme", "slow", "while True:\n    pass", limits={"wall_seconds": 0.5, "cpu_seconds": 1})
    response = httpx.post(server.url("/hooks/acme/slow"), timeout=30)

    assert response.status_code == 504
    assert response.json()["error"]["type"] == "TimeLimitExceededError"


def test_unknown_hook_oversized_body_and_healthz_use_the_json_shape(server: LiveServer) -> None:
    """An unknown hook is 404, a body over the cap 413, both in the one JSON error shape; /healthz is ok."""
    missing = httpx.post(server.url("/hooks/acme/nope"))
    large = httpx.post(server.url("/hooks/acme/echo"), content=b"x" * (1024 * 1024 + 1))

    assert (missing.status_code, missing.json()["error"]["type"]) == (404, "NotFoundError")
    assert (large.status_code, large.json()["error"]["type"]) == (413, "PayloadTooLargeError")
    assert httpx.get(server.url("/healthz")).json() == {"ok": True}
    no_route = httpx.get(server.url("/nowhere"))
    wrong_method = httpx.delete(server.url("/hooks/acme/echo"))
    assert (no_route.status_code, no_route.json()["ok"], no_route.json()["error"]["type"]) == (
        404,
        False,
        "NotFoundError",
    )
    assert (wrong_method.status_code, wrong_method.json()["error"]["type"]) == (405, "MethodNotAllowedError")


class TestSignatures:
    """X-Twilio-Signature is checked with the validation connection's Auth Token; forged requests never run."""

    @pytest.fixture(autouse=True)
    def _hooks(self, catalog: Catalog) -> None:
        catalog.put_hook("acme", "signed", "return {'from': (event['form'] or {}).get('From')}", verify_with="main")
        catalog.put_hook("acme", "signed-json", "return event['json']", verify_with="main")

    def test_valid_form_signature_runs(self, server: LiveServer) -> None:
        """A form POST signed with the Auth Token over URL + sorted params runs the hook."""
        url = server.url("/hooks/acme/signed?x=1")
        response = httpx.post(url, data=FORM, headers={"X-Twilio-Signature": sign(url, FORM)})

        assert (response.status_code, response.json()) == (200, {"from": "+15551234567"})

    @pytest.mark.parametrize(
        "headers",
        [
            pytest.param({}, id="missing"),
            pytest.param({"X-Twilio-Signature": "AAAA"}, id="garbage"),
            pytest.param({"X-Twilio-Signature": sign("http://evil/hooks/acme/signed", FORM)}, id="other-url"),
            pytest.param({"X-Twilio-Signature": sign("URL", FORM, token="f" * 32)}, id="other-token"),
        ],
    )
    def test_forged_form_signature_is_403_and_nothing_runs(self, server: LiveServer, headers: dict[str, str]) -> None:
        """Missing, wrong-URL or wrong-token signatures are 403 and the snippet never runs."""
        before = server.run_count("acme", "signed")
        response = httpx.post(server.url("/hooks/acme/signed"), data=FORM, headers=headers)

        assert (response.status_code, response.json()["error"]["type"]) == (403, "SignatureError")
        assert server.run_count("acme", "signed") == before

    def test_a_signature_over_the_url_without_its_port_or_with_its_default_port_runs(
        self, server: LiveServer, runtime: Runtime
    ) -> None:
        """Twilio signs the URL with or without its port: both forms validate, as with RequestValidator.validate."""
        url = server.url("/hooks/acme/signed")
        without_port = url.replace(f":{server.base_url.rsplit(':', 1)[-1]}", "")
        response = httpx.post(url, data=FORM, headers={"X-Twilio-Signature": sign(without_port, FORM)})
        with live_server(runtime, public_url="https://hooks.example.com") as public:
            with_port = sign("https://hooks.example.com:443/hooks/acme/signed", FORM)
            proxied = httpx.post(public.url("/hooks/acme/signed"), data=FORM, headers={"X-Twilio-Signature": with_port})

        assert (response.status_code, proxied.status_code) == (200, 200)

    def test_a_signature_header_that_is_not_ascii_is_403(self, server: LiveServer) -> None:
        """A forged signature with non-ASCII bytes is refused like any other, not a server error."""
        headers = {b"X-Twilio-Signature": ("é" * 28).encode("latin-1")}
        response = httpx.post(server.url("/hooks/acme/signed"), data=FORM, headers=headers)

        assert (response.status_code, response.json()["error"]["type"]) == (403, "SignatureError")

    def test_tampered_form_field_is_403(self, server: LiveServer) -> None:
        """Changing one form value after signing breaks the signature."""
        url = server.url("/hooks/acme/signed")
        response = httpx.post(url, data={**FORM, "Body": "pwned"}, headers={"X-Twilio-Signature": sign(url, FORM)})

        assert response.status_code == 403

    def test_json_body_with_body_sha256_validates_and_tampering_is_403(self, server: LiveServer) -> None:
        """A JSON body is covered by bodySHA256 in the signed URL; a different body fails."""
        body = json.dumps({"event": "delivered"})
        url = server.url(f"/hooks/acme/signed-json?bodySHA256={hashlib.sha256(body.encode()).hexdigest()}")
        headers = {"Content-Type": "application/json", "X-Twilio-Signature": sign(url)}

        good = httpx.post(url, content=body, headers=headers)
        bad = httpx.post(url, content=body.replace("delivered", "failed"), headers=headers)

        assert (good.status_code, good.json()) == (200, {"event": "delivered"})
        assert bad.status_code == 403

    def test_json_body_without_body_sha256_is_403(self, server: LiveServer) -> None:
        """A non-form body the signature does not cover is refused even with a valid URL signature."""
        url = server.url("/hooks/acme/signed-json")
        response = httpx.post(url, json={"a": 1}, headers={"X-Twilio-Signature": sign(url)})

        assert response.status_code == 403
        assert "not covered" in response.json()["error"]["message"]

    def test_hmac_sha256_via_signature_settings(self, server: LiveServer) -> None:
        """With X-Twilio-Webhooks-Signature-Settings algorithm=HMAC_SHA256 the SHA-256 signature is required."""
        url = server.url("/hooks/acme/signed")
        settings = {"X-Twilio-Webhooks-Signature-Settings": "key=webhooks_sharedkey_1,algorithm=HMAC_SHA256"}

        good = httpx.post(
            url, data=FORM, headers={**settings, "X-Twilio-Signature": sign(url, FORM, algorithm="HMAC_SHA256")}
        )
        sha1 = httpx.post(url, data=FORM, headers={**settings, "X-Twilio-Signature": sign(url, FORM)})
        unknown = httpx.post(
            url,
            data=FORM,
            headers={"X-Twilio-Webhooks-Signature-Settings": "algorithm=NONE", "X-Twilio-Signature": "x"},
        )

        assert good.status_code == 200
        assert sha1.status_code == 403
        assert unknown.status_code == 403

    def test_api_key_connection_cannot_verify_and_fails_closed(self, server: LiveServer, catalog: Catalog) -> None:
        """A validation connection with an API key holds no Auth Token: the hook refuses requests (403)."""
        catalog.put_hook("acme", "keyed", "return 1", verify_with="keyed")
        url = server.url("/hooks/acme/keyed")
        response = httpx.post(url, data=FORM, headers={"X-Twilio-Signature": sign(url, FORM)})

        assert response.status_code == 403
        assert "API key" in response.json()["error"]["message"]
        assert server.run_count("acme", "keyed") == 0


class TestBehindProxy:
    """The signed URL is the public one: --public-url, or X-Forwarded-* from trusted proxies only."""

    PUBLIC: ClassVar[str] = "https://hooks.example.com"
    FORWARDED: ClassVar[dict[str, str]] = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "hooks.example.com"}

    @pytest.fixture(autouse=True)
    def _hook(self, catalog: Catalog) -> None:
        catalog.put_hook("acme", "proxied", "return 'ok'", verify_with="main")

    def _post(self, server: LiveServer, headers: dict[str, str]) -> httpx.Response:
        signature = sign(f"{self.PUBLIC}/hooks/acme/proxied?a=1", FORM)
        return httpx.post(
            server.url("/hooks/acme/proxied?a=1"), data=FORM, headers={**headers, "X-Twilio-Signature": signature}
        )

    def test_public_url_is_what_is_verified(self, runtime: Runtime) -> None:
        """With --public-url the signature over the public URL validates (and forwarded headers are ignored)."""
        with live_server(runtime, public_url=self.PUBLIC) as server:
            assert self._post(server, {}).status_code == 200
            assert self._post(server, {"X-Forwarded-Host": "evil.example"}).status_code == 200

    def test_forwarded_headers_count_from_a_trusted_proxy(self, runtime: Runtime) -> None:
        """X-Forwarded-Proto/Host from a trusted proxy rebuild the public URL."""
        with live_server(runtime, trusted_proxies=["127.0.0.0/8"]) as server:
            assert self._post(server, self.FORWARDED).status_code == 200

    def test_forwarded_headers_are_ignored_from_an_untrusted_peer(self, server: LiveServer) -> None:
        """The same headers from a peer that is not a trusted proxy are ignored: the signature fails."""
        assert self._post(server, self.FORWARDED).status_code == 403


class TestIdempotency:
    """A repeated I-Twilio-Idempotency-Token replays the first response instead of running again."""

    def test_retry_replays_the_stored_response(self, server: LiveServer, catalog: Catalog) -> None:
        """The second request with the same token gets the same body and run id, marked replayed; one run."""
        catalog.put_hook("acme", "once", "return {'n': event['form']['n']}")
        url, headers = server.url("/hooks/acme/once"), {"I-Twilio-Idempotency-Token": "tok-1"}

        first = httpx.post(url, data={"n": "1"}, headers=headers)
        again = httpx.post(url, data={"n": "1"}, headers=headers)
        other = httpx.post(url, data={"n": "2"}, headers={"I-Twilio-Idempotency-Token": "tok-2"})

        assert first.json() == again.json() == {"n": "1"}
        assert again.headers["x-zingy-run-id"] == first.headers["x-zingy-run-id"]
        assert (again.headers.get("x-zingy-replayed"), first.headers.get("x-zingy-replayed")) == ("true", None)
        assert other.json() == {"n": "2"}
        assert server.run_count("acme", "once") == 2

    def test_concurrent_duplicates_run_once(self, server: LiveServer, catalog: Catalog) -> None:
        """Eight simultaneous duplicates: one run, eight identical answers (errors are replayed too)."""
        catalog.put_hook("acme", "dup", "x = 0\nfor i in range(200000):\n    x += i\nreturn 1 / 0")
        url, headers = server.url("/hooks/acme/dup"), {"I-Twilio-Idempotency-Token": "same"}

        async def fire() -> list[httpx.Response]:
            async with httpx.AsyncClient(timeout=30) as client:
                return list(await asyncio.gather(*(client.post(url, headers=headers) for _ in range(8))))

        responses = asyncio.run(fire())

        assert {r.status_code for r in responses} == {500}
        assert len({r.content for r in responses}) == 1
        assert server.run_count("acme", "dup") == 1


def test_200_concurrent_requests_each_get_their_own_answer(server: LiveServer, catalog: Catalog) -> None:
    """200 requests in flight at once, over two tenants: none lost, none answered with another's result."""
    for tenant in ("acme", "globex"):
        catalog.put_hook(tenant, "echo-id", "return {'id': event['query']['id'], 'form': event['form']['id']}")

    async def fire() -> list[tuple[str, httpx.Response]]:
        limits = httpx.Limits(max_connections=200)
        async with httpx.AsyncClient(timeout=60, limits=limits) as client:

            async def one(i: int) -> tuple[str, httpx.Response]:
                tenant = ("acme", "globex")[i % 2]
                url = server.url(f"/hooks/{tenant}/echo-id?id={i}")
                return str(i), await client.post(url, data={"id": str(i)})

            return list(await asyncio.gather(*(one(i) for i in range(200))))

    results = asyncio.run(fire())

    assert [r.status_code for _, r in results] == [200] * 200
    assert all(r.json() == {"id": i, "form": i} for i, r in results)
    assert len({r.headers["x-zingy-run-id"] for _, r in results}) == 200


def test_a_hanging_hook_does_not_block_another_tenant(runtime: Runtime, catalog: Catalog) -> None:
    """While one tenant's hooks spin until their wall limit, another tenant's request is answered first."""
    catalog.put_hook("acme", "hang", "while True:\n    pass", limits={"wall_seconds": 3, "cpu_seconds": 5})
    catalog.put_hook("globex", "fast", "return 'fast'")

    async def race(server: LiveServer) -> tuple[list[httpx.Response], httpx.Response, bool]:
        async with httpx.AsyncClient(timeout=30) as client:
            hanging = [asyncio.create_task(client.post(server.url("/hooks/acme/hang"))) for _ in range(4)]
            await asyncio.sleep(0.2)  # let the hanging runs start (ordering, not a timed assertion)
            fast = await client.post(server.url("/hooks/globex/fast"))
            still_hanging = not any(task.done() for task in hanging)
            return list(await asyncio.gather(*hanging)), fast, still_hanging

    with live_server(runtime, tenant_concurrency=4) as server:
        hung, fast, still_hanging = asyncio.run(race(server))

    assert (fast.status_code, fast.text) == (200, "fast")
    assert still_hanging
    assert [r.status_code for r in hung] == [504] * 4


def test_a_tenant_over_its_cap_gets_429(runtime: Runtime, catalog: Catalog) -> None:
    """With one slot and no backlog, a tenant's second concurrent request is refused with 429."""
    catalog.put_hook("acme", "hold", "while True:\n    pass", limits={"wall_seconds": 2, "cpu_seconds": 3})

    async def burst(server: LiveServer) -> tuple[httpx.Response, httpx.Response]:
        async with httpx.AsyncClient(timeout=30) as client:
            first = asyncio.create_task(client.post(server.url("/hooks/acme/hold")))
            await asyncio.sleep(0.2)
            second = await client.post(server.url("/hooks/acme/hold"))
            return await first, second

    with live_server(runtime, tenant_concurrency=1, tenant_backlog=0) as server:
        first, second = asyncio.run(burst(server))

    assert first.status_code == 504
    assert (second.status_code, second.json()["error"]["type"]) == (429, "TooManyRequestsError")


def test_access_log_is_one_json_line_with_the_run_id(
    server: LiveServer, catalog: Catalog, caplog: pytest.LogCaptureFixture
) -> None:
    """Each request logs one JSON line naming tenant, hook, status and the run id it produced."""
    catalog.put_hook("acme", "logged", "return 1")
    with caplog.at_level("INFO", logger="zingyconn.access"):
        response = httpx.post(server.url("/hooks/acme/logged?secret=no"))

    lines = [record_fields(r) for r in caplog.records if r.name == "zingyconn.access"]
    line = next(item for item in lines if item.get("hook") == "logged")
    assert (line["tenant"], line["status"], line["method"]) == ("acme", 200, "POST")
    assert line["run_id"] == response.headers["x-zingy-run-id"]
    assert line["path"] == "/hooks/acme/logged"


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
@pytest.mark.parametrize("writers", ["none", "one per engine", "one shared"])
def test_idempotency_claim_is_exclusive_across_engines(
    backend: str, writers: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Sixteen engines (as if sixteen processes) race to claim one token: exactly one wins; all see its response.

    Also when the claims go through group writers: each its own transaction per engine, or all of them statements
    of one writer's shared transactions.
    """
    url = f"sqlite:///{tmp_path / 'race.db'}" if backend == "sqlite" else request.getfixturevalue("postgres_url")
    engines = [create_engine(url) for _ in range(16)]
    group_writers: list[GroupWriter | None] = [None] * len(engines)
    if writers == "one per engine":
        group_writers = [GroupWriter(engine) for engine in engines]
    elif writers == "one shared":
        group_writers = [GroupWriter(engines[0])] * len(engines)
    stores = [ReplayStore(engine, writer=writer) for engine, writer in zip(engines, group_writers, strict=True)]
    barrier = threading.Barrier(len(stores))

    def claim(store: ReplayStore) -> bool:
        barrier.wait()
        return store.claim("acme", "sms", "tok")

    with ThreadPoolExecutor(len(stores)) as pool:
        won = list(pool.map(claim, stores))
    winner = stores[won.index(True)]
    winner.store("acme", "sms", "tok", StoredResponse(200, "text/xml", b"<Response/>", "run_1"))

    assert won.count(True) == 1
    assert {store.fetch("acme", "sms", "tok") for store in stores} == {
        StoredResponse(200, "text/xml", b"<Response/>", "run_1")
    }
    for writer in group_writers:
        if writer is not None:
            writer.close()
    for engine in engines:
        engine.dispose()


@pytest.mark.parametrize("through_writer", [False, True])
def test_a_dead_claim_is_taken_over_once_and_a_live_one_never(tmp_path: Path, through_writer: bool) -> None:
    """A claim whose process stopped renewing its lease is taken over by exactly one retry; a renewed one is not."""
    now = [1000.0]
    keeper = LeaseKeeper(clock=lambda: now[0], every_seconds=24 * 3600)
    engine = create_engine(f"sqlite:///{tmp_path / 'stale.db'}")
    writer = GroupWriter(engine) if through_writer else None
    running = ReplayStore(engine, clock=lambda: now[0], keeper=keeper, writer=writer)
    retry = ReplayStore(engine, clock=lambda: now[0], writer=writer)

    assert running.claim("acme", "sms", "tok")
    for _ in range(4):  # a run four leases long, renewed while its process lives
        now[0] += LEASE_SECONDS - 1
        keeper.renew_now()
        assert not retry.claim("acme", "sms", "tok")
    now[0] += LEASE_SECONDS + 1  # the process died: seconds later, not the hook's wall limit plus a grace
    assert retry.claim("acme", "sms", "tok")
    assert not ReplayStore(engine, clock=lambda: now[0], writer=writer).claim("acme", "sms", "tok")
    if writer is not None:
        writer.close()


def test_zingyconn_serve_answers_hooks_and_logs_json(tmp_path: Path) -> None:
    """`zingyconn serve` (a real process) serves a hook from `zingyconn hooks add`, logs JSON, stops on SIGTERM."""
    env = {**os.environ, "ZINGYCONN_DATA_DIR": str(tmp_path / "data")}
    env.pop("ZINGYCONN_DB_URL", None)
    snippet = tmp_path / "reply.py"
    snippet.write_text("return '<Response><Message>' + event['form']['Body'] + '</Message></Response>'\n")
    cli = [sys.executable, "-c", "from zingyconn.hosts.cli import main; main()"]
    subprocess.run([*cli, "hooks", "add", "sms", "--tenant", "acme", "--file", str(snippet)], env=env, check=True)
    port = free_port()
    process = subprocess.Popen(
        [*cli, "serve", "--port", str(port), "--no-tasks"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        wait_for_port(port, timeout_seconds=60)
        response = httpx.post(f"http://127.0.0.1:{port}/hooks/acme/sms", data={"Body": "hi"}, timeout=30)
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=30)

    assert (response.status_code, response.text) == (200, "<Response><Message>hi</Message></Response>")
    assert process.returncode in (0, -signal.SIGTERM)  # uvicorn re-raises the signal it shut down on
    assert b"Traceback" not in stderr
    logged = [json.loads(line) for line in stderr.decode().splitlines() if line.startswith("{")]
    assert {"path": "/hooks/acme/sms", "status": 200, "run_id": response.headers["x-zingy-run-id"]}.items() <= next(
        line for line in logged if line.get("path") == "/hooks/acme/sms"
    ).items()
