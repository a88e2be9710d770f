"""What several command families share: the ``--tenant`` option, how times are shown, the catalog from settings."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final

import click

from zingyconn.catalog import Catalog
from zingyconn.config import Settings
from zingyconn.database import create_engine

#: ``--tenant``, defaulting to ``default`` (DESIGN §9).
tenant_option: Final = click.option(
    "--tenant", default="default", show_default=True, help="The tenant (app) that owns it."
)


def format_time(timestamp: float) -> str:
    """Return a Unix time as ``YYYY-MM-DD HH:MM:SS UTC``."""
    return datetime.fromtimestamp(timestamp, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def catalog_from_settings() -> Catalog:
    """Return the hooks/scripts catalog of the store configured in the environment."""
    return Catalog(create_engine(Settings.from_env().db_url))
