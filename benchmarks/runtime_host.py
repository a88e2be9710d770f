"""What :meth:`zingyconn.runtime.Runtime.run` costs the host per run, with the sandbox's work taken out.

Run from the repository root::

    python benchmarks/runtime_host.py                 # a few seconds
    python benchmarks/runtime_host.py --runs 5000 --rounds 5

*threads* threads (the server's worker threads) make webhook runs of one tenant's hook, each with the event a Twilio
SMS webhook gives (its 19 form fields and the request's headers), through a runtime whose sandbox answers at once
with a TwiML reply: what is left is the host's part of a run (admission, the egress session, the tenant's
connections, masking, the history row), the same in every isolation mode. The rows:

- ``sandbox alone``: the answering sandbox called directly, the baseline;
- ``run, not recorded``: ``Runtime.run(..., record=False)``;
- ``run, recorded``: ``Runtime.run`` with its history row written by the runtime's group writer to SQLite
  (``benchmarks/store_writes.py`` measures those writes alone).

Printed per row: this process's CPU per run (every thread, the writer's included; the median and the range of the
rounds) and runs per second. CPU, not wall time, is the figure: it moves less with the machine's other load.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sandbox.result import RunResult  # noqa: E402  # after the path set-up above
from sandbox.supervisor import Sandbox  # noqa: E402
from zingyconn.catalog import Hook  # noqa: E402
from zingyconn.config import Settings  # noqa: E402
from zingyconn.runtime import SNIPPET_ENVIRONMENT, Runtime  # noqa: E402
from zingyconn.secrets.keyring import Keyring  # noqa: E402
from zingyconn.twilio.profile import TwilioProfile  # noqa: E402

TENANT = "bench"
REPLY = '<?xml version="1.0" encoding="UTF-8"?><Response><Message>Thanks! You said: hi</Message></Response>'
FORM = {
    "ToCountry": "US", "ToState": "CA", "SmsMessageSid": "SM" + "a" * 32, "NumMedia": "0", "ToCity": "",
    "FromZip": "94105", "SmsSid": "SM" + "b" * 32, "FromState": "CA", "SmsStatus": "received", "FromCity": "OAKLAND",
    "Body": "hi", "FromCountry": "US", "To": "+15005550006", "ToZip": "", "NumSegments": "1",
    "MessageSid": "SM" + "c" * 32, "AccountSid": "AC" + "1" * 32, "From": "+15551234567", "ApiVersion": "2010-04-01",
}  # fmt: skip
HEADERS = {
    "host": "127.0.0.1:8000", "content-type": "application/x-www-form-urlencoded", "content-length": "400",
    "user-agent": "TwilioProxy/1.1", "x-twilio-signature": "x" * 28, "i-twilio-idempotency-token": "t" * 36,
}  # fmt: skip
EVENT: dict[str, Any] = {"hook": "reply", "method": "POST", "path": f"/hooks/{TENANT}/reply", "query": {}}
EVENT |= {"headers": HEADERS, "form": FORM, "json": None, "body": None}


class AnsweringSandbox(Sandbox):
    """A sandbox whose runs answer at once with :data:`REPLY` (after ``on_started``, as a child starting would)."""

    def __init__(self) -> None:
        super().__init__(environment=SNIPPET_ENVIRONMENT)

    def run(self, source: str, *, on_started: Callable[[], object] | None = None, **_: Any) -> RunResult:
        """Answer :data:`REPLY` (the snippet is not run)."""
        if on_started is not None:
            on_started()
        return RunResult(ok=True, value=REPLY, stdout="", logs=(), error=None, duration_ms=0.1)


def _cpu_per_run(call: Callable[[int], object], *, runs: int, threads: int) -> tuple[float, float]:
    """Make *runs* calls of *call* from *threads* threads; return this process's CPU ms per call and calls per s."""
    per_thread = runs // threads
    started = threading.Barrier(threads + 1)

    def work(offset: int) -> None:
        started.wait()
        for index in range(per_thread):
            call(offset + index)

    workers = [threading.Thread(target=work, args=(n * per_thread,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    started.wait()
    cpu, wall = time.process_time(), time.perf_counter()
    for worker in workers:
        worker.join()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return cpu / (per_thread * threads) * 1000, per_thread * threads / wall


def _offset(call: Callable[[int], object], offset: int, index: int) -> object:
    return call(offset + index)


def main() -> None:
    """Print the rows described in the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3200, help="Runs per round and row.")
    parser.add_argument("--rounds", type=int, default=3, help="Rounds of every row, in turn.")
    parser.add_argument("--threads", type=int, default=16, help="Threads making runs at once.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        settings = Settings(data_dir=Path(directory), db_url=f"sqlite:///{directory}/zingyconn.db")
        sandbox = AnsweringSandbox()
        with Runtime(settings, keyring=Keyring([("k1", bytes(range(32)))]), sandbox=sandbox) as runtime:
            runtime.store.put(TENANT, "main", TwilioProfile(account_sid="AC" + "1" * 32, secret="0123456789abcdef" * 2))
            hook = Hook(tenant=TENANT, name="reply", source="return 1", version=1)

            def run(index: int, *, record: bool) -> object:
                return runtime.run(
                    TENANT, hook.source, event=EVENT, kind="webhook", limits=hook.run_limits(), name=hook.name,
                    idempotency_key=f"webhook:reply:{index}", stored_event=EVENT, version=hook.version, record=record,
                )  # fmt: skip

            rows: dict[str, Callable[[int], object]] = {
                "sandbox alone": lambda index: sandbox.run(hook.source, event=EVENT, on_started=lambda: None),
                "run, not recorded": lambda index: run(index, record=False),
                "run, recorded": lambda index: run(index, record=True),
            }
            for call in rows.values():  # warm up: imports, caches, the tenant's slot files
                _cpu_per_run(call, runs=args.threads * 10, threads=args.threads)
            figures: dict[str, list[tuple[float, float]]] = {name: [] for name in rows}
            for round_ in range(args.rounds):
                for name, call in rows.items():
                    keyed = functools.partial(_offset, call, (round_ + 1) * 10_000_000)  # a new key every run
                    figures[name].append(_cpu_per_run(keyed, runs=args.runs, threads=args.threads))
    print(f"{args.threads} threads, {args.runs} runs per round, {args.rounds} rounds; CPU of this process per run")
    print(f"{'row':20} {'CPU ms/run':>10} {'range':>13} {'runs/s':>8}")
    for name, measured in figures.items():
        cpus = [cpu for cpu, _ in measured]
        rate = statistics.median(rate for _, rate in measured)
        print(f"{name:20} {statistics.median(cpus):10.3f} {min(cpus):6.3f}-{max(cpus):6.3f} {rate:8.0f}")


if __name__ == "__main__":
    main()
