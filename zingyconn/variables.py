"""Tenant variables: a tenant's plain, non-secret configuration values, read by snippets as ``zingyConn.vars``.

A variable is a name (``SUPPORT_NUMBER``) and a string value, stored per tenant in the ``tenant_vars`` table in
plain text: they are *not* for secrets (those belong in a sealed connection). Every run gets its tenant's whole set
in its context, so the set is capped in count and in bytes; the runtime reads it through :meth:`TenantVariables.cached`,
which reuses a read for a moment as the runtime does for connections.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from zingyconn.database import read_only
from zingyconn.errors import NotFoundError, ValidationError
from zingyconn.names import validate_name
from zingyconn.schema import tenant_vars

#: A variable's name: an environment-variable-like identifier, so it reads the same in a snippet, a shell and a URL.
VARIABLE_NAME_PATTERN: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")

#: Variables one tenant may have. Threat: every run of the tenant carries the whole set to its child, so an
#: unbounded set makes every run (and the host's cache) pay for it.
MAX_VARIABLES_PER_TENANT: Final = 100

#: Bytes of UTF-8 (names plus values) one tenant's variables may hold in all, for the same reason.
MAX_VARIABLE_BYTES_PER_TENANT: Final = 16 * 1024


@dataclass(frozen=True, slots=True)
class Variable:
    """One tenant variable.

    Attributes:
        tenant: Whose variable it is.
        name: Its name (:data:`VARIABLE_NAME_PATTERN`).
        value: Its value (plain text, not a secret).
        updated_at: When it was last set (Unix time).
    """

    tenant: str
    name: str
    value: str
    updated_at: float

    def to_json(self) -> dict[str, Any]:
        """Return the variable as ``zingyconn vars list --json`` prints it."""
        return {"name": self.name, "value": self.value, "updated_at": self.updated_at}


def validate_variable_name(name: object) -> str:
    """Return *name* if it is a valid variable name, else raise ValidationError naming the ``name`` field."""
    if not isinstance(name, str) or not VARIABLE_NAME_PATTERN.fullmatch(name):
        shown = name[:80] if isinstance(name, str) else name
        raise ValidationError(
            f"Variable name {shown!r} is not valid; use 1-64 letters, digits or '_', not starting with a digit "
            "(such as SUPPORT_NUMBER).",
            field="name",
        )
    return name


def _size_bytes(values: dict[str, str]) -> int:
    return sum(len(name.encode()) + len(value.encode()) for name, value in values.items())


class TenantVariables:
    """Set, list, unset and read the variables of each tenant; thread-safe.

    Args:
        engine: The store's database engine.
        clock: Time source (for ``updated_at`` and the cache).
    """

    def __init__(self, engine: Engine, *, clock: Callable[[], float] = time.time) -> None:
        self._engine = engine
        self._reader = read_only(engine)
        self._clock = clock
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, dict[str, str]]] = {}

    def set(self, tenant: str, name: str, value: str) -> Variable:
        """Create or replace variable *name* of *tenant*.

        Raises:
            ValidationError: A bad tenant or variable name, a value that is not a string, or a set that would
                exceed :data:`MAX_VARIABLES_PER_TENANT` or :data:`MAX_VARIABLE_BYTES_PER_TENANT` (nothing saved).
        """
        validate_name(tenant, field="tenant")
        validate_variable_name(name)
        if not isinstance(value, str):
            raise ValidationError(f"Variable {name!r} must be a string, not {type(value).__name__}.", field="value")
        if "\x00" in value:  # PostgreSQL text cannot hold it: refused here with a message, not by the database
            raise ValidationError(f"Variable {name!r} was not set: its value contains a NUL character.", field="value")
        now = self._clock()
        key = (tenant_vars.c.tenant == tenant) & (tenant_vars.c.name == name)
        with self._engine.begin() as conn:  # read-modify-write under the write lock: the caps hold across processes
            if conn.dialect.name == "postgresql":
                # SQLite's BEGIN IMMEDIATE is the lock there; PostgreSQL's READ COMMITTED lets writers of new names
                # each count the same rows and all insert (a tenant past its cap), so they queue per tenant here.
                conn.execute(
                    sa.text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"), {"key": _lock_key(tenant)}
                )
            values = {
                row.name: row.value
                for row in conn.execute(sa.select(tenant_vars).where(tenant_vars.c.tenant == tenant))
            }
            exists = name in values
            values[name] = value
            _check_caps(tenant, name, values)
            if exists:
                conn.execute(tenant_vars.update().where(key).values(value=value, updated_at=now))
            else:
                conn.execute(tenant_vars.insert().values(tenant=tenant, name=name, value=value, updated_at=now))
        self._forget(tenant)
        return Variable(tenant=tenant, name=name, value=value, updated_at=now)

    def list(self, tenant: str) -> list[Variable]:
        """Return the variables of *tenant*, by name."""
        validate_name(tenant, field="tenant")
        query = sa.select(tenant_vars).where(tenant_vars.c.tenant == tenant).order_by(tenant_vars.c.name)
        with self._reader.connect() as conn:
            return [
                Variable(tenant=row.tenant, name=row.name, value=row.value, updated_at=row.updated_at)
                for row in conn.execute(query)
            ]

    def unset(self, tenant: str, name: str) -> None:
        """Delete variable *name* of *tenant*.

        Raises:
            NotFoundError: The tenant has no such variable.
        """
        validate_name(tenant, field="tenant")
        with self._engine.begin() as conn:
            deleted = conn.execute(
                tenant_vars.delete().where(tenant_vars.c.tenant == tenant, tenant_vars.c.name == name)
            ).rowcount
        self._forget(tenant)
        if not deleted:
            raise NotFoundError(f"Tenant {tenant!r} has no variable named {name!r}.")

    def values(self, tenant: str) -> dict[str, str]:
        """Return *tenant*'s variables as name -> value (read now)."""
        return {variable.name: variable.value for variable in self.list(tenant)}

    def cached(self, tenant: str, *, max_age_seconds: float) -> dict[str, str]:
        """Return *tenant*'s variables, reusing a read made through this object at most *max_age_seconds* ago.

        A change made through this object applies at once; one made elsewhere within *max_age_seconds*.
        """
        now = self._clock()
        with self._lock:
            entry = self._cache.get(tenant)
        if entry is not None and now - entry[0] <= max_age_seconds:
            return dict(entry[1])
        values = self.values(tenant)
        with self._lock:
            self._cache[tenant] = (now, values)
        return dict(values)

    def _forget(self, tenant: str) -> None:
        with self._lock:
            self._cache.pop(tenant, None)


def _lock_key(tenant: str) -> str:
    """Return the name of *tenant*'s variables lock (PostgreSQL advisory locks are keyed by its hash)."""
    return f"zingyconn.tenant_vars:{tenant}"


def _check_caps(tenant: str, name: str, values: dict[str, str]) -> None:
    if len(values) > MAX_VARIABLES_PER_TENANT:
        raise ValidationError(
            f"Variable {name!r} was not set: tenant {tenant!r} would have {len(values)} variables, over the limit of "
            f"{MAX_VARIABLES_PER_TENANT} (MAX_VARIABLES_PER_TENANT); unset some first.",
            field="name",
        )
    size = _size_bytes(values)
    if size > MAX_VARIABLE_BYTES_PER_TENANT:
        raise ValidationError(
            f"Variable {name!r} was not set: tenant {tenant!r}'s variables would hold {size} bytes, over the limit of "
            f"{MAX_VARIABLE_BYTES_PER_TENANT} (MAX_VARIABLE_BYTES_PER_TENANT); shorten or unset some first.",
            field="value",
        )
