"""Optional dependencies: the clients only some deployments need, installed as extras of the package.

The embedded default (SQLite store, SQLite task queue) needs neither. A shared store on PostgreSQL needs
``zingyconn[postgres]`` (psycopg), a Redis queue and rate limiter ``zingyconn[redis]`` (the redis client). Code that
is about to use one calls :func:`require_extra` first, so a deployment configured for a backend whose client is not
installed stops with one line that names the extra, instead of an ``ImportError`` deep inside SQLAlchemy or Huey.
"""

from __future__ import annotations

import importlib

from zingyconn.errors import ConfigurationError

#: Extra name -> the module it installs.
EXTRA_MODULES = {"postgres": "psycopg", "redis": "redis"}


def require_extra(extra: str, *, needed_for: str) -> None:
    """Import the module of *extra*, or raise ConfigurationError saying what needs it and how to install it.

    Raises:
        ConfigurationError: The module is not installed (or does not import).
    """
    module = EXTRA_MODULES[extra]
    try:
        importlib.import_module(module)
    except ImportError as exc:
        raise ConfigurationError(
            f"{needed_for} needs the Python package {module!r}, which could not be imported ({exc}); "
            f"install it with: pip install 'zingyconn[{extra}]'."
        ) from None
