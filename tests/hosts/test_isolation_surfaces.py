"""Isolation on the edges: `--isolation` on `hooks add` and `scripts add`, the admin API hook PUT, the console."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from tests.emulator import Emulator
from tests.hosts.live_console import OPERATOR_TOKEN, csrf_of, live_console, sign_in
from tests.hosts.live_server import LiveServer, live_server
from zingyconn.catalog import Catalog
from zingyconn.config import Settings
from zingyconn.database import create_engine
from zingyconn.hosts.cli import main
from zingyconn.hosts.console.auth import CSRF_FIELD
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


@pytest.mark.parametrize("family", ["hooks", "scripts"])
def test_cli_add_saves_and_shows_the_isolation(env: dict[str, str], tmp_path: Path, family: str) -> None:
    """``add --isolation instance`` is kept and shown; the default is run; another word is a usage error."""
    snippet = tmp_path / "s.py"
    snippet.write_text("return 1\n")
    runner = CliRunner()

    def cli(*args: str) -> tuple[int, str, str]:
        result = runner.invoke(main, [family, *args, "--tenant", "acme"], env=env)
        return result.exit_code, result.stdout, result.stderr

    plain = cli("add", "plain", "--file", str(snippet), "--json")
    warm = cli("add", "warm", "--file", str(snippet), "--isolation", "instance", "--json")
    shown = cli("show", "warm")
    wrong = cli("add", "wrong", "--file", str(snippet), "--isolation", "shared")

    assert json.loads(plain[1])["isolation"] == "run"
    assert json.loads(warm[1])["isolation"] == "instance"
    assert re.search(r"^isolation:\s+instance$", shown[1], re.MULTILINE)
    assert wrong[0] == 2
    assert "'shared' is not one of 'run', 'instance'" in wrong[2]


def test_admin_api_hook_put_takes_the_isolation_and_a_webhook_runs_warm(server: LiveServer) -> None:
    """PUT with "isolation": "instance" saves it; a bad value is a 400 naming the field; requests then share a
    warm process."""
    auth = {"Authorization": f"Bearer {ADMIN}"}
    url = server.url("/api/v1/admin/tenants/acme/hooks/ping")

    saved = httpx.put(url, json={"source": "return 'pong'", "isolation": "instance"}, headers=auth)
    bad = httpx.put(url, json={"source": "return 'pong'", "isolation": "shared"}, headers=auth)
    wrong_type = httpx.put(url, json={"source": "return 'pong'", "isolation": 1}, headers=auth)
    answers = [httpx.post(server.url("/hooks/acme/ping")).text for _ in range(3)]

    assert saved.json()["hook"]["isolation"] == "instance"
    assert (bad.status_code, bad.json()["error"]["field"]) == (400, "isolation")
    assert (wrong_type.status_code, wrong_type.json()["error"]["field"]) == (400, "isolation")
    assert answers == ["pong"] * 3
    assert server.runtime.sandbox.instances.live == 1


def test_console_runner_saves_the_isolation(tmp_path: Path) -> None:
    """The runner's Isolation field is saved with the hook and shown again when the hook is loaded."""
    with live_console(tmp_path) as console, console.browser() as browser:
        assert sign_in(browser, OPERATOR_TOKEN).status_code == 303
        page = browser.get("/console/t/acme/runner").text
        form = {CSRF_FIELD: csrf_of(page), "action": "save", "save_kind": "script", "save_name": "digest"}
        saved = browser.post("/console/t/acme/runner", data={**form, "source": "return 1", "isolation": "instance"})
        loaded = browser.get("/console/t/acme/runner?script=digest").text

    engine = create_engine(f"sqlite:///{tmp_path / 'zingyconn.db'}")
    try:
        script = Catalog(engine).get_script("acme", "digest")
    finally:
        engine.dispose()
    assert saved.status_code == 303, saved.text
    assert script.isolation == "instance"
    assert '<option value="instance" selected>' in loaded
