"""What a run produces: captured ``print`` and ``log`` output under a byte cap, and the result as JSON primitives."""

from __future__ import annotations

import datetime
import decimal
import json
import math
import re
import uuid
from collections.abc import Callable, Mapping
from typing import Any, Final

from sandbox.environment import JSON
from sandbox.errors import InvalidResultTextError, OutputLimitExceededError

#: Threat: a result nested this deep is a cycle or an attack on the converter's recursion; real results are shallow.
MAX_RESULT_DEPTH: Final = 64

#: A UTF-16 surrogate code point: in a Python str only ever "lone", and without any UTF-8 (so JSON) form.
_SURROGATE: Final = re.compile("[\ud800-\udfff]")

#: Conversions every run gets (environments add their own, e.g. TwiML -> XML); values a user expects to "just work".
DEFAULT_CONVERTERS: Final[Mapping[type, Callable[[Any], JSON]]] = {
    datetime.datetime: datetime.datetime.isoformat,
    datetime.date: datetime.date.isoformat,
    datetime.time: datetime.time.isoformat,
    decimal.Decimal: str,
    uuid.UUID: str,
}

#: Measures a result and a log record as JSON text. Built once: ``json.dumps`` with any non-default option builds
#: a new encoder each call, a tenth of a small run's conversion; an encoder holds only its options.
_TEXT_ENCODER: Final = json.JSONEncoder(ensure_ascii=False)

_NO_CONVERTERS: Final[Mapping[type, Callable[[Any], JSON]]] = {}


class RunOutput:
    """The captured stdout and log records of one run; ``print`` and ``log`` share one byte budget."""

    def __init__(self, limit_bytes: int) -> None:
        self.limit_bytes = limit_bytes
        self.used_bytes = 0
        self.exceeded = False
        self._stdout: list[str] = []
        self.logs: list[dict[str, JSON]] = []

    @property
    def stdout(self) -> str:
        """Everything printed so far."""
        return "".join(self._stdout)

    def _charge(self, size: int) -> None:
        if self.exceeded or self.used_bytes + size > self.limit_bytes:
            self.exceeded = True
            raise OutputLimitExceededError(
                f"The run's output exceeded the output_bytes limit of {self.limit_bytes} bytes."
            )
        self.used_bytes += size

    def write(self, text: str) -> None:
        """Append printed *text*, or raise OutputLimitExceededError (the run then fails even if it is caught)."""
        encoded = text.encode("utf-8", "replace")
        room = self.limit_bytes - self.used_bytes
        if len(encoded) > room and not self.exceeded:
            self._stdout.append(encoded[: max(room, 0)].decode("utf-8", "ignore"))
        self._charge(len(encoded))
        self._stdout.append(text)

    def log(self, level: str, message: object, fields: Mapping[str, object]) -> None:
        """Record one log entry with JSON-converted *fields*."""
        record = {"level": level, "message": str(message), "fields": to_json_value(dict(fields))}
        self._charge(len(_TEXT_ENCODER.encode(record).encode("utf-8", "replace")))
        self.logs.append(record)

    def print_collector(self, getattr_guard: object = None) -> PrintCollector:
        """Implement ``_print_``: RestrictedPython calls it once per function that prints."""
        del getattr_guard
        return PrintCollector(self)


class PrintCollector:
    """What ``print`` becomes in a snippet: writes go to the run's capped stdout; ``printed`` returns it."""

    __slots__ = ("_output",)

    def __init__(self, output: RunOutput) -> None:
        self._output = output

    def _call_print(
        self, *objects: object, sep: str | None = " ", end: str | None = "\n", file: object = None, flush: bool = False
    ) -> None:
        if file is not None:
            raise TypeError("print(file=...) is not supported in snippets; output is captured.")
        if not isinstance(sep, str | None) or not isinstance(end, str | None):  # type: ignore[redundant-expr]  # snippets pass anything
            raise TypeError("print() sep and end must be str or None.")
        sep = " " if sep is None else sep
        self._output.write(sep.join(str(obj) for obj in objects) + ("\n" if end is None else end))

    def __call__(self) -> str:
        return self._output.stdout


class SnippetLog:
    """The ``log`` object in a snippet: ``log.info("sent", sid=sid)``; records are captured with the run."""

    __slots__ = ("_output",)

    def __init__(self, output: RunOutput) -> None:
        self._output = output

    def debug(self, message: object, **fields: object) -> None:
        """Record a debug message with optional JSON fields."""
        self._output.log("debug", message, fields)

    def info(self, message: object, **fields: object) -> None:
        """Record an info message with optional JSON fields."""
        self._output.log("info", message, fields)

    def warning(self, message: object, **fields: object) -> None:
        """Record a warning with optional JSON fields."""
        self._output.log("warning", message, fields)

    def error(self, message: object, **fields: object) -> None:
        """Record an error message with optional JSON fields."""
        self._output.log("error", message, fields)

    def __repr__(self) -> str:
        return "<snippet log>"


def to_json_value(
    value: object, *, converters: Mapping[type, Callable[[Any], JSON]] | None = None, max_bytes: int | None = None
) -> JSON:
    """Convert *value* to JSON primitives (dict with str keys, list, str, int, float, bool, None).

    Raises:
        TypeError: A value (or dict key) has no JSON form; the message names its type.
        ValueError: NaN or infinity, or nesting deeper than MAX_RESULT_DEPTH.
        OutputLimitExceededError: The JSON text is longer than *max_bytes*.
        InvalidResultTextError: With *max_bytes*: a string holds a lone surrogate (no UTF-8 form); names where.
    """
    converted = _convert(value, converters or _NO_CONVERTERS, 0)
    if max_bytes is not None:
        try:
            size = len(_TEXT_ENCODER.encode(converted).encode("utf-8"))
        except UnicodeEncodeError as exc:
            raise InvalidResultTextError(_invalid_text_message(converted, exc)) from None
        if size > max_bytes:
            raise OutputLimitExceededError(
                f"The result is {size} bytes of JSON; the result_bytes limit is {max_bytes}."
            )
    return converted


def _invalid_text_message(converted: JSON, error: UnicodeEncodeError) -> str:
    """Say where *converted* (JSON primitives) holds the text that failed to encode, and what it was."""
    stack: list[tuple[str, JSON]] = [("result", converted)]
    where, character = "result", error.object[error.start : error.start + 1]
    while stack:
        path, item = stack.pop()
        if isinstance(item, dict):
            for key, child in item.items():
                if not _encodes(key):
                    where, character = f"a key of {path}", _first_surrogate(key)
                    stack.clear()
                    break
                stack.append((f"{path}[{key!r}]", child))
        elif isinstance(item, list):
            stack.extend((f"{path}[{index}]", child) for index, child in enumerate(item))
        elif isinstance(item, str) and not _encodes(item):
            where, character = path, _first_surrogate(item)
            break
    return (
        f"The snippet returned text that is not valid Unicode: {where} holds the lone surrogate "
        f"'\\u{ord(character):04x}', which JSON cannot carry. Return only whole "
        "characters (decode bytes with errors='replace', or drop the character)."
    )


def printable_text(value: JSON) -> JSON:
    """Return *value* (JSON primitives) with every lone surrogate in its strings and keys replaced by U+FFFD.

    For what a run shows people rather than returns as data (stdout, log records, error messages): a snippet
    that prints ``'\\ud800'`` gets a replacement character there, not a failed run.
    """
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {printable_text(key): printable_text(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [printable_text(item) for item in value]
    return value


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _first_surrogate(text: str) -> str:
    found = _SURROGATE.search(text)
    return found.group() if found else "?"


def _convert(value: object, converters: Mapping[type, Callable[[Any], JSON]], depth: int) -> JSON:
    """Convert *value*; for a class in its MRO, a converter of *converters* wins over the default one."""
    if depth > MAX_RESULT_DEPTH:
        raise ValueError(f"The result is nested more than {MAX_RESULT_DEPTH} levels deep (or contains a cycle).")
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str | int | float) and type(value) in (str, int, float):
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{value!r} has no JSON form; return None or a string instead.")
        return value
    # dict.items/list.copy/tuple slicing: a snippet subclass's own items()/__iter__ never runs here
    if isinstance(value, dict):
        return {_key(key): _convert(item, converters, depth + 1) for key, item in dict.items(value)}
    if isinstance(value, list):
        return [_convert(item, converters, depth + 1) for item in list.copy(value)]
    if isinstance(value, tuple):
        return [_convert(item, converters, depth + 1) for item in tuple.__getitem__(value, slice(None))]
    for klass in type(value).__mro__:
        converter = converters.get(klass)
        if converter is None:
            converter = DEFAULT_CONVERTERS.get(klass)
        if converter is not None:
            return _convert(converter(value), converters, depth + 1)
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int.__index__(value)
    if isinstance(value, float):
        return _convert(float.__float__(value), converters, depth)
    raise TypeError(
        f"A {type(value).__name__!r} value has no JSON form; return dicts, lists, str, numbers, bool or None."
    )


def _key(key: object) -> str:
    if isinstance(key, str):
        return str.__str__(key)
    if isinstance(key, int | float) and not isinstance(key, bool):
        return json.dumps(key)
    raise TypeError(f"JSON object keys must be str, got a {type(key).__name__!r} key.")
