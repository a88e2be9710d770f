"""Tenant variables: the store's caps and cache, ``zingyConn.vars`` in a snippet, and ``zingyconn vars``."""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.zingyconn.capability import World, twilio_world
from zingyconn.database import create_engine
from zingyconn.errors import NotFoundError, ValidationError
from zingyconn.hosts.cli import main
from zingyconn.runtime import Runtime
from zingyconn.variables import MAX_VARIABLE_BYTES_PER_TENANT, MAX_VARIABLES_PER_TENANT, TenantVariables

READ_VARS = """
v = zingyConn.vars
missing = None
try:
    v["NOPE"]
except KeyError as exc:
    missing = str(exc)
return {"number": v["SUPPORT_NUMBER"], "default": v.get("NOPE", "d"), "names": sorted(v), "has": "NOPE" in v,
        "missing": missing}
"""


@pytest.fixture
def variables(tmp_path: Path) -> TenantVariables:
    """A variables store on a fresh SQLite database."""
    return TenantVariables(create_engine(f"sqlite:///{tmp_path / 'vars.db'}"))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """The emulator and a store with acme's and globex's connections."""
    with twilio_world(tmp_path_factory.mktemp("vars")) as running:
        yield running


def test_set_list_unset(variables: TenantVariables) -> None:
    """A variable is set, replaced, listed by name per tenant and unset; unsetting a missing one is NotFound."""
    variables.set("acme", "B", "1")
    variables.set("acme", "A", "x")
    variables.set("acme", "A", "y")
    variables.set("globex", "A", "theirs")
    assert [(v.name, v.value) for v in variables.list("acme")] == [("A", "y"), ("B", "1")]
    variables.unset("acme", "A")
    assert variables.values("acme") == {"B": "1"}
    with pytest.raises(NotFoundError, match="no variable named 'A'"):
        variables.unset("acme", "A")


@pytest.mark.parametrize("name", ["1ABC", "A-B", "", "A" * 65, "a b"])
def test_bad_names_are_refused(variables: TenantVariables, name: str) -> None:
    """Names are identifiers of at most 64 characters."""
    with pytest.raises(ValidationError, match="Variable name") as caught:
        variables.set("acme", name, "v")
    assert caught.value.field == "name"


def test_count_and_bytes_are_capped(variables: TenantVariables) -> None:
    """A set that would exceed either cap is refused, named in the error, and nothing is saved."""
    for index in range(MAX_VARIABLES_PER_TENANT):
        variables.set("acme", f"V{index}", "")
    with pytest.raises(ValidationError, match="MAX_VARIABLES_PER_TENANT"):
        variables.set("acme", "ONE_TOO_MANY", "")
    with pytest.raises(ValidationError, match="MAX_VARIABLE_BYTES_PER_TENANT"):
        variables.set("globex", "BIG", "x" * MAX_VARIABLE_BYTES_PER_TENANT)
    assert "ONE_TOO_MANY" not in variables.values("acme")
    assert variables.values("globex") == {}


def test_cache_is_dropped_by_a_write(variables: TenantVariables) -> None:
    """A cached read is reused, but a write through the same store applies at once."""
    variables.set("acme", "A", "1")
    assert variables.cached("acme", max_age_seconds=60) == {"A": "1"}
    TenantVariables(variables._engine).set("acme", "A", "elsewhere")  # another process: seen after max_age
    assert variables.cached("acme", max_age_seconds=60) == {"A": "1"}
    assert variables.cached("acme", max_age_seconds=0) == {"A": "elsewhere"}
    variables.set("acme", "A", "2")
    assert variables.cached("acme", max_age_seconds=60) == {"A": "2"}


def test_snippet_reads_its_tenants_vars(world: World) -> None:
    """zingyConn.vars is the run tenant's mapping (item, get, iteration, in); a missing name says how to set it."""
    with Runtime(world.settings, engine=world.engine, keyring=world.keyring) as runtime:
        runtime.variables.set("acme", "SUPPORT_NUMBER", "+15005550006")
        runtime.variables.set("globex", "SECRET_PLAN", "theirs")
        result = runtime.run("acme", READ_VARS)
        refused = runtime.run("acme", 'zingyConn.vars["X"] = "1"')

    assert result.ok, result.error
    assert result.value["number"] == "+15005550006"
    assert (result.value["default"], result.value["names"], result.value["has"]) == ("d", ["SUPPORT_NUMBER"], False)
    assert "zingyconn vars set NOPE VALUE" in result.value["missing"]
    assert not refused.ok


def test_cli_set_list_unset(world: World) -> None:
    """``zingyconn vars set|list|unset`` manage the variables a run then sees."""
    env = {"ZINGYCONN_DATA_DIR": str(world.settings.data_dir), "ZINGYCONN_DB_URL": world.settings.db_url}
    runner = CliRunner()
    added = runner.invoke(main, ["vars", "set", "GREETING", "hi there", "--tenant", "acme"], env=env)
    assert added.exit_code == 0, added.output
    assert added.stdout == "GREETING\n"
    listed = runner.invoke(main, ["vars", "list", "--tenant", "acme", "--json"], env=env)
    assert [(v["name"], v["value"]) for v in json.loads(listed.stdout) if v["name"] == "GREETING"] == [
        ("GREETING", "hi there")
    ]
    bad = runner.invoke(main, ["vars", "set", "9X", "v", "--tenant", "acme"], env=env)
    assert bad.exit_code == 2
    assert "Error: Variable name '9X' is not valid" in bad.output
    assert runner.invoke(main, ["vars", "unset", "GREETING", "--tenant", "acme"], env=env).exit_code == 0
    again = runner.invoke(main, ["vars", "unset", "GREETING", "--tenant", "acme"], env=env)
    assert again.exit_code == 2
    assert "has no variable named 'GREETING'" in again.output


@pytest.mark.postgres
def test_the_count_cap_holds_for_concurrent_sets_on_postgresql(postgres_url: str) -> None:
    """Writers setting new names at once, each in its own process's engine, cannot take a tenant past the cap."""
    writers = [TenantVariables(create_engine(postgres_url)) for _ in range(8)]
    for index in range(MAX_VARIABLES_PER_TENANT - 1):
        writers[0].set("acme", f"V{index}", "x")
    start = threading.Barrier(len(writers) * 2)

    def race(writer: TenantVariables, name: str) -> None:
        start.wait()
        with contextlib.suppress(ValidationError):
            writer.set("acme", name, "x")

    with concurrent.futures.ThreadPoolExecutor(len(writers) * 2) as pool:
        for done in [pool.submit(race, writers[i % len(writers)], f"NEW{i}") for i in range(len(writers) * 2)]:
            done.result()

    assert len(writers[0].list("acme")) == MAX_VARIABLES_PER_TENANT


@pytest.mark.postgres
def test_a_nul_in_a_value_is_refused_with_a_message_on_postgresql(postgres_url: str) -> None:
    """PostgreSQL text cannot hold NUL: the set is refused naming the value, not failed by the database."""
    variables = TenantVariables(create_engine(postgres_url))
    with pytest.raises(ValidationError, match="NUL") as refused:
        variables.set("acme", "GREETING", "hi\x00there")
    assert refused.value.field == "value"
    assert variables.list("acme") == []
