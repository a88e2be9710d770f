"""``zingyconn demo``: embedded everything on one machine: store, key file, Twilio emulator, demo tenant, server.

Both servers run in threads of this process on ports bound up front (a port in use is a clear error, not a
traceback in a thread); Ctrl-C (or SIGTERM) stops the server first, so running tasks and requests finish, then the
emulator. Everything lives in the data directory, so a second start reuses it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shlex
import signal
import socket
import threading
import time
from collections.abc import Iterator
from types import FrameType
from typing import TYPE_CHECKING, Any, Final

import click
import uvicorn
from rich.console import Console
from rich.table import Table

from zingyconn.catalog import Catalog
from zingyconn.config import Settings
from zingyconn.database import create_engine
from zingyconn.errors import ZingyConnError
from zingyconn.hosts import composition
from zingyconn.hosts.cli.listening import bind_port
from zingyconn.hosts.demo import (
    DEMO_ACCOUNT_SID,
    DEMO_CONNECTION,
    DEMO_NOTES_CONNECTION,
    DEMO_RECIPIENT,
    DEMO_SENDER,
    DEMO_TENANT,
    admin_token,
    api_token,
    data_locations,
    display_db_url,
    emulator_state_path,
    examples_dir,
    seed,
)
from zingyconn.hosts.logs import configure_logging
from zingyconn.http.echo import EchoRecorder
from zingyconn.http.echo import create_app as create_echo_app
from zingyconn.secrets.keyring import Keyring
from zingyconn.secrets.tokens import TokenStore
from zingyconn.twilio.emulator import EmulatorState, open_state_file
from zingyconn.twilio.emulator import create_app as create_emulator_app

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from zingyconn.runtime import Runtime
    from zingyconn.tasks.queue import TaskQueue

#: The demo binds loopback only: the emulator's credentials are public and the admin token is printed.
HOST: Final = "127.0.0.1"
#: How long a server thread may take to start listening before the demo gives up.
START_TIMEOUT_SECONDS: Final = 30.0


class ServerStoppedError(ZingyConnError):
    """Raised when one of the demo's servers stops (or never starts) on its own."""

    exit_code = 1


@dataclasses.dataclass(frozen=True)
class _Running:
    name: str
    server: uvicorn.Server
    thread: threading.Thread


def _start(name: str, app: Any, sock: socket.socket) -> _Running:
    # proxy_headers=False, as `zingyconn serve` does: the app alone decides which X-Forwarded-* to believe.
    config = uvicorn.Config(
        app,
        log_level="warning",
        log_config=None,  # uvicorn's records join the one log stream
        proxy_headers=False,
        server_header=False,
        access_log=False,
        lifespan="on",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name=f"demo-{name}", daemon=True)
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise ServerStoppedError(f"The {name} did not start on {HOST}:{sock.getsockname()[1]}; see the log above.")
        time.sleep(0.02)
    return _Running(name, server, thread)


def _stop(running: _Running) -> None:
    running.server.should_exit = True
    running.thread.join()


@contextlib.contextmanager
def _stop_signals(servers: list[_Running]) -> Iterator[threading.Event]:
    """Turn SIGINT/SIGTERM into an event; a second one while stopping forces the servers to exit at once."""
    stop = threading.Event()

    def handler(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            for running in servers:
                running.server.force_exit = True
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _wait(stop: threading.Event, servers: list[_Running]) -> None:
    while not stop.wait(0.5):
        for running in servers:
            if not running.thread.is_alive():
                raise ServerStoppedError(f"The {running.name} stopped unexpectedly; see the log above.")


def auto_reply_curl(base_url: str) -> str:
    """Return the curl command that posts an inbound SMS to the auto-reply hook (it answers with TwiML)."""
    form = ["--data-urlencode", f"From={DEMO_RECIPIENT}", "--data-urlencode", "Body=Hello from curl"]
    return shlex.join(["curl", "-s", f"{base_url}/hooks/{DEMO_TENANT}/auto-reply", *form])


def send_curl(base_url: str, token: str) -> str:
    """Return the curl command that sends an SMS through the command API (status callbacks go to status-log)."""
    inputs = {
        "toPhone": DEMO_RECIPIENT,
        "fromPhone": DEMO_SENDER,
        "msg": "Hello from the demo",
        "customProps": {"statusCallback": f"{base_url}/hooks/{DEMO_TENANT}/status-log"},
    }
    headers = ["-H", f"Authorization: Bearer {token}", "-H", "X-Zingy-Flow: cloud"]
    url = f"{base_url}/api/v1/connections/{DEMO_CONNECTION}/commands/sendMessage"
    return shlex.join(["curl", "-s", url, *headers, "-H", "Content-Type: application/json", "-d", json.dumps(inputs)])


def _welcome(
    console: Console, settings: Settings, *, base_url: str, admin: tuple[str, str], token: str, echo_url: str
) -> None:
    console.print()
    console.print(f"[bold green]zingyconn demo is running[/] on {base_url}  (press Ctrl-C to stop)")
    console.print()
    console.print(f"[bold]Console[/]  {base_url}/console", markup=True)
    console.print(f"  sign in with the admin token: {admin[0]}", markup=False)
    console.print(f"  (from {admin[1]})", style="dim", markup=False)
    console.print()
    console.print("[bold]Try the auto-reply hook[/] (it answers with TwiML):")
    console.print(auto_reply_curl(base_url), markup=False)
    console.print()
    console.print("[bold]Send an SMS through the emulator[/] (its status callbacks run the status-log hook):")
    console.print(send_curl(base_url, token), markup=False)
    console.print()
    console.print(f"[bold]Post a note through the HTTP connection {DEMO_NOTES_CONNECTION!r}[/] (the local echo API on "
                  f"{echo_url}; the host adds its token):")  # fmt: skip
    console.print(f"  zingyconn run examples/post_note.py --tenant {DEMO_TENANT}", markup=False)
    console.print(f"  curl -s {echo_url}/_echo/requests   (what the echo API received)", markup=False)
    console.print()
    console.print("[bold]Where the data lives[/]")
    table = Table.grid(padding=(0, 2))
    for what, where in data_locations(settings):
        table.add_row(f"  {what}", where)
    console.print(table)
    console.print()
    console.print("Use the other commands on this data from another shell (same directory):", style="dim")
    console.print(f"  export ZINGYCONN_TWILIO_BASE_URL={settings.twilio_base_url}", markup=False, style="dim")
    console.print(f"  zingyconn hooks list --tenant {DEMO_TENANT}", markup=False, style="dim")


@click.command()
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="Server port (0: any).")
@click.option(
    "--emulator-port", default=8765, show_default=True, type=click.IntRange(0, 65535), help="Emulator port (0: any)."
)
@click.option(
    "--echo-port", default=0, show_default=True, type=click.IntRange(0, 65535), help="Echo API port (0: any)."
)
def demo(port: int, emulator_port: int, echo_port: int) -> None:
    """Run everything locally: store, Twilio emulator, echo API, demo tenant, server, console.

    Needs no configuration: it creates the store and key file, starts the emulator and a local echo API, seeds
    tenant 'demo' with a Twilio connection, an HTTP connection to the echo API ('notes'), the example hooks and
    scripts, and serves webhooks, the console and background tasks. Data lives in ZINGYCONN_DATA_DIR (default
    ./.zingyconn) and is reused by the next start. Ctrl-C stops.
    """
    # soft_wrap: printed commands must stay on one line to be copied, whatever the terminal width.
    console = Console(highlight=False, soft_wrap=True)
    configure_logging(access_log=True)  # requests, task outcomes, Huey and uvicorn: one stream on stderr
    settings = Settings.from_env()
    servers: list[_Running] = []
    # Signals outermost: a second Ctrl-C while the servers stop still reaches them (force exit).
    with _stop_signals(servers) as stop, contextlib.ExitStack() as stack:
        web_socket = bind_port(HOST, port, option="--port")
        stack.callback(web_socket.close)
        emulator_socket = bind_port(HOST, emulator_port, option="--emulator-port")
        stack.callback(emulator_socket.close)
        echo_socket = bind_port(HOST, echo_port, option="--echo-port")
        stack.callback(echo_socket.close)
        echo_url = f"http://{HOST}:{echo_socket.getsockname()[1]}"
        base_url = f"http://{HOST}:{web_socket.getsockname()[1]}"
        settings = dataclasses.replace(settings, twilio_base_url=f"http://{HOST}:{emulator_socket.getsockname()[1]}")
        notes: list[str] = []

        with console.status("Opening the store and the master key…"):
            keyring = Keyring.from_settings(settings, announce=notes.append)
            engine = create_engine(settings.db_url)
            stack.callback(engine.dispose)
        console.print(f"[green]✓[/] Store {display_db_url(settings)}" + (" (new master key created)" if notes else ""))

        with console.status("Starting the Twilio emulator…"):
            state = EmulatorState(persistence=open_state_file(emulator_state_path(settings)))
            emulator = _start("Twilio emulator", create_emulator_app(state), emulator_socket)
            servers.append(emulator)
            stack.callback(_stop, emulator)
        kept_messages = len(state.messages(DEMO_ACCOUNT_SID))
        console.print(f"[green]✓[/] Twilio emulator on {settings.twilio_base_url} (messages kept: {kept_messages})")

        with console.status("Starting the echo API…"):
            echo = _start("echo API", create_echo_app(EchoRecorder()), echo_socket)
            servers.append(echo)
            stack.callback(_stop, echo)
        console.print(f"[green]✓[/] Echo API on {echo_url} (stands in for a third-party API)")

        from zingyconn.runtime import Runtime  # heavy: imported only when the demo really starts

        runtime = Runtime(settings, engine=engine, keyring=keyring)
        stack.callback(runtime.close)
        with console.status(f"Seeding tenant {DEMO_TENANT!r}…"):
            seeded = seed(runtime.store, Catalog(engine), examples=examples_dir(), notes_base_url=echo_url)
            admin = admin_token(settings)
            token, _ = api_token(settings, TokenStore(engine))
        added = [f"{item.kind} {item.name}" for item in seeded if item.is_added]
        kept = len(seeded) - len(added)
        summary = ("added " + ", ".join(added)) if added else "nothing to add"
        console.print(f"[green]✓[/] Tenant {DEMO_TENANT!r}: {summary}" + (f"; kept {kept} existing" if kept else ""))

        with console.status("Starting the sandbox…"):
            hardening = runtime.sandbox.hardening
        active = sum(1 for value in hardening.values() if value == "active")
        console.print(f"[green]✓[/] Sandbox ready ({active} of {len(hardening)} hardening steps active)")

        with console.status("Starting the server (webhooks, console, task consumer)…"):
            queue = composition.task_queue(runtime)
            app = _server_app(runtime, queue, admin_token=admin[0])
            web = _start("server", app, web_socket)
            servers.append(web)
            stack.callback(_stop, web)
        console.print(f"[green]✓[/] Server on {base_url} (webhooks, /console, background tasks)")

        _welcome(console, settings, base_url=base_url, admin=admin, token=token, echo_url=echo_url)
        _wait(stop, servers)
        console.print("\nStopping…")
    console.print("Stopped.")


def _server_app(runtime: Runtime, queue: TaskQueue, *, admin_token: str) -> Starlette:
    """Return the ``serve`` app for *runtime*: webhooks, API, console and the in-process task consumer."""
    from zingyconn.hosts.server import create_app

    return create_app(
        runtime,
        admin_token=admin_token,
        lifespan_hooks=composition.default_lifespan_hooks(runtime, queue=queue),
        mounts=composition.default_mounts(runtime, admin_token=admin_token, queue=queue),
    )
