"""The catalog stores hooks and scripts per tenant, compiled before saving, with validated names and limits."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from sandbox.errors import CompileError
from zingyconn.catalog import Catalog
from zingyconn.database import create_engine
from zingyconn.errors import NotFoundError, ValidationError
from zingyconn.kinds import limits_for


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    return create_engine(f"sqlite:///{tmp_path / 'store.db'}")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def catalog(engine: Engine, clock: FakeClock) -> Catalog:
    return Catalog(engine, clock=clock)


def test_put_hook_round_trips_and_keeps_created_at_on_update(catalog: Catalog, clock: FakeClock) -> None:
    """A hook saved twice keeps its creation time, takes the new source and limits, and is listed by name."""
    catalog.put_hook("acme", "sms", "return 1", verify_with="main", limits={"wall_seconds": "2"})
    clock.now = 2000.0
    hook = catalog.put_hook("acme", "sms", "return 2", limits={"wall_seconds": 3})

    assert (hook.source, hook.verify_with, dict(hook.limits)) == ("return 2", None, {"wall_seconds": 3.0})
    assert (hook.created_at, hook.updated_at) == (1000.0, 2000.0)
    assert hook.run_limits() == limits_for("webhook").replace(wall_seconds=3.0)
    catalog.put_hook("acme", "a-first", "return 0")
    assert [h.name for h in catalog.list_hooks("acme")] == ["a-first", "sms"]


def test_hooks_are_private_to_their_tenant(catalog: Catalog) -> None:
    """Another tenant neither sees, lists nor deletes a tenant's hook."""
    catalog.put_hook("acme", "sms", "return 1")

    assert catalog.list_hooks("globex") == []
    with pytest.raises(NotFoundError, match="'globex' has no hook named 'sms'"):
        catalog.get_hook("globex", "sms")
    with pytest.raises(NotFoundError):
        catalog.delete_hook("globex", "sms")
    catalog.delete_hook("acme", "sms")
    with pytest.raises(NotFoundError):
        catalog.get_hook("acme", "sms")


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        pytest.param({"tenant": "a/b"}, "tenant", id="slash-in-tenant"),
        pytest.param({"name": ".."}, "name", id="dot-dot-name"),
        pytest.param({"name": "x" * 101}, "name", id="long-name"),
        pytest.param({"verify_with": "no spaces"}, "verify_with", id="bad-connection"),
        pytest.param({"limits": {"wall_seconds": "-1"}}, "limits", id="negative-limit"),
        pytest.param({"limits": {"cpu": "1"}}, "limits", id="unknown-limit"),
        pytest.param({"source": "   "}, "source", id="empty-source"),
    ],
)
def test_put_hook_names_the_invalid_field(catalog: Catalog, kwargs: dict[str, object], field: str) -> None:
    """Invalid input is refused with a ValidationError that names the field, and nothing is saved."""
    args: dict[str, object] = {"tenant": "acme", "name": "sms", "source": "return 1", **kwargs}
    with pytest.raises(ValidationError) as info:
        catalog.put_hook(**args)  # type: ignore[arg-type]
    assert info.value.field == field
    assert catalog.list_hooks("acme") == []


def test_put_hook_refuses_a_snippet_that_does_not_compile(catalog: Catalog) -> None:
    """A snippet the policy rejects is reported before saving, and the old version stays."""
    catalog.put_hook("acme", "sms", "return 1")
    with pytest.raises(CompileError):
        catalog.put_hook("acme", "sms", "return ().__class__.__base__")
    assert catalog.get_hook("acme", "sms").source == "return 1"


def test_scripts_store_cron_and_list_scheduled_ones_across_tenants(catalog: Catalog) -> None:
    """Scripts keep their cron expression; the scheduler can list every tenant's scheduled scripts."""
    catalog.put_script("acme", "nightly", "return 1", cron=" 0 3 * * * ", limits={"wall_seconds": 60})
    catalog.put_script("acme", "adhoc", "return 1")
    catalog.put_script("globex", "hourly", "return 1", cron="0 * * * *")

    assert [s.name for s in catalog.list_scripts("acme")] == ["adhoc", "nightly"]
    scheduled = catalog.list_scripts(scheduled_only=True)
    assert [(s.tenant, s.name, s.cron) for s in scheduled] == [
        ("acme", "nightly", "0 3 * * *"),
        ("globex", "hourly", "0 * * * *"),
    ]
    assert scheduled[0].run_limits().wall_seconds == 60.0
    catalog.delete_script("acme", "nightly")
    with pytest.raises(NotFoundError, match="no script named 'nightly'"):
        catalog.get_script("acme", "nightly")


def test_put_script_refuses_an_overlong_cron(catalog: Catalog) -> None:
    """A cron expression longer than the column is a ValidationError on field 'cron'."""
    with pytest.raises(ValidationError) as info:
        catalog.put_script("acme", "x", "return 1", cron="*" * 101)
    assert info.value.field == "cron"


def test_saving_a_hook_with_a_blocked_import_is_a_compile_error(catalog: Catalog) -> None:
    """An import the sandbox would refuse is reported with its line when the hook is saved, and nothing is saved."""
    with pytest.raises(CompileError) as caught:
        catalog.put_hook("acme", "bad-import", "import json\nimport requests\nreturn 1")
    assert caught.value.errors[0].startswith("Line 2: Import of 'requests' is not allowed in snippets.")
    with pytest.raises(NotFoundError):
        catalog.get_hook("acme", "bad-import")


def test_snippet_modules_match_the_environment_facades() -> None:
    """SNIPPET_MODULES (what saving checks against) is exactly what the snippet environment offers."""
    from sandbox.environment import RunContext
    from zingyconn.snippet.environment import environment
    from zingyconn.twilio import SNIPPET_MODULES

    class _NoHost:
        def request(self, op: str, payload: object) -> object:
            raise AssertionError("not called")

    offered = environment(RunContext(host=_NoHost(), context={})).modules
    assert sorted(offered) == sorted(SNIPPET_MODULES)
