"""Serve :func:`zingyconn.hosts.server.create_app` on a free loopback port (real uvicorn, background thread)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from twilio.request_validator import RequestValidator

from tests.servers import uvicorn_in_thread
from zingyconn.hosts.server import create_app
from zingyconn.runtime import Runtime
from zingyconn.schema import runs

#: Credentials of the validation connection the tests store (format-valid, never sent anywhere).
ACCOUNT_SID = "AC" + "a1" * 16
AUTH_TOKEN = "0123456789abcdef" * 2
API_KEY = "SK" + "b2" * 16
API_SECRET = "S3cr3t" * 5 + "xy"


@dataclass(frozen=True)
class LiveServer:
    """A running server: its base URL and the runtime behind it."""

    base_url: str
    runtime: Runtime

    def url(self, path: str) -> str:
        """Return the absolute URL of *path* on this server."""
        return self.base_url + path

    def run_count(self, tenant: str, hook: str) -> int:
        """Return how many runs of *hook* the history holds."""
        with self.runtime.engine.connect() as conn:
            query = sa.select(sa.func.count()).select_from(runs).where(runs.c.tenant == tenant, runs.c.name == hook)
            return int(conn.execute(query).scalar() or 0)


@contextlib.contextmanager
def live_server(runtime: Runtime, **options: Any) -> Iterator[LiveServer]:
    """Serve ``create_app(runtime, **options)`` on 127.0.0.1 for the duration of the block."""
    app = create_app(runtime, **options)
    # proxy_headers=False: as `zingyconn serve` does; the app alone decides which X-Forwarded-* to believe.
    with uvicorn_in_thread(app, name="zingyconn", proxy_headers=False) as port:
        yield LiveServer(base_url=f"http://127.0.0.1:{port}", runtime=runtime)


def sign(
    url: str, params: dict[str, Any] | None = None, *, token: str = AUTH_TOKEN, algorithm: str | None = None
) -> str:
    """Return the X-Twilio-Signature Twilio would send for *url* and form *params*."""
    return str(RequestValidator(token).compute_signature(url, params or {}, algorithm=algorithm))
