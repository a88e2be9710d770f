"""Turn run results, command outputs and errors into one shape the console's result panel renders."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from sandbox.errors import CompileError, SandboxError
from zingyconn.errors import ZingyConnError


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the result panel shows (every string already masked by the runtime)."""

    ok: bool
    value_json: str = ""
    stdout: str | None = None
    logs: list[dict[str, Any]] = field(default_factory=list)
    error: dict[str, Any] | None = None
    duration_ms: float | None = None
    egress: list[dict[str, Any]] = field(default_factory=list)
    run_id: str | None = None

    @property
    def error_line(self) -> int | None:
        """Return the snippet line the error points at, for highlighting."""
        line = (self.error or {}).get("line")
        return line if isinstance(line, int) else None


def run_outcome(result: Any) -> Outcome:
    """Build an outcome from a run result or a stored run record (both carry the same fields)."""
    error = getattr(result, "error", None)
    if error is not None and not isinstance(error, dict):
        error = error.to_json()
    ok = bool(getattr(result, "ok", getattr(result, "status", "") == "ok"))
    value = getattr(result, "value", getattr(result, "result", None))
    return Outcome(
        ok=ok and error is None,
        value_json=json.dumps(value, indent=2, ensure_ascii=False),
        stdout=getattr(result, "stdout", None) or "",
        logs=list(getattr(result, "logs", None) or []),
        error=error,
        duration_ms=getattr(result, "duration_ms", None),
        egress=list(getattr(result, "egress", None) or []),
        run_id=getattr(result, "run_id", None) or getattr(result, "id", None),
    )


def command_outcome(output: Any) -> Outcome:
    """Build an outcome from a command's output (a Message dict, a list, or ``{"success": ...}``)."""
    return Outcome(ok=True, value_json=json.dumps(output, indent=2, ensure_ascii=False))


def error_outcome(exc: ZingyConnError | SandboxError) -> Outcome:
    """Build an outcome from an error raised before or by a command."""
    if isinstance(exc, ZingyConnError):
        error = exc.to_json()
    elif isinstance(exc, CompileError):
        error = {"type": CompileError.__name__, "message": str(exc), "errors": list(exc.errors)}
    else:
        error = {"type": type(exc).__name__, "message": str(exc)}
    return Outcome(ok=False, error=error)
