"""The masker: secrets and their encodings become ``****`` in strings and JSON structures."""

from __future__ import annotations

import base64
import json
from urllib.parse import quote, urlencode

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zingyconn.secrets.masking import MASK, Masker, secret_forms

TOKEN = "0123456789abcdef0123456789abcdef"
API_SECRET = "Zz9+/secret=with&odd chars%"  # not a Twilio shape: exercises every encoding
ACCOUNT_SID = "AC" + "1" * 32


def test_mask_replaces_the_secret_in_text() -> None:
    """A secret anywhere in a string is replaced by the mask."""
    assert Masker([TOKEN]).mask_text(f"token={TOKEN}!") == f"token={MASK}!"


@pytest.mark.parametrize("prefix", ["", "a", "ab", "abc", f"{ACCOUNT_SID}:", "SKx:"])
def test_mask_hides_basic_auth_base64_in_every_alignment(prefix: str) -> None:
    """``base64(user:secret)`` no longer contains the base64 text of the secret, whatever the user's length."""
    encoded = base64.b64encode(f"{prefix}{TOKEN}".encode()).decode()
    masked = Masker([TOKEN]).mask_text(f"Authorization: Basic {encoded}")
    assert MASK in masked
    assert base64.b64encode(TOKEN.encode()).decode()[4:-4] not in masked


def test_mask_hides_url_encoded_and_json_escaped_forms() -> None:
    """Form-encoded, percent-encoded and JSON-escaped copies of a secret are masked too."""
    masker = Masker([API_SECRET])
    for text in (urlencode({"Password": API_SECRET}), quote(API_SECRET, safe=""), json.dumps({"s": API_SECRET})):
        assert "secret" not in masker.mask_text(text).replace(MASK, ""), text


def test_mask_walks_json_structures_including_keys() -> None:
    """Dicts (keys and values), lists and tuples are masked recursively; other values pass through."""
    masker = Masker([TOKEN])
    value = {"out": [TOKEN, (f"x{TOKEN}", 1)], TOKEN: None, "n": 3, "ok": True}
    assert masker.mask(value) == {"out": [MASK, (f"x{MASK}", 1)], MASK: None, "n": 3, "ok": True}


def _strings(value: object) -> list[str]:
    """Every string in the JSON-like *value*, keys included."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [text for key, item in value.items() for text in (*_strings(key), *_strings(item))]
    if isinstance(value, list | tuple):
        return [text for item in value for text in _strings(item)]
    return []


_SECRETS = st.text(min_size=8, max_size=24).filter(lambda s: "*" not in s)


# Secrets with quotes, backslashes and control characters (JSON escapes them) among plain ones, each put in the
# structure as it is and in its JSON-escaped form; no per-example deadline (the forms take a while on a busy machine).
@settings(deadline=None)
@given(
    st.lists(st.one_of(_SECRETS, _SECRETS.map(lambda s: s[:4] + '"\\\x01' + s[4:])), min_size=1, max_size=3),
    st.data(),
)
def test_no_secret_survives_in_any_string_of_a_structure(secrets: list[str], data: st.DataObject) -> None:
    """Whatever structure holds them (nested dicts, lists, tuples, keys), no secret, plain or JSON-escaped, is left in
    any of the masked structure's strings; a structure holding none comes back equal."""
    copies = [*secrets, *(json.dumps(secret)[1:-1] for secret in secrets)]
    texts = st.one_of(
        st.text(max_size=10),
        st.sampled_from(copies),
        st.builds(str.__add__, st.text(max_size=5), st.sampled_from(copies)),
    )
    leaves = st.one_of(st.none(), st.integers(), texts)
    value = data.draw(
        st.recursive(
            leaves,
            lambda children: st.one_of(
                st.lists(children, max_size=4),
                st.tuples(children, children),
                st.dictionaries(texts, children, max_size=4),
            ),
            max_leaves=12,
        )
    )
    masked = Masker(secrets).mask(value)
    found = [text for text in _strings(masked) for secret in copies if secret in text and secret not in MASK]
    assert found == []
    if not any(secret in text for text in _strings(value) for secret in copies):
        assert masked == value


def test_masker_without_secrets_changes_nothing() -> None:
    """With no secrets (or only empty ones) the masker is falsy and returns values as they are."""
    masker = Masker(["", ""])
    assert not masker
    assert masker.mask({"a": "b"}) == {"a": "b"}


def test_short_secrets_are_not_masked() -> None:
    """A secret under 8 characters is ignored rather than shredding ordinary output."""
    assert secret_forms("abc") == set()
    assert Masker(["abc"]).mask_text("abcabc") == "abcabc"


def test_longest_form_wins_over_its_fragments() -> None:
    """Two secrets where one contains the other: the longer is masked whole."""
    masker = Masker([TOKEN, TOKEN[:16]])
    assert masker.mask_text(TOKEN) == MASK


@given(st.text(min_size=8, max_size=40).filter(lambda s: "*" not in s), st.text(max_size=20), st.text(max_size=20))
def test_masked_text_never_contains_the_secret(secret: str, before: str, after: str) -> None:
    """Whatever surrounds it, the masked text no longer contains the secret itself."""
    assert secret not in Masker([secret]).mask_text(before + secret + after)


# No per-example deadline: six secrets' encoded forms take a few hundred ms on a loaded 2-core machine, and the property
# is about what is masked, not how fast.
@settings(deadline=None)
@given(st.lists(st.text(min_size=8, max_size=24).filter(lambda s: "*" not in s), min_size=1, max_size=6), st.text())
def test_no_secret_survives_among_many(secrets: list[str], filler: str) -> None:
    """With several secrets (sharing prefixes or not), none of them is left in the masked text."""
    text = filler.join(secrets) + "".join(reversed(secrets))
    masked = Masker(secrets).mask_text(text)
    assert not any(secret in masked for secret in secrets if secret not in MASK)
