"""Isolation per hook and script: stored by the catalog, migrated, and honoured by the runtime and its admission."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from sandbox.instance import InstancePolicy
from sandbox.limits import MIB
from zingyconn.catalog import Catalog
from zingyconn.config import Settings
from zingyconn.database import create_engine
from zingyconn.errors import ConfigurationError, TenantBusyError, ValidationError
from zingyconn.kinds import limits_for
from zingyconn.runtime import Runtime
from zingyconn.schema import MIGRATIONS, _add_isolation, _add_versions, schema_version

ISOLATION_STEP = MIGRATIONS.index(_add_isolation) + 1


@pytest.fixture
def catalog(tmp_path: Path) -> Iterator[Catalog]:
    """A catalog on a fresh SQLite store."""
    engine = create_engine(f"sqlite:///{tmp_path / 'c.db'}")
    yield Catalog(engine)
    engine.dispose()


def test_isolation_is_run_unless_saved_as_instance(catalog: Catalog) -> None:
    """Hooks and scripts default to a fresh process per run; 'instance' is kept, shown and versioned."""
    assert catalog.put_hook("acme", "plain", "return 1").isolation == "run"
    hook = catalog.put_hook("acme", "warm", "return 1", isolation="instance")
    script = catalog.put_script("acme", "warm", "return 1", isolation="instance")

    assert (hook.isolation, hook.to_json()["isolation"]) == ("instance", "instance")
    assert catalog.get_script("acme", "warm").isolation == "instance"
    assert script.to_json()["isolation"] == "instance"
    assert catalog.version("hook", "acme", "warm", 1).settings["isolation"] == "instance"


def test_rollback_restores_the_isolation(catalog: Catalog) -> None:
    """Rolling back brings a version's isolation back with its source."""
    catalog.put_hook("acme", "h", "return 1", isolation="instance")
    catalog.put_hook("acme", "h", "return 2")

    catalog.rollback("hook", "acme", "h", to=1)

    assert catalog.get_hook("acme", "h").isolation == "instance"


def test_an_unknown_isolation_is_refused_by_field(catalog: Catalog) -> None:
    """Anything but run or instance is a ValidationError naming the field; nothing is saved."""
    with pytest.raises(ValidationError, match="'shared' is not known") as refused:
        catalog.put_script("acme", "s", "return 1", isolation="shared")

    assert refused.value.field == "isolation"
    assert catalog.list_scripts("acme") == []


@pytest.mark.parametrize("before", ["isolation", "versions"])
def test_a_store_made_before_isolation_runs_everything_in_fresh_processes(tmp_path: Path, before: str) -> None:
    """The migration adds the column to an older store (also one from before versions, whose step must not read
    columns added after it); its hooks and scripts read as 'run'."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)
    Catalog(engine).put_hook("acme", "sms", "return 1")
    Catalog(engine).put_script("acme", "digest", "return 1")
    with engine.begin() as conn:
        for table in ("hooks", "scripts"):
            conn.execute(sa.text(f"ALTER TABLE {table} DROP COLUMN isolation"))
        step = ISOLATION_STEP
        if before == "versions":
            step = MIGRATIONS.index(_add_versions) + 1
            conn.execute(sa.text("DROP TABLE snippet_versions"))
            conn.execute(sa.text("ALTER TABLE scripts DROP COLUMN timezone"))
            for table in ("hooks", "scripts", "runs"):
                conn.execute(sa.text(f"ALTER TABLE {table} DROP COLUMN version"))
        conn.execute(sa.delete(schema_version).where(schema_version.c.version >= step))
    engine.dispose()

    migrated = create_engine(url)
    try:
        catalog = Catalog(migrated)
        assert catalog.get_hook("acme", "sms").isolation == "run"
        assert catalog.get_script("acme", "digest").isolation == "run"
        assert catalog.put_hook("acme", "sms", "return 2", isolation="instance").isolation == "instance"
    finally:
        migrated.dispose()


@pytest.fixture(params=["4096"])
def runtime(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Runtime]:
    """A runtime whose tenants may hold the fixture's parameter in MiB at once, and never wait."""
    env = {
        "ZINGYCONN_DATA_DIR": str(tmp_path / "data"),
        "ZINGYCONN_TENANT_MAX_MEMORY_MB": request.param,
        "ZINGYCONN_TENANT_WAIT_SECONDS": "0",
    }
    with Runtime(Settings.from_env(env)) as runtime:
        yield runtime


def _idle_pids(runtime: Runtime, tenant: str, name: str, version: int) -> list[int]:
    return runtime.sandbox.instances.idle_pids(((tenant, "webhook", name, version), limits_for("webhook")))


def test_instance_runs_reuse_one_process_per_tenant_name_and_version(runtime: Runtime) -> None:
    """Runs of one hook version share a warm process; another version, tenant or a 'run' hook does not."""

    def run(tenant: str, version: int, isolation: str = "instance") -> None:
        result = runtime.run(tenant, "return 1", kind="webhook", name="h", version=version, isolation=isolation)
        assert result.ok, result.error

    run("acme", 1)
    first = _idle_pids(runtime, "acme", "h", 1)
    run("acme", 1)
    run("acme", 2)
    run("globex", 1)
    run("acme", 3, "run")

    assert len(first) == 1
    assert _idle_pids(runtime, "acme", "h", 1) == first
    assert _idle_pids(runtime, "acme", "h", 2) not in ([], first)
    assert _idle_pids(runtime, "globex", "h", 1) not in ([], first)
    assert _idle_pids(runtime, "acme", "h", 3) == []
    assert runtime.sandbox.instances.live == 3


@pytest.mark.parametrize("runtime", ["400"], indirect=True)  # a webhook run's memory limit is 256 MiB
def test_an_idle_instance_counts_against_its_tenants_memory_until_the_tenant_needs_it(runtime: Runtime) -> None:
    """An idle warm process keeps its 256 MiB counted, so the tenant's next 256 MiB run ends it to make room (and is
    not refused); another tenant's idle instance is left alone, and a run that fits keeps them all."""

    def run(tenant: str, name: str, isolation: str = "instance") -> None:
        result = runtime.run(tenant, "return 1", kind="webhook", name=name, version=1, isolation=isolation)
        assert result.ok, result.error

    run("acme", "warm")
    run("globex", "warm")
    warm, other_tenant = _idle_pids(runtime, "acme", "warm", 1), _idle_pids(runtime, "globex", "warm", 1)
    with runtime.slots.admit("acme", memory_bytes=100 * MIB, wait=False):  # 256 + 100 fit in 400: nothing ended
        assert _idle_pids(runtime, "acme", "warm", 1) == warm

    run("acme", "other", isolation="run")  # 256 + 256 do not fit: the idle instance makes room

    assert _idle_pids(runtime, "acme", "warm", 1) == []
    assert _idle_pids(runtime, "globex", "warm", 1) == other_tenant
    run("acme", "warm")
    run("acme", "second-warm")  # its hold ends the first hook's idle instance in turn
    assert _idle_pids(runtime, "acme", "warm", 1) == []
    assert len(_idle_pids(runtime, "acme", "second-warm", 1)) == 1
    with pytest.raises(TenantBusyError, match="MiB"), runtime.slots.admit("acme", memory_bytes=200 * MIB, wait=False):
        pass  # the warm process's 256 MiB still count: 200 more would pass 400


def test_the_instance_settings_shape_the_runtimes_instances(tmp_path: Path) -> None:
    """ZINGYCONN_INSTANCES_PER_VERSION=1: six runs of one hook version at once share one warm process."""
    env = {"ZINGYCONN_DATA_DIR": str(tmp_path / "data"), "ZINGYCONN_INSTANCES_PER_VERSION": "1"}
    sleepy = "import time\ntime.sleep(0.2)\nreturn 1"
    with Runtime(Settings.from_env(env)) as runtime, concurrent.futures.ThreadPoolExecutor(6) as pool:
        runs = [
            pool.submit(runtime.run, "acme", sleepy, kind="webhook", name="h", version=1, isolation="instance")
            for _ in range(6)
        ]
        assert [run.result().error for run in runs] == [None] * 6

        assert runtime.sandbox.instances.live_of((("acme", "webhook", "h", 1), limits_for("webhook"))) == 1
        assert len(_idle_pids(runtime, "acme", "h", 1)) == 1


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ZINGYCONN_INSTANCES_PER_VERSION", "0"),
        ("ZINGYCONN_INSTANCES_PER_PROCESS", "many"),
        ("ZINGYCONN_INSTANCE_MAX_RUNS", "1.5"),
        ("ZINGYCONN_INSTANCE_IDLE_SECONDS", "-1"),
        ("ZINGYCONN_INSTANCE_MEMORY_GROWTH_MB", "inf"),
    ],
)
def test_a_bad_instance_setting_is_one_line_naming_it(name: str, value: str) -> None:
    """A bad value of an instance setting is a ConfigurationError that names the variable, the value and the
    default."""
    with pytest.raises(ConfigurationError) as raised:
        Settings.from_env({name: value})

    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(f"{name} must be")
    assert repr(value) in message
    assert "unset it for the default" in message


def test_the_instance_settings_are_read_with_their_units() -> None:
    """Each variable lands in the instance policy, MiB turned into bytes; unset ones keep the defaults."""
    env = {
        "ZINGYCONN_INSTANCE_MAX_RUNS": "50",
        "ZINGYCONN_INSTANCE_IDLE_SECONDS": "2.5",
        "ZINGYCONN_INSTANCES_PER_PROCESS": "8",
        "ZINGYCONN_INSTANCES_PER_VERSION": "3",
        "ZINGYCONN_INSTANCE_MEMORY_GROWTH_MB": "32",
    }

    policy = Settings.from_env(env).instances

    assert policy == InstancePolicy(
        max_runs=50, idle_seconds=2.5, max_instances=8, max_per_key=3, memory_high_water_bytes=32 * MIB
    )
    assert Settings.from_env({}).instances == InstancePolicy()
