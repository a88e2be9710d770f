"""How many SMS segments a body needs: GSM-7 (160 / 153 per part) or UCS-2 (70 / 67 UTF-16 units per part)."""

from __future__ import annotations

import math
from typing import Final

#: The GSM 03.38 basic character set (one septet each).
GSM7_BASIC: Final = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
#: The GSM 03.38 extension table: each costs an escape septet plus itself.
GSM7_EXTENSION: Final = frozenset("^{}\\[~]|€\f")

GSM7_SINGLE: Final = 160
GSM7_PART: Final = 153
UCS2_SINGLE: Final = 70
UCS2_PART: Final = 67


def encoding(body: str) -> str:
    """Return ``"GSM-7"`` when every character fits the GSM alphabet, else ``"UCS-2"``."""
    if all(char in GSM7_BASIC or char in GSM7_EXTENSION for char in body):
        return "GSM-7"
    return "UCS-2"


def count_segments(body: str) -> int:
    """Return the number of SMS segments Twilio would bill for *body* (at least 1)."""
    if encoding(body) == "GSM-7":
        units = sum(2 if char in GSM7_EXTENSION else 1 for char in body)
        single, part = GSM7_SINGLE, GSM7_PART
    else:
        units = len(body.encode("utf-16-le")) // 2
        single, part = UCS2_SINGLE, UCS2_PART
    if units <= single:
        return 1
    return math.ceil(units / part)
