"""A local Twilio emulator: the Messages resource of API 2010-04-01, stateful, as the real ``twilio`` library sees it.

Use::

    state = EmulatorState()                 # the documented demo account and API key
    app = create_app(state)                 # a Starlette ASGI app; serve it with uvicorn (or `zingyconn emulator`)
    client = twilio.rest.Client(DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN,
                                http_client=EmulatorHttpClient("http://127.0.0.1:8765"))
"""

from zingyconn.twilio.emulator.accounts import (
    DEFAULT_ACCOUNT,
    DEFAULT_ACCOUNT_SID,
    DEFAULT_API_KEY,
    DEFAULT_API_SECRET,
    DEFAULT_AUTH_TOKEN,
    DEFAULT_KEY,
    Account,
    ApiKey,
)
from zingyconn.twilio.emulator.app import create_app
from zingyconn.twilio.emulator.callbacks import Callback, CallbackAttempt, is_loopback_url
from zingyconn.twilio.emulator.errors import ApiError
from zingyconn.twilio.emulator.http_client import AsyncEmulatorHttpClient, EmulatorHttpClient
from zingyconn.twilio.emulator.persistence import open_state_file
from zingyconn.twilio.emulator.services import SERVICE_SENDER, MessagingService, parse_service
from zingyconn.twilio.emulator.state import EmulatorState, RequestRecord

__all__ = [
    "DEFAULT_ACCOUNT",
    "DEFAULT_ACCOUNT_SID",
    "DEFAULT_API_KEY",
    "DEFAULT_API_SECRET",
    "DEFAULT_AUTH_TOKEN",
    "DEFAULT_KEY",
    "SERVICE_SENDER",
    "Account",
    "ApiError",
    "ApiKey",
    "AsyncEmulatorHttpClient",
    "Callback",
    "CallbackAttempt",
    "EmulatorHttpClient",
    "EmulatorState",
    "MessagingService",
    "RequestRecord",
    "create_app",
    "is_loopback_url",
    "open_state_file",
    "parse_service",
]
