"""A generic sandbox for untrusted Python snippets: RestrictedPython policy, guards, façade imports, limits.

This package never imports ``zingyconn``: hosts put their own names and modules into a snippet's scope through an
:class:`~sandbox.environment.Environment`.
"""

from typing import TYPE_CHECKING, Any

from sandbox.compiler import CompiledSnippet, compile_snippet
from sandbox.environment import Environment, HostChannel, RunContext, WarmUpRun
from sandbox.errors import (
    CompileError,
    EgressDeniedError,
    InvalidResultTextError,
    LimitExceededError,
    MemoryLimitExceededError,
    OutputLimitExceededError,
    QuotaExceededError,
    SandboxError,
    SnippetCrashedError,
    SnippetError,
    TimeLimitExceededError,
    WorkerCrashedError,
)
from sandbox.limits import Limits
from sandbox.result import RunError, RunResult

if TYPE_CHECKING:
    from sandbox.imports import Facade, make_facade
    from sandbox.supervisor import RequestHandler, Sandbox


def __getattr__(name: str) -> Any:
    # The host side (and asyncio, subprocess, concurrent.futures with it: about 5 MiB) is imported on first use,
    # not with the package: the zygote imports this package too, and every MiB it holds is paid again by each
    # fork and each child's exit (page tables copied, then torn down: about 80 µs per MiB per run).
    if name in ("RequestHandler", "Sandbox"):
        from sandbox import supervisor

        return getattr(supervisor, name)
    # The façades (and the standard-library allowlist and guards with them) are the child's and the catalog's: a
    # host that only runs snippets never builds one.
    if name in ("Facade", "make_facade"):
        from sandbox import imports

        return getattr(imports, name)
    raise AttributeError(f"module 'sandbox' has no attribute {name!r}")


__all__ = [
    "CompileError",
    "CompiledSnippet",
    "EgressDeniedError",
    "Environment",
    "Facade",
    "HostChannel",
    "InvalidResultTextError",
    "LimitExceededError",
    "Limits",
    "MemoryLimitExceededError",
    "OutputLimitExceededError",
    "QuotaExceededError",
    "RequestHandler",
    "RunContext",
    "RunError",
    "RunResult",
    "Sandbox",
    "SandboxError",
    "SnippetCrashedError",
    "SnippetError",
    "TimeLimitExceededError",
    "WarmUpRun",
    "WorkerCrashedError",
    "compile_snippet",
    "make_facade",
]
