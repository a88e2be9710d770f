"""Tests of zingyconn.secrets.keyring: key configuration, the sealed record format, and opaque failures."""

from __future__ import annotations

import base64
import multiprocessing
import stat
from multiprocessing.synchronize import Barrier as BarrierType
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zingyconn.config import Settings
from zingyconn.errors import DecryptionError, KeyringError
from zingyconn.secrets.keyring import FORMAT_VERSION, NONCE_BYTES, Keyring, encode_key, parse_keys, record_key_id

KEY_1 = bytes(range(32))
KEY_2 = bytes(range(32, 64))
AAD = b'["zingyconn.connection/1","acme","primary","twilio"]'


def _keyring(*keys: tuple[str, bytes]) -> Keyring:
    return Keyring(list(keys) or [("k1", KEY_1)])


def _settings(tmp_path: Path, keys: str | None = None) -> Settings:
    return Settings(data_dir=tmp_path / "data", db_url="sqlite://", keys=keys)


@given(plaintext=st.binary(max_size=2048), aad=st.binary(max_size=256))
def test_seal_then_unseal_returns_the_plaintext(plaintext: bytes, aad: bytes) -> None:
    """Any plaintext sealed for any AAD opens again with the same AAD."""
    keyring = _keyring()
    assert keyring.unseal(keyring.seal(plaintext, aad=aad), aad=aad, what="'x'") == plaintext


@given(plaintext=st.binary(max_size=200), data=st.data())
def test_changing_any_byte_of_a_record_makes_it_undecryptable(plaintext: bytes, data: st.DataObject) -> None:
    """Flipping bits in any byte (header, nonce, ciphertext or tag) gives DecryptionError."""
    keyring = _keyring()
    record = bytearray(keyring.seal(plaintext, aad=AAD))
    index = data.draw(st.integers(0, len(record) - 1))
    record[index] ^= data.draw(st.integers(1, 255))
    with pytest.raises(DecryptionError):
        keyring.unseal(bytes(record), aad=AAD, what="'primary'")


@given(plaintext=st.binary(max_size=100), length=st.integers(0, 200))
def test_truncated_records_are_undecryptable(plaintext: bytes, length: int) -> None:
    """A record cut short anywhere gives DecryptionError, never another exception."""
    keyring = _keyring()
    record = keyring.seal(plaintext, aad=AAD)
    if length < len(record):
        with pytest.raises(DecryptionError):
            keyring.unseal(record[:length], aad=AAD, what="'primary'")


def test_record_does_not_open_for_another_connection() -> None:
    """A record sealed for one (tenant, name, type) does not open for another."""
    keyring = _keyring()
    record = keyring.seal(b"secret", aad=AAD)
    with pytest.raises(DecryptionError):
        keyring.unseal(record, aad=AAD.replace(b"acme", b"evil"), what="'primary'")


def test_record_does_not_open_with_a_different_key_of_the_same_id() -> None:
    """The wrong key material under the right id gives DecryptionError."""
    record = _keyring(("k1", KEY_1)).seal(b"secret", aad=AAD)
    with pytest.raises(DecryptionError):
        _keyring(("k1", KEY_2)).unseal(record, aad=AAD, what="'primary'")


def test_decryption_error_names_the_connection_and_nothing_else() -> None:
    """The error names the connection; never the key id, key material, cause or plaintext."""
    record = _keyring(("k7", KEY_1)).seal(b"hunter2", aad=AAD)
    with pytest.raises(DecryptionError) as caught:
        _keyring(("k1", KEY_2)).unseal(record, aad=AAD, what="'primary' (tenant 'acme')")
    message = str(caught.value)
    assert "'primary' (tenant 'acme')" in message
    for leak in ("k7", "k1", "hunter2", base64.b64encode(KEY_1).decode(), base64.b64encode(KEY_2).decode()):
        assert leak not in message
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__


def test_record_header_carries_version_key_id_and_nonce() -> None:
    """The record is version, key-id length, key id, 12-byte nonce, then ciphertext and 16-byte tag."""
    keyring = _keyring(("key-2026", KEY_1))
    record = keyring.seal(b"abc", aad=AAD)
    assert record[0] == FORMAT_VERSION
    assert record[1] == len("key-2026")
    assert record[2:10] == b"key-2026"
    assert len(record) == 2 + 8 + NONCE_BYTES + 3 + 16
    assert record_key_id(record) == "key-2026"


def test_two_seals_of_the_same_plaintext_differ() -> None:
    """Every seal uses a fresh nonce."""
    keyring = _keyring()
    assert keyring.seal(b"same", aad=AAD) != keyring.seal(b"same", aad=AAD)


def test_first_key_seals_and_every_key_opens() -> None:
    """With ZINGYCONN_KEYS="k2:...,k1:...", k2 seals and records sealed by k1 still open."""
    old = Keyring.from_settings(
        Settings(data_dir=Path("/nonexistent"), db_url="sqlite://", keys=encode_key("k1", KEY_1))
    )
    both = parse_keys(f"{encode_key('k2', KEY_2)}, {encode_key('k1', KEY_1)}")
    keyring = Keyring(both)
    record = old.seal(b"old", aad=AAD)
    assert keyring.primary_key_id == "k2"
    assert keyring.key_ids == ("k2", "k1")
    assert keyring.unseal(record, aad=AAD, what="'x'") == b"old"
    assert record_key_id(keyring.seal(b"new", aad=AAD)) == "k2"


def test_url_safe_base64_keys_are_accepted() -> None:
    """Keys may use the url-safe base64 alphabet (as Fernet keys do)."""
    key = b"\xfb\xff" * 16
    assert parse_keys("k1:" + base64.urlsafe_b64encode(key).decode()) == [("k1", key)]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        pytest.param(
            "k2:" + base64.b64encode(b"x" * 16).decode(), "'k2' in ZINGYCONN_KEYS decodes to 16 bytes", id="short"
        ),
        pytest.param(
            "k3:" + base64.b64encode(b"x" * 33).decode(), "'k3' in ZINGYCONN_KEYS decodes to 33 bytes", id="long"
        ),
        pytest.param("k4:not base64!!", "'k4' in ZINGYCONN_KEYS is not valid base64", id="encoding"),
        pytest.param(base64.b64encode(KEY_1).decode(), "Entry 1 of ZINGYCONN_KEYS has no key id", id="no-id"),
        pytest.param("bad id:" + base64.b64encode(KEY_1).decode(), "Key id 'bad id'", id="bad-id"),
        pytest.param(f"{encode_key('k1', KEY_1)},{encode_key('k1', KEY_2)}", "'k1' appears twice", id="duplicate"),
        pytest.param(" , ", "holds no keys", id="empty"),
    ],
)
def test_malformed_keys_get_a_precise_error(spec: str, message: str) -> None:
    """Each malformed ZINGYCONN_KEYS gets a KeyringError naming the key and the problem."""
    with pytest.raises(KeyringError, match=message):
        parse_keys(spec)


def test_embedded_default_creates_a_private_key_file_once(tmp_path: Path) -> None:
    """Without ZINGYCONN_KEYS a key file (mode 0600) is created on first use, announced once."""
    announced: list[str] = []
    first = Keyring.from_settings(_settings(tmp_path), announce=announced.append)
    second = Keyring.from_settings(_settings(tmp_path), announce=announced.append)
    path = tmp_path / "data" / "keys"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(announced) == 1
    assert str(path) in announced[0]
    assert first.key_ids == second.key_ids == ("k1",)
    assert second.unseal(first.seal(b"x", aad=AAD), aad=AAD, what="'x'") == b"x"


def test_key_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    """A group- or world-readable key file is refused with the chmod that fixes it."""
    Keyring.from_settings(_settings(tmp_path), announce=lambda _: None)
    path = tmp_path / "data" / "keys"
    path.chmod(0o644)
    with pytest.raises(KeyringError, match=f"chmod 600 {path}"):
        Keyring.from_file(path)


def test_bad_key_in_the_key_file_names_the_file_and_key(tmp_path: Path) -> None:
    """A wrong-length key in the key file is reported with the file path and the key id."""
    path = tmp_path / "keys"
    path.write_text("k9:" + base64.b64encode(b"short").decode() + "\n")
    path.chmod(0o600)
    with pytest.raises(KeyringError, match=f"'k9' in key file {path} decodes to 5 bytes"):
        Keyring.from_file(path)


def test_new_key_is_saved_first_atomically_and_privately(tmp_path: Path) -> None:
    """with_new_key + save puts a fresh k2 first in the file (mode 0600) and keeps k1."""
    keyring = Keyring.from_settings(_settings(tmp_path), announce=lambda _: None)
    record = keyring.seal(b"old", aad=AAD)
    saved = keyring.with_new_key().save()
    reloaded = Keyring.from_file(saved)
    assert reloaded.key_ids == ("k2", "k1")
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    assert reloaded.unseal(record, aad=AAD, what="'x'") == b"old"
    assert [p.name for p in saved.parent.iterdir()] == ["keys"]  # no temporary file left behind


def test_key_ids_are_checked_when_adding_and_removing() -> None:
    """Adding an existing id, removing the primary or an unknown key are refused with what to do."""
    keyring = _keyring(("k2", KEY_2), ("k1", KEY_1))
    with pytest.raises(KeyringError, match="'k1' already exists"):
        keyring.with_new_key("k1")
    with pytest.raises(KeyringError, match="'k2' is the primary key"):
        keyring.without_key("k2")
    with pytest.raises(KeyringError, match="no key 'k5'"):
        keyring.without_key("k5")
    assert keyring.without_key("k1").key_ids == ("k2",)
    assert keyring.with_new_key().primary_key_id == "k3"


def test_repr_never_shows_key_material() -> None:
    """repr(keyring) lists ids only."""
    assert base64.b64encode(KEY_1).decode() not in repr(_keyring())
    assert "k1" in repr(_keyring())


def test_save_refuses_for_environment_keys() -> None:
    """Keys from ZINGYCONN_KEYS cannot be saved to a file; the operator edits the variable."""
    keyring = Keyring(parse_keys(encode_key("k1", KEY_1)), origin="ZINGYCONN_KEYS")
    with pytest.raises(KeyringError, match="edit ZINGYCONN_KEYS"):
        keyring.save()


def _first_use(data_dir: str, start: BarrierType) -> None:
    start.wait(60)
    Keyring.from_settings(Settings(data_dir=Path(data_dir), db_url="sqlite://"), announce=lambda _: None)


def test_concurrent_first_use_creates_one_key(tmp_path: Path) -> None:
    """Processes creating the default key file at the same moment all end up with one and the same key."""
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(3)
    others = [context.Process(target=_first_use, args=(str(tmp_path / "data"), start)) for _ in range(2)]
    for process in others:
        process.start()
    start.wait(60)
    mine = Keyring.from_settings(_settings(tmp_path), announce=lambda _: None)
    for process in others:
        process.join(60)
    assert [process.exitcode for process in others] == [0, 0]
    again = Keyring.from_file(tmp_path / "data" / "keys")
    assert again.key_ids == ("k1",)
    assert again.unseal(mine.seal(b"x", aad=AAD), aad=AAD, what="'x'") == b"x"
