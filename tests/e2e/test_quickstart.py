"""The README Quick start, followed as a newcomer would: a fresh virtualenv, a clean copy of the repository,
the README's first command (``pip install -c constraints.txt -e . && zingyconn demo``), its printed curl, then Ctrl-C.

The commands are read from README.md, so this test breaks when the Quick start changes. Two deliberate shortcuts:

- The virtualenv is created with ``--system-site-packages`` so pip finds the dependencies the base interpreter has
  instead of downloading every wheel again (run from another virtualenv, as CI does, the base interpreter may have
  none: pip then installs them from its cache or the index, within ``INSTALL_TIMEOUT_SECONDS``); the package itself
  is still built and installed into the new venv from the copy (pip's isolated build may fetch setuptools from the
  configured index, as ``pip install -e .`` does).
- The "clone" is the working tree's files as git sees them (``git ls-files -co --exclude-standard``: tracked plus
  untracked-but-not-ignored), so uncommitted work is tested too; on CI, where the tree is a clean clone, that is
  exactly the clone.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.servers import free_port

ROOT = Path(__file__).resolve().parents[2]
#: Bounds for slow steps on a loaded CI machine (the test fails, with the output, when one is exceeded).
INSTALL_TIMEOUT_SECONDS = 600
START_TIMEOUT_SECONDS = 120.0
STOP_TIMEOUT_SECONDS = 60.0
#: The install (the module's fixture) counts against the first test's timeout: it may download every dependency.
pytestmark = pytest.mark.timeout(INSTALL_TIMEOUT_SECONDS + 2 * START_TIMEOUT_SECONDS)
TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response><Message>'


def quick_start_block() -> list[str]:
    """Return the lines of the first ``sh`` code block of the README's Quick start section."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = re.search(r"^## Quick start\n(.*?)^## ", readme, flags=re.S | re.M)
    assert section is not None, "README.md has no '## Quick start' section"
    block = re.search(r"```sh\n(.*?)```", section.group(1), flags=re.S)
    assert block is not None, "the Quick start has no ```sh code block"
    return [line for line in block.group(1).splitlines() if line.strip()]


def quick_start_commands() -> list[str]:
    """Return the commands of the Quick start's first line (comment dropped, split on ``&&``)."""
    first = quick_start_block()[0].split(" #", 1)[0]
    return [command.strip() for command in first.split("&&")]


def test_quick_start_is_two_commands_install_and_demo() -> None:
    """The Quick start is two command lines: install + demo, then the test suite."""
    lines = quick_start_block()
    assert len(lines) == 2, lines
    assert quick_start_commands() == ["pip install -c constraints.txt -e .", "zingyconn demo"]
    assert "pytest" in lines[1]


def copy_working_tree(destination: Path) -> Path:
    """Copy the repository's files as git sees them (tracked + untracked, not ignored) to *destination*."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in sorted(set(filter(None, listed.split("\0")))):
        source, target = ROOT / name, destination / name
        if source.is_symlink():  # a link stays a link (zingyconn/examples -> ../examples), as a clone has it
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(source.readlink())
        elif source.is_file():  # a tracked file deleted in the working tree is not part of it
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return destination


def _environment(venv: Path) -> dict[str, str]:
    """A newcomer's shell: the venv first on PATH, no ZINGYCONN_* configuration at all."""
    env = {name: value for name, value in os.environ.items() if not name.startswith(("ZINGYCONN_", "PYTHON"))}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(venv)
    return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, str]]:
    """A clean copy of the repository installed into a fresh virtualenv with the README's pip command."""
    if shutil.which("git") is None:
        pytest.fail("git is needed to copy the repository for the Quick start test")
    base = tmp_path_factory.mktemp("quickstart")
    checkout = copy_working_tree(base / "checkout")
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    env = _environment(venv)
    pip, *arguments = shlex.split(quick_start_commands()[0])
    assert pip == "pip"
    done = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", *arguments],
        cwd=checkout,
        env=env,
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT_SECONDS,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return checkout, venv, env


@pytest.mark.slow
def test_installed_package_is_the_clean_copy(installed: tuple[Path, Path, dict[str, str]]) -> None:
    """The venv imports zingyconn from the copy, not from the developer's own install."""
    checkout, venv, env = installed
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import zingyconn; print(zingyconn.__file__)"],
        cwd=checkout.parent,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert Path(where).resolve().is_relative_to(checkout.resolve())


def _wait_for_curl(process: subprocess.Popen[str], output: Path) -> str:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while True:
        text = output.read_text(encoding="utf-8")
        found = re.search(r"^curl .*/hooks/demo/auto-reply.*$", text, flags=re.M)
        if found:
            return found.group(0)
        if process.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"the demo printed no auto-reply curl (exit code {process.poll()}):\n{text}")
        time.sleep(0.2)


def _as_request(curl: str) -> tuple[str, dict[str, str]]:
    """Return the URL and form of a ``curl URL --data-urlencode K=V ...`` command."""
    words = shlex.split(curl)
    url = next(word for word in words if word.startswith("http"))
    pairs = [words[i + 1].partition("=") for i, word in enumerate(words) if word == "--data-urlencode"]
    return url, {key: value for key, _, value in pairs}


@pytest.mark.slow
def test_quick_start_demo_answers_the_printed_curl_and_stops_on_ctrl_c(
    installed: tuple[Path, Path, dict[str, str]], tmp_path: Path
) -> None:
    """`zingyconn demo` starts from nothing, serves the console, its auto-reply curl returns TwiML, and SIGINT stops
    it with exit code 0 and no traceback."""
    checkout, venv, env = installed
    port = free_port()
    command, *arguments = shlex.split(quick_start_commands()[1])
    argv = [str(venv / "bin" / command), *arguments, "--port", str(port), "--emulator-port", str(free_port())]
    stdout, stderr = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    with stdout.open("w") as out, stderr.open("w") as err:
        process = subprocess.Popen(argv, cwd=checkout, env=env, stdout=out, stderr=err, text=True)
    try:
        curl = _wait_for_curl(process, stdout)
        base_url = f"http://127.0.0.1:{port}"
        assert curl.startswith(f"curl -s {base_url}/hooks/demo/auto-reply ")

        url, form = _as_request(curl)
        reply = httpx.post(url, data=form, timeout=30)
        assert reply.headers["content-type"].startswith("text/xml")
        assert reply.text.startswith(TWIML)
        if shutil.which("curl"):
            printed = subprocess.run(shlex.split(curl), capture_output=True, text=True, timeout=30, check=True)
            assert printed.stdout.startswith(TWIML)
        console = httpx.get(f"{base_url}/console", follow_redirects=True, timeout=30)
        assert console.status_code == 200
        assert "<form" in console.text
    finally:
        process.send_signal(signal.SIGINT)
        try:
            code = process.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    printed_out, printed_err = stdout.read_text(), stderr.read_text()
    assert code == 0, printed_out + printed_err
    assert printed_out.rstrip().endswith("Stopped.")
    assert "Traceback" not in printed_err, printed_err
    data = checkout / ".zingyconn"
    assert {"zingyconn.db", "keys", "emulator.db", "admin_token"} <= {path.name for path in data.iterdir()}
