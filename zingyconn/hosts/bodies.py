"""Request bodies parsed with bounded cost and checked before anything else sees them.

Threats, each turned into a 400 with a message instead of an unrecorded 500 (or a stalled server):

- **Deep nesting**: a 100 000-deep JSON array makes ``json.loads`` raise ``RecursionError``, and a few hundred
  levels still break every later step that walks the value (the event sent to the sandbox, the history row).
  Bodies nested deeper than :data:`MAX_JSON_DEPTH` are refused.
- **Invalid Unicode**: JSON may spell a lone surrogate (``"\\ud800"``), which no UTF-8 encoder accepts; such a
  value would fail when the event is encoded for the sandbox or stored. It is refused with its location.

Callers run :func:`parse_json` in a worker thread (the webhook host uses a small dedicated pool), so a large body
is never parsed on the event loop.
"""

from __future__ import annotations

import json
from typing import Any, Final

from zingyconn.errors import ValidationError

#: Deepest JSON nesting accepted (Twilio's JSON bodies nest a few levels; 64 leaves room for any real payload).
MAX_JSON_DEPTH: Final = 64


def parse_json(body: bytes | str, *, field: str = "body", strict: bool = True) -> Any:
    """Return the JSON value of *body*; with ``strict=False``, ``None`` when *body* is not JSON at all.

    Raises:
        ValidationError: *body* is not JSON (when *strict*), is nested deeper than :data:`MAX_JSON_DEPTH`, or holds
            a string that is not valid Unicode (a lone surrogate); ``field`` names what was parsed.
    """
    try:
        value = json.loads(body)
    except RecursionError:
        raise ValidationError(f"The {field} is JSON nested too deeply; at most {MAX_JSON_DEPTH} levels are accepted.",
                              field=field) from None  # fmt: skip
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        if not strict:
            return None
        raise ValidationError(f"The {field} is not valid JSON: {exc}.", field=field) from None
    check_json(value, field=field)
    return value


def check_json(value: Any, *, field: str = "body") -> None:
    """Refuse a parsed JSON *value* nested deeper than :data:`MAX_JSON_DEPTH` or holding invalid Unicode.

    Raises:
        ValidationError: As :func:`parse_json`.
    """
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            _check_text(item, field=field)
            continue
        if not isinstance(item, dict | list):
            continue
        if depth > MAX_JSON_DEPTH:
            raise ValidationError(
                f"The {field} is JSON nested too deeply; at most {MAX_JSON_DEPTH} levels are accepted.", field=field
            )
        if isinstance(item, dict):
            for key, child in item.items():
                _check_text(key, field=field)
                stack.append((child, depth + 1))
        else:
            stack.extend((child, depth + 1) for child in item)


def _check_text(text: str, *, field: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = text[exc.start : exc.end].encode("unicode_escape").decode("ascii")
        raise ValidationError(
            f"The {field} holds invalid Unicode: a lone surrogate ({bad}) at character {exc.start} of a string; "
            "send UTF-8 text (a surrogate must come in a pair).",
            field=field,
        ) from None
