"""Testing a Twilio connection: one authenticated read against Twilio (or the emulator), described in one line.

Apart from :mod:`zingyconn.twilio.profile` because it imports twilio's HTTP client (and with it ``requests``): the
store and the runtime handle profiles without it, and only ``connections test`` and ``connections add`` load it.
"""

from __future__ import annotations

import json
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response

from zingyconn.errors import TwilioError, ZingyConnError
from zingyconn.twilio.profile import TwilioProfile, mask_sid

# How long `connections test` waits for Twilio before giving up.
TEST_TIMEOUT_SECONDS: Final = 10.0


class BaseUrlHttpClient(TwilioHttpClient):  # type: ignore[misc]  # twilio ships no type information
    """A Twilio HTTP client that sends every ``https://*.twilio.com`` request to *base_url* instead (the emulator)."""

    def __init__(self, base_url: str, *, timeout: float = TEST_TIMEOUT_SECONDS) -> None:
        super().__init__(timeout=timeout)
        self.base_url = base_url.rstrip("/")

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Response:
        """Rewrite the Twilio origin in *url* to the base URL, then send the request."""
        parts, base = urlsplit(url), urlsplit(self.base_url)
        if parts.hostname and parts.hostname.endswith(".twilio.com"):
            url = urlunsplit((base.scheme, base.netloc, base.path + parts.path, parts.query, parts.fragment))
        return super().request(method, url, *args, **kwargs)


def check_credentials(profile: TwilioProfile, *, base_url: str | None = None, what: str = "the connection") -> str:
    """Make one authenticated read against Twilio (or *base_url*) and describe what answered.

    The read is ``GET /2010-04-01/Accounts/{sid}/Messages.json?PageSize=1``: it works for Auth Tokens and for
    standard API keys alike (standard keys may not read the Accounts resource itself) and sends nothing.

    Raises:
        TwilioError: Twilio answered with an error (e.g. 401 for wrong credentials).
        ZingyConnError: Twilio could not be reached.
    """
    http_client = BaseUrlHttpClient(base_url) if base_url else TwilioHttpClient(timeout=TEST_TIMEOUT_SECONDS)
    url = f"https://api.twilio.com/2010-04-01/Accounts/{profile.account_sid}/Messages.json"
    target = base_url or "https://api.twilio.com"
    try:
        response = profile.build_client(http_client).request("GET", url, params={"PageSize": 1})
    except OSError as exc:  # requests' ConnectionError/Timeout are OSErrors
        raise ZingyConnError(f"Could not reach {target} to test {what}: {exc}.") from None
    if response.status_code != 200:
        raise _twilio_error(response, what=what)
    if profile.api_key is None:
        return f"account {mask_sid(profile.account_sid)} (Auth Token)"
    return f"API key {mask_sid(profile.api_key)} on account {mask_sid(profile.account_sid)}"


def _twilio_error(response: Response, *, what: str) -> TwilioError:
    try:
        body = json.loads(response.text)
    except ValueError:
        body = {}
    body = body if isinstance(body, dict) else {}
    status, code = int(response.status_code), body.get("code")
    hint = " Check the secret (re-add the connection with --replace)." if status in (401, 403) else ""
    message = str(body.get("message") or "no error message")
    return TwilioError(
        f"Twilio rejected {what} (HTTP {status}, code {code}): {message}.{hint}",
        status=status,
        code=code if isinstance(code, int) else None,
        more_info=body.get("more_info"),
    )
