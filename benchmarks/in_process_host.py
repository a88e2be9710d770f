"""The host ceiling: the app ``zingyconn serve`` builds, with each snippet executed in the server process itself.

NOT safe (no process wall, no CPU or memory limit): a gauge of what the host layer alone costs per request (HTTP,
routing, hook lookup, signature check, idempotency, history, the runtime's bookkeeping) with the sandbox's
process work taken out. ``benchmarks/webhook_load.py`` starts it as::

    python benchmarks/in_process_host.py PORT WORKERS

with the same environment (``ZINGYCONN_*``) as ``zingyconn serve``.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Hashable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from sandbox import compile_snippet
from sandbox.compiler import CompiledSnippet
from sandbox.environment import JSON, RunContext, load_environment_factory
from sandbox.executor import execute
from sandbox.instance import Hold
from sandbox.limits import Limits
from sandbox.result import RunResult
from sandbox.supervisor import Sandbox

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from sandbox.supervisor import RequestHandler


class _Channel:
    """The child's channel to the host, short-circuited: a request is answered by a call in this thread."""

    def __init__(self, on_request: RequestHandler | None) -> None:
        self._on_request = on_request

    def request(self, op: str, payload: JSON) -> JSON:
        if self._on_request is None:
            raise RuntimeError(f"The snippet requested {op!r} but this run answers no requests.")
        return self._on_request(op, payload)


@functools.lru_cache(maxsize=256)
def _compiled(source: str) -> CompiledSnippet:
    return compile_snippet(source)  # the real sandbox caches compiled snippets by source text too


class InProcessSandbox(Sandbox):
    """A :class:`~sandbox.supervisor.Sandbox` whose :meth:`run` executes the snippet in this process, in this thread.

    ``run_async`` is inherited, so the thread hops of the real sandbox are kept; nothing is forked.
    """

    def __init__(self, *, environment: str) -> None:
        super().__init__(environment=environment)
        self._factory = load_environment_factory(environment)

    def run(
        self,
        source: str,
        *,
        event: JSON = None,
        limits: Limits | None = None,
        context: Mapping[str, JSON] | None = None,
        on_request: RequestHandler | None = None,
        on_started: Callable[[], object] | None = None,
        instance_key: Hashable | None = None,
        instance_hold: Hold | None = None,
    ) -> RunResult:
        """Run *source* here and now (see the module docstring: unsafe, a gauge); no instance is kept for a key."""
        if on_started is not None:
            on_started()
        environment = self._factory(RunContext(host=_Channel(on_request), context=dict(context or {})))
        return execute(_compiled(source), event=event, environment=environment, limits=limits or Limits())


def create_app() -> Starlette:
    """Build the app ``zingyconn serve`` builds (its factory), around a runtime with an :class:`InProcessSandbox`."""
    from zingyconn.config import Settings
    from zingyconn.hosts import server
    from zingyconn.runtime import SNIPPET_ENVIRONMENT, Runtime

    def from_env(environ: Mapping[str, str] | None = None) -> Runtime:
        sandbox = InProcessSandbox(environment=SNIPPET_ENVIRONMENT)
        return Runtime(Settings.from_env(environ), sandbox=sandbox)

    # The serve factory builds its runtime with Runtime.from_env; swapping that one constructor keeps every other
    # part of the app (lifespan hooks, caches, history writer) exactly as `zingyconn serve` has it.
    Runtime.from_env = from_env  # type: ignore[method-assign]
    return server.create_app_from_env()


def main() -> None:
    """Serve :func:`create_app` on 127.0.0.1:PORT with WORKERS processes (``argv[1:3]``)."""
    import uvicorn

    from zingyconn.hosts.cli.serve import UVICORN_SETTINGS

    port, workers = int(sys.argv[1]), int(sys.argv[2])
    uvicorn.run(
        "in_process_host:create_app",
        factory=True,
        app_dir=str(Path(__file__).resolve().parent),
        host="127.0.0.1",
        port=port,
        workers=workers,
        **UVICORN_SETTINGS,
    )


if __name__ == "__main__":
    main()
