"""Twilio API errors as the emulator answers them: ``{"code", "message", "more_info", "status"}``.

The body never carries ``type``/``title``: with all four of ``type``, ``title``, ``status`` and ``code`` the real
``twilio`` library would raise ``TwilioServiceException`` (RFC 9457) instead of ``TwilioRestException``.
The emulator is a separate program with its own tree, one class::

    Exception
    └── ApiError (.status, .code, .message)   # one Twilio error answer, rendered as Twilio renders it
"""

from __future__ import annotations

from typing import Any

MORE_INFO = "https://www.twilio.com/docs/errors/{code}"


class ApiError(Exception):
    """One Twilio error answer: HTTP ``status``, Twilio ``code`` and ``message``."""

    def __init__(self, code: int, message: str, *, status: int = 400) -> None:
        self.code = code
        self.status = status
        self.message = message
        super().__init__(f"{code}: {message}")

    def to_json(self) -> dict[str, Any]:
        """Return the error body exactly as Twilio's v2010 API shapes it."""
        return {
            "code": self.code,
            "message": self.message,
            "more_info": MORE_INFO.format(code=self.code),
            "status": self.status,
        }


def authenticate_error() -> ApiError:
    """Return Twilio's answer to missing or wrong credentials (also: a path account that is not the caller's)."""
    return ApiError(20003, "Authenticate", status=401)


def not_found(path: str) -> ApiError:
    """Return Twilio's answer for an unknown resource (unknown or deleted SID, unknown route)."""
    return ApiError(20404, f"The requested resource {path} was not found", status=404)
