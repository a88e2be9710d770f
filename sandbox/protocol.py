"""What the host side (supervisor, pool) and the zygote and its children agree on, in one place.

The host must not import child-side modules for what both ends share: ``sandbox.zygote`` and ``sandbox.child`` run
in the hardened processes, and their module state (warm-up orders, descriptors) has no business in the host. A run's
own conversation (length-prefixed JSON frames) is :mod:`sandbox.channel`; this module holds the rest:

- the **control socket** between :class:`sandbox.pool.ZygoteProcess` and the zygote: ``SOCK_SEQPACKET``, one JSON
  message per packet of at most :data:`CONTROL_BYTES`, descriptors attached with ``SCM_RIGHTS`` (message shapes in
  :mod:`sandbox.zygote`);
- the **instance order** (:data:`INSTANCE_ORDER`), which makes a spare child an instance without a run;
- the **result frame cap**: the child replaces a larger last frame with ``OutputLimitExceededError``, and the host
  refuses to read one (:func:`result_frame_bytes`).
"""

from __future__ import annotations

import array
import json
import socket
from collections.abc import Sequence
from typing import Any, Final

from sandbox.limits import Limits

#: Largest control message. Orders and reports are a few dozen bytes; the init message carries ``sys.path``.
CONTROL_BYTES: Final = 65536

#: The type of an order that makes a spare child an instance without a run (a replacement the host sets up ahead of
#: demand): the limits and ``instance_cpu_seconds`` of an instance's first run order, no snippet, and no result.
INSTANCE_ORDER: Final = "instance"

#: Frames over the run's own caps by more than this are replaced by OutputLimitExceededError; JSON escaping can
#: double a string, and the log structure adds a little.
FRAME_SLACK_BYTES: Final = 256 * 1024


def send_control(control: socket.socket, message: dict[str, Any] | bytes, fds: Sequence[int] = ()) -> None:
    """Send one control message (or one already encoded as JSON), with *fds* attached."""
    data = message if isinstance(message, bytes) else json.dumps(message).encode()
    ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
    control.sendmsg([data], ancillary)


def result_frame_bytes(limits: Limits) -> int:
    """Return the largest result frame for *limits*; the host refuses bigger ones."""
    return 2 * (limits.output_bytes + limits.result_bytes) + FRAME_SLACK_BYTES
