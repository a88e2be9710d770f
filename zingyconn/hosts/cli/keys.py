"""``zingyconn keys new|rotate|retire|list``: manage the master keys that seal connection records.

The rotation procedure: ``keys new`` (a new primary key; processes sharing the key file re-read it by themselves, with
``ZINGYCONN_KEYS`` it takes two rolling restarts), ``keys rotate`` (re-seal every record online, then verify),
``keys retire OLD_ID``.
"""

from __future__ import annotations

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

from zingyconn.config import Settings
from zingyconn.errors import DecryptionError
from zingyconn.hosts.cli.options import echo_created, echo_json, json_option
from zingyconn.secrets.keyring import ENV_VARIABLE, KEY_FILE_NAME, Keyring, generate_key
from zingyconn.secrets.rotation import KeyRotation
from zingyconn.secrets.store import ConnectionStore

_STAGES = {"reseal": "Re-sealing records", "verify": "Verifying records"}


@click.group()
def keys() -> None:
    """Create, rotate and retire the master keys that encrypt connection secrets."""


@keys.command(name="list")
@json_option
def list_(as_json: bool) -> None:
    """Show the key ids (primary first), where they live, and how many records each seals."""
    store = ConnectionStore.from_settings(Settings.from_env())
    usage = KeyRotation(store).key_usage()
    if as_json:
        primary = store.keyring.primary_key_id
        listed = [
            {"key_id": key_id, "primary": key_id == primary, "in_keyring": True, "records": usage.pop(key_id, 0)}
            for key_id in store.keyring.key_ids
        ]
        listed += [{"key_id": k, "primary": False, "in_keyring": False, "records": n} for k, n in usage.items()]
        echo_json(listed)
        return
    click.echo(f"Keys from {store.keyring.origin}:")
    for key_id in store.keyring.key_ids:
        role = "primary" if key_id == store.keyring.primary_key_id else "decrypt only"
        click.echo(f"  {key_id}  {role}  {usage.pop(key_id, 0)} record(s)")
    for key_id, count in usage.items():
        click.echo(f"  {key_id}  MISSING from the keyring  {count} record(s) cannot be decrypted")


@keys.command()
@click.argument("key_id", required=False)
def new(key_id: str | None) -> None:
    """Add a new primary key KEY_ID (default: the next kN); new records are sealed with it."""
    settings = Settings.from_env()
    path = settings.data_dir / KEY_FILE_NAME
    if settings.keys is None and not path.exists():
        keyring = Keyring([(key_id or "k1", generate_key())], path=path, origin=f"key file {path}")
        keyring.save()
        echo_created(
            keyring.primary_key_id, f"Created key {keyring.primary_key_id!r} in {path} (mode 0600). Back it up."
        )
        return
    keyring = Keyring.from_settings(settings, create=False).with_new_key(key_id)
    new_id, old_ids = keyring.primary_key_id, ", ".join(keyring.key_ids[1:])
    if keyring.path is None:
        click.echo(keyring.encoded(new_id))
        click.echo(
            f"\nThis is new key {new_id!r}; it is not saved anywhere else. Prepend it to {ENV_VARIABLE} on every "
            "machine in two rolling restarts, so that no process meets a record it cannot read: first append it "
            f'(ZINGYCONN_KEYS="<the current value>,{new_id}:...") everywhere, then move it first everywhere. Then run '
            "`zingyconn keys rotate`, and once it reports no record left under an old key, `zingyconn keys retire "
            "OLD_ID` and remove that key from the variable.",
            err=True,
        )
        return
    keyring.save()
    echo_created(
        new_id,
        f"Added key {new_id!r} as the primary key in {keyring.path} (older keys, still used to decrypt: {old_ids}).\n"
        "Running zingyconn processes that use this file pick it up without a restart; then run "
        "`zingyconn keys rotate`.",
    )


@keys.command()
def rotate() -> None:
    """Re-seal every connection record under the primary key (online; safe to interrupt and re-run)."""
    store = ConnectionStore.from_settings(Settings.from_env())
    console = Console(stderr=True)
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=console
    ) as bar:
        tasks: dict[str, TaskID] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(_STAGES[stage], total=total)
            bar.update(tasks[stage], completed=done)

        report = KeyRotation(store).rotate(progress=progress)
    primary = report.primary_key_id
    click.echo(f"Re-sealed {report.resealed} record(s) under key {primary!r}; {report.verified} record(s) verified.")
    if report.failed:
        names = ", ".join(f"{name!r} (tenant {tenant!r})" for tenant, name in report.failed[:20])
        raise DecryptionError(
            f"{len(report.failed)} record(s) could not be decrypted and were left as they are: {names}. Add the key "
            "they were sealed with (see `zingyconn keys list`) and run `zingyconn keys rotate` again, or delete and "
            "re-add those connections."
        )
    retirable = [key_id for key_id in store.keyring.key_ids if key_id != primary and not report.key_usage.get(key_id)]
    if retirable:
        click.echo("No record uses " + ", ".join(map(repr, retirable)) + " any more; retire with:")
        for key_id in retirable:
            click.echo(f"  zingyconn keys retire {key_id}")
    else:
        click.echo("Every record is sealed with the primary key.")


@keys.command()
@click.argument("key_id")
def retire(key_id: str) -> None:
    """Remove KEY_ID from the keyring, refusing while any record is still sealed with it."""
    store = ConnectionStore.from_settings(Settings.from_env())
    keyring = KeyRotation(store).retire(key_id)
    if keyring.path is not None:
        click.echo(f"Retired key {key_id!r}: removed it from {keyring.path}. Keys left: {', '.join(keyring.key_ids)}.")
    else:
        click.echo(
            f"No record uses key {key_id!r}. Remove the {key_id}:... entry from {ENV_VARIABLE} on every machine and "
            f"restart zingyconn; the remaining keys are {', '.join(keyring.key_ids)}."
        )
