"""Per-tenant token buckets, shared by every process that uses the same store (or the same Redis).

The egress broker takes one token per message a tenant creates, so a snippet stuck in a ``messages.create`` loop
(or many webhooks at once) cannot turn into an SMS flood billed to the platform. Two interchangeable
implementations: :class:`SqlRateLimiter` on the ``rate_buckets`` table (the embedded default) and
:class:`RedisRateLimiter` (when ``ZINGYCONN_QUEUE_URL`` is ``redis://``), which does the refill-and-take in one
Lua script so concurrent consumers on many machines never over-spend a bucket.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from zingyconn.database import upsert_insert
from zingyconn.extras import require_extra
from zingyconn.schema import rate_buckets

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class Rate:
    """A token bucket's shape.

    Attributes:
        per_second: Tokens added per second (the sustained rate).
        burst: Bucket capacity (how many may be taken at once after a quiet period).
    """

    per_second: float
    burst: int

    def __post_init__(self) -> None:
        if self.per_second <= 0 or self.burst < 1:
            raise ValueError(f"A rate needs per_second > 0 and burst >= 1, got {self.per_second!r}/{self.burst!r}.")

    def refill(self, tokens: float, elapsed_seconds: float) -> float:
        """Return the tokens in a bucket that held *tokens* *elapsed_seconds* ago."""
        return min(float(self.burst), tokens + max(0.0, elapsed_seconds) * self.per_second)


#: Default message-creation rate per tenant: bursts of 100, then 10 per second (Twilio's own long-code limit is
#: about 1 message per second per number, so this only stops runaway loops, not real traffic spread over numbers).
DEFAULT_MESSAGE_RATE: Final = Rate(per_second=10.0, burst=100)


class RateLimiter(Protocol):
    """Take tokens from per-tenant buckets."""

    def acquire(self, tenant: str, bucket: str, rate: Rate) -> bool:
        """Take one token from *tenant*'s *bucket*; return False (and take nothing) when it is empty."""
        ...


class SharedRateLimiter(RateLimiter, Protocol):
    """A limiter whose buckets live outside the process (a database, Redis) and can hand out several tokens."""

    def take(self, tenant: str, bucket: str, rate: Rate, tokens: int, *, keep: int = 0) -> int:
        """Take *tokens* if the bucket holds them plus *keep* more, else one if it holds one; return how many."""
        ...


class SqlRateLimiter:
    """Token buckets in the ``rate_buckets`` table; one short transaction per token."""

    def __init__(self, engine: Engine, *, clock: Clock = time.time) -> None:
        self._engine = engine
        self._clock = clock
        self._statement = _take_statement(upsert_insert(engine))

    def acquire(self, tenant: str, bucket: str, rate: Rate) -> bool:
        """Take one token from *tenant*'s *bucket*; return False (and take nothing) when it is empty.

        One ``INSERT ... ON CONFLICT DO UPDATE ... WHERE ... RETURNING`` statement: a new bucket starts full minus
        this token; an existing one is refilled for the time since its last update and loses one token only when
        it has one (else the WHERE leaves the row alone and nothing is returned). The database serialises
        concurrent takers on the row, so no token is spent twice.
        """
        return self.take(tenant, bucket, rate, 1) == 1

    def take(self, tenant: str, bucket: str, rate: Rate, tokens: int, *, keep: int = 0) -> int:
        """Take *tokens* if the bucket holds them plus *keep* more, else one if it holds one; return how many."""
        several = _several(rate, tokens, keep)
        for count, need in (several, (1, 1)) if several[0] > 1 else ((1, 1),):
            parameters = {
                "tenant": tenant,
                "bucket": bucket,
                "now": self._clock(),
                "per_second": float(rate.per_second),
                "burst": float(rate.burst),
                "count": float(count),
                "need": float(need),
            }
            with self._engine.begin() as conn:
                if conn.execute(self._statement, parameters).first() is not None:
                    return count
        return 0


def _several(rate: Rate, tokens: int, keep: int) -> tuple[int, int]:
    """Return ``(count, need)`` of a take: *tokens* capped at the burst, and the tokens the bucket must hold for it."""
    count = max(1, min(tokens, rate.burst))
    return (count, min(count + keep, rate.burst)) if count > 1 else (1, 1)


def _take_statement(insert: Any) -> Any:
    # Built once with bound parameters (SQLAlchemy then reuses the compiled SQL): building it per call cost more
    # than running it.
    table = rate_buckets
    now, burst = sa.bindparam("now", type_=sa.Float), sa.bindparam("burst", type_=sa.Float)
    count, need = sa.bindparam("count", type_=sa.Float), sa.bindparam("need", type_=sa.Float)
    refilled = table.c.tokens + (now - table.c.updated_at) * sa.bindparam("per_second", type_=sa.Float)
    capped = sa.case((refilled > burst, burst), else_=refilled)
    return (
        insert(table)
        .values(tenant=sa.bindparam("tenant"), bucket=sa.bindparam("bucket"), tokens=burst - count, updated_at=now)
        .on_conflict_do_update(
            index_elements=[table.c.tenant, table.c.bucket],
            set_={
                "tokens": capped - count,
                "updated_at": sa.case((table.c.updated_at > now, table.c.updated_at), else_=now),
            },
            where=capped >= need,
        )
        .returning(table.c.tokens)
    )


# KEYS[1] = bucket key; ARGV = per_second, burst, now, count, need. Refill; take count tokens if there are need
# (>= count) of them, else one if there is one; store; expire the key once it would be full again anyway; return
# how many were taken. Atomic on the Redis server, so many consumers share one bucket exactly.
_TAKE_SCRIPT: Final = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local count = tonumber(ARGV[4])
local need = tonumber(ARGV[5])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil or ts == nil then
  tokens = burst
  ts = now
end
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local allowed = 0
if tokens >= need then
  allowed = count
elseif tokens >= 1 then
  allowed = 1
end
tokens = tokens - allowed
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(math.max(now, ts)))
redis.call('EXPIRE', KEYS[1], math.ceil(burst / rate) + 1)
return allowed
"""


class RedisRateLimiter:
    """Token buckets in Redis hashes (``zingyconn:rate:{tenant}:{bucket}``), refilled and taken by a Lua script."""

    def __init__(self, url: str, *, clock: Clock = time.time, prefix: str = "zingyconn:rate") -> None:
        require_extra("redis", needed_for="The Redis rate limiter (ZINGYCONN_QUEUE_URL)")
        import redis  # imported here: the embedded default never needs the client (an extra, zingyconn[redis])

        self._redis: Any = redis.Redis.from_url(url)
        self._script: Any = self._redis.register_script(_TAKE_SCRIPT)
        self._clock = clock
        self._prefix = prefix

    def acquire(self, tenant: str, bucket: str, rate: Rate) -> bool:
        """Take one token from *tenant*'s *bucket*; return False (and take nothing) when it is empty."""
        return self.take(tenant, bucket, rate, 1) == 1

    def take(self, tenant: str, bucket: str, rate: Rate, tokens: int, *, keep: int = 0) -> int:
        """Take *tokens* if the bucket holds them plus *keep* more, else one if it holds one; return how many."""
        key = f"{self._prefix}:{len(tenant)}:{tenant}:{bucket}"  # length prefix: tenant "a:b" never aliases "a"
        count, need = _several(rate, tokens, keep)
        return int(self._script(keys=[key], args=[rate.per_second, rate.burst, self._clock(), count, need]))

    def close(self) -> None:
        """Close the Redis connection pool."""
        self._redis.close()


#: Tokens a process takes from a shared bucket at once (at most 1/LEASE_BURST_FRACTION of its burst) and how long
#: it may spend them locally. Each take is a write to the database (or a Redis round trip) on the send's critical
#: path; a lease pays it once per few messages. Threat bound: the shared bucket is never overspent (leased tokens
#: are taken from it first); a process holds at most LEASE_TOKENS unspent tokens per thread that found no lease at
#: the same moment (their leases are added together), lost when the lease expires.
LEASE_TOKENS: Final = 5
LEASE_SECONDS: Final = 1.0
LEASE_BURST_FRACTION: Final = 20
#: A lease is only taken while the bucket holds this many leases' worth beyond it; nearer empty, every process takes
#: one token per message, so the last tokens of a bucket are not stranded in another process's lease.
LEASE_KEEP_FACTOR: Final = 3


@dataclass(slots=True)
class _Lease:
    tokens: int
    expires_at: float


class LeasedRateLimiter:
    """A shared limiter whose tokens this process takes a few at a time and spends locally (thread-safe).

    A lease of ``min(LEASE_TOKENS, burst // LEASE_BURST_FRACTION)`` tokens (at least one) is taken from *shared*
    when the last one is spent or expired, and only while the bucket holds LEASE_KEEP_FACTOR leases more; with a
    small burst, or a nearly empty bucket, every message takes its own token.
    """

    def __init__(
        self,
        shared: SharedRateLimiter,
        *,
        lease_tokens: int = LEASE_TOKENS,
        lease_seconds: float = LEASE_SECONDS,
        clock: Clock = time.monotonic,
    ) -> None:
        self.shared = shared
        self._lease_tokens = lease_tokens
        self._lease_seconds = lease_seconds
        self._clock = clock
        self._leases: dict[tuple[str, str], _Lease] = {}
        self._lock = threading.Lock()

    def acquire(self, tenant: str, bucket: str, rate: Rate) -> bool:
        """Take one token from *tenant*'s *bucket*; return False (and take nothing) when it is empty."""
        key = (tenant, bucket)
        with self._lock:
            lease = self._leases.get(key)
            if lease is not None and lease.tokens > 0 and self._clock() < lease.expires_at:
                lease.tokens -= 1
                return True
        wanted = max(1, min(self._lease_tokens, rate.burst // LEASE_BURST_FRACTION))
        taken = self.shared.take(tenant, bucket, rate, wanted, keep=LEASE_KEEP_FACTOR * wanted)
        if taken == 0:
            return False
        with self._lock:
            now = self._clock()
            lease = self._leases.get(key)
            if lease is not None and lease.tokens > 0 and now < lease.expires_at:
                # Another thread found no lease too and took one meanwhile: add to it. Replacing it would throw its
                # unspent tokens away, a few per overlap, which the tenant paid for from its bucket.
                lease.tokens += taken - 1
                lease.expires_at = now + self._lease_seconds
                return True
            if len(self._leases) >= LEASED_BUCKETS:
                self._leases.clear()  # unspent tokens are given up, never overspent
            self._leases[key] = _Lease(tokens=taken - 1, expires_at=now + self._lease_seconds)
        return True

    def close(self) -> None:
        """Close the shared limiter's connections, if it has any."""
        close = getattr(self.shared, "close", None)
        if close is not None:
            close()


#: Buckets one LeasedRateLimiter keeps leases for; past this it starts over.
LEASED_BUCKETS: Final = 4096


def rate_limiter_for(engine: Engine, queue_url: str | None, *, clock: Clock = time.time) -> RateLimiter:
    """Return a leased limiter on Redis when *queue_url* is a Redis URL, else on the SQL table of *engine*."""
    if queue_url and queue_url.startswith(("redis://", "rediss://", "unix://")):
        return LeasedRateLimiter(RedisRateLimiter(queue_url, clock=clock))
    return LeasedRateLimiter(SqlRateLimiter(engine, clock=clock))
