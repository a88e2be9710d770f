"""The test servers themselves start and answer (so a broken install fails loudly, once)."""

from __future__ import annotations

import sqlalchemy as sa


def test_postgres_server_answers(postgres_url: str) -> None:
    """The PostgreSQL fixture gives a database that runs queries."""
    engine = sa.create_engine(postgres_url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("select 1")).scalar() == 1
    engine.dispose()
