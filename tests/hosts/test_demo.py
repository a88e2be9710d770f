"""``zingyconn demo``: seeding is idempotent, tokens persist, and the running demo answers, round-trips and stops."""

from __future__ import annotations

import os
import re
import signal
import socket
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner, Result

from tests.servers import free_port
from zingyconn.catalog import Catalog
from zingyconn.config import Settings
from zingyconn.database import create_engine
from zingyconn.history import RunHistory
from zingyconn.hosts.cli import main
from zingyconn.hosts.console.auth import CSRF_FIELD
from zingyconn.hosts.demo import (
    ADMIN_TOKEN_FILE,
    API_TOKEN_FILE,
    DEMO_CONNECTION,
    DEMO_HOOKS,
    DEMO_NOTES_CONNECTION,
    DEMO_SCRIPTS,
    DEMO_TENANT,
    admin_token,
    api_token,
    data_locations,
    examples_dir,
    seed,
)
from zingyconn.http.profile import HttpProfile
from zingyconn.secrets.keyring import Keyring
from zingyconn.secrets.store import ConnectionStore
from zingyconn.secrets.tokens import TokenStore
from zingyconn.twilio.emulator import DEFAULT_AUTH_TOKEN

#: How long a step of the running demo may take before the test gives up (a bound, not a timed assertion).
PATIENCE_SECONDS = 60.0


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Embedded defaults in a fresh data dir: no ZINGYCONN_* variable but ZINGYCONN_DATA_DIR."""
    for name in list(os.environ):
        if name.startswith("ZINGYCONN_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("ZINGYCONN_DATA_DIR", str(tmp_path / "data"))
    return Settings.from_env()


@pytest.fixture
def stores(settings: Settings) -> Iterator[tuple[ConnectionStore, Catalog]]:
    """The connection store and catalog of the data dir."""
    engine = create_engine(settings.db_url)
    yield ConnectionStore(engine, Keyring.from_settings(settings, announce=lambda _: None)), Catalog(engine)
    engine.dispose()


# --- seeding and tokens ----------------------------------------------------------------------------------------


def test_seed_adds_everything_once_then_keeps_what_is_there(stores: tuple[ConnectionStore, Catalog]) -> None:
    """The first seed adds the connection, hooks and scripts; the next adds nothing and keeps an edited hook."""
    store, catalog = stores
    first = seed(store, catalog, examples=examples_dir())
    catalog.put_hook(DEMO_TENANT, "auto-reply", "return 'edited'")
    again = seed(store, catalog, examples=examples_dir())

    names = [(item.kind, item.name) for item in first]
    assert names == [
        ("connection", DEMO_CONNECTION),
        *[("hook", name) for name, _, _ in DEMO_HOOKS],
        *[("script", name) for name, _, _ in DEMO_SCRIPTS],
    ]
    assert all(item.is_added for item in first)
    assert not any(item.is_added for item in again)
    assert catalog.get_hook(DEMO_TENANT, "auto-reply").source == "return 'edited'"
    assert catalog.get_hook(DEMO_TENANT, "status-log").verify_with == DEMO_CONNECTION
    assert catalog.get_script(DEMO_TENANT, "nightly-digest").cron == "0 7 * * *"
    assert store.get(DEMO_TENANT, DEMO_CONNECTION).to_json()["secret"] == DEFAULT_AUTH_TOKEN


def test_seed_reseals_the_connection_when_the_key_file_was_lost(settings: Settings) -> None:
    """A demo connection sealed with a key that is gone is stored again with the current key."""
    engine = create_engine(settings.db_url)
    seed(ConnectionStore(engine, Keyring([("old", bytes(32))])), Catalog(engine), examples=examples_dir())
    store = ConnectionStore(engine, Keyring([("new", bytes(range(32)))]))

    [connection, *_] = seed(store, Catalog(engine), examples=examples_dir())

    assert connection.is_added
    assert store.get(DEMO_TENANT, DEMO_CONNECTION).to_json()["secret"] == DEFAULT_AUTH_TOKEN
    engine.dispose()


def test_admin_token_is_generated_once_with_mode_0600(settings: Settings) -> None:
    """Without ZINGYCONN_ADMIN_TOKEN the token is generated, kept owner-only in the data dir, and reused."""
    token, origin = admin_token(settings)

    path = settings.data_dir / ADMIN_TOKEN_FILE
    assert origin == str(path)
    assert admin_token(settings) == (token, origin)
    assert len(token) >= 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_admin_token_comes_from_the_environment_when_set(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """ZINGYCONN_ADMIN_TOKEN wins, and then no token file is written."""
    monkeypatch.setenv("ZINGYCONN_ADMIN_TOKEN", "from-the-environment")

    assert admin_token(Settings.from_env()) == ("from-the-environment", "ZINGYCONN_ADMIN_TOKEN")
    assert not (settings.data_dir / ADMIN_TOKEN_FILE).exists()


def test_api_token_is_reused_and_replaced_when_no_longer_valid(settings: Settings) -> None:
    """The demo tenant's API token is kept in the data dir; an unknown token there is replaced by a valid one."""
    engine = create_engine(settings.db_url)
    tokens = TokenStore(engine)
    token, is_new = api_token(settings, tokens)
    assert (is_new, api_token(settings, tokens)) == (True, (token, False))

    (settings.data_dir / API_TOKEN_FILE).write_text("zct_revoked\n")
    replaced, is_new = api_token(settings, tokens)

    assert is_new
    assert replaced != token
    assert tokens.tenant_for(replaced) == DEMO_TENANT
    engine.dispose()


def test_data_locations_never_show_a_database_password() -> None:
    """Where-the-data-lives lists a PostgreSQL store without its user and password."""
    settings = Settings.from_env({"ZINGYCONN_DB_URL": "postgresql+psycopg://zingy:hunter2@db.internal:5432/zingy"})

    locations = dict(data_locations(settings))

    assert locations["store"] == "postgresql+psycopg://db.internal:5432/zingy"
    assert "hunter2" not in repr(data_locations(settings))


# --- the running demo ------------------------------------------------------------------------------------------


def _eventually(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + PATIENCE_SECONDS
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"Gave up waiting for {what}.")
        time.sleep(0.1)


def console_page(base_url: str, token: str, path: str) -> str:
    """Sign in to the console with *token* (as a browser would, CSRF field included) and return page *path*."""
    with httpx.Client(base_url=base_url, follow_redirects=True) as browser:
        form = browser.get("/console/login").text
        found = re.search(rf'name="{CSRF_FIELD}" value="([^"]+)"', form)
        assert found is not None, form
        signed_in = browser.post("/console/login", data={"token": token, CSRF_FIELD: found.group(1), "next": path})
        assert signed_in.status_code == 200, signed_in.text
        return signed_in.text


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def run_demo(during: Callable[[str], None], *, echo_port: int = 0) -> tuple[Result, BaseException | None]:
    """Run ``zingyconn demo`` in this process; once it listens, call *during(base_url)*, then send SIGINT."""
    port = free_port()
    emulator_port = free_port()
    while emulator_port in (port, echo_port):
        emulator_port = free_port()
    failures: list[BaseException] = []
    finished = threading.Event()

    def drive() -> None:
        try:
            _eventually(lambda: finished.is_set() or _listening(port), "the demo to listen")
            if not finished.is_set():
                during(f"http://127.0.0.1:{port}")
        except BaseException as exc:  # noqa: BLE001  # handed to the test thread, which re-raises it
            failures.append(exc)
        finally:
            if not finished.is_set():
                os.kill(os.getpid(), signal.SIGINT)  # the demo's handler turns it into a clean stop

    # A SIGINT that lands after the demo returned (it failed early) must not interrupt the test session.
    previous = signal.signal(signal.SIGINT, lambda signum, frame: None)
    try:
        driver = threading.Thread(target=drive, daemon=True)
        driver.start()
        ports = ["--port", str(port), "--emulator-port", str(emulator_port), "--echo-port", str(echo_port)]
        result = CliRunner().invoke(main, ["demo", *ports])
        finished.set()
        driver.join(timeout=PATIENCE_SECONDS)
    finally:
        signal.signal(signal.SIGINT, previous)
    return result, (failures[0] if failures else None)


@pytest.mark.slow
def test_demo_answers_round_trips_an_sms_and_stops_cleanly(settings: Settings) -> None:
    """The demo's auto-reply curl gets TwiML, an SMS sent through the API comes back as signed status callbacks
    that the status-log hook records, the admin token signs in to the console, and SIGINT stops it (exit 0)."""

    def during(base_url: str) -> None:
        reply = httpx.post(f"{base_url}/hooks/demo/auto-reply", data={"From": "+15558675310", "Body": "hi"})
        assert (reply.status_code, reply.headers["content-type"]) == (200, "text/xml; charset=utf-8")
        assert "<Response><Message>Thanks +15558675310" in reply.text
        token = (settings.data_dir / API_TOKEN_FILE).read_text().strip()
        callback = f"{base_url}/hooks/demo/status-log"
        sent = httpx.post(
            f"{base_url}/api/v1/connections/main/commands/sendMessage",
            headers={"Authorization": f"Bearer {token}", "X-Zingy-Flow": "cloud"},
            json={
                "toPhone": "+15558675310",
                "fromPhone": "+15005550006",
                "msg": "hi",
                "customProps": {"statusCallback": callback},
            },
        )
        assert sent.json()["ok"], sent.text
        history = RunHistory(create_engine(settings.db_url))

        def statuses() -> list[str]:
            runs = history.list(DEMO_TENANT, name="status-log")
            assert all(run.ok for run in runs), [run.error for run in runs]  # signatures verified
            return sorted(str(run.logs[0]["fields"]["status"]) for run in runs)

        _eventually(lambda: "delivered" in statuses(), "the 'delivered' status callback")
        assert statuses() == ["delivered", "sending", "sent"]
        assert "auto-reply" in console_page(base_url, admin_token(settings)[0], "/console/t/demo/hooks")
        engine = create_engine(settings.db_url)
        notes = ConnectionStore(engine, Keyring.from_settings(settings)).get(DEMO_TENANT, DEMO_NOTES_CONNECTION)
        engine.dispose()
        assert isinstance(notes, HttpProfile)
        assert notes.local_test_target
        assert httpx.get(f"{notes.base_url}/_echo/requests").json() == []  # the echo API the connection names

    result, failure = run_demo(during)

    if failure is not None:
        raise failure
    assert result.exit_code == 0, result.output
    assert "curl -s http://127.0.0.1:" in result.output
    assert result.output.rstrip().endswith("Stopped.")


@pytest.mark.slow
def test_second_start_reuses_the_data(settings: Settings) -> None:
    """A restart adds nothing, prints the same login, and the emulator still has the messages sent before."""
    client_url: list[str] = []

    def send(base_url: str) -> None:
        token = (settings.data_dir / API_TOKEN_FILE).read_text().strip()
        sent = httpx.post(
            f"{base_url}/api/v1/connections/main/commands/sendMessage",
            headers={"Authorization": f"Bearer {token}", "X-Zingy-Flow": "cloud"},
            json={"toPhone": "+15558675310", "fromPhone": "+15005550006", "msg": "kept"},
        )
        assert sent.json()["ok"], sent.text
        client_url.append(base_url)

    echo_port = free_port()  # the same both times: the notes connection then points at the same echo API
    first, failure = run_demo(send, echo_port=echo_port)
    assert failure is None, failure
    second, failure = run_demo(lambda _: None, echo_port=echo_port)
    assert failure is None, failure

    login = admin_token(settings)[0]
    assert first.exit_code == second.exit_code == 0, second.output
    assert login in first.output
    assert login in second.output
    assert f"Tenant {DEMO_TENANT!r}: nothing to add; kept 8 existing" in second.output
    assert "messages kept: 1" in second.output


def test_demo_refuses_a_port_in_use(settings: Settings) -> None:
    """A busy --port is an environment error (exit 3) naming the option, before anything starts."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = CliRunner().invoke(main, ["demo", "--port", str(port)])

    assert result.exit_code == 3
    assert f"Error: cannot listen on 127.0.0.1:{port}" in result.output
    assert "Choose another port with --port" in result.output
    assert not (settings.data_dir / "zingyconn.db").exists()
