"""Run a compiled snippet in THIS process: the step the isolated child performs after it forks.

In-process execution is for tests and trusted tooling only. It has the language wall (policy, guards, façades)
but none of the others: no CPU, memory or wall-clock limit, no private process, nothing stops a snippet that loops
forever or exhausts memory, and process-wide state (e.g. ``random.seed``) is shared with later runs. Tenants' code
runs through ``sandbox.Sandbox``, which calls :func:`execute` inside a fresh child process.
"""

from __future__ import annotations

import contextlib
import decimal
import functools
import json
import time
import traceback
import types
from collections.abc import Callable
from typing import Any, Final

from sandbox.builtins import GUARDED_TYPES, SAFE_BUILTINS, make_builtins, unavailable_message
from sandbox.compiler import ENTRY_POINT, SNIPPET_FILENAME, CompiledSnippet, compile_snippet
from sandbox.environment import JSON, Environment
from sandbox.errors import (
    CompileError,
    InvalidResultTextError,
    MemoryLimitExceededError,
    OutputLimitExceededError,
    SandboxError,
    SnippetError,
)
from sandbox.guards import (
    HiddenAttributes,
    build_class,
    guarded_apply,
    guarded_getitem,
    guarded_iter,
    guarded_iter_unpack_sequence,
    guarded_unpack_sequence,
    make_class_of,
    make_getattr,
    make_inplacevar,
    make_match,
    make_writable,
    make_write,
    make_write_private,
)
from sandbox.imports import Importer
from sandbox.limits import Limits
from sandbox.output import RunOutput, SnippetLog, to_json_value
from sandbox.phase import PhaseMarker
from sandbox.result import RunError, RunResult
from sandbox.stdlib import RunGuards

__all__ = ["build_globals", "execute", "run_source"]

#: ``__name__`` of snippet code (classes get it as ``__module__``).
SNIPPET_MODULE: Final = "snippet"
#: Identical consecutive frames shown before the rest are counted, as Python's own tracebacks do: deep recursion
#: would otherwise fill the traceback (and the error budget) with one line repeated a thousand times.
REPEATED_FRAMES_SHOWN: Final = 3

WriteGuard = Callable[[object], object]
InPlaceGuard = Callable[[str, Any, Any], Any]

#: The classes among the builtins (``int``, ``Exception``, ...), which ``type(x)`` hands out as themselves.
_BUILTIN_CLASSES: Final = frozenset(value for value in SAFE_BUILTINS.values() if isinstance(value, type))


def build_globals(environment: Environment, *, output: RunOutput, event: JSON) -> dict[str, Any]:
    """Return fresh globals for one run: guards, builtins, importer, environment names, ``event`` and ``log``."""
    bad = [name for name in environment.names if not name.isidentifier() or name.startswith("_")]
    if bad:
        raise ValueError(f"Environment names must be identifiers not starting with '_': {sorted(bad)}.")
    hidden = HiddenAttributes.shared(environment.hidden_attributes)
    write, write_private, inplacevar, writable = _write_guards(hidden)
    importer_box: list[Importer] = []

    def known_classes() -> frozenset[type]:
        named = {value for value in environment.names.values() if isinstance(value, type)}
        return importer_box[0].public_classes() | named | _BUILTIN_CLASSES

    class_of = make_class_of(GUARDED_TYPES, known_classes)
    getattr_guard = make_getattr(hidden, class_of, writable)
    importer = Importer(environment.modules, guards=RunGuards(getattr_guard, write, inplacevar))
    importer_box.append(importer)
    builtins = make_builtins(
        getattr_guard=getattr_guard, importer=importer, write=write, write_private=write_private, class_of=class_of
    )
    namespace: dict[str, Any] = {
        "__builtins__": builtins,
        "__name__": SNIPPET_MODULE,
        "__metaclass__": build_class,
        "_getattr_": getattr_guard,
        "_getitem_": guarded_getitem,
        "_write_": write,
        "_write_private_": write_private,
        "_getiter_": guarded_iter,
        "_iter_unpack_sequence_": guarded_iter_unpack_sequence,
        "_unpack_sequence_": guarded_unpack_sequence,
        "_inplacevar_": inplacevar,
        "_print_": output.print_collector,
        "_apply_": guarded_apply,
        "_match_": make_match(getattr_guard),
    }
    namespace.update(environment.names)
    namespace["event"] = event
    namespace["log"] = SnippetLog(output)
    return namespace


@functools.lru_cache(maxsize=4)
def _write_guards(hidden: HiddenAttributes) -> tuple[WriteGuard, WriteGuard, InPlaceGuard, Callable[[object], bool]]:
    """Return ``_write_``, ``_write_private_``, ``_inplacevar_`` and the writable test for *hidden*, made once.

    Shared by every run of an environment: they depend only on *hidden* (shared itself, see
    :meth:`HiddenAttributes.shared`) and on which classes snippets made (process-wide), they hold no run's object,
    and no snippet can reach them (names starting with ``_`` are refused at compile time, closures at run time).
    """
    write = make_write(hidden)
    return write, make_write_private(hidden), make_inplacevar(write), make_writable(hidden)


def execute(
    compiled: CompiledSnippet,
    *,
    event: JSON,
    environment: Environment,
    limits: Limits,
    phase: PhaseMarker | None = None,
    fresh_event: bool = False,
) -> RunResult:
    """Run *compiled* in this process and return its result as JSON-only data (never raises for snippet faults).

    *phase*, in an isolated child, is marked as snippet code while the snippet runs and its value is converted (a
    fault signal then is the snippet's: see :mod:`sandbox.phase`). *event* is copied through JSON, so the snippet
    can neither change the caller's object nor get a non-JSON one; *fresh_event* says it was decoded from JSON
    for this run alone (a child's order) and is handed over as it is. In-process use is for tests and trusted
    tooling only: see the module docstring.
    """
    started = time.perf_counter()
    output = RunOutput(limits.output_bytes)
    namespace = build_globals(environment, output=output, event=event if fresh_event else json.loads(json.dumps(event)))
    value: JSON = None
    error: RunError | None = None
    with phase.snippet() if phase is not None else contextlib.nullcontext():
        try:
            with decimal.localcontext(decimal.Context()):  # the run's own decimal context (guards._DECIMAL_TYPES)
                exec(compiled.code, namespace)  # noqa: S102  # policy-checked code with guarded globals
                returned = namespace[ENTRY_POINT]()
        except MemoryError:
            error = RunError.of(MemoryLimitExceededError, message="The run ran out of memory.")
        except Exception as exc:  # noqa: BLE001  # every snippet fault becomes data on the result
            error = _error_for(exc, compiled)
        except (SystemExit, GeneratorExit) as exc:  # unreachable from snippets; if one got out, it is still data
            error = _error_for(exc, compiled)
        else:
            value, error = _convert_result(returned, environment, limits)
    if output.exceeded and (error is None or error.type != OutputLimitExceededError.__name__):
        error = RunError.of(OutputLimitExceededError, message=f"The run's output exceeded {limits.output_bytes} bytes.")
    duration_ms = (time.perf_counter() - started) * 1000
    return RunResult(
        ok=error is None,
        value=value if error is None else None,
        stdout=output.stdout,
        logs=tuple(output.logs),
        error=error,
        duration_ms=duration_ms,
    )


def run_source(
    source: str, *, event: JSON = None, environment: Environment | None = None, limits: Limits | None = None
) -> RunResult:
    """Compile and run *source* in this process; a CompileError becomes the result's error (trusted use only)."""
    started = time.perf_counter()
    try:
        compiled = compile_snippet(source)
    except CompileError as exc:
        first_line = _line_of(exc.errors[0]) if exc.errors else None
        error = RunError.of(CompileError, message=str(exc), line=first_line, errors=exc.errors)
        return RunResult(ok=False, error=error, duration_ms=(time.perf_counter() - started) * 1000)
    return execute(compiled, event=event, environment=environment or Environment(), limits=limits or Limits())


def _line_of(message: str) -> int | None:
    head = message.partition(":")[0]
    number = head.removeprefix("Line ").strip()
    return int(number) if number.isdigit() else None


def _convert_result(returned: object, environment: Environment, limits: Limits) -> tuple[JSON, RunError | None]:
    """Convert the return value to JSON primitives within ``limits.result_bytes``; failures are the snippet's."""
    try:
        return to_json_value(returned, converters=environment.result_converters, max_bytes=limits.result_bytes), None
    except OutputLimitExceededError as exc:
        return None, RunError.of(OutputLimitExceededError, message=str(exc))
    except InvalidResultTextError as exc:
        return None, RunError.of(type(exc), str(exc), exception="UnicodeEncodeError")
    except MemoryError:
        return None, RunError.of(MemoryLimitExceededError, message="The run ran out of memory.")
    except Exception as exc:  # noqa: BLE001  # a converter or an odd value: report, never crash
        message = f"The snippet's return value cannot be sent back: {_message(exc)}"
        return None, RunError.of(SnippetError, message=message, exception=type(exc).__name__)


def _message(exc: BaseException) -> str:
    """``str(exc)``, which may run a snippet's own ``__str__``: a failure there must not crash the runner.

    A NameError for a builtin snippets do not have says why and what to write instead (found by ``exc.name``).
    """
    if type(exc) is NameError and isinstance(exc.name, str):
        plain = unavailable_message(exc.name)
        if plain is not None:
            return plain
    try:
        return str(exc)
    except Exception:  # noqa: BLE001  # any failure of the snippet's __str__
        return f"<{type(exc).__name__} whose message could not be printed>"


def _error_for(exc: BaseException, compiled: CompiledSnippet) -> RunError:
    frames = _snippet_frames(exc.__traceback__)
    line = frames[-1].lineno if frames else None
    if isinstance(exc, SandboxError) and not isinstance(exc, CompileError):
        return RunError(type=type(exc).__name__, message=_message(exc), line=line)
    return RunError.of(
        SnippetError,
        message=_message(exc),
        line=line,
        exception=type(exc).__name__,
        traceback=_format_traceback(exc, frames, compiled.source),
    )


def _snippet_frames(tb: types.TracebackType | None) -> list[traceback.FrameSummary]:
    return [frame for frame in traceback.extract_tb(tb) if frame.filename == SNIPPET_FILENAME]


def _format_traceback(exc: BaseException, frames: list[traceback.FrameSummary], source: str) -> str:
    """A traceback of snippet lines only: host frames (guards, façades' internals) are never shown."""
    lines = source.splitlines()
    parts = ["Traceback (most recent call last, snippet lines only):"]
    previous, repeats = None, 0
    for frame in frames:
        name = "<snippet>" if frame.name == ENTRY_POINT else frame.name
        entry = [f"  Line {frame.lineno}, in {name}"]
        if frame.lineno and 0 < frame.lineno <= len(lines):
            entry.append(f"    {lines[frame.lineno - 1].strip()}")
        repeats = repeats + 1 if entry == previous else 0
        previous = entry
        if repeats < REPEATED_FRAMES_SHOWN:
            parts.extend(entry)
            continue
        if repeats > REPEATED_FRAMES_SHOWN:
            parts.pop()  # the count line of this run so far
        parts.append(f"  [Previous line repeated {repeats - REPEATED_FRAMES_SHOWN + 1} more times]")
    message = _message(exc)
    parts.append(f"{type(exc).__name__}: {message}" if message else type(exc).__name__)
    return "\n".join(parts)
