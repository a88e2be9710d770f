"""zingyconn: run tenants' Python snippets safely next to their stored Twilio credentials.

``from zingyconn import Runtime`` is the Python entry point (store + keyring + sandbox + egress broker). The import
is lazy: the sandbox zygote imports ``zingyconn.snippet.environment`` and must not pull in the database, the keyring or
the broker (nothing that ever held a key belongs in a snippet's process).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from zingyconn.runtime import MaskedRunResult, Runtime, ZRunResult

__all__ = ["MaskedRunResult", "Runtime", "ZRunResult"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from zingyconn import runtime

        return getattr(runtime, name)
    raise AttributeError(f"module 'zingyconn' has no attribute {name!r}")
