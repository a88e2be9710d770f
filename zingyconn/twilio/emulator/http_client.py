"""``twilio`` HTTP clients that send every Twilio API call to an emulator instead of ``https://*.twilio.com``.

Pass one as ``http_client`` to ``twilio.rest.Client``: it keeps the path and query and swaps scheme and host, so it
survives ``region``/``edge`` and never needs the library to be patched. URLs that are not Twilio's are refused: the
library's ``client.request`` accepts any absolute URL and would attach the account's credentials to it.
"""

from __future__ import annotations

import base64
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.http.http_client import TwilioHttpClient

#: Seconds before a call to the emulator gives up (the library's own default is "wait forever").
DEFAULT_TIMEOUT_SECONDS: Final = 10.0


def rewrite(url: str, base_url: str) -> str:
    """Return *url* (a ``https://*.twilio.com`` URL) with the scheme and host of *base_url*."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme != "https" or not (host == "twilio.com" or host.endswith(".twilio.com")):
        raise ValueError(f"Refusing to send a request to {url!r}: only Twilio API URLs go to the emulator.")
    base = urlsplit(base_url)
    return urlunsplit((base.scheme, base.netloc, base.path.rstrip("/") + parts.path, parts.query, parts.fragment))


class EmulatorHttpClient(TwilioHttpClient):  # type: ignore[misc]  # twilio ships no type information
    """A synchronous ``TwilioHttpClient`` bound to an emulator base URL such as ``http://127.0.0.1:8765``."""

    def __init__(self, base_url: str, *, timeout: float = DEFAULT_TIMEOUT_SECONDS, **kwargs: Any) -> None:
        super().__init__(timeout=timeout, **kwargs)
        self.base_url = base_url
        if self.session is not None:
            # Proxy variables or .netrc on the machine must not redirect or decorate loopback calls.
            self.session.trust_env = False

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        """Send the request to the emulator instead of Twilio."""
        return super().request(method, rewrite(url, self.base_url), *args, **kwargs)


class AsyncEmulatorHttpClient(AsyncTwilioHttpClient):  # type: ignore[misc]  # twilio ships no type information
    """The ``AsyncTwilioHttpClient`` twin; create it inside a running event loop and ``await .close()`` it."""

    def __init__(self, base_url: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.base_url = base_url

    async def request(  # the library's signature
        self,
        method: str,
        url: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,  # the library's signature
    ) -> Any:
        """Send the request to the emulator instead of Twilio.

        Basic credentials go in an ``Authorization`` header: aiohttp 3.14 deprecates its ``auth=`` parameter, which the
        library uses, and the test suite turns warnings into errors.
        """
        headers = dict(headers or {})
        if auth is not None:
            headers["Authorization"] = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode("ascii")
        target = rewrite(url, self.base_url)
        return await super().request(method, target, params, data, headers, None, timeout, allow_redirects)
