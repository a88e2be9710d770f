"""The kinds of run the product makes, and the default limits of each: a product decision, not the sandbox's.

A **webhook** answers an HTTP request, so it must finish while the caller waits (10 s); a **task** runs in the
background (300 s); a **console** run is the operator trying a snippet, limited like a webhook so that the console
never grants more than production would. The sandbox knows none of this: it runs with whatever
:class:`~sandbox.limits.Limits` it is given.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, Literal, get_args

from sandbox.limits import Limits

#: A kind of snippet run (connection commands are recorded as runs of kind ``command``, but run no snippet).
Kind = Literal["webhook", "task", "console"]

#: Every kind, in the order the CLI and console list them.
KINDS: Final[tuple[Kind, ...]] = get_args(Kind)

#: The limits of each kind when the hook, script or caller sets none.
DEFAULT_LIMITS: Final[Mapping[str, Limits]] = {
    "webhook": Limits(wall_seconds=10.0, cpu_seconds=10.0),
    "task": Limits(wall_seconds=300.0, cpu_seconds=300.0),
    "console": Limits(wall_seconds=10.0, cpu_seconds=10.0),
}


def limits_for(kind: str) -> Limits:
    """Return the default limits of run kind *kind* (webhook 10 s, task 300 s, console like a webhook).

    Raises:
        ValueError: *kind* is not a :data:`Kind`.
    """
    try:
        return DEFAULT_LIMITS[kind]
    except KeyError:
        raise ValueError(f"Unknown run kind {kind!r}; expected one of {sorted(DEFAULT_LIMITS)}.") from None
