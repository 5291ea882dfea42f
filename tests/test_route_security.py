"""Every route, found by walking the app, is guarded: a new route cannot forget its checks."""

from __future__ import annotations

import re

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute, iter_route_contexts
from sqlalchemy.orm import Session

from tests.helpers import csrf_token, login, make_admin, make_user

# Reachable without signing in, on purpose.
PUBLIC = {("GET", "/login"), ("POST", "/login"), ("GET", "/healthz"), ("GET", "/docs")}
SAFE = {"GET", "HEAD", "OPTIONS"}


def _routes(app: FastAPI) -> list[tuple[str, str]]:
    """(method, path) of every endpoint of ours, included routers flattened."""
    found = []
    for context in iter_route_contexts(app.routes):
        if not isinstance(context.original_route, APIRoute) or not context.path:
            continue
        if context.path.startswith("/api/"):
            continue
        for method in sorted(set(context.original_route.methods) - {"HEAD"}):
            found.append((method, re.sub(r"\{[^}]+\}", "1", context.path)))
    return found


async def test_there_are_routes_to_check(app: FastAPI) -> None:
    routes = _routes(app)
    assert ("GET", "/admin") in routes
    assert any(m == "POST" for m, _ in routes)


async def test_every_page_needs_a_login(app: FastAPI, client: httpx.AsyncClient) -> None:
    for method, path in _routes(app):
        if (method, path) in PUBLIC or method not in SAFE:
            continue
        r = await client.request(method, path)
        assert r.status_code == 303 and r.headers["location"].startswith("/login"), (method, path)


async def test_every_state_change_needs_the_csrf_token(
    app: FastAPI, client: httpx.AsyncClient, session: Session
) -> None:
    # As an admin, so that admin routes reach the CSRF check rather than the role check.
    await login(client, make_admin(session))
    for method, path in _routes(app):
        if method in SAFE:
            continue
        r = await client.request(method, path, data={"x": "1"})
        assert r.status_code == 403, (method, path, r.status_code)
        assert "Form expired" in r.text, (method, path)


async def test_every_admin_route_refuses_a_labeler(
    app: FastAPI, client: httpx.AsyncClient, session: Session
) -> None:
    await login(client, make_user(session))
    token = await csrf_token(client, "/home")
    checked = 0
    for method, path in _routes(app):
        if not path.startswith("/admin"):
            continue
        r = await client.request(method, path, headers={"X-CSRF-Token": token})
        assert r.status_code == 403, (method, path, r.status_code)
        checked += 1
    assert checked >= 3


@pytest.mark.parametrize("path", ["/api/v1/me", "/api/v1/projects", "/api/v1/jobs"])
async def test_api_routes_need_a_bearer_token(client: httpx.AsyncClient, path: str) -> None:
    r = await client.get(path)
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"


async def test_api_ignores_the_session_cookie(client: httpx.AsyncClient, session: Session) -> None:
    # A signed-in browser must not be able to drive the API (no CSRF protection there).
    await login(client, make_user(session))
    assert (await client.get("/api/v1/me")).status_code == 401


async def test_security_headers(client: httpx.AsyncClient) -> None:
    r = await client.get("/login")
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["x-content-type-options"] == "nosniff"
