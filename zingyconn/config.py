"""Configuration from the environment (docs/configuration.md); every variable is optional on one machine."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from sandbox.instance import InstancePolicy, default_max_per_key
from sandbox.limits import MIB
from zingyconn.errors import ConfigurationError
from zingyconn.retention import RetentionPolicy


@dataclass(frozen=True, slots=True)
class Settings:
    """Where zingyconn keeps its data and which services it talks to.

    Attributes:
        data_dir: ``ZINGYCONN_DATA_DIR``: embedded store, key file, queue and emulator state.
        db_url: ``ZINGYCONN_DB_URL``: SQLAlchemy URL of the store (SQLite in ``data_dir`` by default).
        keys: ``ZINGYCONN_KEYS``: ``id:base64key,...`` (first encrypts), or ``None`` for the key file.
        queue_url: ``ZINGYCONN_QUEUE_URL``: ``redis://...`` or ``None`` for the SQLite queue in ``data_dir``.
        twilio_base_url: ``ZINGYCONN_TWILIO_BASE_URL``: e.g. the emulator; ``None`` means the real Twilio API.
        admin_token: ``ZINGYCONN_ADMIN_TOKEN``: console login and admin API token, or ``None``.
        session_idle_seconds: ``ZINGYCONN_SESSION_IDLE_SECONDS``: a console session ends after this long unused.
        session_max_seconds: ``ZINGYCONN_SESSION_MAX_SECONDS``: ... and this long after sign-in in any case.
        logins_per_minute_per_client: ``ZINGYCONN_LOGINS_PER_MINUTE_PER_CLIENT``: console sign-in attempts allowed
            from one client address.
        logins_per_minute: ``ZINGYCONN_LOGINS_PER_MINUTE``: console sign-in attempts allowed from all clients.
        quotas: ``ZINGYCONN_QUOTA_<PRODUCT>=PER_SECOND/BURST``: per-tenant quotas of Twilio writes by product
            (``calls``, ``verifications``, ..., ``other_writes``) and of HTTP connection requests (``http``), as
            ``{product: (per_second, burst)}``.
        tenant_max_runs: ``ZINGYCONN_TENANT_MAX_RUNS``: runs of one tenant at once, every kind and process together.
        tenant_max_memory_mb: ``ZINGYCONN_TENANT_MAX_MEMORY_MB``: memory limits of one tenant's runs at once, added
            up (MiB).
        tenant_wait_seconds: ``ZINGYCONN_TENANT_WAIT_SECONDS``: how long a webhook, console run, CLI run or command
            waits for one of those to come free before it is refused (tasks never wait in a worker: they are put
            back).
        max_rate_wait_seconds: ``ZINGYCONN_MAX_RATE_WAIT_SECONDS``: how long a billable Twilio create waits for a token
            of the tenant's quota before it is refused (``0``: refused at once); also bounded by the run's time.
        retention: ``ZINGYCONN_RETAIN_*``, ``ZINGYCONN_HISTORY_QUOTA_MB``, ``ZINGYCONN_PURGE_EVERY``: how long
            records are kept (:class:`~zingyconn.retention.RetentionPolicy`).
        instances: ``ZINGYCONN_INSTANCE_MAX_RUNS``, ``ZINGYCONN_INSTANCE_IDLE_SECONDS``,
            ``ZINGYCONN_INSTANCES_PER_PROCESS``, ``ZINGYCONN_INSTANCES_PER_VERSION``,
            ``ZINGYCONN_INSTANCE_MEMORY_GROWTH_MB``: when the warm instances of one process are recycled and how many
            it keeps (:class:`~sandbox.instance.InstancePolicy`).
    """

    data_dir: Path
    db_url: str
    keys: str | None = None
    queue_url: str | None = None
    twilio_base_url: str | None = None
    admin_token: str | None = None
    session_idle_seconds: float = 30 * 60
    session_max_seconds: float = 8 * 3600
    logins_per_minute_per_client: int = 10
    logins_per_minute: int = 100
    quotas: Mapping[str, tuple[float, int]] = field(default_factory=dict)
    tenant_max_runs: int = 16
    tenant_max_memory_mb: int = 4096
    tenant_wait_seconds: float = 1.0
    max_rate_wait_seconds: float = 10.0
    retention: RetentionPolicy = field(default_factory=RetentionPolicy)
    instances: InstancePolicy = field(default_factory=InstancePolicy)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read settings from *environ* (``os.environ`` by default), applying the embedded defaults."""
        env = os.environ if environ is None else environ
        data_dir = Path(env.get("ZINGYCONN_DATA_DIR") or ".zingyconn").expanduser().absolute()
        db_url = env.get("ZINGYCONN_DB_URL") or f"sqlite:///{data_dir / 'zingyconn.db'}"
        if not db_url.startswith(("sqlite:", "postgresql")):
            raise ConfigurationError(
                f"ZINGYCONN_DB_URL {db_url.split('@')[-1]!r} is not supported; use sqlite:///PATH or "
                "postgresql+psycopg://USER:PASSWORD@HOST/DB."
            )
        queue_url = env.get("ZINGYCONN_QUEUE_URL") or None
        if queue_url is not None and not queue_url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigurationError(
                f"ZINGYCONN_QUEUE_URL must be a redis:// URL (or unset for the SQLite queue), got {queue_url!r}."
            )
        base_url = (env.get("ZINGYCONN_TWILIO_BASE_URL") or "").rstrip("/") or None
        if base_url is not None and not base_url.startswith(("http://", "https://")):
            raise ConfigurationError(
                f"ZINGYCONN_TWILIO_BASE_URL must start with http:// or https://, got {base_url!r}."
            )
        return cls(
            data_dir=data_dir,
            db_url=db_url,
            keys=env.get("ZINGYCONN_KEYS") or None,
            queue_url=queue_url,
            twilio_base_url=base_url,
            admin_token=env.get("ZINGYCONN_ADMIN_TOKEN") or None,
            session_idle_seconds=_positive(env, "ZINGYCONN_SESSION_IDLE_SECONDS", 30 * 60),
            session_max_seconds=_positive(env, "ZINGYCONN_SESSION_MAX_SECONDS", 8 * 3600),
            logins_per_minute_per_client=int(_positive(env, "ZINGYCONN_LOGINS_PER_MINUTE_PER_CLIENT", 10, whole=True)),
            logins_per_minute=int(_positive(env, "ZINGYCONN_LOGINS_PER_MINUTE", 100, whole=True)),
            quotas=_quotas(env),
            tenant_max_runs=int(_positive(env, "ZINGYCONN_TENANT_MAX_RUNS", 16, whole=True)),
            tenant_max_memory_mb=int(_positive(env, "ZINGYCONN_TENANT_MAX_MEMORY_MB", 4096, whole=True)),
            tenant_wait_seconds=_positive(env, "ZINGYCONN_TENANT_WAIT_SECONDS", 1.0, zero=True),
            max_rate_wait_seconds=_positive(env, "ZINGYCONN_MAX_RATE_WAIT_SECONDS", 10.0, zero=True),
            retention=RetentionPolicy.from_env(env),
            instances=_instance_policy(env),
        )


def _instance_policy(env: Mapping[str, str]) -> InstancePolicy:
    """Return the warm instances' :class:`InstancePolicy` from the ``ZINGYCONN_INSTANCE*`` variables of *env*."""
    default = InstancePolicy()

    def whole(name: str, value: int) -> int:
        return int(_positive(env, name, value, whole=True))

    return InstancePolicy(
        max_runs=whole("ZINGYCONN_INSTANCE_MAX_RUNS", default.max_runs),
        idle_seconds=_positive(env, "ZINGYCONN_INSTANCE_IDLE_SECONDS", default.idle_seconds),
        max_instances=whole("ZINGYCONN_INSTANCES_PER_PROCESS", default.max_instances),
        max_per_key=whole("ZINGYCONN_INSTANCES_PER_VERSION", default_max_per_key()),
        memory_high_water_bytes=MIB
        * whole("ZINGYCONN_INSTANCE_MEMORY_GROWTH_MB", default.memory_high_water_bytes // MIB),
    )


#: ``ZINGYCONN_QUOTA_<PRODUCT>``: which product (checked against the connection types' buckets when the broker is
#: built).
QUOTA_PREFIX = "ZINGYCONN_QUOTA_"
_QUOTA_VALUE = re.compile(r"\s*([0-9]*\.?[0-9]+)\s*/\s*([0-9]+)\s*")


def _quotas(env: Mapping[str, str]) -> dict[str, tuple[float, int]]:
    """Return the ``ZINGYCONN_QUOTA_*`` variables of *env* as ``{product: (per_second, burst)}``."""
    quotas: dict[str, tuple[float, int]] = {}
    for name, text in env.items():
        if not name.startswith(QUOTA_PREFIX) or not text.strip():
            continue
        match = _QUOTA_VALUE.fullmatch(text)
        if match is None or float(match[1]) <= 0 or int(match[2]) < 1:
            raise ConfigurationError(
                f"{name} must be PER_SECOND/BURST with both above 0 (e.g. 1/20: one a second, bursts of 20), "
                f"got {text!r}; unset it for the default."
            )
        quotas[name[len(QUOTA_PREFIX) :].lower()] = (float(match[1]), int(match[2]))
    return quotas


def _positive(env: Mapping[str, str], name: str, default: float, *, whole: bool = False, zero: bool = False) -> float:
    """Return env var *name* as a number above zero (or zero, when *zero* allows it; *default* when unset)."""
    text = (env.get(name) or "").strip()
    if not text:
        return default
    try:
        value = int(text) if whole else float(text)
    except ValueError:
        value = -1
    if not (value >= 0 if zero else value > 0) or value == float("inf"):
        kind = "a whole number" if whole else "a number"
        bound = "of 0 or more" if zero else "above 0"
        raise ConfigurationError(f"{name} must be {kind} {bound}, got {text!r}; unset it for the default {default:g}.")
    return value
