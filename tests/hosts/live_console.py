"""A live server with the console mounted (real uvicorn, background thread), a fake clock, and a browser-like client."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
from click.testing import CliRunner
from starlette.routing import Mount

from tests.servers import uvicorn_in_thread
from zingyconn.config import Settings
from zingyconn.hosts.cli import main
from zingyconn.hosts.console import console_state, create_console
from zingyconn.hosts.console.auth import CSRF_FIELD
from zingyconn.hosts.server import create_app
from zingyconn.runtime import Runtime

OPERATOR_TOKEN = "session-test-operator-token"
ACCOUNT_SID, AUTH_TOKEN = "AC" + "c3" * 16, "9f8e7d6c5b4a3210" * 2


class FakeClock:
    """Unix time the test moves by hand (sessions, throttle buckets and audit rows all read it)."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Console:
    """A live server with the console mounted, on a store in *data_dir*, timed by *clock*."""

    base_url: str
    data_dir: Path
    runtime: Runtime
    clock: FakeClock

    def browser(self, client: str = "198.51.100.7") -> httpx.Client:
        """Return a cookie-keeping client that comes (through the trusted proxy) from address *client*."""
        return httpx.Client(base_url=self.base_url, headers={"X-Forwarded-For": client}, timeout=30)

    def cli(self, *args: str) -> str:
        """Run ``zingyconn ARGS`` against this store; return its output (it must succeed)."""
        env = {"ZINGYCONN_DATA_DIR": str(self.data_dir), "ZINGYCONN_DB_URL": ""}
        result = CliRunner().invoke(main, list(args), env=env)
        assert result.exit_code == 0, result.output
        return result.output


@contextlib.contextmanager
def live_console(data_dir: Path, **environ: str) -> Iterator[Console]:
    """Serve hooks and the console on a store in *data_dir* (settings from *environ*), timed by a fake clock."""
    env = {"ZINGYCONN_DATA_DIR": str(data_dir), **environ}
    clock = FakeClock()
    with Runtime(Settings.from_env(env)) as runtime:
        state = console_state(runtime, admin_token=OPERATOR_TOKEN, trusted_proxies=["127.0.0.1"], clock=clock)
        mount = Mount("/console", app=create_console(state, admin_token=OPERATOR_TOKEN))
        app = create_app(runtime, admin_token=OPERATOR_TOKEN, mounts=[mount])
        try:
            with uvicorn_in_thread(app, name="console", proxy_headers=False) as port:
                yield Console(f"http://127.0.0.1:{port}", data_dir, runtime, clock)
        finally:
            state.compiler.close()


def csrf_of(page: str) -> str:
    """Return the CSRF token in a console *page*'s forms."""
    found = re.search(rf'name="{CSRF_FIELD}" value="([^"]+)"', page)
    assert found is not None, page
    return found.group(1)


def sign_in(browser: httpx.Client, token: str) -> httpx.Response:
    """Sign in on the console's form with *token*, as a browser would (303 when it worked)."""
    csrf = csrf_of(browser.get("/console/login").text)
    return browser.post("/console/login", data={"token": token, CSRF_FIELD: csrf, "next": ""})
