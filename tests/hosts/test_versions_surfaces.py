"""Versions on the edges: ``hooks|scripts history|diff|rollback`` on the CLI and the admin API's version routes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from tests.emulator import Emulator
from tests.hosts.live_server import LiveServer, live_server
from zingyconn.catalog import Catalog
from zingyconn.config import Settings
from zingyconn.hosts.cli import main
from zingyconn.runtime import Runtime

ADMIN = "admin-token-for-tests"


@pytest.fixture
def env(tmp_path: Path, emulator: Emulator) -> dict[str, str]:
    """Environment of a store in a temporary directory."""
    return {"ZINGYCONN_DATA_DIR": str(tmp_path / "data"), "ZINGYCONN_TWILIO_BASE_URL": emulator.base_url}


@pytest.fixture
def server(env: dict[str, str]) -> Iterator[LiveServer]:
    """A server with the admin API on."""
    with Runtime(Settings.from_env(env)) as runtime, live_server(runtime, admin_token=ADMIN) as live:
        yield live


def _cli(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), env=env)
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize("family", ["hooks", "scripts"])
def test_cli_history_diff_and_rollback(env: dict[str, str], tmp_path: Path, family: str) -> None:
    """Two adds make two versions; history lists them newest first with the CLI user; rollback makes a third."""
    first, second = tmp_path / "one.py", tmp_path / "two.py"
    first.write_text("return 'one'\n")
    second.write_text("return 'two'\n")
    assert _cli(env, family, "add", "x", "--tenant", "acme", "--file", str(first), "-m", "first cut")[0] == 0
    assert _cli(env, family, "add", "x", "--tenant", "acme", "--file", str(second))[0] == 0

    code, out, _ = _cli(env, family, "history", "x", "--tenant", "acme", "--json")
    listed = json.loads(out)
    diff = _cli(env, family, "diff", "x", "--tenant", "acme")[1]
    rolled = _cli(env, family, "rollback", "x", "--to", "1", "--tenant", "acme")
    shown = _cli(env, family, "show", "x", "--tenant", "acme")[1]
    missing = _cli(env, family, "rollback", "x", "--to", "9", "--tenant", "acme")

    assert code == 0
    assert [(v["version"], v["message"]) for v in listed] == [(2, None), (1, "first cut")]
    assert listed[0]["author"].startswith("cli:")
    assert "-return 'one'\n+return 'two'\n" in diff
    assert (rolled[0], rolled[1]) == (0, "3\n")
    assert "return 'one'" in shown
    assert "version:" in shown
    assert (missing[0], "has versions 1 to 3, not 9" in missing[2]) == (2, True)


def test_admin_api_versions_diff_and_rollback(server: LiveServer) -> None:
    """PUT twice, list versions, read one, diff, roll back; a webhook run then records the version it ran."""
    auth = {"Authorization": f"Bearer {ADMIN}"}
    base = server.url("/api/v1/admin/tenants/acme/hooks/ping")
    httpx.put(base, json={"source": "return 'one'", "message": "first"}, headers=auth).raise_for_status()
    httpx.put(base, json={"source": "return 'two'"}, headers=auth).raise_for_status()

    listed = httpx.get(f"{base}/versions", headers=auth).json()["versions"]
    one = httpx.get(f"{base}/versions/1", headers=auth).json()["version"]
    diff = httpx.get(f"{base}/diff", params={"from": 1, "to": 2}, headers=auth).json()
    rolled = httpx.post(f"{base}/rollback", json={"to": 1}, headers=auth).json()
    bad = httpx.post(f"{base}/rollback", json={"to": "x"}, headers=auth)
    other = httpx.get(server.url("/api/v1/admin/tenants/acme/tokens/ping/versions"), headers=auth)
    ran = httpx.get(server.url("/hooks/acme/ping"))
    run = server.runtime.history.list("acme", kind="webhook")[0]

    assert [(v["version"], v["author"], v["message"]) for v in listed] == [
        (2, "admin-api", None),
        (1, "admin-api", "first"),
    ]
    assert "source" not in listed[0]
    assert one["source"] == "return 'one'"
    assert "-return 'one'" in diff["diff"]
    assert "+return 'two'" in diff["diff"]
    assert rolled == {"ok": True, "version": 3}
    assert (bad.status_code, bad.json()["error"]["field"]) == (400, "to")
    assert other.status_code == 404
    assert ran.text == "one"
    assert run.version == 3


def test_version_routes_need_the_admin_token(server: LiveServer) -> None:
    """Without the admin token no version is listed or rolled back."""
    base = server.url("/api/v1/admin/tenants/acme/hooks/ping")

    assert httpx.get(f"{base}/versions").status_code == 401
    assert httpx.post(f"{base}/rollback", json={"to": 1}).status_code == 401


def test_admin_api_hook_and_script_changes_are_in_the_audit_trail(env: dict[str, str], server: LiveServer) -> None:
    """A hook PUT, a rollback of a hook and of a script, and a hook DELETE through the admin API are each one audit
    row with actor admin-api and the client's address, as ``zingyconn audit list`` prints them; a refused PUT is
    not recorded, and no row holds a source."""
    auth = {"Authorization": f"Bearer {ADMIN}"}
    base = server.url("/api/v1/admin/tenants/acme")
    Catalog(server.runtime.engine).put_script("acme", "nightly", "return 'first-source'")
    Catalog(server.runtime.engine).put_script("acme", "nightly", "return 'second-source'")
    httpx.put(f"{base}/hooks/ping", json={"source": "return 'one-source'"}, headers=auth).raise_for_status()
    httpx.put(f"{base}/hooks/ping", json={"source": "return 'two-source'"}, headers=auth).raise_for_status()
    refused = httpx.put(f"{base}/hooks/bad", json={"source": "return ().__class__.__base__"}, headers=auth)
    httpx.post(f"{base}/hooks/ping/rollback", json={"to": 1}, headers=auth).raise_for_status()
    httpx.post(f"{base}/scripts/nightly/rollback", json={"to": 1}, headers=auth).raise_for_status()
    httpx.delete(f"{base}/hooks/ping", headers=auth).raise_for_status()

    code, out, _ = _cli(env, "audit", "list", "--tenant", "acme", "--json")
    events = list(reversed(json.loads(out)))
    lines = _cli(env, "audit", "list", "--tenant", "acme")[1].splitlines()

    assert refused.status_code == 400
    assert code == 0
    assert [(e["actor"], e["client"], e["action"], e["target"], e["detail"]) for e in events] == [
        ("admin-api", "127.0.0.1", "hook.save", "ping", {"version": 1}),
        ("admin-api", "127.0.0.1", "hook.save", "ping", {"version": 2}),
        ("admin-api", "127.0.0.1", "hook.rollback", "ping", {"to": 1, "version": 3}),
        ("admin-api", "127.0.0.1", "script.rollback", "nightly", {"to": 1, "version": 3}),
        ("admin-api", "127.0.0.1", "hook.delete", "ping", {}),
    ]
    assert "admin-api  127.0.0.1  acme  hook.delete  ping" in lines[0]
    assert "-source" not in out
