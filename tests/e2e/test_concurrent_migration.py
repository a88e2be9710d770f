"""Schema migration when many ``serve``/``worker`` processes start at once against one fresh database."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from zingyconn.schema import LATEST_VERSION, metadata

#: Processes that migrate at once: more than the machine has cores, so they really overlap.
PROCESSES = 6

# Each process imports everything, says it is ready, waits for the start file, then opens the store (which
# migrates it) and prints the version it found.
MIGRATE = """
import sys, time
from pathlib import Path
import sqlalchemy as sa
from zingyconn.database import create_engine
from zingyconn.schema import schema_version
Path(sys.argv[3]).touch()
start = Path(sys.argv[2])
while not start.exists():
    time.sleep(0.002)
engine = create_engine(sys.argv[1])
with engine.connect() as conn:
    print(conn.execute(sa.select(sa.func.max(schema_version.c.version))).scalar())
"""


def _migrate_at_once(url: str, tmp_path: Path) -> list[subprocess.CompletedProcess[str]]:
    start = tmp_path / "start"
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", MIGRATE, url, str(start), str(tmp_path / f"ready-{n}")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ},
        )
        for n in range(PROCESSES)
    ]
    deadline = time.monotonic() + 60
    while len(list(tmp_path.glob("ready-*"))) < PROCESSES and time.monotonic() < deadline:
        time.sleep(0.01)  # every interpreter has imported: they race from the same moment
    start.touch()
    results = []
    for process in processes:
        stdout, stderr = process.communicate(timeout=120)
        results.append(subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr))
    return results


def _check(url: str, results: list[subprocess.CompletedProcess[str]]) -> None:
    assert [(r.returncode, r.stderr) for r in results] == [(0, "")] * PROCESSES
    assert [r.stdout.strip() for r in results] == [str(LATEST_VERSION)] * PROCESSES
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            versions = conn.execute(sa.text("SELECT version, count(*) FROM schema_version GROUP BY version")).all()
        tables = set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert sorted((int(v), int(n)) for v, n in versions) == [(v, 1) for v in range(1, LATEST_VERSION + 1)]
    assert set(metadata.tables) <= tables


@pytest.mark.slow
@pytest.mark.postgres
def test_six_processes_migrate_one_fresh_postgres_database(postgres_url: str, tmp_path: Path) -> None:
    """Six processes opening one empty PostgreSQL database at once all succeed; each version is applied once."""
    _check(postgres_url, _migrate_at_once(postgres_url, tmp_path))


@pytest.mark.slow
def test_six_processes_migrate_one_fresh_sqlite_file(tmp_path: Path) -> None:
    """Six processes opening one new SQLite file at once all succeed; each version is applied once."""
    url = f"sqlite:///{tmp_path / 'store.db'}"
    _check(url, _migrate_at_once(url, tmp_path))
