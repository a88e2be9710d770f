"""What the HTTP load benchmarks share: a minimal HTTP/1.1 response reader and latency percentiles.

The load generators speak raw HTTP/1.1 over asyncio streams instead of using httpx: on 2 cores a client library's
own CPU cost would be measured as server latency.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """Read one HTTP/1.1 response (status, lower-cased headers, body by Content-Length)."""
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionResetError("the server closed the connection")
    status = int(status_line.split()[1])
    headers: dict[str, str] = {}
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, await reader.readexactly(int(headers.get("content-length", "0")))


def percentile(ordered: Sequence[float], p: float) -> float:
    """Return the *p*-th percentile (0-100) of already sorted *ordered*, rounded to 0.01."""
    if not ordered:
        return 0.0
    return round(ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))], 2)
