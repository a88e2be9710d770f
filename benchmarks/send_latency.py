"""Latency of sending one SMS from a snippet through ``zingyConn.twilio``, beside a plain twilio client in the host.

Usage::

    python benchmarks/send_latency.py [--runs 500] [--json]

The emulator runs as its own process (``zingyconn emulator``) on 127.0.0.1, so it does not share the host's GIL.
Three ways to send the same message are timed, end to end as their caller sees them:

- ``plain``: ``twilio.rest.Client`` with a requests-based HTTP client, in the host (the baseline);
- ``broker``: a host-side brokered client (allowlist, credentials from the encrypted store, rate limiter, records);
- ``snippet``: ``Runtime.run`` of a snippet calling ``zingyConn.twilio("main").messages.create``: compile cache,
  a fresh sandbox child, the channel round trips, the broker, masking and the run-history insert;
- ``floor``: ``Runtime.run`` of ``return 1`` (sandbox child + masking + history insert, no Twilio), for attribution.

Target: snippet p50 <= 5 ms. The report gives the snippet/plain p50 ratio (the cost of the walls).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.servers import free_port, wait_for_port  # noqa: E402  # after the path set-up above

ACCOUNT_SID = "AC" + "0" * 32
AUTH_TOKEN = "0123456789abcdef" * 2
MASTER_KEY = bytes(range(32))
SENDER = "+15005550006"
RECIPIENT = "+15551234567"
SNIPPET = f"""
c = zingyConn.twilio("main")
return c.messages.create(to="{RECIPIENT}", from_="{SENDER}", body="benchmark").sid
"""


@contextmanager
def emulator_process() -> Iterator[str]:
    """Run ``zingyconn emulator`` on a free loopback port; yield its base URL."""
    port = free_port()
    command = [sys.executable, "-m", "zingyconn.hosts.cli", "emulator", "--port", str(port)]
    command += ["--account", f"{ACCOUNT_SID}:{AUTH_TOKEN}"]
    if not (ROOT / "zingyconn" / "hosts" / "cli" / "__main__.py").exists():
        command = [sys.executable, "-c", "from zingyconn.hosts.cli import main; main()", *command[3:]]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


def measure(send: Callable[[], object], runs: int, *, warmup: int = 30, pause_seconds: float = 0.0) -> dict[str, float]:
    """Call *send* *warmup* + *runs* times; return min/p10/p50/p90/p99/mean of the timed runs in milliseconds.

    With *pause_seconds*, runs arrive that far apart (requests arriving independently: the sandbox has its spare
    child forked and warm again); without, they run back to back (saturation: each run also waits for a fork).

    On a busy machine p50 mostly measures the scheduler (each run hands off between 3 processes several times);
    min and p10 show what the path costs when it is not kept waiting for a CPU.
    """
    for _ in range(warmup):
        send()
    samples = []
    for _ in range(runs):
        if pause_seconds:
            time.sleep(pause_seconds)
        started = time.perf_counter()
        send()
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return {
        "min_ms": samples[0],
        "p10_ms": samples[int(0.10 * (len(samples) - 1))],
        "p50_ms": statistics.median(samples),
        "p90_ms": samples[int(0.90 * (len(samples) - 1))],
        "p99_ms": samples[int(0.99 * (len(samples) - 1))],
        "mean_ms": statistics.fmean(samples),
    }


def main() -> None:
    """Run the three measurements and print a table (or JSON)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--json", action="store_true", help="Print the figures as one JSON object.")
    parser.add_argument(
        "--pause", type=float, default=0.02, help="Seconds between runs (0: back to back, i.e. saturation)."
    )
    args = parser.parse_args()

    from twilio.rest import Client

    from zingyconn.config import Settings
    from zingyconn.egress.ratelimit import Rate
    from zingyconn.runtime import Runtime
    from zingyconn.secrets.keyring import encode_key
    from zingyconn.twilio.emulator import EmulatorHttpClient
    from zingyconn.twilio.profile import TwilioProfile

    with emulator_process() as base_url, tempfile.TemporaryDirectory() as data_dir:
        env = {
            "ZINGYCONN_DATA_DIR": data_dir,
            "ZINGYCONN_KEYS": encode_key("k1", MASTER_KEY),
            "ZINGYCONN_TWILIO_BASE_URL": base_url,
        }
        # The rate limiter stays on (its SQL cost is part of the path) with a bucket the benchmark cannot drain.
        with Runtime(Settings.from_env(env), message_rate=Rate(per_second=1e6, burst=10**6)) as runtime:
            runtime.store.put("bench", "main", TwilioProfile(account_sid=ACCOUNT_SID, secret=AUTH_TOKEN))
            plain = Client(ACCOUNT_SID, AUTH_TOKEN, http_client=EmulatorHttpClient(base_url))
            brokered = runtime.broker.client(
                "bench", "main", session=runtime.broker.session("bench", max_requests=10**6)
            )

            def send_plain() -> object:
                return plain.messages.create(to=RECIPIENT, from_=SENDER, body="benchmark").sid

            def send_brokered() -> object:
                return brokered.messages.create(to=RECIPIENT, from_=SENDER, body="benchmark").sid

            def send_snippet() -> object:
                result = runtime.run("bench", SNIPPET, kind="webhook")
                if not result.ok:
                    raise RuntimeError(f"The benchmark snippet failed: {result.error}")
                return result.value

            def trivial_run() -> object:
                return runtime.run("bench", "return 1", kind="webhook").value

            figures = {
                "plain": measure(send_plain, args.runs, pause_seconds=args.pause),
                "broker": measure(send_brokered, args.runs, pause_seconds=args.pause),
                "snippet": measure(send_snippet, args.runs, pause_seconds=args.pause),
                "floor": measure(trivial_run, args.runs, pause_seconds=args.pause),
            }
            figures["ratio_p50_snippet_to_plain"] = {"x": figures["snippet"]["p50_ms"] / figures["plain"]["p50_ms"]}
            hardening = dict(runtime.sandbox.hardening)
    load = os.getloadavg()[0]
    if args.json:
        context = {
            "runs": args.runs,
            "pause_seconds": args.pause,
            "cpus": os.cpu_count(),
            "load": load,
            "hardening": hardening,
        }
        print(json.dumps({**context, **figures}, indent=2))
        return
    spacing = f"{args.pause * 1000:g} ms apart" if args.pause else "back to back"
    print(f"send one SMS to the emulator, {args.runs} runs each ({spacing}), {os.cpu_count()} CPUs, load {load:.1f}")
    print(f"{'path':<8} {'min ms':>8} {'p10 ms':>8} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'mean ms':>8}")
    for name in ("plain", "broker", "snippet", "floor"):
        row = figures[name]
        columns = ("min_ms", "p10_ms", "p50_ms", "p90_ms", "p99_ms", "mean_ms")
        print(f"{name:<8} " + " ".join(f"{row[column]:8.2f}" for column in columns))
    ratio = figures["ratio_p50_snippet_to_plain"]["x"]
    print(f"snippet/plain p50 ratio: {ratio:.2f}x  (target: snippet p50 <= 5 ms)")


if __name__ == "__main__":
    main()
