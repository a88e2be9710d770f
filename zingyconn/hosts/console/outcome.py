"""Turn run results, command outputs and errors into one shape the console's result panel renders."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

from sandbox.errors import CompileError, SandboxError
from zingyconn.errors import ZingyConnError
from zingyconn.hosts.content import is_twiml, pretty_twiml

#: How the result panel shows a result: TwiML as indented XML, other text as is, anything else as JSON.
ValueKind = Literal["twiml", "json", "text"]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the result panel shows (every string already masked by the runtime)."""

    ok: bool
    value_json: str = ""
    value: Any = None
    value_kind: ValueKind = "json"
    value_text: str = ""
    stdout: str | None = None
    logs: list[dict[str, Any]] = field(default_factory=list)
    error: dict[str, Any] | None = None
    duration_ms: float | None = None
    egress: list[dict[str, Any]] = field(default_factory=list)
    run_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        """Return the outcome as the runner's in-place answer carries it."""
        return {
            "ok": self.ok,
            "value": self.value,
            "value_kind": self.value_kind,
            "value_text": self.value_text,
            "stdout": self.stdout,
            "logs": self.logs,
            "error": self.error,
            "error_line": self.error_line,
            "duration_ms": self.duration_ms,
            "egress": self.egress,
            "run_id": self.run_id,
        }

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
    value_json = json.dumps(value, indent=2, ensure_ascii=False)
    kind, text = describe_value(value, value_json)
    return Outcome(
        ok=ok and error is None,
        value_json=value_json,
        value=value,
        value_kind=kind,
        value_text=text,
        stdout=getattr(result, "stdout", None) or "",
        logs=list(getattr(result, "logs", None) or []),
        error=error,
        duration_ms=getattr(result, "duration_ms", None),
        egress=list(getattr(result, "egress", None) or []),
        run_id=getattr(result, "run_id", None) or getattr(result, "id", None),
    )


def describe_value(value: Any, value_json: str) -> tuple[ValueKind, str]:
    """Return how to show a run's result *value* and its text: TwiML indented, a string as is, else its JSON."""
    if isinstance(value, str):
        return ("twiml", pretty_twiml(value)) if is_twiml(value) else ("text", value)
    return "json", value_json


def command_outcome(output: Any) -> Outcome:
    """Build an outcome from a command's output (a Message dict, a list, or ``{"success": ...}``)."""
    value_json = json.dumps(output, indent=2, ensure_ascii=False)
    return Outcome(ok=True, value_json=value_json, value=output, value_text=value_json)


def error_outcome(exc: ZingyConnError | SandboxError) -> Outcome:
    """Build an outcome from an error raised before or by a command."""
    if isinstance(exc, ZingyConnError):
        error = exc.to_json()
    elif isinstance(exc, CompileError):
        error = {"type": CompileError.__name__, "message": str(exc), "errors": list(exc.errors)}
    else:
        error = {"type": type(exc).__name__, "message": str(exc)}
    return Outcome(ok=False, error=error)
