"""Errors of zingyconn (the host side: configuration, connections, commands, Twilio).

The tree::

    ZingyConnError (.exit_code, .http_status)
    ├── ConfigurationError               # bad environment variable, key file or database URL (exit 2)
    │   ├── KeyringError                 # a master key of the wrong length/encoding, unknown key id
    │   └── UnknownConnectionTypeError   # a stored connection of a type no installed package declares
    ├── ValidationError (.field)         # bad input, named by field, raised before any I/O (exit 2, HTTP 400)
    │   ├── InvalidConnectionError       # a connection profile that fails validation
    │   └── InvalidCommandError          # bad command input, raised before any HTTP request
    ├── NotFoundError                    # a hook, script, run or key that does not exist (exit 2, HTTP 404)
    │   └── ConnectionNotFoundError      # never lists the names that do exist
    ├── DecryptionError                  # opaque: never echoes key or ciphertext
    ├── FlowNotAllowedError              # a connection command from a page (browser) flow (HTTP 403)
    ├── IdempotencyConflictError         # an idempotency key in use by another send, or reused for other inputs
    ├── StorageUnavailableError          # the database or Redis is down, locked or full: retry later (exit 3, 503)
    ├── TaskQueueFullError               # a tenant's snippets or API queued too many tasks (HTTP 429)
    ├── TenantBusyError (.retry_after_seconds)   # a tenant's runs at once, or their memory, at its limit (429)
    ├── WorkerLostError                  # recorded on a task whose worker died on its last attempt
    ├── TwilioError (.status, .code, .more_info)   # what the Twilio API answered (HTTP 502)
    └── TwilioUnreachableError           # no answer from the Twilio API (connection refused, time-out; HTTP 503)

Classes kept beside the one module that raises them are part of the same tree::

    ZingyConnError
    ├── ValidationError
    │   └── TaskExistsError              # zingyconn.tasks.store: a task id is taken (a cron minute already fired)
    ├── SignatureError                   # zingyconn.hosts.signature: a webhook signature is missing or wrong (403)
    ├── PayloadTooLargeError             # zingyconn.hosts.middleware: a request body over the cap (413)
    ├── TooManyRequestsError             # zingyconn.hosts.middleware: a tenant's requests in flight (429)
    ├── UnauthorizedError                # zingyconn.hosts.api: no valid Bearer token (401)
    └── ServerStoppedError               # zingyconn.hosts.cli.demo: one of the demo's servers stopped

    sandbox.errors.EgressDeniedError     # what a snippet sees of a refused or failed request
    ├── RequestFailedError               # zingyconn.egress.outcome: no answer; the request never left
    │   ├── OutcomeUnknownError          # zingyconn.egress.outcome: it may have arrived, no answer came
    │   └── ReconcileError               # zingyconn.egress.broker: an earlier attempt of a send cannot be checked
    └── PlatformFaultError               # zingyconn.egress.broker: the platform's storage failed; nothing was sent

    OSError
    └── PortInUseError                   # zingyconn.hosts.cli.listening: a server's port is taken (exit 3)

Sandbox failures (compile errors, limits, crashes) are :mod:`sandbox.errors` classes and reach callers as data on
the run result. Errors are turned into exit codes and HTTP shapes only at the edges (``zingyconn.hosts``).
"""

from __future__ import annotations

from typing import Any, ClassVar


class ZingyConnError(Exception):
    """Base class of every zingyconn error."""

    exit_code: ClassVar[int] = 1
    http_status: ClassVar[int] = 500

    def to_json(self) -> dict[str, Any]:
        """Return the ``error`` object of the one JSON error shape."""
        return {"type": type(self).__name__, "message": str(self)}


class ConfigurationError(ZingyConnError):
    """Raised when configuration (environment, key file, database URL) is unusable."""

    exit_code: ClassVar[int] = 2


class KeyringError(ConfigurationError):
    """Raised when a master key is malformed or a key id is unknown."""


class UnknownConnectionTypeError(ConfigurationError):
    """Raised when a connection's type is not registered (:mod:`zingyconn.connection_types`)."""


class ValidationError(ZingyConnError):
    """Raised when an input is invalid; ``field`` names the offending input."""

    exit_code: ClassVar[int] = 2
    http_status: ClassVar[int] = 400

    def __init__(self, message: str, *, field: str | None = None) -> None:
        self.field = field
        super().__init__(message)

    def to_json(self) -> dict[str, Any]:
        """Return the error object, with the offending field."""
        return {**super().to_json(), "field": self.field}


class InvalidConnectionError(ValidationError):
    """Raised when a connection profile fails validation on save."""


class InvalidCommandError(ValidationError):
    """Raised when a connection command's input is invalid, before any HTTP request is made."""


class NotFoundError(ZingyConnError):
    """Raised when a named hook, script, run or key does not exist (on the command line: an input error, exit 2)."""

    exit_code: ClassVar[int] = 2
    http_status: ClassVar[int] = 404


class ConnectionNotFoundError(NotFoundError, LookupError):
    """Raised when a tenant has no connection of that name (the message never lists other names)."""


class DecryptionError(ZingyConnError):
    """Raised when a connection record cannot be decrypted: wrong key, tampered or moved record."""


class FlowNotAllowedError(ZingyConnError):
    """Raised when a connection command is requested from a page (browser) flow."""

    http_status: ClassVar[int] = 403


class IdempotencyConflictError(ZingyConnError):
    """Raised when a send with the same idempotency key is still in flight, or the key was used for another message."""

    http_status: ClassVar[int] = 409


class StorageUnavailableError(ZingyConnError):
    """Raised when the database, the queue or Redis cannot be read or written (down, locked, disk full).

    An environmental fault, not a bad request: nothing was half-done, and the same request later may succeed.
    """

    exit_code: ClassVar[int] = 3
    http_status: ClassVar[int] = 503


class TaskQueueFullError(ZingyConnError):
    """Raised when a tenant already has as many tasks waiting as its snippets and API may queue."""

    http_status: ClassVar[int] = 429


class TenantBusyError(ZingyConnError):
    """Raised when a tenant's runs at once, or their memory limits added up, leave no room for another run yet.

    Nothing ran; the same run may start once one of the tenant's runs ends (HTTP 429 with ``Retry-After``; a task
    waits and tries again without spending an attempt).
    """

    http_status: ClassVar[int] = 429
    retry_after_seconds: float = 1.0


class WorkerLostError(ZingyConnError):
    """Recorded on a task whose ``zingyconn worker`` died (killed, machine lost) during its last attempt."""


class TwilioError(ZingyConnError):
    """Raised when the Twilio API answered with an error; carries Twilio's code, status and help link."""

    http_status: ClassVar[int] = 502

    def __init__(self, message: str, *, status: int, code: int | None = None, more_info: str | None = None) -> None:
        self.status = status
        self.code = code
        self.more_info = more_info
        super().__init__(message)

    def to_json(self) -> dict[str, Any]:
        """Return the error object with Twilio's code, status and ``more_info``."""
        return {**super().to_json(), "status": self.status, "code": self.code, "more_info": self.more_info}


class TwilioUnreachableError(ZingyConnError):
    """Raised when the Twilio API could not be reached (connection refused, DNS, time-out): a retry may work."""

    http_status: ClassVar[int] = 503
