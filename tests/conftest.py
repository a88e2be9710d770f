"""Fixtures shared by the whole suite: real servers on loopback, never the network."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from tests.emulator import Emulator, check_response, running_emulator
from tests.servers import postgres_server, redis_server


@pytest.fixture(scope="session")
def postgres_cluster_url() -> Iterator[str]:
    """A PostgreSQL server for the whole session (started once; tests get their own database)."""
    with postgres_server() as url:
        yield url


@pytest.fixture
def postgres_url(postgres_cluster_url: str) -> str:
    """A fresh, empty PostgreSQL database on the session's server."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(postgres_cluster_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return postgres_cluster_url.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A Redis server for the whole session."""
    with redis_server() as url:
        yield url


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    """The Twilio emulator on a free loopback port (real uvicorn), with a frozen clock moved by ``state.advance``.

    When the test ends, every response the emulator sent is checked against the OpenAPI spec of its operation.
    """
    with running_emulator() as running:
        yield running
    for response in running.responses:
        check_response(response)
