"""What several command families share: ``--tenant``, ``--limit NAME=VALUE`` pairs, times, the catalog from settings."""

from __future__ import annotations

import getpass
import os
from datetime import UTC, datetime
from typing import Final

import click

from zingyconn.catalog import Catalog
from zingyconn.config import Settings
from zingyconn.database import create_engine

#: ``--tenant``, defaulting to ``default`` (docs/cli.md).
tenant_option: Final = click.option(
    "--tenant", default="default", show_default=True, help="The tenant (app) that owns it."
)


def parse_limit_pairs(pairs: tuple[str, ...]) -> dict[str, str]:
    """Return ``--limit NAME=VALUE`` options as ``{name: value}`` (values are checked by ``Limits.with_overrides``).

    Raises:
        click.BadParameter: A pair has no ``=``.
    """
    overrides: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise click.BadParameter(f"{pair!r} is not NAME=VALUE.", param_hint="--limit")
        overrides[name.strip()] = value.strip()
    return overrides


def format_time(timestamp: float) -> str:
    """Return a Unix time as ``YYYY-MM-DD HH:MM:SS UTC``."""
    return datetime.fromtimestamp(timestamp, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def cli_actor() -> str:
    """Return who runs this CLI, as the run history names them (``cli:<OS user>``)."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # a uid with no passwd entry (some containers)
        return f"cli:uid-{os.getuid()}"


def catalog_from_settings() -> Catalog:
    """Return the hooks/scripts catalog of the store configured in the environment."""
    return Catalog(create_engine(Settings.from_env().db_url))
