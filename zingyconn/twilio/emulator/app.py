"""The Starlette ASGI app: Messages of API 2010-04-01, as the real ``twilio`` library calls it.

Routes (``{AC}`` = account SID, ``{SID}`` = message SID)::

    POST|GET        /2010-04-01/Accounts/{AC}/Messages.json         create 201 | list 200
    GET|POST|DELETE /2010-04-01/Accounts/{AC}/Messages/{SID}.json   fetch 200 | update 200 | delete 204

Anything else answers 20404/404 (after authentication, like Twilio).
Errors are ``{"code","message","more_info","status"}``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Final
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from zingyconn.twilio.emulator.accounts import Account
from zingyconn.twilio.emulator.callbacks import Callback, deliver_async
from zingyconn.twilio.emulator.errors import ApiError, not_found
from zingyconn.twilio.emulator.listing import build_page, matches, parse_query
from zingyconn.twilio.emulator.state import EmulatorState, RequestRecord
from zingyconn.twilio.emulator.validation import validate_create

_LOGGER: Final = logging.getLogger(__name__)
PREFIX: Final = "/2010-04-01/Accounts/{account_sid}"
#: Largest form body accepted; bigger bodies are refused before parsing (memory exhaustion).
MAX_BODY_BYTES: Final = 1024 * 1024

ALL_METHODS: Final = ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")

Handler = Callable[[Request, EmulatorState, Account, list[tuple[str, str]]], Awaitable[Response]]


def create_app(state: EmulatorState, *, tick_seconds: float | None = 0.5) -> Starlette:
    """Return the emulator app over *state*.

    Args:
        state: The accounts and messages to serve.
        tick_seconds: How often a background task applies due transitions and sends their callbacks (real clock);
            None turns the ticker off (tests move time with ``state.advance``).
    """

    def route(path: str, methods: dict[str, Handler]) -> Route:
        async def endpoint(request: Request) -> Response:
            return await _dispatch(request, state, methods)

        return Route(PREFIX + path, endpoint, methods=list(ALL_METHODS))

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        task = asyncio.create_task(_tick(state, tick_seconds)) if tick_seconds else None
        yield
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def unknown(request: Request) -> Response:
        await _receive(request, state)
        return JSONResponse(not_found(request.url.path).to_json(), status_code=404)

    routes = [
        route("/Messages.json", {"POST": _create, "GET": _list}),
        route("/Messages/{sid}.json", {"GET": _fetch, "POST": _update, "DELETE": _delete}),
        Route("/{path:path}", unknown, methods=list(ALL_METHODS)),
    ]
    return Starlette(routes=routes, lifespan=lifespan)


async def _tick(state: EmulatorState, seconds: float) -> None:
    """Apply due transitions and send their callbacks every *seconds*, for as long as the app runs."""
    while True:
        await asyncio.sleep(seconds)
        try:
            due = state.settle()
            if due:
                await _deliver(state, due)
        except Exception:  # one bad message must not stop the emulator's clock for all others
            _LOGGER.exception("The emulator could not apply due status changes.")


async def _receive(request: Request, state: EmulatorState) -> tuple[bytes, list[tuple[str, str]]]:
    """Read the body, parse the form (blank values kept, repeated names kept) and log the request."""
    body = await request.body()
    text = body[:MAX_BODY_BYTES].decode("utf-8", errors="replace")
    form = parse_qsl(text if request.method != "GET" else request.url.query, keep_blank_values=True)
    state.record(RequestRecord(request.method, request.url.path, tuple(form), _username(request)))
    return body, form


async def _dispatch(request: Request, state: EmulatorState, handlers: dict[str, Handler]) -> Response:
    body, form = await _receive(request, state)
    response = await _answer(request, state, handlers, body, form)
    response.headers["Twilio-Request-Id"] = f"RQ{uuid.uuid4().hex}"  # as Twilio does on every answer
    return response


async def _answer(
    request: Request, state: EmulatorState, handlers: dict[str, Handler], body: bytes, form: list[tuple[str, str]]
) -> Response:
    try:
        if len(body) > MAX_BODY_BYTES:
            raise ApiError(20001, "The request body is too large.", status=413)
        account = state.directory.authenticate(request.headers.get("authorization"), request.path_params["account_sid"])
        due = state.settle()
        handler = handlers.get(request.method)
        if handler is None:
            raise ApiError(20004, f"Method {request.method} not allowed on {request.url.path}", status=405)
        response = await handler(request, state, account, form)
    except ApiError as error:
        return JSONResponse(error.to_json(), status_code=error.status)
    if due:
        response.background = BackgroundTask(_deliver, state, due)
    return response


async def _deliver(state: EmulatorState, due: list[Callback]) -> None:
    attempts = await deliver_async(due, allow=state.allow_callback)
    with state.lock:
        state.callbacks.extend(attempts)


def _username(request: Request) -> str | None:
    scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        return base64.b64decode(encoded, validate=True).decode("utf-8").partition(":")[0]
    except (binascii.Error, UnicodeDecodeError):
        return None


async def _create(request: Request, state: EmulatorState, account: Account, form: list[tuple[str, str]]) -> Response:
    resource = state.create(account, validate_create(form, now=state.now()))
    return JSONResponse(resource, status_code=201)


async def _list(request: Request, state: EmulatorState, account: Account, form: list[tuple[str, str]]) -> Response:
    query = parse_query(form)
    with state.lock:
        found = [m for m in state.messages(account.sid) if matches(m, query.filters)]
        page = build_page(found, query, path=request.url.path, seq_of=state.seq_of)
    return JSONResponse(page, status_code=200)


async def _fetch(request: Request, state: EmulatorState, account: Account, form: list[tuple[str, str]]) -> Response:
    return JSONResponse(state.fetch(account.sid, request.path_params["sid"], request.url.path))


async def _update(request: Request, state: EmulatorState, account: Account, form: list[tuple[str, str]]) -> Response:
    return JSONResponse(state.update(account.sid, request.path_params["sid"], request.url.path, form))


async def _delete(request: Request, state: EmulatorState, account: Account, form: list[tuple[str, str]]) -> Response:
    state.delete(account.sid, request.path_params["sid"], request.url.path)
    return Response(status_code=204)
