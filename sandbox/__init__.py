"""A generic sandbox for untrusted Python snippets: RestrictedPython policy, guards, façade imports, limits.

This package never imports ``zingyconn``: hosts put their own names and modules into a snippet's scope through an
:class:`~sandbox.environment.Environment`.
"""

from sandbox.compiler import CompiledSnippet, compile_snippet
from sandbox.environment import Environment, HostChannel, RunContext, WarmUpRun
from sandbox.errors import (
    CompileError,
    EgressDeniedError,
    LimitExceededError,
    MemoryLimitExceededError,
    OutputLimitExceededError,
    QuotaExceededError,
    SandboxError,
    SnippetError,
    TimeLimitExceededError,
    WorkerCrashedError,
)
from sandbox.imports import Facade, make_facade
from sandbox.limits import Limits
from sandbox.result import RunError, RunResult
from sandbox.supervisor import RequestHandler, Sandbox

__all__ = [
    "CompileError",
    "CompiledSnippet",
    "EgressDeniedError",
    "Environment",
    "Facade",
    "HostChannel",
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
    "SnippetError",
    "TimeLimitExceededError",
    "WarmUpRun",
    "WorkerCrashedError",
    "compile_snippet",
    "make_facade",
]
