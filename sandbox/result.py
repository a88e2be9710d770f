"""What a run returns: JSON primitives only, so it can cross the process boundary safely."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sandbox.environment import JSON
from sandbox.errors import ERRORS_BY_NAME, CompileError, SandboxError, SnippetError

#: A :mod:`sandbox.errors` class (spelled here because ``RunError.type``, a field, shadows ``type`` in its body).
ErrorClass = type[SandboxError]


@dataclass(frozen=True, slots=True)
class RunError:
    """Why a run failed, as data.

    Attributes:
        type: Name of the :mod:`sandbox.errors` class (``"SnippetError"``, ``"TimeLimitExceededError"``, ...).
        message: Human-readable message; for ``SnippetError`` the snippet's exception message.
        line: Line of the snippet where it failed, when known.
        exception: For ``SnippetError``: the snippet's exception type name (``"ZeroDivisionError"``).
        traceback: For ``SnippetError``: a traceback that shows snippet lines only.
        errors: For ``CompileError``: every ``Line N: ...`` message.
    """

    type: str
    message: str
    line: int | None = None
    exception: str | None = None
    traceback: str | None = None
    errors: tuple[str, ...] = ()

    def to_json(self) -> dict[str, JSON]:
        """Return the error as a JSON object (the ``error`` of ``zingyconn run --json``)."""
        data: dict[str, JSON] = {"type": self.type, "message": self.message, "line": self.line}
        if self.exception is not None:
            data["exception"] = self.exception
        if self.traceback is not None:
            data["traceback"] = self.traceback
        if self.errors:
            data["errors"] = list(self.errors)
        return data

    @classmethod
    def of(cls, error_class: ErrorClass, message: str, **details: Any) -> RunError:
        """Return the error of *error_class* (its ``type`` is the class's name, never spelled by hand)."""
        return cls(type=error_class.__name__, message=message, **details)

    def is_a(self, error_class: ErrorClass) -> bool:
        """Return True when this is an error of *error_class* exactly (compared by class, never by a spelled name)."""
        return self.type == error_class.__name__

    @classmethod
    def from_json(cls, data: dict[str, JSON]) -> RunError:
        """Rebuild an error from :meth:`to_json` output."""
        return cls(
            type=str(data["type"]),
            message=str(data["message"]),
            line=data.get("line"),
            exception=data.get("exception"),
            traceback=data.get("traceback"),
            errors=tuple(data.get("errors") or ()),
        )

    def to_exception(self) -> SandboxError:
        """Return the :mod:`sandbox.errors` exception this error stands for."""
        if self.type == CompileError.__name__:
            return CompileError(self.errors or (self.message,))
        if self.type == SnippetError.__name__:
            return SnippetError(
                self.message,
                exception=self.exception or "Exception",
                lineno=self.line,
                snippet_traceback=self.traceback,
            )
        return ERRORS_BY_NAME.get(self.type, SandboxError)(self.message)


@dataclass(frozen=True, slots=True)
class RunResult:
    """The outcome of one snippet run.

    Attributes:
        ok: True when the snippet returned normally and every limit held.
        value: The returned value as JSON primitives (``None`` when the run failed).
        stdout: Captured ``print`` output (capped).
        logs: Captured ``log.*`` records: ``{"level", "message", "fields"}``.
        error: Why the run failed, or ``None``.
        duration_ms: Wall time of the run as the host measured it.
        egress: One record per request the snippet made to the host (filled by hosts that broker egress).
    """

    ok: bool
    value: JSON = None
    stdout: str = ""
    logs: tuple[dict[str, JSON], ...] = ()
    error: RunError | None = None
    duration_ms: float = 0.0
    egress: tuple[dict[str, JSON], ...] = field(default=())

    def raise_for_error(self) -> JSON:
        """Return ``value`` when the run succeeded, else raise the matching :mod:`sandbox.errors` exception."""
        if self.error is not None:
            raise self.error.to_exception()
        return self.value

    def to_json(self) -> dict[str, JSON]:
        """Return the result as the JSON object that ``zingyconn run --json`` prints."""
        return {
            "ok": self.ok,
            "result": self.value,
            "stdout": self.stdout,
            "logs": list(self.logs),
            "error": None if self.error is None else self.error.to_json(),
            "duration_ms": round(self.duration_ms, 3),
            "egress": list(self.egress),
        }
