"""The registry of connection types: what the store, the egress broker and the runtime know of a connection.

The core never names a connection type. A type is a :class:`ConnectionType` declared by a subpackage of
``zingyconn`` in its own ``connection_type.py`` module (as ``CONNECTION_TYPE``); :func:`connection_type` finds those
modules by path on first use and imports them, so the store seals, the broker authenticates and the runtime shows
a connection of any registered type without importing its package. Twilio (``zingyconn.twilio.connection_type``)
is the first. A type declares:

- ``load_profile``: its :class:`Profile` from the JSON sealed in the store (the profile validates itself, masks
  itself for display, lists its secret values for the run masker and gives the request's auth headers);
- ``writes`` and its quotas (``quota_rates``, ``quota_variable``, ``other_writes``): which writes the broker refuses
  and which per-tenant bucket a request spends;
- ``host_client``, ``commands`` and ``verify``: ``"module:name"`` paths of the host-side client factory, the
  connection commands and the credential check, imported only when used (they pull in the type's HTTP library);
- ``run_operations``: the channel operations the runtime answers with the run's own state (Twilio's access tokens);
- ``directory_context_key`` and ``snippet_modules``: what a child learns of the tenant's connections in its run
  context, and the modules a snippet may import to use them.
"""

from __future__ import annotations

import base64
import importlib
import pkgutil
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol

from sandbox.environment import JSON
from zingyconn.errors import UnknownConnectionTypeError

#: The module a subpackage of ``zingyconn`` declares its connection type in (as ``CONNECTION_TYPE``).
DECLARING_MODULE: Final = "connection_type"


class Profile(Protocol):
    """The credentials of one connection, as every connection type's profile offers them."""

    @property
    def connection_type(self) -> str:
        """The name of the profile's :class:`ConnectionType` (the store's ``type`` column)."""
        ...

    def validate(self) -> Profile:
        """Check every field and return the profile; raise InvalidConnectionError naming the first bad field."""
        ...

    def to_json(self) -> dict[str, JSON]:
        """Return the plaintext fields (only ever serialized into a sealed record)."""
        ...

    def masked(self) -> dict[str, str | None]:
        """Return the profile for display and for the store's unsealed summary: nothing that can be copied."""
        ...

    def secrets(self) -> tuple[str, ...]:
        """Every secret value of the profile, for masking run output."""
        ...

    def directory_entry(self) -> dict[str, JSON]:
        """Return what a run's child may know of the connection (never a secret)."""
        ...

    def auth_headers(self) -> list[tuple[str, str]]:
        """Return the headers that authenticate the broker's requests with this profile."""
        ...


class WriteRules(Protocol):
    """A connection type's rules for writes: which are refused, and which quota bucket a request spends."""

    def refuse(self, method: str, host: str, path: str) -> None:
        """Raise :class:`~sandbox.errors.EgressDeniedError` when *method* on *host* *path* is never allowed."""
        ...

    def product(self, method: str, host: str, path: str) -> str | None:
        """Return the per-tenant quota bucket the request spends, or ``None`` when it is free."""
        ...


@dataclass(frozen=True, slots=True)
class ConnectionType:
    """One kind of connection: its profile codec, egress rules and quotas, clients and commands.

    Attributes:
        name: The store's ``type`` column (``"twilio"``).
        load_profile: Rebuild a profile from its :meth:`Profile.to_json` output.
        writes: The deny list and quota classification of the type's writes.
        quota_rates: The per-tenant rate of every bucket of *writes* (``zingyconn.egress.ratelimit.Rate``), with
            the operator's ``{bucket: (per_second, burst)}`` applied (ConfigurationError for an unknown bucket).
        quota_variable: The environment variable that sets a bucket's quota.
        other_writes: The bucket a write spends when its own bucket has no rate.
        host_client: ``"module:function"`` building a host-side client from a channel and a connection name.
        commands: ``"module:Class"`` of the connection commands, built with the client factory and the ledger
            (``None``: the type offers none; only the channel type's are run).
        verify: ``"module:function"`` checking a profile's credentials against the API (``base_url``, ``what``).
        directory_context_key: The run context key of the tenant's connection directory (name -> entry).
        snippet_modules: Modules a snippet may import on top of the standard-library allowlist.
        run_operations: :attr:`~zingyconn.egress.protocol.Handler.RUN` operations the type answers, op name ->
            ``"module:Class"`` built once per run with the run's lookup of this type's connections
            (``name -> Profile | None``) and the run's egress session, whose ``answer(payload)`` answers each
            request.
    """

    name: str
    load_profile: Callable[[Mapping[str, Any]], Profile]
    writes: WriteRules
    quota_rates: Callable[[Mapping[str, tuple[float, int]]], Mapping[str, Any]]
    quota_variable: Callable[[str], str]
    other_writes: str
    host_client: str
    commands: str | None
    verify: str
    directory_context_key: str
    snippet_modules: tuple[str, ...] = ()
    run_operations: Mapping[str, str] = field(default_factory=dict)

    def load(self, part: str) -> Any:
        """Import and return the object a ``"module:name"`` part of this type names (its library loads on use)."""
        module, _, attribute = part.partition(":")
        return getattr(importlib.import_module(module), attribute)

    def check(self, profile: Profile, *, base_url: str | None, what: str) -> str:
        """Make one authenticated read with *profile* (its type's :attr:`verify`); return who answered.

        Raises:
            ZingyConnError: The credentials were refused or the API did not answer (the type's own errors).
        """
        answered: str = self.load(self.verify)(profile, base_url=base_url, what=what)
        return answered


_REGISTRY: dict[str, ConnectionType] = {}
_LOCK = threading.Lock()
_discovered = False


def register(declared: ConnectionType) -> ConnectionType:
    """Register *declared* under its name (replacing a type of the same name) and return it."""
    with _LOCK:
        _REGISTRY[declared.name] = declared
    return declared


def connection_type(name: str) -> ConnectionType:
    """Return the registered connection type *name*.

    Raises:
        UnknownConnectionTypeError: No package of this installation declares it.
    """
    found = _registered().get(name)
    if found is None:
        raise UnknownConnectionTypeError(
            f"No connection type named {name!r} is installed (known: {', '.join(sorted(_registered())) or 'none'}); "
            "install the version of zingyconn that stored this connection, or delete it."
        )
    return found


def connection_types() -> tuple[ConnectionType, ...]:
    """Return every registered connection type, by name."""
    return tuple(found for _, found in sorted(_registered().items()))


def snippet_modules() -> tuple[str, ...]:
    """Return the modules a snippet may import for its connections: every registered type's, in name order."""
    return tuple(module for declared in connection_types() for module in declared.snippet_modules)


def basic_auth(username: str, password: str) -> tuple[str, str]:
    """Return the ``Authorization`` header of HTTP Basic authentication (RFC 7617) for *username* and *password*."""
    return "Authorization", "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode("ascii")


def _registered() -> dict[str, ConnectionType]:
    """Return the registry, after importing every ``zingyconn.<package>.connection_type`` module once."""
    global _discovered
    if not _discovered:
        root = Path(__file__).resolve().parent
        # Listed from the file system, not imported: importing every subpackage would load the hosts and the tasks.
        packages = [info.name for info in pkgutil.iter_modules([str(root)]) if info.ispkg]
        for package in sorted(packages):
            if (root / package / f"{DECLARING_MODULE}.py").exists():
                declared = importlib.import_module(f"{__package__}.{package}.{DECLARING_MODULE}").CONNECTION_TYPE
                if not isinstance(declared, ConnectionType):
                    raise TypeError(f"{package}.{DECLARING_MODULE}.CONNECTION_TYPE is not a ConnectionType.")
                register(declared)
        _discovered = True
    return _REGISTRY
