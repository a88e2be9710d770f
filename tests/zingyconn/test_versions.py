"""Versions of hooks and scripts on SQLite and PostgreSQL: every save numbered, listed, diffed and rolled back."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import sqlalchemy as sa

from zingyconn.catalog import Catalog
from zingyconn.database import create_engine
from zingyconn.errors import NotFoundError
from zingyconn.history import RunHistory, new_run_id
from zingyconn.schema import MIGRATIONS, _add_versions, schema_version, snippet_versions

#: The schema version the versions step brings a store to.
VERSIONS_STEP = MIGRATIONS.index(_add_versions) + 1


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def engine(store_engine: sa.Engine) -> sa.Engine:
    """A migrated store: a SQLite file or a fresh PostgreSQL database."""
    return store_engine


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def catalog(engine: sa.Engine, clock: FakeClock) -> Catalog:
    return Catalog(engine, clock=clock)


def test_every_save_is_a_numbered_version_with_author_time_and_message(catalog: Catalog, clock: FakeClock) -> None:
    """Two saves make versions 1 and 2, newest first, each with who saved it, when and why; the hook is at 2."""
    catalog.put_hook("acme", "sms", "return 1", author="cli:ann", message="first cut")
    clock.now = 2000.0
    hook = catalog.put_hook("acme", "sms", "return 2", verify_with="main", author="console:operator")

    assert hook.version == 2
    found = catalog.versions("hook", "acme", "sms")
    assert [(v.version, v.author, v.message, v.created_at, v.source) for v in found] == [
        (2, "console:operator", None, 2000.0, "return 2"),
        (1, "cli:ann", "first cut", 1000.0, "return 1"),
    ]
    assert found[0].settings == {"verify_with": "main", "limits": {}, "isolation": "run"}
    assert catalog.version("hook", "acme", "sms", 1).source == "return 1"


def test_diff_is_a_unified_diff_of_settings_and_source(catalog: Catalog) -> None:
    """The diff names both versions and shows changed source lines and a changed setting."""
    catalog.put_script("acme", "digest", "x = 1\nreturn x\n", cron="0 7 * * *")
    catalog.put_script("acme", "digest", "x = 2\nreturn x\n", cron="0 8 * * *")

    text = catalog.diff("script", "acme", "digest", 1, 2)

    assert text.startswith("--- digest v1")
    assert "+++ digest v2" in text
    assert "-x = 1\n+x = 2\n" in text
    assert "-# cron: 0 7 * * *\n+# cron: 0 8 * * *\n" in text
    assert catalog.diff("script", "acme", "digest", 2, 2) == ""


def test_rollback_saves_the_old_definition_as_a_new_version(catalog: Catalog) -> None:
    """Rolling back to 1 makes version 3 with 1's source and settings; rolling back again to 2 undoes it."""
    catalog.put_hook("acme", "sms", "return 1", verify_with="main", limits={"wall_seconds": 2})
    catalog.put_hook("acme", "sms", "return 2")

    assert catalog.rollback("hook", "acme", "sms", to=1, author="cli:ann") == 3
    hook = catalog.get_hook("acme", "sms")
    assert (hook.source, hook.verify_with, dict(hook.limits), hook.version) == (
        "return 1",
        "main",
        {"wall_seconds": 2.0},
        3,
    )
    newest = catalog.versions("hook", "acme", "sms")[0]
    assert (newest.author, newest.message) == ("cli:ann", "rolled back to version 1")

    assert catalog.rollback("hook", "acme", "sms", to=2) == 4
    assert catalog.get_hook("acme", "sms").source == "return 2"


def test_unknown_snippets_and_versions_are_not_found(catalog: Catalog) -> None:
    """No such hook, no such version, another tenant's hook: NotFoundError naming what exists."""
    catalog.put_hook("acme", "sms", "return 1")

    with pytest.raises(NotFoundError, match="has versions 1 to 1, not 7"):
        catalog.version("hook", "acme", "sms", 7)
    with pytest.raises(NotFoundError, match="'globex' has no hook named 'sms'"):
        catalog.versions("hook", "globex", "sms")
    with pytest.raises(NotFoundError):
        catalog.rollback("script", "acme", "sms", to=1)  # a hook is not a script


def test_deleting_a_hook_deletes_its_versions(catalog: Catalog) -> None:
    """A hook deleted and saved again starts a new history at version 1."""
    catalog.put_hook("acme", "sms", "return 1")
    catalog.put_hook("acme", "sms", "return 2")
    catalog.delete_hook("acme", "sms")

    assert catalog.put_hook("acme", "sms", "return 3").version == 1
    assert [v.version for v in catalog.versions("hook", "acme", "sms")] == [1]


def test_concurrent_saves_take_distinct_versions(catalog: Catalog) -> None:
    """Eight saves at once number 1 to 8, none lost, and the hook is at the newest."""
    catalog.put_hook("acme", "sms", "return 0")
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(lambda n: catalog.put_hook("acme", "sms", f"return {n}"), range(1, 8)))

    numbers = [v.version for v in catalog.versions("hook", "acme", "sms")]
    assert numbers == list(range(8, 0, -1))
    assert catalog.get_hook("acme", "sms").version == 8


def test_runs_record_the_version_they_ran(engine: sa.Engine) -> None:
    """A run recorded with a version reads back with it; a draft run has none."""
    history = RunHistory(engine)
    ran, draft = new_run_id(), new_run_id()
    history.record(run_id=ran, tenant="acme", kind="webhook", name="sms", status="ok", started_at=1.0, version=3)
    history.record(run_id=draft, tenant="acme", kind="console", status="ok", started_at=2.0)

    assert history.get("acme", ran).version == 3
    assert history.get("acme", ran).to_json()["version"] == 3
    assert history.get("acme", draft).version is None


def test_a_store_made_before_versions_migrates_rows_to_version_1(tmp_path: Path) -> None:
    """Hooks and scripts of a store at the previous schema become their version 1; saving again makes version 2."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)
    catalog = Catalog(engine)
    catalog.put_hook("acme", "sms", "return 1", verify_with="main")
    catalog.put_script("acme", "digest", "return 1", cron="@daily")
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE snippet_versions"))
        for table in ("hooks", "scripts", "runs"):
            conn.execute(sa.text(f"ALTER TABLE {table} DROP COLUMN version"))
        conn.execute(sa.delete(schema_version).where(schema_version.c.version >= VERSIONS_STEP))
    engine.dispose()

    migrated = create_engine(url)
    try:
        catalog = Catalog(migrated)
        first = catalog.versions("hook", "acme", "sms")
        assert [(v.version, v.author, v.source, dict(v.settings)) for v in first] == [
            (1, "unknown", "return 1", {"verify_with": "main", "limits": {}})
        ]
        assert catalog.version("script", "acme", "digest", 1).settings["cron"] == "@daily"
        assert catalog.get_hook("acme", "sms").version == 1
        assert catalog.put_hook("acme", "sms", "return 2").version == 2
        with migrated.connect() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(snippet_versions)).scalar() == 3
    finally:
        migrated.dispose()
