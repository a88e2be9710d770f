"""Named master keys, and sealing of connection records with AES-256-GCM.

A record sealed by :meth:`Keyring.seal` is self-describing (all integers big-endian)::

    offset  size  field
    0       1     format version (1)
    1       1     n = length of the key id
    2       n     key id (ASCII, e.g. b"k2")
    2+n     12    random nonce
    14+n    ...   AES-256-GCM ciphertext, then its 16-byte tag

The GCM associated data is the header (bytes ``0 .. 14+n``) followed by the caller's AAD, so the header cannot be
edited and a record only opens for the row it was sealed for. Every failure to open a record is one opaque
:class:`~zingyconn.errors.DecryptionError` that names the connection, never the key, the cause or the plaintext.
"""

from __future__ import annotations

import base64
import binascii
import functools
import logging
import os
import re
import secrets
import stat
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final

from zingyconn.config import Settings
from zingyconn.errors import DecryptionError, KeyringError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

FORMAT_VERSION: Final = 1
KEY_BYTES: Final = 32  # AES-256
# 96-bit random nonces: the GCM bound (2**32 messages per key) is far above the number of connection records.
NONCE_BYTES: Final = 12
KEY_ID_PATTERN: Final = re.compile(r"[A-Za-z0-9_.-]{1,64}")
KEY_FILE_NAME: Final = "keys"
#: Where the keys come from when ``ZINGYCONN_KEYS`` is set.
ENV_VARIABLE: Final = "ZINGYCONN_KEYS"

_URLSAFE: Final = str.maketrans("-_", "+/")

_LOGGER: Final = logging.getLogger(__name__)

Announce = Callable[[str], None]


def _log_warning(message: str) -> None:
    # A warning, so it shows whatever the log level; the CLI and the servers send it to the one log stream.
    _LOGGER.warning(message)


def generate_key() -> bytes:
    """Return 32 fresh random bytes for a new master key."""
    return secrets.token_bytes(KEY_BYTES)


def encode_key(key_id: str, key: bytes) -> str:
    """Return ``id:base64`` as written in ``ZINGYCONN_KEYS`` and in the key file."""
    return f"{key_id}:{base64.b64encode(key).decode('ascii')}"


def _check_key_id(key_id: str, *, origin: str) -> str:
    if not KEY_ID_PATTERN.fullmatch(key_id):
        raise KeyringError(
            f"Key id {key_id!r} in {origin} is not valid: use 1-64 letters, digits, '_', '.' or '-' (e.g. 'k2')."
        )
    return key_id


def _decode_key(key_id: str, encoded: str, *, origin: str) -> bytes:
    try:
        # Accept the url-safe alphabet too (Fernet keys, `openssl rand -base64 32 | tr +/ -_`).
        key = base64.b64decode(encoded.strip().translate(_URLSAFE), validate=True)
    except (binascii.Error, ValueError):
        raise KeyringError(
            f"Master key {key_id!r} in {origin} is not valid base64. Write keys as ID:BASE64 "
            "(generate one with `zingyconn keys new`)."
        ) from None
    if len(key) != KEY_BYTES:
        raise KeyringError(
            f"Master key {key_id!r} in {origin} decodes to {len(key)} bytes; AES-256 needs exactly {KEY_BYTES} "
            "bytes (44 base64 characters). Generate one with `zingyconn keys new`."
        )
    return key


def parse_keys(spec: str, *, origin: str = ENV_VARIABLE) -> list[tuple[str, bytes]]:
    """Parse ``"k2:BASE64,k1:BASE64"`` (commas or newlines; ``#`` starts a comment) into ``(id, key)`` pairs.

    Raises:
        KeyringError: An entry has no id, a bad id, bad base64, the wrong length, or a duplicate id.
    """
    entries: list[tuple[str, bytes]] = []
    lines = (line.split("#", 1)[0] for line in spec.splitlines())
    for number, entry in enumerate((part.strip() for line in lines for part in line.split(",")), start=1):
        if not entry:
            continue
        key_id, sep, encoded = entry.partition(":")
        if not sep:
            raise KeyringError(f"Entry {number} of {origin} has no key id; write each key as ID:BASE64 (e.g. k1:...).")
        key_id = _check_key_id(key_id.strip(), origin=origin)
        if any(existing == key_id for existing, _ in entries):
            raise KeyringError(f"Key id {key_id!r} appears twice in {origin}; every key needs its own id.")
        entries.append((key_id, _decode_key(key_id, encoded, origin=origin)))
    if not entries:
        raise KeyringError(f"{origin} holds no keys; generate one with `zingyconn keys new`.")
    return entries


class Keyring:
    """Master keys by id: the first (primary) key seals new records, every key opens records.

    Build one with :meth:`from_settings` (``ZINGYCONN_KEYS``, else the key file in the data directory), or directly
    from ``(id, key)`` pairs in tests. A keyring is immutable; :meth:`with_new_key` and :meth:`without_key` return
    new keyrings, and :meth:`save` writes a file-backed one back to its file.
    """

    def __init__(self, keys: Sequence[tuple[str, bytes]], *, path: Path | None = None, origin: str = "memory") -> None:
        if not keys:
            raise KeyringError("A keyring needs at least one key; generate one with `zingyconn keys new`.")
        self._keys = {_check_key_id(key_id, origin=origin): key for key_id, key in keys}
        if len(self._keys) != len(keys):
            raise KeyringError(f"A key id appears twice in {origin}; every key needs its own id.")
        for key_id, key in self._keys.items():
            if len(key) != KEY_BYTES:
                raise KeyringError(f"Master key {key_id!r} in {origin} is {len(key)} bytes; it must be {KEY_BYTES}.")
        self.path = path
        self.origin = origin
        self._stamp: tuple[int, int, int] | None = None  # the key file as it was when read (see `reloaded`)

    @functools.cached_property
    def _ciphers(self) -> dict[str, AESGCM]:
        # Built on the first seal or unseal, not with the keyring: a run that opens no connection (and a command that
        # only lists them) does not load ``cryptography``. The keys' lengths were checked in ``__init__``.
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        return {key_id: AESGCM(key) for key_id, key in self._keys.items()}

    def __repr__(self) -> str:
        return f"Keyring(key_ids={self.key_ids!r}, origin={self.origin!r})"  # never the key bytes

    @property
    def primary_key_id(self) -> str:
        """The id of the key that seals new records."""
        return next(iter(self._keys))

    @property
    def key_ids(self) -> tuple[str, ...]:
        """Every key id, primary first."""
        return tuple(self._keys)

    @classmethod
    def from_settings(cls, settings: Settings, *, create: bool = True, announce: Announce = _log_warning) -> Keyring:
        """Load ``ZINGYCONN_KEYS`` if set, else the key file ``$ZINGYCONN_DATA_DIR/keys``.

        Args:
            settings: Where to look.
            create: Create the key file with one fresh key when it does not exist (the embedded default).
            announce: Told, once, where a newly created key file is.
        """
        if settings.keys is not None:
            return cls(parse_keys(settings.keys), origin=ENV_VARIABLE)
        path = settings.data_dir / KEY_FILE_NAME
        if create and not path.exists() and _create_key_file(path, encode_key("k1", generate_key()) + "\n"):
            announce(
                f"created a master key in {path} (mode 0600). Back it up: without it the connections "
                "in this store cannot be decrypted."
            )
        return cls.from_file(path)

    @classmethod
    def from_file(cls, path: Path) -> Keyring:
        """Load a key file (``id:base64`` per line, primary first); it must not be readable by other users."""
        origin = f"key file {path}"
        try:
            status = path.stat()
            mode = status.st_mode
            text = path.read_text(encoding="ascii")
        except FileNotFoundError:
            raise KeyringError(f"No key file at {path}; create one with `zingyconn keys new`.") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise KeyringError(f"Could not read the {origin}: {exc}.") from None
        # A group/world-readable key file leaks every connection secret to other local users (same rule as ssh).
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise KeyringError(
                f"The {origin} is readable by other users (mode {stat.filemode(mode)}); run chmod 600 {path}."
            )
        keyring = cls(parse_keys(text, origin=origin), path=path, origin=origin)
        keyring._stamp = _stamp_of(status)
        return keyring

    def reloaded(self) -> Keyring:
        """Return this keyring as its key file is now: a new keyring if the file changed since it was read, else self.

        Running ``serve``/``worker`` processes call this (through the store) before sealing and when a record names
        a key they do not hold, so ``keys new``, ``keys rotate`` and ``keys retire`` on a shared key file reach
        them without a restart. Keys from ``ZINGYCONN_KEYS`` (no file) never change: this returns self.
        """
        if self.path is None or self._stamp is None:
            return self
        try:
            if _stamp_of(self.path.stat()) == self._stamp:
                return self
            return Keyring.from_file(self.path)
        except (OSError, KeyringError):
            return self  # a key file briefly missing or mis-edited by hand: keep serving with the keys we have

    def with_new_key(self, key_id: str | None = None, key: bytes | None = None) -> Keyring:
        """Return a keyring with a new primary key (a fresh random one unless *key* is given) before these keys."""
        key_id = self._next_key_id() if key_id is None else _check_key_id(key_id, origin="the new key")
        if key_id in self._keys:
            raise KeyringError(f"Key id {key_id!r} already exists; choose another id.")
        return Keyring([(key_id, key or generate_key()), *self._keys.items()], path=self.path, origin=self.origin)

    def without_key(self, key_id: str) -> Keyring:
        """Return a keyring without *key_id* (which must exist and must not be the primary key)."""
        if key_id not in self._keys:
            raise KeyringError(f"There is no key {key_id!r} in {self.origin}; its keys are {', '.join(self.key_ids)}.")
        if key_id == self.primary_key_id:
            raise KeyringError(
                f"Key {key_id!r} is the primary key and seals new records; add a new one with `zingyconn keys new`, "
                "run `zingyconn keys rotate`, then retire this one."
            )
        return Keyring([item for item in self._keys.items() if item[0] != key_id], path=self.path, origin=self.origin)

    def encoded(self, key_id: str) -> str:
        """Return ``id:base64`` of one key (to show an operator the key they must add to ``ZINGYCONN_KEYS``)."""
        return encode_key(key_id, self._keys[key_id])

    def save(self) -> Path:
        """Write this keyring back to its key file atomically (mode 0600) and return the path."""
        if self.path is None:
            raise KeyringError(f"The keys come from {self.origin}, not from a key file; edit {self.origin} instead.")
        text = "".join(f"{encode_key(key_id, key)}\n" for key_id, key in self._keys.items())
        _write_key_file(self.path, text)
        return self.path

    def seal(self, plaintext: bytes, *, aad: bytes) -> bytes:
        """Encrypt *plaintext* under the primary key, bound to *aad*; return the record (header + ciphertext)."""
        key_id = self.primary_key_id
        header = bytes([FORMAT_VERSION, len(key_id)]) + key_id.encode("ascii") + os.urandom(NONCE_BYTES)
        return header + self._ciphers[key_id].encrypt(header[-NONCE_BYTES:], plaintext, header + aad)

    def unseal(self, record: bytes, *, aad: bytes, what: str) -> bytes:
        """Decrypt a record sealed for *aad*; *what* names it in the (deliberately opaque) error.

        Raises:
            DecryptionError: Wrong or missing key, a tampered or truncated record, or a record moved from another row
                (or, when the AAD binds a revision, restored from another revision).
        """
        from cryptography.exceptions import InvalidTag

        try:
            key_id = record_key_id(record)
            header_end = 2 + len(key_id) + NONCE_BYTES
            header = record[:header_end]
            return self._ciphers[key_id].decrypt(header[-NONCE_BYTES:], record[header_end:], header + aad)
        except (ValueError, KeyError, InvalidTag):
            raise DecryptionError(
                f"Could not decrypt connection {what}: the record is damaged, was moved from another connection or "
                "restored from an older revision, or was sealed with a key this keyring does not hold."
            ) from None

    def _next_key_id(self) -> str:
        numbers = [int(key_id[1:]) for key_id in self._keys if re.fullmatch(r"k[0-9]{1,9}", key_id)]
        return f"k{max(numbers, default=0) + 1}"


def record_key_id(record: bytes) -> str:
    """Return the id of the key that sealed *record* (read from its header; not authenticated here).

    Raises:
        ValueError: *record* is not a sealed record of a known format.
    """
    if len(record) < 2 or record[0] != FORMAT_VERSION or len(record) < 2 + record[1] + NONCE_BYTES + 16:
        raise ValueError("not a sealed record")
    key_id = record[2 : 2 + record[1]].decode("ascii")
    if not KEY_ID_PATTERN.fullmatch(key_id):
        raise ValueError("not a sealed record")
    return key_id


def _stamp_of(status: os.stat_result) -> tuple[int, int, int]:
    # Key files are replaced atomically (os.replace), so a new inode (or mtime/size) means new contents.
    return (status.st_ino, status.st_mtime_ns, status.st_size)


def _create_key_file(path: Path, text: str) -> bool:
    """Create *path* with *text* unless it exists; return whether this call created it (race-free)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = _write_temporary(path, text)
    try:
        os.link(temporary, path)  # fails if another process created the file first: never overwrite a key
    except FileExistsError:
        return False
    finally:
        temporary.unlink()
    return True


def _write_key_file(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.replace(_write_temporary(path, text), path)  # atomic: readers see the old file or the new one, never half


def _write_temporary(path: Path, text: str) -> Path:
    descriptor, name = tempfile.mkstemp(prefix=".keys-", dir=path.parent)  # created with mode 0600
    with os.fdopen(descriptor, "w", encoding="ascii") as file:
        file.write(text)
        file.flush()
        os.fsync(file.fileno())
    return Path(name)
