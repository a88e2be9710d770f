"""Status callbacks: signed form POSTs to a message's ``StatusCallback`` URL, one per transition after the first.

The emulator only ever calls URLs its ``allow_callback`` policy admits (default: loopback hosts). A callback to any
other host is recorded as skipped, never sent: the emulator must not become a way to make requests to the network
(SSRF) from a demo or a test.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final
from urllib.parse import urlsplit

import httpx
from twilio.request_validator import RequestValidator

from zingyconn.twilio.emulator.message import API_VERSION, Message, default_service_sid

#: Seconds to wait for a callback receiver; a slow receiver must not stall the emulator.
CALLBACK_TIMEOUT_SECONDS: Final = 5.0
LOOPBACK_NAMES: Final = frozenset({"localhost"})


@dataclass(frozen=True, slots=True)
class Callback:
    """One status callback to deliver: where, what (form pairs), and the ``X-Twilio-Signature``."""

    url: str
    params: dict[str, str]
    signature: str


@dataclass(frozen=True, slots=True)
class CallbackAttempt:
    """What happened to one callback: HTTP status, or why it was not sent (``error``)."""

    callback: Callback
    status_code: int | None
    error: str | None


def is_loopback_url(url: str) -> bool:
    """The default callback policy: only ``http(s)`` URLs on a loopback host (127.0.0.0/8, ::1, localhost)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme not in {"http", "https"}:
        return False
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def build_callback(message: Message, auth_token: str) -> Callback | None:
    """Return the signed callback for the message's current status, or None when it has no StatusCallback."""
    if message.status_callback is None:
        return None
    params = {
        "AccountSid": message.account_sid,
        "ApiVersion": API_VERSION,
        "From": message.from_ or "",
        "MessageSid": message.sid,
        "MessageStatus": message.status,
        "SmsSid": message.sid,
        "SmsStatus": message.status,
        "To": message.to,
        "MessagingServiceSid": message.messaging_service_sid or default_service_sid(message.account_sid),
    }
    if message.error_code is not None:
        params["ErrorCode"] = str(message.error_code)
        params["ErrorMessage"] = message.error_message or ""
    if message.status in {"delivered", "undelivered"}:
        params["RawDlrDoneDate"] = datetime.fromtimestamp(message.date_updated, UTC).strftime("%y%m%d%H%M")
    signature = RequestValidator(auth_token).compute_signature(message.status_callback, params)
    return Callback(message.status_callback, params, signature)


def _headers(callback: Callback) -> dict[str, str]:
    return {"X-Twilio-Signature": callback.signature, "User-Agent": "TwilioProxy/1.1 (zingyconn emulator)"}


def deliver(callbacks: list[Callback], *, allow: Callable[[str], bool]) -> list[CallbackAttempt]:
    """POST each callback in order (blocking); failures are recorded, never raised."""
    attempts: list[CallbackAttempt] = []
    if not callbacks:
        return attempts
    with httpx.Client(timeout=CALLBACK_TIMEOUT_SECONDS, trust_env=False) as client:
        for callback in callbacks:
            if not allow(callback.url):
                attempts.append(CallbackAttempt(callback, None, "skipped: URL not allowed by the callback policy"))
                continue
            try:
                response = client.post(callback.url, data=callback.params, headers=_headers(callback))
            except (httpx.HTTPError, httpx.InvalidURL, ValueError) as exc:
                attempts.append(CallbackAttempt(callback, None, f"{type(exc).__name__}: {exc}"))
            else:
                attempts.append(CallbackAttempt(callback, response.status_code, None))
    return attempts


async def deliver_async(callbacks: list[Callback], *, allow: Callable[[str], bool]) -> list[CallbackAttempt]:
    """POST each callback in order without blocking the event loop; failures are recorded, never raised."""
    attempts: list[CallbackAttempt] = []
    if not callbacks:
        return attempts
    async with httpx.AsyncClient(timeout=CALLBACK_TIMEOUT_SECONDS, trust_env=False) as client:
        for callback in callbacks:
            if not allow(callback.url):
                attempts.append(CallbackAttempt(callback, None, "skipped: URL not allowed by the callback policy"))
                continue
            try:
                response = await client.post(callback.url, data=callback.params, headers=_headers(callback))
            except (httpx.HTTPError, httpx.InvalidURL, ValueError) as exc:
                attempts.append(CallbackAttempt(callback, None, f"{type(exc).__name__}: {exc}"))
            else:
                attempts.append(CallbackAttempt(callback, response.status_code, None))
    return attempts
