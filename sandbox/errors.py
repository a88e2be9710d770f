"""Errors of the generic snippet sandbox.

Every failure a snippet can cause is reported as data (a :class:`~sandbox.result.RunError` on the
:class:`~sandbox.result.RunResult`); these classes are what :meth:`RunResult.raise_for_error` raises and what
host code catches. The tree::

    SandboxError
    ├── CompileError (.errors)          # the policy rejected the source; every "Line N: ..." at once
    ├── SnippetError (.exception, .lineno, .snippet_traceback)
    │   ├── InvalidResultTextError      # the return value holds text that is not valid Unicode (a lone surrogate)
    │   └── SnippetCrashedError         # the child died of a fault signal while it ran snippet code (C recursion)
    ├── EgressDeniedError               # a request to the host was refused (host allowlist, SSRF, bad op)
    ├── LimitExceededError
    │   ├── TimeLimitExceededError      # wall clock or CPU seconds
    │   ├── MemoryLimitExceededError
    │   ├── OutputLimitExceededError    # stdout/logs or result over their byte caps
    │   └── QuotaExceededError          # per-run request cap or per-tenant rate limit
    └── WorkerCrashedError              # our bug or the machine, never the user's

The channel between host and child (``sandbox.channel``) fails with the standard library's kinds, which the
supervisor turns into the classes above::

    ConnectionError
    └── ChannelClosedError              # the other end closed the channel (for the host: the child died)
    ValueError
    └── FrameTooLargeError              # a frame announces more bytes than the reader accepts

Inside a snippet, guards raise ordinary Python exceptions (``AttributeError``, ``ImportError``, ``TypeError``)
that the snippet may catch; ``EgressDeniedError`` and ``QuotaExceededError`` are also raised inside the snippet
(they are ``Exception`` subclasses) so a snippet can handle a refused call.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import ClassVar, Final


class SandboxError(Exception):
    """Base class of every error the sandbox reports."""

    #: Exit code the CLI uses when this error ends a run (1: the snippet failed; see subclasses).
    exit_code: ClassVar[int] = 1


class CompileError(SandboxError):
    """Raised when the policy rejects a snippet; ``errors`` holds every ``Line N: ...`` message.

    Attributes:
        errors: Every message, in RestrictedPython's ``Line N: ...`` form.
        lineno: The line of the first error that names one (``None`` when none does), so that callers never
            parse the messages.
    """

    def __init__(self, errors: Sequence[str]) -> None:
        self.errors: tuple[str, ...] = tuple(errors)
        self.lineno = _first_line(self.errors)
        super().__init__("\n".join(self.errors))


#: RestrictedPython's (and our compiler's) message prefix naming the offending line: the one place it is read.
_LINE_PREFIX: Final = re.compile(r"Line (\d+):")


def _first_line(errors: Sequence[str]) -> int | None:
    for message in errors:
        if (match := _LINE_PREFIX.match(message)) is not None:
            return int(match.group(1))
    return None


class SnippetError(SandboxError):
    """Raised when the snippet itself raised; carries the exception type name and the snippet line."""

    def __init__(
        self,
        message: str,
        *,
        exception: str = "Exception",
        lineno: int | None = None,
        snippet_traceback: str | None = None,
    ) -> None:
        self.exception = exception
        self.lineno = lineno
        self.snippet_traceback = snippet_traceback
        super().__init__(message)


class InvalidResultTextError(SnippetError):
    """Raised when the snippet returned text that is not valid Unicode (a lone surrogate such as ``'\\ud800'``).

    JSON, and every store behind it, can only carry valid Unicode; the snippet made the string, so the run failed
    by its own doing (never retried as a platform fault).
    """


class SnippetCrashedError(SnippetError):
    """Raised when the run's process died of a fault signal (SIGSEGV, SIGBUS, ...) while it ran snippet code.

    Snippet code can crash the interpreter on its own: C-level recursion that Python does not count (``hash()``,
    ``==`` or ``repr()`` of a tuple nested a million deep) overflows the C stack. The child marks when it enters
    and leaves snippet code (:mod:`sandbox.phase`), so a fault there is the snippet's; one anywhere else (setting
    up, encoding the reply) stays a :class:`WorkerCrashedError`.
    """


class EgressDeniedError(SandboxError):
    """Raised when the host refuses a request made by the snippet (not allowlisted, private address, ...)."""


class LimitExceededError(SandboxError):
    """Base class of the errors that name a breached limit."""


class TimeLimitExceededError(LimitExceededError):
    """Raised when a run exceeds its wall-clock or CPU-seconds limit."""


class MemoryLimitExceededError(LimitExceededError):
    """Raised when a run exceeds its memory limit."""


class OutputLimitExceededError(LimitExceededError):
    """Raised when a run's output (stdout, logs) or result exceeds its byte cap."""


class QuotaExceededError(LimitExceededError):
    """Raised when a run exceeds its request cap or its tenant's rate limit."""


class WorkerCrashedError(SandboxError):
    """Raised when a sandbox child (or its zygote) died unexpectedly: our bug or the machine, never the snippet's fault.

    The sandbox's processes are its *children*; this public name keeps the older word "worker" because runs, task
    records and the documentation carry it as the error's ``type``.
    """


#: Error classes by name, so a :class:`~sandbox.result.RunError` can be turned back into an exception.
ERRORS_BY_NAME: dict[str, type[SandboxError]] = {
    cls.__name__: cls
    for cls in (
        SandboxError,
        CompileError,
        SnippetError,
        InvalidResultTextError,
        SnippetCrashedError,
        EgressDeniedError,
        LimitExceededError,
        TimeLimitExceededError,
        MemoryLimitExceededError,
        OutputLimitExceededError,
        QuotaExceededError,
        WorkerCrashedError,
    )
}
