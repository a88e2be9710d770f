"""The runtime end to end: snippets in the real sandbox, Twilio through the broker to the emulator, masked history."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from sandbox.limits import Limits
from tests.doc_pages import read_section
from tests.zingyconn.capability import (
    ACCOUNT_SID,
    API_KEY,
    API_SECRET,
    AUTH_TOKEN,
    MASTER_KEY,
    RECIPIENT,
    SENDER,
    World,
    twilio_world,
)
from zingyconn.config import Settings
from zingyconn.egress.broker import EgressSession
from zingyconn.egress.ratelimit import Rate, SqlRateLimiter
from zingyconn.errors import NotFoundError, ValidationError
from zingyconn.hosts.cli import main
from zingyconn.runtime import Runtime
from zingyconn.schema import connections
from zingyconn.secrets.keyring import encode_key
from zingyconn.secrets.masking import MASK
from zingyconn.secrets.store import ConnectionStore
from zingyconn.snippet.environment import connection_directory
from zingyconn.twilio.profile import TwilioProfile

SEND_AND_READ = f"""
c = zingyConn.twilio(event["connection"])
sent = c.messages.create(to="{RECIPIENT}", from_="{SENDER}", body="hello from a snippet")
listed = [m.sid for m in c.messages.list(to="{RECIPIENT}", limit=20)]
return {{"sid": sent.sid, "listed": sent.sid in listed, "fetched": c.messages(sent.sid).fetch().body}}
"""
REDACT_AND_DELETE = """
c = zingyConn.twilio(event["connection"])
redacted = c.messages(event["sid"]).update(body="")
return {"redacted": redacted.body, "deleted": c.messages(event["sid"]).delete()}
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """The emulator and a store with acme's and globex's connections."""
    with twilio_world(tmp_path_factory.mktemp("runtime")) as running:
        yield running


@pytest.fixture(scope="module")
def runtime(world: World) -> Iterator[Runtime]:
    """A runtime on the world's store, sending Twilio requests to the emulator."""
    with Runtime(world.settings, engine=world.engine, keyring=world.keyring) as running:
        yield running


@pytest.mark.parametrize(("connection", "username"), [("main", ACCOUNT_SID), ("keyed", API_KEY)])
def test_message_lifecycle_through_zingyconn_twilio(
    world: World, runtime: Runtime, connection: str, username: str
) -> None:
    """create, list, fetch, redact and delete work from snippets, authenticated as the stored connection."""
    before = len(world.emulator.requests)
    sent = runtime.run("acme", SEND_AND_READ, event={"connection": connection})
    assert sent.ok, sent.error
    assert (sent.value["listed"], sent.value["fetched"]) == (True, "hello from a snippet")
    world.emulator.state.advance(60)  # the message is delivered: it may now be deleted
    done = runtime.run("acme", REDACT_AND_DELETE, event={"connection": connection, "sid": sent.value["sid"]})

    assert done.ok, done.error
    assert done.value == {"redacted": "", "deleted": True}
    new = world.emulator.requests[before:]
    assert [r.method for r in new] == ["POST", "GET", "GET", "POST", "DELETE"]
    assert {r.username for r in new} == {username}
    assert [(call["method"], call["status"]) for call in [*sent.egress, *done.egress]] == [
        ("POST", 201),
        ("GET", 200),
        ("GET", 200),
        ("POST", 200),
        ("DELETE", 204),
    ]


def test_direct_client_with_snippet_credentials(world: World, runtime: Runtime) -> None:
    """``twilio.Client(sid, token)`` and ``Client(key, secret, sid)`` work and their tokens are masked in output."""
    source = f"""
import twilio
from twilio.rest import Client
a = twilio.Client("{ACCOUNT_SID}", "{AUTH_TOKEN}")
b = Client("{API_KEY}", "{API_SECRET}", "{ACCOUNT_SID}")
print("my token is {AUTH_TOKEN}")
log.info("key secret", secret="{API_SECRET}")
return [len(a.messages.list(limit=1)), len(b.messages.list(limit=1)), "{API_SECRET}"]
"""
    before = len(world.emulator.requests)
    result = runtime.run("acme", source)

    assert result.ok, result.error
    assert result.value[2] == MASK
    assert result.stdout == f"my token is {MASK}\n"
    assert result.logs[0]["fields"] == {"secret": MASK}
    assert [r.username for r in world.emulator.requests[before:]] == [ACCOUNT_SID, API_KEY]
    stored = json.dumps(runtime.history.get("acme", result.run_id).to_json())
    assert AUTH_TOKEN not in stored
    assert API_SECRET not in stored


@pytest.mark.parametrize("name", ["nope", "theirs"])
def test_unknown_or_foreign_connection_raises_lookup_error(runtime: Runtime, name: str) -> None:
    """A missing name and another tenant's name fail the same way, and no other name is listed."""
    result = runtime.run("acme", f'return zingyConn.twilio("{name}")')

    assert result.error is not None
    assert (result.error.type, result.error.exception) == ("SnippetError", "LookupError")
    assert result.error.message == f"No Twilio connection named '{name}'."


def test_lookup_error_is_catchable(runtime: Runtime) -> None:
    """A snippet can fall back when a connection is missing."""
    source = 'try:\n    zingyConn.twilio("nope")\nexcept LookupError as exc:\n    return str(exc)'
    assert runtime.run("acme", source).value == "No Twilio connection named 'nope'."


def test_twiml_and_message_results_become_json(runtime: Runtime) -> None:
    """A MessagingResponse becomes its XML; a MessageInstance becomes its fields with Twilio's names."""
    twiml = runtime.run(
        "acme",
        "from twilio.twiml.messaging_response import MessagingResponse\nr = MessagingResponse()\n"
        "r.message('Thanks!')\nreturn r",
    )
    assert twiml.value == '<?xml version="1.0" encoding="UTF-8"?><Response><Message>Thanks!</Message></Response>'
    message = runtime.run(
        "acme", f'return zingyConn.twilio("main").messages.create(to="{RECIPIENT}", from_="{SENDER}", body="hi")'
    )
    assert message.ok, message.error
    assert message.value["from"] == SENDER
    assert message.value["body"] == "hi"
    assert message.value["sid"].startswith("SM")
    assert isinstance(message.value["date_created"], str)


def test_twilio_errors_reach_the_snippet_as_twilio_rest_exception(runtime: Runtime) -> None:
    """An API error is a TwilioRestException with Twilio's code, catchable by the snippet."""
    source = (
        "from twilio.base.exceptions import TwilioRestException\nc = zingyConn.twilio('main')\n"
        "try:\n    c.messages.create(to='not-a-number', from_='+15005550006', body='x')\n"
        "except TwilioRestException as exc:\n    return [exc.status, exc.code]"
    )
    assert runtime.run("acme", source).value == [400, 21211]
    uncaught = runtime.run("acme", "zingyConn.twilio('main').messages('SM' + '0' * 32).fetch()")
    assert uncaught.error is not None
    assert uncaught.error.exception == "TwilioRestException"


def test_list_pages_through_the_broker(runtime: Runtime) -> None:
    """Paging follows next_page_uri through the broker (one request per page)."""
    source = f"""
c = zingyConn.twilio("main")
for i in range(5):
    c.messages.create(to="+15550001111", from_="{SENDER}", body=str(i))
return len(c.messages.list(to="+15550001111", page_size=2))
"""
    result = runtime.run("acme", source)
    assert result.value == 5
    assert [call["method"] for call in result.egress].count("GET") == 3


def test_other_twilio_products_are_usable(runtime: Runtime) -> None:
    """Products the client imports lazily (Messaging Services here) work in a child: their requests are brokered."""
    result = runtime.run("acme", 'return [s.sid for s in zingyConn.twilio("main").messaging.v1.services.list()]')
    assert result.error is None or result.error.exception in ("TwilioException", "TwilioRestException"), result.error
    assert [call["path"] for call in result.egress] == ["/v1/Services"]


def test_client_never_reads_the_environment(runtime: Runtime) -> None:
    """``twilio.Client()`` without credentials fails clearly instead of reading environment variables."""
    result = runtime.run("acme", "import twilio\nreturn twilio.Client()")
    assert result.error is not None
    assert result.error.exception == "ValueError"
    assert "never reads environment variables" in result.error.message


def test_runs_are_recorded_masked_and_scoped_to_their_tenant(runtime: Runtime) -> None:
    """Every run is stored with its kind, name, status and egress; another tenant cannot read it."""
    result = runtime.run(
        "acme", 'return zingyConn.twilio("main").messages.list(limit=1) and 1', kind="webhook", name="inbound"
    )
    record = runtime.history.get("acme", result.run_id)

    assert (record.kind, record.name, record.status) == ("webhook", "inbound", "ok")
    assert record.egress == list(result.egress)
    assert record.duration_ms == result.duration_ms
    assert [r.id for r in runtime.history.list("acme", name="inbound")] == [result.run_id]
    with pytest.raises(NotFoundError):
        runtime.history.get("globex", result.run_id)
    failed = runtime.run("acme", "return 1/0", record=True)
    assert runtime.history.get("acme", failed.run_id).status == "failed"
    unrecorded = runtime.run("acme", "return 2", record=False)
    with pytest.raises(NotFoundError):
        runtime.history.get("acme", unrecorded.run_id)


def test_stored_tenant_secret_is_masked_even_if_it_appears(runtime: Runtime) -> None:
    """A tenant's stored secret that appears in output (here typed by the snippet) is masked everywhere."""
    result = runtime.run("acme", f'raise ValueError("{AUTH_TOKEN}")', event={"echo": AUTH_TOKEN})
    assert result.error is not None
    assert AUTH_TOKEN not in result.error.message
    assert AUTH_TOKEN not in (result.error.traceback or "")
    record = runtime.history.get("acme", result.run_id)
    assert record.event == {"echo": MASK}


def test_idempotency_key_prevents_a_second_send(world: World, runtime: Runtime) -> None:
    """Two runs with the same idempotency key (a retried task) send the message once and see the same SID."""
    source = f'return zingyConn.twilio("main").messages.create(to="{RECIPIENT}", from_="{SENDER}", body="once").sid'
    before = len(world.emulator.requests)
    first = runtime.run("acme", source, kind="task", idempotency_key="task-42")
    second = runtime.run("acme", source, kind="task", idempotency_key="task-42", attempt=2)
    assert first.value == second.value
    assert len(world.emulator.requests) - before == 1


@pytest.mark.parametrize(("setting", "waited"), [("0", "0.0 s"), ("1.5", "1.0 s")])
def test_message_rate_wait_is_configured_by_the_environment(world: World, setting: str, waited: str) -> None:
    """ZINGYCONN_MAX_RATE_WAIT_SECONDS bounds how long a create waits for a quota token before the refusal."""
    wait_seconds = Settings.from_env({"ZINGYCONN_MAX_RATE_WAIT_SECONDS": setting}).max_rate_wait_seconds
    settings = dataclasses.replace(world.settings, max_rate_wait_seconds=wait_seconds)
    frozen = SqlRateLimiter(world.engine, clock=lambda: 1000.0)  # no token ever comes free: every wait is in vain
    rate = Rate(per_second=1.0, burst=1)
    tenant = "rate-" + setting.replace(".", "-")  # a bucket of its own: full before the first create
    world.store.put(tenant, "main", TwilioProfile(account_sid=ACCOUNT_SID, secret=AUTH_TOKEN))
    source = f"""
for n in range(2):
    zingyConn.twilio("main").messages.create(to="{RECIPIENT}", from_="{SENDER}", body="rate " + str(n))
"""
    with Runtime(settings, engine=world.engine, keyring=world.keyring, rate_limiter=frozen, message_rate=rate) as rt:
        result = rt.run(tenant, source, kind="task")
    assert result.error is not None
    assert result.error.type == "QuotaExceededError"
    assert f"no quota came free in {waited}" in result.error.message


def test_unknown_kind_is_refused_before_running(runtime: Runtime) -> None:
    """A bad kind is a ValidationError naming the field."""
    with pytest.raises(ValidationError) as info:
        runtime.run("acme", "return 1", kind="cron")
    assert info.value.field == "kind"


def test_limits_apply(runtime: Runtime) -> None:
    """The run's limits reach the sandbox and the broker (request cap)."""
    result = runtime.run(
        "acme", "c = zingyConn.twilio('main')\nfor i in range(3):\n    c.messages.list(limit=1)",
        limits=Limits(egress_requests=2),
    )  # fmt: skip
    assert result.error is not None
    assert result.error.type == "QuotaExceededError"


def test_cli_run_uses_the_runtime(world: World, tmp_path: Path) -> None:
    """``zingyconn run FILE --tenant T --event JSON --json`` prints the masked result with egress and run id."""
    snippet = tmp_path / "send.py"
    snippet.write_text(
        f'c = zingyConn.twilio("main")\nm = c.messages.create(to="{RECIPIENT}", from_="{SENDER}", body=event["b"])\n'
        f'print("{AUTH_TOKEN}")\nreturn m.status'
    )
    env = {
        "ZINGYCONN_DATA_DIR": str(world.settings.data_dir),
        "ZINGYCONN_DB_URL": world.settings.db_url,
        "ZINGYCONN_KEYS": encode_key("k1", MASTER_KEY),
        "ZINGYCONN_TWILIO_BASE_URL": world.emulator.base_url,
    }
    args = ["run", str(snippet), "--tenant", "acme", "--event", '{"b": "cli"}', "--json"]
    result = CliRunner().invoke(main, args, env=env)

    assert result.exit_code == 0, result.output
    output = json.loads(result.output)
    assert output["ok"] is True
    assert output["result"] == "queued"
    assert output["stdout"] == f"{MASK}\n"
    assert output["egress"][0]["status"] == 201
    assert output["run_id"].startswith("run_")

    failing = CliRunner().invoke(main, ["run", str(snippet), "--tenant", "globex", "--event", '{"b": 1}'], env=env)
    assert failing.exit_code == 1
    assert "No Twilio connection named 'main'." in failing.output


def _readme_snippets() -> list[str]:
    section = read_section("twilio-in-snippets", "twilio-in-snippets")
    blocks = [block.split("```", 1)[0] for block in section.split("```python\n")[1:]]
    return [block for block in blocks if "from zingyconn import" not in block]


@pytest.mark.parametrize("source", _readme_snippets(), ids=lambda source: source.splitlines()[0][2:40])
def test_readme_snippets_run(runtime: Runtime, source: str) -> None:
    """Every snippet of the "Using Twilio in a snippet" page runs as shown (with an empty event)."""
    result = runtime.run("acme", source, event={})
    assert result.ok, result.error
    assert result.value is not None


def test_an_undecryptable_connection_does_not_break_the_others(world: World, runtime: Runtime) -> None:
    """A damaged record fails only the snippet that uses it (opaquely); other connections keep working."""
    with world.engine.begin() as conn:
        conn.execute(
            connections.insert().values(
                tenant="acme", name="broken", type="twilio", key_id="k1", record=b"\x01\x02garbage",
                summary={}, revision=1, created_at=0.0, updated_at=0.0,
            )
        )  # fmt: skip
    try:
        good = runtime.run("acme", 'return len(zingyConn.twilio("main").messages.list(limit=1))')
        bad = runtime.run("acme", 'return zingyConn.twilio("broken")')
    finally:
        with world.engine.begin() as conn:
            conn.execute(connections.delete().where(connections.c.name == "broken"))
    assert good.ok, good.error
    assert bad.error is not None
    assert bad.error.type == "EgressDeniedError"
    assert bad.error.message == "Connection 'broken' could not be opened; ask the platform admin."


def test_secret_in_a_compile_error_is_masked(runtime: Runtime) -> None:
    """No child runs for a compile error, yet the tenant's secrets are read and masked in its message."""
    result = runtime.run("acme", f'token = "{AUTH_TOKEN}" +')

    assert result.error is not None
    assert result.error.type == "CompileError"
    assert AUTH_TOKEN not in result.error.message
    assert MASK in result.error.message
    assert AUTH_TOKEN not in json.dumps(runtime.history.get("acme", result.run_id).error)


def test_bad_tenant_is_refused_before_running(runtime: Runtime) -> None:
    """A malformed tenant name is a ValidationError naming the field, and nothing is recorded."""
    with pytest.raises(ValidationError) as info:
        runtime.run("no spaces allowed", "return 1")
    assert info.value.field == "tenant"


def test_recent_connections_reach_the_child_as_a_directory_without_secrets(
    world: World, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run within a second of the last gets the tenant's connection directory: no request for a known name."""
    ops: list[str] = []
    contexts: list[object] = []
    request, run = EgressSession.request, runtime.sandbox.run

    def recording_request(self: EgressSession, op: str, payload: Any) -> Any:
        ops.append(op)
        return request(self, op, payload)

    def recording_run(*args: Any, **kwargs: Any) -> Any:
        contexts.append(kwargs.get("context"))
        return run(*args, **kwargs)

    monkeypatch.setattr(EgressSession, "request", recording_request)
    monkeypatch.setattr(runtime.sandbox, "run", recording_run)
    source = 'return len(zingyConn.twilio("main").messages.list(limit=1))'
    runtime.store.put("acme", "main", TwilioProfile(account_sid=ACCOUNT_SID, secret=AUTH_TOKEN))  # drops the cache

    first, second = runtime.run("acme", source), runtime.run("acme", source)

    assert (first.ok, second.ok) == (True, True)
    assert ops == ["twilio.connect", "twilio.http", "twilio.http"]
    assert contexts[0] == {"kind": "console", "vars": {}}
    assert contexts[1] == {
        "kind": "console",
        "connections": {
            "main": {"username": ACCOUNT_SID, "account_sid": ACCOUNT_SID},
            "keyed": {"username": API_KEY, "account_sid": ACCOUNT_SID},
        },
        "http_connections": {},  # every connection type's directory, each holding that type's connections only
        "vars": {},
    }
    assert AUTH_TOKEN not in json.dumps(contexts)
    assert API_SECRET not in json.dumps(contexts)


def test_a_connection_added_elsewhere_is_found_within_the_second(world: World, runtime: Runtime) -> None:
    """A name missing from the reused directory is asked of the host, which reads it afresh."""
    assert runtime.run("acme", "return 1").ok  # fills the cache
    elsewhere = ConnectionStore(world.engine, world.keyring)
    elsewhere.put("acme", "fresh", TwilioProfile(account_sid=ACCOUNT_SID, secret=AUTH_TOKEN))
    try:
        result = runtime.run("acme", 'return zingyConn.twilio("fresh").messages.list(limit=1) is not None')
    finally:
        elsewhere.delete("acme", "fresh")
    assert (result.ok, result.value) == (True, True), result.error


@pytest.mark.parametrize(
    "entries",
    [None, [], {"main": "AC1"}, {"main": {"username": "AC1"}}, {"main": {"username": 1, "account_sid": "AC1"}}],
)
def test_a_malformed_directory_is_ignored(entries: object) -> None:
    """Anything but name -> {username, account_sid} strings means: ask the host for every name."""
    assert connection_directory({"connections": entries}) is None


def test_a_directory_keeps_only_its_two_fields() -> None:
    """Extra fields in a directory entry are dropped."""
    entries = {"main": {"username": "SK1", "account_sid": "AC1", "secret": "x"}}
    assert connection_directory({"connections": entries}) == {"main": {"username": "SK1", "account_sid": "AC1"}}


def test_host_operations_are_wired_explicitly(world: World) -> None:
    """Only the protocol's registrable operations take a handler; a task queue alone registers nothing."""
    from huey import MemoryHuey

    from zingyconn.egress.protocol import OP_ENQUEUE, OP_HTTP
    from zingyconn.tasks.queue import TaskQueue

    def answer(tenant: str, payload: Any, call_key: str | None) -> Any:
        return {"task_id": f"{tenant}:{payload['script']}"}

    enqueue = 'return zingyConn.enqueue("digest", {})'
    with Runtime(world.settings, engine=world.engine, keyring=world.keyring) as runtime:
        with pytest.raises(ValueError, match=r"twilio\.http"):
            runtime.register_op(OP_HTTP, answer)
        with pytest.raises(ValueError, match=r"no\.such"):
            runtime.register_op("no.such", answer)
        TaskQueue(MemoryHuey("wiring"), world.engine, runner=runtime)
        assert dict(runtime.host_ops) == {}
        refused = runtime.run("acme", enqueue, record=False)
        assert refused.error is not None
        assert refused.error.type == "EgressDeniedError"
        with Runtime(
            world.settings, engine=world.engine, keyring=world.keyring, host_ops={OP_ENQUEUE: answer}
        ) as wired:
            assert wired.run("acme", enqueue, record=False).value == "acme:digest"
