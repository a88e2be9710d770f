"""The README's walkthrough works as written: against a running ``zingyconn demo``, its commands add a connection,
a hook and a script for tenant ``acme``, the hook answers the curl with the TwiML shown, the task succeeds, and the
console's run history shows both runs.

The commands are read from README.md (every ``sh`` block of the walkthrough, run in order by one bash), so this test
breaks when the walkthrough does. The only change made to them: the demo listens on free ports instead of 8000/8765.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.doc_pages import read_page
from tests.hosts.test_demo import console_page
from tests.servers import free_port

#: Bounds for slow steps on a loaded machine (each zingyconn command of the script can take half a minute there).
START_TIMEOUT_SECONDS = 300.0
STEP_TIMEOUT_SECONDS = 600.0
TWIML_REPLY = '<?xml version="1.0" encoding="UTF-8"?><Response><Message>You said: hello</Message></Response>'


def walkthrough_script(server_url: str, emulator_url: str) -> str:
    """Return the walkthrough's ``sh`` blocks as one bash script, pointed at the demo's actual ports."""
    section = re.search(r"^## Walkthrough.*?\n(.*?)^## ", read_page("README"), flags=re.S | re.M)
    assert section is not None, "README.md has no '## Walkthrough' section"
    blocks = re.findall(r"```sh\n(.*?)```", section.group(1), flags=re.S)
    assert len(blocks) >= 3, blocks
    script = "\n".join(blocks).replace("http://127.0.0.1:8000", server_url)
    return "set -euo pipefail\n" + script.replace("http://127.0.0.1:8765", emulator_url)


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[tuple[str, str, Path, dict[str, str]]]:
    """``zingyconn demo`` on free ports in an empty directory; yields its URLs, directory and a shell environment."""
    port, emulator_port = free_port(), free_port()
    env = {name: value for name, value in os.environ.items() if not name.startswith("ZINGYCONN_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    argv = [sys.executable, "-m", "zingyconn", "demo", "--port", str(port), "--emulator-port", str(emulator_port)]
    log = tmp_path / "demo.log"
    with log.open("w") as out:
        process = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)
    server_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not _answers(f"{server_url}/healthz"):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the demo did not start:\n{log.read_text()}")
            time.sleep(0.3)
        yield server_url, f"http://127.0.0.1:{emulator_port}", tmp_path, env
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=STEP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=5).status_code == 200
    except httpx.TransportError:
        return False


@pytest.mark.slow
@pytest.mark.timeout(3 * STEP_TIMEOUT_SECONDS)
def test_readme_walkthrough_runs_as_written(demo: tuple[str, str, Path, dict[str, str]]) -> None:
    """Connection, hook, task and console, as the README shows them, against the demo."""
    server_url, emulator_url, directory, env = demo
    done = subprocess.run(
        ["bash", "-c", walkthrough_script(server_url, emulator_url)],
        cwd=directory,
        env=env,
        capture_output=True,
        text=True,
        timeout=STEP_TIMEOUT_SECONDS,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert TWIML_REPLY in done.stdout

    def task_states() -> str:
        listed = subprocess.run(
            ["zingyconn", "tasks", "list", "--tenant", "acme"],
            cwd=directory, env=env, capture_output=True, text=True, timeout=STEP_TIMEOUT_SECONDS, check=True,
        )  # fmt: skip
        return listed.stdout

    deadline = time.monotonic() + STEP_TIMEOUT_SECONDS
    while "succeeded" not in task_states():
        assert time.monotonic() < deadline, task_states()
        time.sleep(0.5)

    token = (directory / ".zingyconn" / "admin_token").read_text().strip()
    runs = console_page(server_url, token, "/console/t/acme/runs")
    assert "sms" in runs
    assert "notify" in runs
