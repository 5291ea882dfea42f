"""CSRF protection for cookie-authenticated requests (synchronizer token in the session).

Forms carry the token in a hidden ``csrf_token`` field; htmx sends it as ``X-CSRF-Token``
(``hx-headers`` on <body>). The API under /api/v1 authenticates with bearer tokens only,
which a browser never attaches by itself, so it needs no CSRF token.
"""

from __future__ import annotations

import hmac
import secrets

from fastapi import Request

SESSION_CSRF_KEY = "csrf"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class CSRFError(Exception):
    """Missing or wrong CSRF token; answered with 403 and a page that says what to do."""


def get_csrf_token(request: Request) -> str:
    token = request.session.get(SESSION_CSRF_KEY)
    if not isinstance(token, str) or len(token) < 32:
        token = secrets.token_urlsafe(32)
        request.session[SESSION_CSRF_KEY] = token
    return token


async def require_csrf(request: Request) -> None:
    """Router dependency: every state-changing request must echo the session's token."""
    if request.method in SAFE_METHODS:
        return
    expected = request.session.get(SESSION_CSRF_KEY)
    sent = request.headers.get(CSRF_HEADER)
    if not sent:
        content_type = request.headers.get("content-type", "")
        if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
            form = await request.form()  # cached by Starlette; the endpoint reads it again
            value = form.get(CSRF_FIELD)
            sent = value if isinstance(value, str) else None
    if not expected or not sent or not hmac.compare_digest(str(expected), sent):
        raise CSRFError()
