"""Fault runs of message delivery: real worker processes, a real emulator, and faults injected from outside.

Each run queues tasks that send numbered messages (``RUN-TASK-N``) through ``zingyconn worker`` processes and the
emulator, injects one kind of fault while they run, waits for every task to finish, and counts in the emulator's
own message list what was sent: every expected body exactly once means none lost and none doubled. Used by the
fault tests (few repetitions) and by ``benchmarks/delivery_faults.py`` (many, for the figures).

Faults: SIGKILL of a worker at a random moment (then a restart); Redis or PostgreSQL killed (``kill -9`` /
``pg_ctl -m immediate``) and restarted a few seconds later (Redis empty: it has no persistence here); a proxy in
front of Twilio that forwards creates and drops the connection before the answer.
"""

from __future__ import annotations

import collections
import contextlib
import os
import random
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import sqlalchemy as sa

from tests.emulator import MAGIC_SENDER, RECIPIENT, Emulator, running_emulator
from tests.hosts.flaky_twilio import flaky_twilio
from tests.servers import free_port, start_worker, wait_for_port
from zingyconn.runtime import Runtime
from zingyconn.schema import tasks
from zingyconn.tasks.queue import TaskQueue
from zingyconn.twilio.emulator.state import EmulatorState
from zingyconn.twilio.profile import TwilioProfile

#: The task every run queues: send ``count`` numbered messages, one per create.
SEND_MANY = f"""
client = zingyConn.twilio("main")
for n in range(event["count"]):
    client.messages.create(to="{RECIPIENT}", from_="{MAGIC_SENDER}", body=event["prefix"] + "-" + str(n))
return event["count"]
"""
#: Room for 50 creates plus the client's own lookup (the default is 50 requests per run).
TASK_LIMITS: Final = {"egress_requests": 200}


@dataclass(frozen=True, slots=True)
class Tally:
    """What one fault run sent, counted in the emulator.

    Attributes:
        expected: Messages the tasks were to send.
        sent: Distinct expected messages the emulator received.
        duplicated: Messages received more than once (each extra copy counts).
        lost: Expected messages never received.
        failed_tasks: Tasks that did not end ``succeeded``.
    """

    expected: int
    sent: int
    duplicated: int
    lost: int
    failed_tasks: int

    def __add__(self, other: Tally) -> Tally:
        return Tally(*(a + b for a, b in zip(self._values(), other._values(), strict=True)))

    def _values(self) -> tuple[int, int, int, int, int]:
        return (self.expected, self.sent, self.duplicated, self.lost, self.failed_tasks)


class RedisProcess:
    """A redis-server on a fixed loopback port that can be killed and started again (empty: no persistence)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._root = Path(tempfile.mkdtemp(prefix="zingyconn-fault-redis-"))
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server") or "redis-server"
        arguments = ["--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no"]
        self._process = subprocess.Popen(
            [binary, *arguments, "--dir", str(self._root)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_for_port(self.port)

    def kill(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait(timeout=10)
            self._process = None

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self._root, ignore_errors=True)


class PostgresProcess:
    """A throw-away PostgreSQL cluster on a fixed loopback port that can be killed and started again."""

    def __init__(self) -> None:
        self.port = free_port()
        self._root = Path(tempfile.mkdtemp(prefix="zingyconn-fault-pg-"))
        self._prefix: list[str] = []
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            shutil.chown(self._root, user="postgres", group="postgres")
            self._prefix = ["runuser", "-u", "postgres", "--"]
        self.url = f"postgresql+psycopg://zingy@127.0.0.1:{self.port}/postgres"
        subprocess.run(
            [*self._prefix, _pg_tool("initdb"), "-D", str(self._root / "data"), "-U", "zingy", "-A", "trust"],
            check=True,
            capture_output=True,
        )

    def start(self) -> None:
        options = f"-h 127.0.0.1 -p {self.port} -k {self._root} -c fsync=off -c max_connections=200"
        data, log = str(self._root / "data"), str(self._root / "log")
        subprocess.run(
            [*self._prefix, _pg_tool("pg_ctl"), "-D", data, "-o", options, "-l", log, "-w", "start"],
            check=True,
            capture_output=True,
        )

    def kill(self) -> None:
        subprocess.run(
            [*self._prefix, _pg_tool("pg_ctl"), "-D", str(self._root / "data"), "-m", "immediate", "stop"],
            capture_output=True,
            check=False,
        )

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self._root, ignore_errors=True)


def _pg_tool(name: str) -> str:
    found = shutil.which(name)
    if found is not None:
        return found
    versions = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    return str(versions[-1]) if versions else name


@dataclass
class Stack:
    """Where a fault run's processes meet: the environment of the workers, the emulator, and the store."""

    env: dict[str, str]
    emulator: Emulator
    runtime: Runtime
    queue: TaskQueue
    redis: RedisProcess | None
    postgres: PostgresProcess | None


@contextlib.contextmanager
def stack(*, backend: str, through_proxy_drops: int = 0, data_dir: Path | None = None) -> Iterator[Stack]:
    """Start the emulator (on the wall clock), the store (SQLite, or PostgreSQL + Redis) and a script "send_many".

    *data_dir* is where the store (SQLite) and queue live: a new temporary directory by default.
    """
    root = Path(tempfile.mkdtemp(prefix="zingyconn-fault-"))
    redis = postgres = None
    try:
        env = {"ZINGYCONN_DATA_DIR": str(data_dir or root / "data")}
        if backend == "postgres+redis":
            redis, postgres = RedisProcess(), PostgresProcess()
            redis.start()
            postgres.start()
            env |= {"ZINGYCONN_QUEUE_URL": redis.url, "ZINGYCONN_DB_URL": postgres.url}
        with (
            running_emulator(EmulatorState()) as emulator,
            flaky_twilio(emulator.base_url, drop_creates=through_proxy_drops) as proxy,
        ):
            env["ZINGYCONN_TWILIO_BASE_URL"] = proxy.base_url
            with Runtime.from_env(env) as runtime:
                profile = TwilioProfile(emulator.account_sid, emulator.api_key, emulator.api_secret)
                runtime.store.put("acme", "main", profile)
                queue = TaskQueue.from_settings(runtime.settings, engine=runtime.engine)
                queue.catalog.put_script("acme", "send_many", SEND_MANY, limits=TASK_LIMITS)
                yield Stack(env, emulator, runtime, queue, redis, postgres)
    finally:
        for server in (redis, postgres):
            if server is not None:
                server.close()
        shutil.rmtree(root, ignore_errors=True)


def stop_worker(process: subprocess.Popen[bytes], sig: signal.Signals = signal.SIGTERM) -> None:
    """Signal the worker's whole process group and reap it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)
    process.wait(timeout=120)


def wait_finished(stack: Stack, ids: list[str], *, timeout_seconds: float) -> None:
    """Wait until every task in *ids* is ``succeeded`` or ``failed`` (tolerating a store that is restarting)."""
    deadline = time.monotonic() + timeout_seconds
    done = tasks.c.state.in_(("succeeded", "failed"))
    query = sa.select(sa.func.count()).select_from(tasks).where(tasks.c.id.in_(ids), done)
    while time.monotonic() < deadline:
        with contextlib.suppress(sa.exc.DBAPIError), stack.runtime.engine.connect() as conn:
            if conn.execute(query).scalar() == len(ids):
                return
        time.sleep(0.2)
    with stack.runtime.engine.connect() as conn:
        rows = conn.execute(sa.select(tasks).where(tasks.c.id.in_(ids), ~done)).mappings().all()
    unfinished = [(row["id"][:8], row["state"], row["attempts"], row["dispatched_at"], row["owner"]) for row in rows]
    raise AssertionError(f"Tasks did not finish within {timeout_seconds} s; unfinished: {unfinished}.")


def tally(stack: Stack, prefixes: dict[str, int], ids: list[str]) -> Tally:
    """Count the emulator's messages against what each prefix (task) was to send."""
    bodies = collections.Counter(message.body for message in stack.emulator.state.messages(stack.emulator.account_sid))
    expected = sent = duplicated = 0
    for prefix, count in prefixes.items():
        for n in range(count):
            copies = bodies[f"{prefix}-{n}"]
            expected += 1
            sent += copies > 0
            duplicated += max(0, copies - 1)
    with stack.runtime.engine.connect() as conn:
        succeeded = conn.execute(
            sa.select(sa.func.count()).select_from(tasks).where(tasks.c.id.in_(ids), tasks.c.state == "succeeded")
        ).scalar()
    return Tally(expected, sent, duplicated, expected - sent, len(ids) - int(succeeded or 0))


def enqueue(stack: Stack, prefix: str, count: int) -> str:
    """Queue one task sending *count* messages named ``PREFIX-N``; return its id."""
    return stack.queue.enqueue("acme", "send_many", {"prefix": prefix, "count": count}, source="cli").id


def sent_with(stack: Stack, prefix: str) -> int:
    """Count the emulator's messages whose body starts with ``PREFIX-``."""
    messages = stack.emulator.state.messages(stack.emulator.account_sid)
    return sum(1 for message in messages if message.body.startswith(prefix + "-"))


def worker_kills(stack: Stack, *, runs: int, messages: int, rand: random.Random) -> Tally:
    """Per run: one task of *messages* sends; SIGKILL the worker after a random number of them, restart it."""
    total = Tally(0, 0, 0, 0, 0)
    for run in range(runs):
        prefix = f"kill{run}"
        task_id = enqueue(stack, prefix, messages)
        worker = start_worker(stack.env)
        try:
            point = rand.randint(1, messages - 1)  # a random point of the task: after this many sends reached Twilio
            deadline = time.monotonic() + 120
            while sent_with(stack, prefix) < point and time.monotonic() < deadline:
                time.sleep(0.005)
            stop_worker(worker, signal.SIGKILL)
            worker = start_worker(stack.env)
            wait_finished(stack, [task_id], timeout_seconds=180)
        finally:
            stop_worker(worker)
        total += tally(stack, {prefix: messages}, [task_id])
    return total


def outage(
    stack: Stack,
    *,
    name: str,
    tasks_count: int,
    messages: int,
    kill: Callable[[], None],
    restart: Callable[[], None],
    kill_after_seconds: float = 1.5,
) -> Tally:
    """A burst of tasks on two workers; *kill* a backing service mid-burst and *restart* it 3 s later.

    *name* sets the message bodies apart from other runs' on the same emulator. *kill_after_seconds* counts from
    the workers' start; ``0`` kills the service before they have opened it.
    """
    prefixes = {f"{name}{n}": messages for n in range(tasks_count)}
    ids = [enqueue(stack, prefix, messages) for prefix in prefixes]
    if not kill_after_seconds:
        kill()
    workers = [start_worker(stack.env, workers=2) for _ in range(2)]
    try:
        time.sleep(kill_after_seconds)
        if kill_after_seconds:
            kill()
        time.sleep(3.0)
        restart()
        wait_finished(stack, ids, timeout_seconds=240)
    finally:
        for worker in workers:
            stop_worker(worker)
    return tally(stack, prefixes, ids)


def dropped_answers(stack: Stack, *, tasks_count: int, messages: int) -> Tally:
    """Tasks whose creates go through the proxy, which drops the answers of the first creates after forwarding."""
    prefixes = {f"drop{n}": messages for n in range(tasks_count)}
    ids = [enqueue(stack, prefix, messages) for prefix in prefixes]
    worker = start_worker(stack.env, workers=2)
    try:
        wait_finished(stack, ids, timeout_seconds=180)
    finally:
        stop_worker(worker)
    return tally(stack, prefixes, ids)
