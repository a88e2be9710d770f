"""The seam between the generic sandbox and whatever a host puts into a snippet's scope.

The sandbox knows nothing about Twilio or connections. A host names an *environment factory* by dotted path
(``"zingyconn.snippet.environment:environment"``); the zygote imports that module once (so heavy imports are paid
before any fork) and each child calls the factory once, for its one run, to get the names and modules for that run
(before the run order arrives: see :class:`RunContext`).

The same module may list :class:`WarmUpRun` snippets in ``WARM_UP_RUNS``: typical runs, answered by canned host
replies, that the zygote makes once before it forks (filling lazily built caches that every child then shares) and
that each spare child makes while it waits for its order (copying the pages a run writes to ahead of demand).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

#: JSON values as they cross the channel (dicts, lists, str, int, float, bool, None): the one spelling of the type
#: in both packages (every other module imports it from here).
JSON = Any


class HostChannel(Protocol):
    """How code inside a run asks the host for something (the only way out of the child).

    ``request`` blocks until the host answers and returns the answer's JSON payload. A refused request raises
    :class:`~sandbox.errors.EgressDeniedError` or :class:`~sandbox.errors.QuotaExceededError` inside the run.
    """

    def request(self, op: str, payload: Mapping[str, JSON]) -> JSON:
        """Send one request named *op* to the host and return its answer."""
        ...


@dataclass(frozen=True, slots=True)
class RunContext:
    """What the environment factory gets for one run.

    A child calls the factory *before* its run order arrives, so that a spare child waiting for work has the
    environment ready. ``context`` then waits for the order when it is first read: read it when the snippet uses
    it (as ``zingyConn.twilio`` does), not in the factory, or the factory waits for the order too. ``host``
    refuses every request until the order has set the run's request cap.

    Attributes:
        host: The channel to the host for this run.
        context: JSON the host passed for this run (e.g. the tenant's connection names); never secrets.
    """

    host: HostChannel
    context: Mapping[str, JSON]


@dataclass(frozen=True, slots=True)
class Environment:
    """Names and modules a host adds to a snippet's scope.

    Attributes:
        names: Extra globals (e.g. ``{"zingyConn": ...}``); must not start with ``_``.
        modules: Extra importable modules, dotted name -> façade object (never a real module), or a
            :class:`LazyModule` that builds the façade when the run first imports it.
        hidden_attributes: Attribute names that the ``_getattr_`` guard refuses on instances of a type,
            e.g. ``{ClientBase: frozenset({"password", "auth", "http_client"})}``.
        result_converters: Turn host objects a snippet may return into JSON primitives, by type
            (e.g. a TwiML ``MessagingResponse`` into its XML string). Applied inside the child.
    """

    names: Mapping[str, object] = field(default_factory=dict)
    modules: Mapping[str, object] = field(default_factory=dict)
    hidden_attributes: Mapping[type, frozenset[str]] = field(default_factory=dict)
    result_converters: Mapping[type, Callable[[Any], JSON]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class LazyModule:
    """A module of :attr:`Environment.modules` built on the run's first import of it, never before.

    For a façade that costs something to build each run (one that binds a class made for the run): a run that
    never imports it never pays. The run's importer calls *build* at most once per run; it is also called when
    the run first asks ``type(x)`` of a class that is not its own or a builtin (the answer depends on the classes
    every façade exposes).

    Attributes:
        build: Returns the façade (the same checks apply as to a façade given directly).
    """

    build: Callable[[], object]


EnvironmentFactory = Callable[[RunContext], Environment]

#: Name of the optional module attribute listing an environment's warm-up runs.
WARM_UP_ATTRIBUTE = "WARM_UP_RUNS"


@dataclass(frozen=True, slots=True)
class WarmUpRun:
    """A typical run made ahead of demand, never for a caller; its result is discarded.

    Attributes:
        source: The snippet (it must succeed with the canned answers, or it warms only part of the path).
        event: The run's ``event``.
        answers: The host's canned answer to each request op (an op not listed is refused); nothing reaches a
            real host during a warm-up.
    """

    source: str
    event: JSON = None
    answers: Mapping[str, JSON] = field(default_factory=dict)


def empty_environment(run: RunContext) -> Environment:
    """Return an environment that adds nothing (the default when a host names none)."""
    del run
    return Environment()


def load_environment_factory(dotted: str | None) -> EnvironmentFactory:
    """Import ``"package.module:function"`` and return the factory it names.

    Raises:
        ValueError: *dotted* is not of the form ``module:function`` or does not name a callable.
    """
    if not dotted:
        return empty_environment
    module_name, sep, attribute = dotted.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"Environment {dotted!r} must be written as 'package.module:function'.")
    factory = getattr(importlib.import_module(module_name), attribute, None)
    if not callable(factory):
        raise ValueError(f"Environment {dotted!r} does not name a callable in {module_name!r}.")
    return factory  # type: ignore[no-any-return]  # checked callable above; the signature is the contract


def load_warm_up_runs(dotted: str | None) -> tuple[WarmUpRun, ...]:
    """Return the ``WARM_UP_RUNS`` of the module of environment *dotted* (none when it lists none).

    Raises:
        ValueError: ``WARM_UP_RUNS`` is not a sequence of :class:`WarmUpRun`.
    """
    if not dotted:
        return ()
    module_name = dotted.partition(":")[0]
    runs = getattr(importlib.import_module(module_name), WARM_UP_ATTRIBUTE, ())
    if not isinstance(runs, list | tuple) or not all(isinstance(run, WarmUpRun) for run in runs):
        raise ValueError(f"{module_name}.{WARM_UP_ATTRIBUTE} must be a sequence of sandbox.environment.WarmUpRun.")
    return tuple(runs)
