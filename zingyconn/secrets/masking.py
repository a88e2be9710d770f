"""Replace secrets with ``****`` in everything a run produces, before it leaves the host or is stored.

A snippet never holds a connection's secret, so masking is the last wall, not the first: it catches a secret that
reached output some other way (a token a snippet passed to ``twilio.Client(sid, token)`` and then printed, an error
message that quoted a request). Besides the secret itself it catches the encodings an HTTP exchange produces: the
``Authorization: Basic base64(user:secret)`` header (in every base64 alignment, standard and URL-safe alphabet) and
the URL-encoded form. It cannot catch a secret the snippet transformed on purpose (reversed, hex-encoded): a snippet
can only do that with credentials it already knows.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable, Iterator
from functools import lru_cache
from typing import Any, Final
from urllib.parse import quote, quote_plus

#: What a masked secret becomes.
MASK: Final = "****"

#: Secrets (and encoded fragments) shorter than this are not masked: masking a 3-character "token" would shred
#: ordinary output while protecting nothing (Twilio tokens and API key secrets are 32 characters).
MIN_SECRET_LENGTH: Final = 8


def _base64_fragments(secret: bytes) -> set[str]:
    """Return the base64 text that *secret* produces wherever it sits inside a longer base64-encoded value.

    Base64 works in 3-byte groups, so the encoding of the secret depends on how many bytes precede it in its group
    (0, 1 or 2). For each alignment the characters that depend on neighbouring bytes are dropped, which leaves a
    fragment found in ``base64(anything + secret + anything)`` (e.g. ``Basic base64("AC...:" + token)``).
    """
    fragments: set[str] = set()
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + secret).decode("ascii")
        start = 4 if offset else 0
        end = 4 * ((offset + len(secret)) // 3)
        fragment = encoded[start:end]
        if len(fragment) >= MIN_SECRET_LENGTH:
            fragments.add(fragment)
            fragments.add(fragment.replace("+", "-").replace("/", "_"))
    return fragments


def secret_forms(secret: str) -> set[str]:
    """Return every form of *secret* the masker looks for: plain, URL-encoded, JSON-escaped and base64 fragments."""
    if len(secret) < MIN_SECRET_LENGTH:
        return set()
    forms = {secret, quote(secret, safe=""), quote_plus(secret), json.dumps(secret)[1:-1]}
    forms |= _base64_fragments(secret.encode("utf-8"))
    return {form for form in forms if len(form) >= MIN_SECRET_LENGTH}


class Masker:
    """Replace every known secret (and its encodings) with :data:`MASK` in strings and JSON structures.

    Build one per run from the tenant's secrets plus any credentials the snippet passed; one compiled regular
    expression does the work, so masking a large output costs one scan. A structure is first written as JSON text and
    searched once: one without any secret form (nearly every run's event and output) is returned as it is, without
    walking it in Python.

    >>> Masker(["0123456789abcdef"]).mask({"out": "token=0123456789abcdef"})
    {'out': 'token=****'}
    """

    __slots__ = ("_json_safe", "_pattern")

    def __init__(self, secrets: Iterable[str]) -> None:
        self._pattern, self._json_safe = _compile(frozenset(secret for secret in secrets if secret))

    def __bool__(self) -> bool:
        return self._pattern is not None

    def mask_text(self, text: str) -> str:
        """Return *text* with every secret form replaced by :data:`MASK`."""
        if self._pattern is None:
            return text
        return self._pattern.sub(MASK, text)

    def mask(self, value: Any) -> Any:
        """Return the JSON-like *value* (dicts, lists, tuples, strings) with every secret masked: a copy, or *value*
        itself when it holds no secret.

        Dictionary keys are masked too; other values (numbers, ``None``, booleans) pass through unchanged.
        """
        pattern = self._pattern
        if pattern is None:
            return value
        if isinstance(value, dict | list | tuple) and (
            not value or (self._json_safe and _no_form_in_json(pattern, value))  # no logs, no calls: nothing to do
        ):
            return value
        return self._mask(value)

    def _mask(self, value: Any) -> Any:
        # Iterative, not recursive: a webhook body or task payload may nest deeper than Python's recursion limit,
        # and masking must never fail (a failure here would leave the run unrecorded).
        leaf = self._leaf(value)
        if leaf is not _CONTAINER:
            return leaf
        stack: list[_Frame] = [_Frame(value)]
        while True:
            frame = stack[-1]
            for item in frame.items:
                key, child = item if frame.is_dict else (None, item)
                masked = self._leaf(child)
                if masked is _CONTAINER:
                    frame.pending_key = key
                    stack.append(_Frame(child))
                    break
                frame.add(self._leaf_key(key), masked)
            else:
                stack.pop()
                done = frame.build()
                if not stack:
                    return done
                parent = stack[-1]
                parent.add(self._leaf_key(parent.pending_key), done)

    def _leaf(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.mask_text(value)
        if isinstance(value, dict | list | tuple):
            return _CONTAINER
        return value

    def _leaf_key(self, key: Any) -> Any:
        return self.mask_text(key) if isinstance(key, str) else key


_CONTAINER: Final = object()


class _Frame:
    """One container being copied by :meth:`Masker._mask`: its remaining items and what was built so far."""

    __slots__ = ("built", "is_dict", "items", "kind", "pending_key")

    def __init__(self, value: dict[Any, Any] | list[Any] | tuple[Any, ...]) -> None:
        self.kind: type = dict if isinstance(value, dict) else list if isinstance(value, list) else tuple
        self.is_dict = self.kind is dict
        self.items: Iterator[Any] = iter(value.items() if isinstance(value, dict) else value)
        self.built: list[Any] = []
        self.pending_key: Any = None

    def add(self, key: Any, value: Any) -> None:
        self.built.append((key, value) if self.is_dict else value)

    def build(self) -> Any:
        if self.is_dict:
            return dict(self.built)
        return self.built if self.kind is list else tuple(self.built)


#: Writes a structure as the text :meth:`Masker.mask` searches first (non-ASCII kept as it is, as the forms have it).
_JSON: Final = json.JSONEncoder(ensure_ascii=False)


def _no_form_in_json(pattern: re.Pattern[str], value: dict[Any, Any] | list[Any] | tuple[Any, ...]) -> bool:
    """Whether *value* certainly holds no secret form in any string or key: one search of its JSON text.

    Only for a *pattern* whose forms have no character JSON escapes (``"``, a backslash, control characters): each
    string is then written with every form in it unchanged, so a form in a string is a form in the text. A value JSON
    cannot write (other objects, cycles, nesting deeper than the stack) is walked instead.
    """
    try:
        text = _JSON.encode(value)
    except (TypeError, ValueError, RecursionError):
        return False
    return pattern.search(text) is None


@lru_cache(maxsize=256)
def _compile(secrets: frozenset[str]) -> tuple[re.Pattern[str] | None, bool]:
    """Return the pattern of every form of *secrets*, and whether JSON writes each form unchanged (no escapes)."""
    # Cached by the set of secrets: a tenant's runs reuse one compiled pattern instead of rebuilding it per run.
    forms: set[str] = set()
    for secret in secrets:
        forms |= secret_forms(secret)
    if not forms:
        return None, False
    return re.compile(_trie_pattern(forms)), all(_JSON.encode(form)[1:-1] == form for form in forms)


def _trie_pattern(words: set[str]) -> str:
    """Return one regular expression matching any of *words*, factored as a prefix tree.

    A flat ``a|b|c`` alternation makes the regex engine try every word at every position (0.5 s for 1 MiB of
    output against 50 connections); the tree follows one path per position (about 5x faster). Greedy optional
    groups make the longest word win where one word is a prefix of another.
    """
    trie: dict[str, Any] = {}
    for word in words:
        node = trie
        for char in word:
            node = node.setdefault(char, {})
        node[""] = {}  # end of a word
    return _node_pattern(trie)


def _node_pattern(root: dict[str, Any]) -> str:
    """Return the pattern of the prefix tree *root* (iteratively: a long secret makes a deep tree)."""
    patterns: dict[int, str] = {}
    stack: list[tuple[dict[str, Any], bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if not children_done:
            stack.append((node, True))
            stack.extend((node[char], False) for char in node if char)
            continue
        if list(node) == [""]:
            patterns[id(node)] = ""
            continue
        branches: list[str] = []
        leaves: list[str] = []
        for char in sorted(key for key in node if key):
            rest = patterns.pop(id(node[char]))
            if rest:
                branches.append(re.escape(char) + rest)
            else:
                leaves.append(re.escape(char))
        if leaves:
            branches.append(leaves[0] if len(leaves) == 1 else f"[{''.join(leaves)}]")
        body = branches[0] if len(branches) == 1 else f"(?:{'|'.join(branches)})"
        patterns[id(node)] = f"(?:{body})?" if "" in node else body
    return patterns[id(root)]
