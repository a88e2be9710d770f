"""Listening sockets bound before a server starts anything, so a busy port is one clear error and nothing else.

``serve``, ``emulator`` and ``demo`` bind their ports first: a port in use is reported before a banner is printed,
a task consumer starts or a queued task runs (uvicorn would bind only after the app's start-up had run).
"""

from __future__ import annotations

import socket


class PortInUseError(OSError):
    """Raised when a server cannot bind its address; names the option that chooses it (exit 3, see ``faults``)."""

    def __init__(self, host: str, port: int, option: str, cause: OSError) -> None:
        self.host, self.port, self.option = host, port, option
        super().__init__(cause.errno, cause.strerror)


def bind_port(host: str, port: int, *, option: str = "--port") -> socket.socket:
    """Return a TCP socket bound to (*host*, *port*) and inheritable by worker processes; port 0 picks a free one.

    Raises:
        PortInUseError: The address cannot be bound (in use, not an address of this machine, no permission).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    # SO_REUSEADDR as uvicorn sets it: a port left in TIME_WAIT by the previous run is free, a listening one is not.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise PortInUseError(host, port, option, exc) from None
    sock.set_inheritable(True)
    return sock
