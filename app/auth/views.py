"""Login and logout pages."""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from app.auth.service import authenticate, end_session, start_session
from app.deps import SESSION_ID_KEY, DbSession, OptionalUser, SettingsDep
from app.web.templating import render

router = APIRouter(tags=["auth"])

LOGIN_FAILED = "Wrong email or password."


def safe_next(target: str | None) -> str:
    """Only same-site paths: a crafted ?next= must not send a user to another site."""
    if not target or not target.startswith("/") or target.startswith("//"):
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or "\\" in target:
        return "/"
    return target


@router.get("/login", name="login")
def login_form(request: Request, user: OptionalUser, next: str = "/") -> Response:
    if user is not None:
        return RedirectResponse(safe_next(next), status_code=303)
    return render(request, "auth/login.html", {"next": safe_next(next), "error": None, "email": ""})


@router.post("/login")
def login(
    request: Request,
    session: DbSession,
    settings: SettingsDep,
    email: Annotated[str, Form()],
    password: Annotated[str, Form()],
    next: Annotated[str, Form()] = "/",
) -> Response:
    ip = request.client.host if request.client else "unknown"
    if len(email) > 320 or len(password) > 1024:  # no account has such; do not hash megabytes
        context = {"next": safe_next(next), "error": LOGIN_FAILED, "email": ""}
        return render(request, "auth/login.html", context, status_code=400)
    result = authenticate(
        session=session,
        email=email,
        password=password,
        ip=ip,
        max_failures=settings.login_max_failures,
        window=timedelta(seconds=settings.login_failure_window_seconds),
    )
    if result.user is not None:
        user_session = start_session(
            session=session,
            user=result.user,
            ip=ip,
            user_agent=request.headers.get("user-agent", ""),
        )
    session.commit()
    if result.user is None:
        if result.throttled:
            seconds = result.retry_after_seconds
            wait = f"{seconds} seconds" if seconds < 120 else f"{math.ceil(seconds / 60)} minutes"
            error = f"Too many failed attempts. Wait {wait}, then try again."
            status, headers = 429, {"Retry-After": str(result.retry_after_seconds)}
        else:
            error, status, headers = LOGIN_FAILED, 400, {}
        context = {"next": safe_next(next), "error": error, "email": email}
        return render(request, "auth/login.html", context, status_code=status, headers=headers)
    # A new server-side session on login (no fixation); the CSRF token is made afresh.
    request.session.clear()
    request.session[SESSION_ID_KEY] = user_session.id
    return RedirectResponse(safe_next(next), status_code=303)


@router.post("/logout", name="logout")
def logout(request: Request, session: DbSession) -> Response:
    session_id = request.session.get(SESSION_ID_KEY)
    if isinstance(session_id, str):
        end_session(session=session, session_id=session_id)
        session.commit()
    request.session.clear()
    response = RedirectResponse("/login", status_code=303)
    if request.headers.get("HX-Request") == "true":
        response.headers["HX-Redirect"] = "/login"
    return response
