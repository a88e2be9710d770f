"""Exactly-once sends through faults: dropped connections, dead owners, storage failures, Twilio's 429s.

Real runs and commands against the emulator, behind a proxy that forwards a create and then drops the connection
(the message exists, the caller never hears of it) or answers 429; rows a killed process leaves behind are written
as that process would have left them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from sandbox.errors import EgressDeniedError
from tests.emulator import MAGIC_SENDER, RECIPIENT, Emulator, running_emulator
from tests.hosts.flaky_twilio import flaky_twilio
from tests.servers import free_port
from zingyconn.database import create_engine
from zingyconn.egress.broker import EgressBroker
from zingyconn.egress.ledger import Claim, SendLedger
from zingyconn.egress.ratelimit import DEFAULT_MESSAGE_RATE, RedisRateLimiter
from zingyconn.errors import IdempotencyConflictError
from zingyconn.leases import LeaseKeeper
from zingyconn.runtime import Runtime
from zingyconn.schema import sent_messages
from zingyconn.twilio.emulator.state import EmulatorState
from zingyconn.twilio.profile import TwilioProfile

SEND_THREE = f"""
client = zingyConn.twilio("main")
sids = []
for body in event["bodies"]:
    sids.append(client.messages.create(to="{RECIPIENT}", from_="{MAGIC_SENDER}", body=body).sid)
return sids
"""
SEND_INPUTS = {"toPhone": RECIPIENT, "fromPhone": MAGIC_SENDER, "msg": "order shipped"}


def _runtime(tmp_path: Path, base_url: str) -> Runtime:
    return Runtime.from_env({"ZINGYCONN_DATA_DIR": str(tmp_path / "data"), "ZINGYCONN_TWILIO_BASE_URL": base_url})


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    """The emulator on the wall clock: reconciliation compares Twilio's ``date_created`` with our own time."""
    with running_emulator(EmulatorState()) as running:
        yield running


@pytest.fixture
def world(tmp_path: Path, emulator: Emulator) -> tuple[Runtime, Emulator]:
    """A runtime whose tenant "acme" has connection "main" on the emulator (requests go where each test says)."""
    with _runtime(tmp_path, emulator.base_url) as runtime:
        runtime.store.put("acme", "main", TwilioProfile(emulator.account_sid, emulator.api_key, emulator.api_secret))
    return _runtime(tmp_path, emulator.base_url), emulator


def _bodies(emulator: Emulator) -> list[str]:
    return sorted(message.body for message in emulator.state.messages(emulator.account_sid))


def _states(runtime: Runtime) -> dict[str, str]:
    with runtime.engine.connect() as conn:
        return {row.key: row.state for row in conn.execute(sa.select(sent_messages.c.key, sent_messages.c.state))}


def test_command_retried_after_a_dropped_connection_reconciles_instead_of_sending_again(
    world: tuple[Runtime, Emulator], tmp_path: Path
) -> None:
    """The connection drops after Twilio created the message: the retry with the same key finds it, sends nothing."""
    runtime, emulator = world
    runtime.close()
    with flaky_twilio(emulator.base_url, drop_creates=1) as proxy, _runtime(tmp_path, proxy.base_url) as flaky:
        with pytest.raises(EgressDeniedError, match="request failed"):
            flaky.command("acme", "main", "sendMessage", SEND_INPUTS, idempotency_key="order-7")
        assert _states(flaky) == {"command:order-7": "unknown"}  # not released: a retry must not double-send

        retried = flaky.command("acme", "main", "sendMessage", SEND_INPUTS, idempotency_key="order-7")
        again = flaky.command("acme", "main", "sendMessage", SEND_INPUTS, idempotency_key="order-7")

    assert proxy.dropped == 1
    assert _bodies(emulator) == ["order shipped"]
    assert isinstance(retried, dict)
    assert isinstance(again, dict)
    assert retried["sid"] == again["sid"] == emulator.state.messages(emulator.account_sid)[0].sid
    assert _states(flaky) == {"command:order-7": "sent"}


def test_run_retried_after_a_dropped_connection_sends_each_message_once(
    world: tuple[Runtime, Emulator], tmp_path: Path
) -> None:
    """A run whose second send lost its answer is retried: the first replays, the second reconciles, the third sends.

    The second and first bodies are the same, so the reconciliation must not take the first message for the second.
    """
    runtime, emulator = world
    runtime.close()
    event = {"bodies": ["same", "same", "third"]}
    with flaky_twilio(emulator.base_url, drop_creates=0) as proxy, _runtime(tmp_path, proxy.base_url) as flaky:
        first = flaky.run("acme", SEND_THREE, event={"bodies": ["same"]}, kind="task", idempotency_key="task-1")
        assert first.ok, first.error
        proxy.drops_left = 1
        failed = flaky.run("acme", SEND_THREE, event=event, kind="task", idempotency_key="task-1")
        assert not failed.ok
        assert failed.egress[-1]["retryable"] is True
        retried = flaky.run("acme", SEND_THREE, event=event, kind="task", idempotency_key="task-1")

    assert retried.ok, retried.error
    assert _bodies(emulator) == ["same", "same", "third"]
    assert len(set(retried.value)) == 3
    assert retried.value[0] == first.value[0]
    assert _states(flaky) == {"task-1:1": "sent", "task-1:2": "sent", "task-1:3": "sent"}


def _leave_sending(runtime: Runtime, key: str, *, sending_at: float, fingerprint: str) -> None:
    """Write the row a process killed mid-send leaves: ``sending``, under a lease that has run out."""
    row = {"tenant": "acme", "key": key, "state": "sending", "created_at": sending_at, "request_sha256": fingerprint,
           "owner": "gone:1:dead", "lease_until": time.time() - 1, "sending_at": sending_at}  # fmt: skip
    with runtime.engine.begin() as conn:
        conn.execute(sent_messages.insert().values(**row))


def _fingerprint_of(runtime: Runtime, key: str) -> str:
    with runtime.engine.connect() as conn:
        return str(conn.execute(sa.select(sent_messages.c.request_sha256).where(sent_messages.c.key == key)).scalar())


@pytest.mark.parametrize("reached_twilio", [True, False], ids=["reached", "never-left"])
def test_a_dead_senders_key_is_reconciled_with_twilio(world: tuple[Runtime, Emulator], reached_twilio: bool) -> None:
    """A key left ``sending`` by a killed worker is sent once, whether or not its request had reached Twilio.

    "reached": Twilio has the message and no key records it, so it is the dead worker's: recorded, not re-sent.
    "never-left": Twilio's only such message is another key's outcome, so it is not taken: the message is sent.
    """
    runtime, emulator = world
    with runtime:
        probe = runtime.run("acme", SEND_THREE, event={"bodies": ["probe"]}, kind="task", idempotency_key="probe")
        fingerprint = _fingerprint_of(runtime, "probe:1")
        if reached_twilio:  # the message is Twilio's, but no key knows it: what a worker killed mid-request leaves
            with runtime.engine.begin() as conn:
                conn.execute(sent_messages.delete())
        _leave_sending(runtime, "task-9:1", sending_at=time.time() - 5, fingerprint=fingerprint)
        result = runtime.run("acme", SEND_THREE, event={"bodies": ["probe"]}, kind="task", idempotency_key="task-9")

    assert probe.ok
    assert result.ok, result.error
    assert _bodies(emulator) == (["probe"] if reached_twilio else ["probe", "probe"])
    assert (result.value == probe.value) is reached_twilio
    assert _states(runtime)["task-9:1"] == "sent"


def test_a_live_owners_key_is_not_taken_over(tmp_path: Path) -> None:
    """While its owner lives (its lease renewed), a key is not taken over, however long the send takes."""
    keeper = LeaseKeeper(lease_seconds=0.5, every_seconds=60)
    ledger = SendLedger(create_engine(f"sqlite:///{tmp_path / 'ledger.db'}"), keeper=keeper)
    claim = ledger.claim("acme", "k", "fp")
    assert isinstance(claim, Claim)
    ledger.start(claim)
    for _ in range(3):
        time.sleep(0.3)
        keeper.renew_now()
        with pytest.raises(IdempotencyConflictError, match="being sent by another request"):
            ledger.claim("acme", "k", "fp")
    time.sleep(0.6)  # renewals stop (the owner died): the lease runs out and the key is taken over, to reconcile
    taken = ledger.claim("acme", "k", "fp")
    assert isinstance(taken, Claim)
    assert taken.reconcile_since is not None


def test_redis_down_before_the_send_frees_the_key(world: tuple[Runtime, Emulator]) -> None:
    """The rate limiter's Redis is unreachable: nothing is sent, the key is not left stuck, and a retry sends."""
    runtime, emulator = world
    with runtime:
        broker = runtime.broker
        working = broker.rate_limiter
        broker.rate_limiter = RedisRateLimiter(f"redis://127.0.0.1:{free_port()}/0")
        down = runtime.run("acme", SEND_THREE, event={"bodies": ["once"]}, kind="task", idempotency_key="t")
        broker.rate_limiter = working
        assert _states(runtime) == {}
        again = runtime.run("acme", SEND_THREE, event={"bodies": ["once"]}, kind="task", idempotency_key="t")

    assert down.error is not None
    assert "StorageUnavailable" in down.error.message
    assert down.egress[-1]["retryable"] is True
    assert again.ok, again.error
    assert _bodies(emulator) == ["once"]


def test_twilio_429_is_waited_out_with_retry_after(world: tuple[Runtime, Emulator], tmp_path: Path) -> None:
    """Twilio answers 429 twice: the send waits its Retry-After and goes out once, and the run succeeds."""
    runtime, emulator = world
    runtime.close()
    with (
        flaky_twilio(emulator.base_url, fail_creates=2, retry_after_seconds=0.2) as proxy,
        _runtime(tmp_path, proxy.base_url) as flaky,
    ):
        result = flaky.run("acme", SEND_THREE, event={"bodies": ["patient"]}, kind="task", idempotency_key="t")

    assert result.ok, result.error
    assert proxy.refused == 2
    assert _bodies(emulator) == ["patient"]


def test_a_run_waits_for_a_rate_limit_token_instead_of_failing(world: tuple[Runtime, Emulator]) -> None:
    """A tenant over its message rate waits for the next token (within the run's time) rather than failing."""
    runtime, emulator = world
    with runtime:
        broker: EgressBroker = runtime.broker
        broker.quotas["messages"] = type(DEFAULT_MESSAGE_RATE)(per_second=5.0, burst=1)
        started = time.monotonic()
        result = runtime.run("acme", SEND_THREE, event={"bodies": ["a", "b", "c"]}, kind="task")
        elapsed = time.monotonic() - started

    assert result.ok, result.error
    assert _bodies(emulator) == ["a", "b", "c"]
    assert elapsed >= 0.3  # two tokens waited for at 5 per second
