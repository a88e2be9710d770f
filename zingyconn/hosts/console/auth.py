"""Console sign-in, sessions and CSRF tokens.

Who may sign in:
- the operator, with ``ZINGYCONN_ADMIN_TOKEN``: every tenant, chosen explicitly on each page;
- a tenant admin, with one of that tenant's API tokens (``zingyconn tokens create``): that tenant only.

A session lives in the database (:mod:`zingyconn.hosts.console.sessions`: ended by sign-out, by revoking the token
that opened it, and by idle and absolute timeouts); the browser's signed cookie (Starlette's ``SessionMiddleware``:
HttpOnly, ``SameSite=Strict``) carries only its id, the CSRF token and flash messages. Every state-changing request
carries the CSRF token; a POST without it is refused with 403.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Final

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from zingyconn.hosts.console.sessions import ConsoleSession, SessionStore, actor_of
from zingyconn.secrets.tokens import TokenStore, digest

#: Cookie-session key that holds the server-side session's id (never a token or a secret).
SESSION_ID_KEY: Final = "sid"
CSRF_KEY: Final = "csrf"
#: Form field and header that carry the CSRF token (stops cross-site form posts riding on the session cookie).
CSRF_FIELD: Final = "csrf_token"
CSRF_HEADER: Final = "x-csrf-token"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is signed in: the operator (``tenant is None``: every tenant) or one tenant's admin.

    Attributes:
        tenant: The one tenant a tenant admin may manage; ``None`` for the operator.
        actor: The audit trail's name for them (``"operator"``, ``"token <id>"``).
    """

    tenant: str | None
    actor: str = "operator"

    @property
    def label(self) -> str:
        """Return a display name for the page header."""
        return "operator (all tenants)" if self.tenant is None else f"admin of {self.tenant!r}"

    def may_see(self, tenant: str) -> bool:
        """Return whether this principal may see and change *tenant*."""
        return self.tenant is None or self.tenant == tenant


def session_secret(admin_token: str | None) -> str:
    """Return the cookie-signing key: derived from the admin token so every server process agrees on it.

    Without an admin token each process draws a random key, so sessions do not survive a restart and are not
    shared between processes (said in the README).
    """
    if admin_token is None:
        return secrets.token_urlsafe(32)
    return hmac.new(admin_token.encode(), b"zingyconn console session v1", hashlib.sha256).hexdigest()


def authenticate(token: str, *, admin_token: str | None, tokens: TokenStore) -> Principal | None:
    """Return the principal a sign-in token stands for, or ``None`` when it is not valid."""
    token = token.strip()
    if not token:
        return None
    if admin_token is not None and hmac.compare_digest(token.encode(), admin_token.encode()):
        return Principal(tenant=None)
    tenant = tokens.tenant_for(token)
    return None if tenant is None else Principal(tenant=tenant, actor=actor_of(tenant, digest(token)))


def current_principal(request: Request) -> Principal | None:
    """Return who is signed in on this request (set by :func:`resume` or :func:`sign_in`), if anyone."""
    principal = getattr(request.state, "principal", None)
    return principal if isinstance(principal, Principal) else None


async def resume(request: Request, sessions: SessionStore) -> Principal | None:
    """Find this request's live server-side session; forget the cookie's session id if the session ended."""
    session_id = request.session.get(SESSION_ID_KEY)
    if not isinstance(session_id, str):
        return None
    session = await run_in_threadpool(sessions.resume, session_id)
    if session is None:
        request.session.pop(SESSION_ID_KEY, None)
        return None
    principal = Principal(tenant=session.tenant, actor=session.actor)
    request.state.principal = principal
    return principal


def sign_in(request: Request, session_id: str, session: ConsoleSession) -> Principal:
    """Put a fresh session in the cookie (a new CSRF token too, so a pre-login token is useless)."""
    request.session.clear()
    request.session[SESSION_ID_KEY] = session_id
    request.session[CSRF_KEY] = secrets.token_urlsafe(32)
    principal = Principal(tenant=session.tenant, actor=session.actor)
    request.state.principal = principal
    return principal


def sign_out(request: Request) -> str | None:
    """Clear the cookie's session; return the id of the server-side session to end, if there was one."""
    session_id = request.session.get(SESSION_ID_KEY)
    request.session.clear()
    request.state.principal = None
    return session_id if isinstance(session_id, str) else None


def csrf_token(request: Request) -> str:
    """Return this session's CSRF token, creating one for anonymous sessions (the login form needs one)."""
    token = request.session.get(CSRF_KEY)
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        request.session[CSRF_KEY] = token
    return token


def is_csrf_valid(request: Request, submitted: str | None) -> bool:
    """Return whether *submitted* matches this session's CSRF token."""
    expected = request.session.get(CSRF_KEY)
    if not isinstance(expected, str) or not submitted:
        return False
    return hmac.compare_digest(expected.encode(), submitted.encode())
