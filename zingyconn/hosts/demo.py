"""What ``zingyconn demo`` sets up: the demo tenant, its connection, hooks, scripts and tokens, and where data lives.

Seeding is idempotent: what already exists is kept as it is (a hook edited in the console survives a restart), and
only what is missing is added. Tokens are generated once and kept in the data directory, so a second start prints
the same console login and the same API token.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Final

from zingyconn.catalog import Catalog
from zingyconn.config import Settings
from zingyconn.errors import ConfigurationError, DecryptionError, NotFoundError
from zingyconn.http.profile import HttpProfile
from zingyconn.secrets.keyring import KEY_FILE_NAME
from zingyconn.secrets.store import ConnectionStore
from zingyconn.secrets.tokens import TokenStore
from zingyconn.tasks.backend import describe as describe_queue
from zingyconn.twilio.emulator import DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN
from zingyconn.twilio.profile import TwilioProfile

DEMO_TENANT: Final = "demo"
DEMO_CONNECTION: Final = "main"
#: The connection holds the emulator's default account (public demo credentials, never valid on real Twilio).
DEMO_ACCOUNT_SID: Final = DEFAULT_ACCOUNT_SID
DEMO_AUTH_TOKEN: Final = DEFAULT_AUTH_TOKEN
#: Twilio's magic "valid sender" number, which the emulator accepts as From.
DEMO_SENDER: Final = "+15005550006"
DEMO_RECIPIENT: Final = "+15558675310"

#: The demo's HTTP connection: the local echo API (``zingyconn.http.echo``) on loopback, hence a local test target,
#: with a bearer token that only that echo API ever receives (public, like the emulator's credentials).
DEMO_NOTES_CONNECTION: Final = "notes"
DEMO_NOTES_TOKEN: Final = "demo-notes-token-for-the-local-echo-api"  # noqa: S105  # public demo value

#: Hooks of the demo tenant: (name, example file, connection that verifies X-Twilio-Signature or None).
#: auto-reply and keyword-router take unsigned requests so that the printed curl works; status-log is called
#: by the emulator, which signs its callbacks with the demo account's Auth Token, so it checks signatures.
DEMO_HOOKS: Final = (
    ("auto-reply", "auto_reply.py", None),
    ("keyword-router", "keyword_router.py", None),
    ("status-log", "status_callback_logger.py", DEMO_CONNECTION),
)
#: Scripts of the demo tenant: (name, example file, cron expression or None).
DEMO_SCRIPTS: Final = (
    ("nightly-digest", "nightly_digest.py", "0 7 * * *"),
    ("redact-old", "redact_old_messages.py", None),
    ("post-note", "post_note.py", None),
)

#: Files the demo keeps in the data directory. The token files hold credentials: created with mode 0600.
ADMIN_TOKEN_FILE: Final = "admin_token"  # noqa: S105  # a file name, not a secret
API_TOKEN_FILE: Final = "demo_api_token"  # noqa: S105  # a file name, not a secret
EMULATOR_STATE_FILE: Final = "emulator.db"
ADMIN_TOKEN_VARIABLE: Final = "ZINGYCONN_ADMIN_TOKEN"  # noqa: S105  # a variable name, not a secret


@dataclass(frozen=True, slots=True)
class Seeded:
    """One thing the demo needs, and whether this start added it (``False``: it was already there and is kept)."""

    kind: str
    name: str
    is_added: bool


def examples_dir() -> Path:
    """Return the directory of example snippets the demo seeds its hooks and scripts from.

    They are package data (``zingyconn/examples``, a link to the repository's ``examples/``), so an installed wheel
    has them as well as a checkout.

    Raises:
        ConfigurationError: An installation that lost them (a partial copy of the package).
    """
    candidate = Path(str(resources.files("zingyconn").joinpath("examples")))
    if all((candidate / file).is_file() for _, file, _ in (*DEMO_HOOKS, *DEMO_SCRIPTS)):
        return candidate
    raise ConfigurationError(
        f"zingyconn demo seeds its hooks and scripts from the snippets in {candidate}, and some are missing; "
        "reinstall zingyconn (pip install --force-reinstall zingyconn)."
    )


def emulator_state_path(settings: Settings) -> Path:
    """Return the file the demo's emulator keeps its messages in (SQLite, in the data directory)."""
    return settings.data_dir / EMULATOR_STATE_FILE


def _read_or_create(path: Path, make: Callable[[], str], *, is_valid: Callable[[str], bool]) -> tuple[str, bool]:
    """Return the token in *path* when it is there and valid, else a new one written there; and whether it is new."""
    if path.is_file():
        token = path.read_text(encoding="utf-8").strip()
        if token and is_valid(token):
            return token, False
    token = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    # 0600 from the first byte: the file holds a credential (console login or the tenant's API token).
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
        stream.write(token + "\n")
    os.replace(temporary, path)
    return token, True


def admin_token(settings: Settings) -> tuple[str, str]:
    """Return the console/admin token and where it comes from.

    ``ZINGYCONN_ADMIN_TOKEN`` when set; otherwise the token kept in the data directory, generated on first use.
    """
    if settings.admin_token is not None:
        return settings.admin_token, ADMIN_TOKEN_VARIABLE
    path = settings.data_dir / ADMIN_TOKEN_FILE
    token, _ = _read_or_create(path, lambda: secrets.token_urlsafe(24), is_valid=lambda _: True)
    return token, str(path)


def api_token(settings: Settings, tokens: TokenStore) -> tuple[str, bool]:
    """Return an API token of the demo tenant (kept in the data directory), and whether it was created now."""
    return _read_or_create(
        settings.data_dir / API_TOKEN_FILE,
        lambda: tokens.create(DEMO_TENANT, label="zingyconn demo"),
        is_valid=lambda token: tokens.tenant_for(token) == DEMO_TENANT,
    )


def seed(
    store: ConnectionStore, catalog: Catalog, *, examples: Path, notes_base_url: str | None = None
) -> list[Seeded]:
    """Add the demo tenant's connection, hooks and scripts where they are missing; keep what is there.

    The connection holds the emulator's default account. A stored connection that can no longer be decrypted
    (the key file was deleted, the store kept) is sealed again with the current key. With *notes_base_url* (where
    the demo serves the echo API), the HTTP connection ``notes`` is added too, or re-pointed there.
    """
    done = [_seed_connection(store)]
    if notes_base_url is not None:
        done.append(seed_notes_connection(store, notes_base_url))
    for name, file, verify_with in DEMO_HOOKS:
        try:
            catalog.get_hook(DEMO_TENANT, name)
            done.append(Seeded("hook", name, is_added=False))
        except NotFoundError:
            source = (examples / file).read_text(encoding="utf-8")
            catalog.put_hook(DEMO_TENANT, name, source, verify_with=verify_with)
            done.append(Seeded("hook", name, is_added=True))
    for name, file, cron in DEMO_SCRIPTS:
        try:
            catalog.get_script(DEMO_TENANT, name)
            done.append(Seeded("script", name, is_added=False))
        except NotFoundError:
            catalog.put_script(DEMO_TENANT, name, (examples / file).read_text(encoding="utf-8"), cron=cron)
            done.append(Seeded("script", name, is_added=True))
    return done


def _seed_connection(store: ConnectionStore) -> Seeded:
    try:
        store.get(DEMO_TENANT, DEMO_CONNECTION)
    except (NotFoundError, DecryptionError):
        store.put(DEMO_TENANT, DEMO_CONNECTION, TwilioProfile(account_sid=DEMO_ACCOUNT_SID, secret=DEMO_AUTH_TOKEN))
        return Seeded("connection", DEMO_CONNECTION, is_added=True)
    return Seeded("connection", DEMO_CONNECTION, is_added=False)


def seed_notes_connection(store: ConnectionStore, base_url: str) -> Seeded:
    """Add the HTTP connection ``notes`` to the echo API at *base_url*, or re-point it there (the port may change)."""
    try:
        current = store.get(DEMO_TENANT, DEMO_NOTES_CONNECTION)
    except (NotFoundError, DecryptionError):
        current = None
    if isinstance(current, HttpProfile) and current.base_url == base_url:
        return Seeded("connection", DEMO_NOTES_CONNECTION, is_added=False)
    profile = HttpProfile(
        base_url=base_url,
        auth="bearer",
        secret=DEMO_NOTES_TOKEN,
        allowed_methods=("GET", "POST"),
        allowed_prefixes=("/notes",),
        local_test_target=True,
    )
    store.put(DEMO_TENANT, DEMO_NOTES_CONNECTION, profile)
    return Seeded("connection", DEMO_NOTES_CONNECTION, is_added=True)


def display_db_url(settings: Settings) -> str:
    """Return the store's URL for display: a PostgreSQL URL loses its user and password."""
    if settings.db_url.startswith("sqlite"):
        return settings.db_url
    scheme, _, rest = settings.db_url.partition("://")
    return f"{scheme}://{rest.rsplit('@', 1)[-1]}"


def data_locations(settings: Settings) -> list[tuple[str, str]]:
    """Return (what, where) for everything the demo keeps: store, key file, queue, emulator state, tokens."""
    store = display_db_url(settings)
    admin_origin = (
        ADMIN_TOKEN_VARIABLE if settings.admin_token is not None else str(settings.data_dir / ADMIN_TOKEN_FILE)
    )
    keys = "ZINGYCONN_KEYS (environment)" if settings.keys is not None else str(settings.data_dir / KEY_FILE_NAME)
    return [
        ("data directory", str(settings.data_dir)),
        ("store", store),
        ("master key", keys),
        ("task queue", describe_queue(settings)),
        ("emulator state", str(emulator_state_path(settings))),
        ("console token", admin_origin),
        ("API token", str(settings.data_dir / API_TOKEN_FILE)),
    ]
