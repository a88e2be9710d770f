"""What several command families share: ``--tenant``, ``--json``, ``--limit NAME=VALUE``, times, created ids.

Output conventions (documented in ``docs/cli.md``): data goes to stdout, sentences for people to stderr. ``--json``
prints one JSON document (an object, or an array for ``list``). A command that creates something prints its id alone
on stdout (``id=$(zingyconn tasks enqueue digest)``) and says what it did on stderr.
"""

from __future__ import annotations

import getpass
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import click

from zingyconn.errors import ValidationError

if TYPE_CHECKING:
    from zingyconn.catalog import Catalog

#: ``--tenant``, defaulting to ``default`` (docs/cli.md).
tenant_option: Final = click.option(
    "--tenant", default="default", show_default=True, help="The tenant (app) that owns it."
)


#: ``--json``: print the command's data as one JSON document instead of text.
isolation_option: Final = click.option(
    "--isolation",
    type=click.Choice(["run", "instance"]),
    default="run",
    show_default=True,
    help="run: a fresh sandbox process per run; instance: a warm process kept for this version and reused by its "
    "next runs (fresh globals each run; see docs/security.md).",
)

json_option: Final = click.option(
    "--json", "as_json", is_flag=True, help="Print one JSON document (an object; an array for lists)."
)


def echo_json(value: Any) -> None:
    """Print *value* as indented JSON on stdout."""
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


def echo_created(identifier: str, message: str, *, document: Any = None, as_json: bool = False) -> None:
    """Print what a create command made: its id alone on stdout (or *document* as JSON), *message* on stderr."""
    if as_json:
        echo_json(document)
    else:
        click.echo(identifier)
    click.echo(message, err=True)


def parse_json_input(text: str | None, option: str) -> Any:
    """Return the JSON of a ``JSON|@FILE`` option; ``{}`` when it is not given (an empty event or payload).

    Raises:
        ValidationError: The file cannot be read or the text is not JSON (``field`` is the option's name).
    """
    field = option.removeprefix("--")
    if text is None:
        return {}
    if text.startswith("@"):
        try:
            text = Path(text[1:]).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "it is not UTF-8 text"
            raise ValidationError(f"{option} file {text[1:]!r} could not be read: {reason}.", field=field) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValidationError(f"{option} is not valid JSON: {exc}.", field=field) from None


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
    from zingyconn.catalog import Catalog  # the store's modules (SQLAlchemy) load only for commands that use them
    from zingyconn.config import Settings
    from zingyconn.database import create_engine

    return Catalog(create_engine(Settings.from_env().db_url))
