"""Console sign-in, sessions and CSRF tokens.

Who may sign in:
- the operator, with ``ZINGYCONN_ADMIN_TOKEN``: every tenant, chosen explicitly on each page;
- a tenant admin, with one of that tenant's API tokens (``zingyconn tokens create``): that tenant only.

The session lives in a signed cookie (Starlette's ``SessionMiddleware``: HttpOnly, ``SameSite=Strict``). Every
state-changing request carries a CSRF token bound to the session; a POST without it is refused with 403.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Final

from starlette.requests import Request

from zingyconn.secrets.tokens import TokenStore

#: Session key that holds who signed in; never holds a token or a secret.
PRINCIPAL_KEY: Final = "principal"
CSRF_KEY: Final = "csrf"
#: Form field and header that carry the CSRF token (stops cross-site form posts riding on the session cookie).
CSRF_FIELD: Final = "csrf_token"
CSRF_HEADER: Final = "x-csrf-token"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is signed in: the operator (``tenant is None``: every tenant) or one tenant's admin."""

    tenant: str | None

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
    return None if tenant is None else Principal(tenant=tenant)


def current_principal(request: Request) -> Principal | None:
    """Return who is signed in on this request's session, if anyone."""
    data = request.session.get(PRINCIPAL_KEY)
    if not isinstance(data, dict):
        return None
    tenant = data.get("tenant")
    return Principal(tenant=tenant if isinstance(tenant, str) else None)


def sign_in(request: Request, principal: Principal) -> None:
    """Start a fresh session for *principal* (a new CSRF token too, so a pre-login token is useless)."""
    request.session.clear()
    request.session[PRINCIPAL_KEY] = {"tenant": principal.tenant}
    request.session[CSRF_KEY] = secrets.token_urlsafe(32)


def sign_out(request: Request) -> None:
    """End the session."""
    request.session.clear()


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
