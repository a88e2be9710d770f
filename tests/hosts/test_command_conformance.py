"""The five connection commands as the platform documents them, through every surface.

The table below is the platform's contract: each command's documented inputs and the type of its output
(*Object*: one Message resource; *List*: a JSON array of Message resources; *Success/Fail*: ``{"success": bool}``).
Every row runs through the Python API (``Runtime.command``), the CLI (``zingyconn command``), the HTTP command
API and the console's command runner, and must give the same type and the same facts on each. ``docs/commands.md``
documents the same table (``test_commands_page_matches_the_table``).
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Final

import httpx
import pytest
from click.testing import CliRunner

from tests.doc_pages import read_page
from tests.emulator import MAGIC_SENDER, RECIPIENT, Emulator, check_response, running_emulator
from tests.hosts.live_server import LiveServer, live_server
from zingyconn.config import Settings
from zingyconn.hosts.cli import main
from zingyconn.hosts.composition import default_mounts
from zingyconn.runtime import Runtime
from zingyconn.secrets.tokens import TokenStore
from zingyconn.twilio.commands import MESSAGE_FIELDS
from zingyconn.twilio.profile import TwilioProfile

ADMIN = "conformance-admin-token"
SERVICE: Final = "MG" + "e" * 32
#: A placeholder for the SID of a finished message made before the row runs.
SID: Final = "<sid>"

Check = Callable[[Any], None]


def _message(**expected: Any) -> Check:
    def check(output: Any) -> None:
        assert isinstance(output, dict), output
        assert list(output) == list(MESSAGE_FIELDS)
        assert {key: output[key] for key in expected} == expected

    return check


def _messages(most: int) -> Check:
    def check(output: Any) -> None:
        assert isinstance(output, list), output
        assert 1 <= len(output) <= most
        for message in output:
            _message()(message)

    return check


def _success(output: Any) -> None:
    assert output == {"success": True}


@dataclass(frozen=True)
class Row:
    """One documented call: command, inputs, output type (Object, List, Success/Fail) and what must hold."""

    command: str
    inputs: dict[str, Any]
    output_type: str
    check: Check


#: The platform's documented inputs and output types of the five commands.
TABLE: Final = [
    Row("sendMessage", {"toPhone": RECIPIENT, "fromPhone": MAGIC_SENDER, "msg": "hi"}, "Object",
        _message(to=RECIPIENT, **{"from": MAGIC_SENDER})),
    Row("sendMessage", {"toPhone": RECIPIENT, "fromService": SERVICE, "msg": "hi"}, "Object",
        _message(to=RECIPIENT, **{"from": None}, messaging_service_sid=SERVICE, status="accepted")),
    Row("sendMessage", {"toPhone": RECIPIENT, "fromPhone": MAGIC_SENDER, "fromService": SERVICE, "msg": "hi",
                        "customProps": {"validityPeriod": 600}}, "Object",
        _message(**{"from": MAGIC_SENDER}, messaging_service_sid=SERVICE)),
    Row("listMessages", {"criteria": {"to": RECIPIENT}, "limit": 2}, "List", _messages(2)),
    Row("listMessages", {}, "List", _messages(50)),
    Row("readMessage", {"sid": SID}, "Object", _message(status="delivered")),
    Row("updateMessage", {"sid": SID, "customProps": {"body": ""}}, "Object", _message(body="")),
    Row("deleteMessage", {"sid": SID}, "Success/Fail", _success),
]  # fmt: skip


@dataclass
class Surfaces:
    """The same tenant and connection, reachable through each surface."""

    server: LiveServer
    env: dict[str, str]
    token: str
    browser: httpx.Client

    def python(self, command: str, inputs: dict[str, Any]) -> Any:
        return self.server.runtime.command("acme", "main", command, inputs)

    def cli(self, command: str, inputs: dict[str, Any]) -> Any:
        result = CliRunner().invoke(
            main, ["command", "main", command, "--tenant", "acme", "--input", json.dumps(inputs)], env=self.env
        )
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    def http(self, command: str, inputs: dict[str, Any]) -> Any:
        response = httpx.post(
            self.server.url(f"/api/v1/connections/main/commands/{command}"),
            json=inputs,
            headers={"Authorization": f"Bearer {self.token}", "X-Zingy-Flow": "cloud"},
        )
        assert response.status_code == 200, response.text
        document = response.json()
        assert list(document) == ["ok", "result"]
        return document["result"]

    def console(self, command: str, inputs: dict[str, Any]) -> Any:
        path = f"/console/t/acme/commands?command={command}"
        form = {name: value if isinstance(value, str) else json.dumps(value) for name, value in inputs.items()}
        csrf = _csrf(self.browser.get(path).text)
        page = self.browser.post(path, data={"csrf_token": csrf, "command": command, "connection": "main", **form})
        assert page.status_code == 200, page.text[:500]
        found = re.search(r'id="result-value"[^>]*>(.*?)</pre>', page.text, re.DOTALL)
        assert found is not None, page.text[:2000]
        return json.loads(html.unescape(found.group(1)))


def _csrf(text: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', text)
    assert found is not None, text[:500]
    return found.group(1)


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    """One emulator for the module (each test reads only the message it seeds); its answers are checked at the end."""
    with running_emulator() as running:
        yield running
    for response in running.responses:
        check_response(response)


@pytest.fixture(scope="module")
def surfaces(tmp_path_factory: pytest.TempPathFactory, emulator: Emulator) -> Iterator[Surfaces]:
    """Tenant 'acme' with connection 'main' on the emulator, a live server, an API token and a console session."""
    data = tmp_path_factory.mktemp("conformance") / "data"
    env = {"ZINGYCONN_DATA_DIR": str(data), "ZINGYCONN_TWILIO_BASE_URL": emulator.base_url}
    with Runtime(Settings.from_env(env)) as runtime:
        profile = TwilioProfile(account_sid=emulator.account_sid, api_key=emulator.api_key, secret=emulator.api_secret)
        runtime.store.put("acme", "main", profile)
        token = TokenStore(runtime.engine).create("acme")
        mounts = default_mounts(runtime, admin_token=ADMIN)
        with (
            live_server(runtime, admin_token=ADMIN, mounts=mounts) as server,
            httpx.Client(base_url=server.base_url) as browser,
        ):
            login = browser.get("/console/login")
            signed_in = browser.post("/console/login", data={"token": ADMIN, "csrf_token": _csrf(login.text)})
            assert signed_in.status_code == 303, signed_in.text[:500]
            yield Surfaces(server, env, token, browser)


SURFACES: Final = ("python", "cli", "http", "console")


@pytest.mark.parametrize("surface", SURFACES)
@pytest.mark.parametrize("row", TABLE, ids=[f"{row.command}-{row.output_type}" for row in TABLE])
def test_every_documented_command_conforms_on_every_surface(
    surfaces: Surfaces, emulator: Emulator, surface: str, row: Row
) -> None:
    """Each documented call gives its documented output type (Object, List, Success/Fail) on each surface."""
    sent = surfaces.python("sendMessage", {"toPhone": RECIPIENT, "fromPhone": MAGIC_SENDER, "msg": "seed"})
    emulator.state.advance(60)  # delivered: readable, redactable and deletable
    inputs = {key: sent["sid"] if value == SID else value for key, value in row.inputs.items()}

    output = getattr(surfaces, surface)(row.command, inputs)

    row.check(output)


def test_commands_page_matches_the_table() -> None:
    """docs/commands.md lists each command with the output type the conformance table checks."""
    page = read_page("commands")
    documented = dict(re.findall(r"^\| `(\w+)` \|.*\| (Object|List|Success/Fail)\b", page, re.MULTILINE))

    assert documented == {row.command: row.output_type for row in TABLE}
