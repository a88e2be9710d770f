"""The one rule for names of tenants, connections, hooks and scripts."""

from __future__ import annotations

import re
from typing import Final

from zingyconn.errors import ValidationError

#: 1-100 letters, digits, ``_``, ``.`` or ``-``, starting with a letter or digit. Names appear in URLs
#: (``/hooks/{tenant}/{hook}``), in AAD of sealed records and in log lines, so nothing that needs escaping is allowed.
NAME_PATTERN: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


def validate_name(value: object, *, field: str) -> str:
    """Return *value* if it is a valid name, else raise ValidationError naming *field*."""
    if not isinstance(value, str) or not NAME_PATTERN.fullmatch(value):
        shown = value[:120] if isinstance(value, str) else value
        raise ValidationError(
            f"{field.capitalize()} {shown!r} is not a valid name; use 1-100 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit.",
            field=field,
        )
    return value
