"""Resource limits of one snippet run (the product built on the sandbox picks them per kind of run)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

MIB: Final = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Limits:
    """What one run may consume; every field is enforced by the host or the child process.

    Attributes:
        wall_seconds: Wall-clock deadline; the host SIGKILLs the child when it passes.
        cpu_seconds: CPU time (``RLIMIT_CPU``) of the child.
        memory_bytes: Address-space cap (``RLIMIT_AS``) above the zygote's own footprint.
        output_bytes: Cap on captured ``print`` output plus log records.
        result_bytes: Cap on the JSON-serialised return value.
        egress_requests: Requests the snippet may make to the host (e.g. Twilio API calls) per run.
    """

    wall_seconds: float = 10.0
    cpu_seconds: float = 10.0
    memory_bytes: int = 256 * MIB
    output_bytes: int = 1 * MIB
    result_bytes: int = 1 * MIB
    egress_requests: int = 50

    def replace(self, **changes: float | int) -> Limits:
        """Return a copy with *changes* applied (validated like the constructor); *self* when there are none."""
        if not changes:
            return self  # frozen: nothing to copy (a hook without overrides asks this on every run)
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]  # checked in __post_init__

    def __post_init__(self) -> None:
        for name in _FIELD_NAMES:  # not dataclasses.fields(): it cost most of a construction
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ValueError(f"Limit {name!r} must be a positive number, got {value!r}.")

    def with_overrides(self, overrides: Mapping[str, str]) -> Limits:
        """Apply ``NAME=VALUE`` overrides given as strings (from the CLI or a form), naming a bad field."""
        known = {field.name: field for field in dataclasses.fields(self)}
        changes: dict[str, float | int] = {}
        for name, text in overrides.items():
            if name not in known:
                raise ValueError(f"Unknown limit {name!r}; valid limits are {', '.join(sorted(known))}.")
            try:
                changes[name] = float(text) if name.endswith("_seconds") else int(text)
            except ValueError:
                raise ValueError(f"Limit {name!r} must be a number, got {text!r}.") from None
        return self.replace(**changes)


#: The fields of :class:`Limits`, in order (the class is fixed once defined).
_FIELD_NAMES: Final = tuple(field.name for field in dataclasses.fields(Limits))
