"""Ids beyond 64 bits name nothing: 404 in the path and 422 in the query string, with the
security headers, on every route and for every role, never the driver's overflow as 500."""

from __future__ import annotations

import re

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute, iter_route_contexts
from sqlalchemy.orm import Session

from app.auth.models import Role
from app.auth.service import create_api_token
from tests.helpers import csrf_token, login, make_user

HUGE = [str(2**63), str(2**70), str(-(2**63) - 1)]
PARAM = re.compile(r"\{(\w+)(?::\w+)?\}")


def routes_with_ids(app: FastAPI) -> list[tuple[str, str]]:
    """(method, path template) of every endpoint with a path parameter, pages and API."""
    found = []
    for context in iter_route_contexts(app.routes):
        route = context.original_route
        if isinstance(route, APIRoute) and context.path and PARAM.search(context.path):
            found += [(method, context.path) for method in sorted(set(route.methods) - {"HEAD"})]
    return found


@pytest.mark.parametrize("role", [Role.admin, Role.labeler])
async def test_every_route_answers_404_for_an_id_beyond_64_bits(
    app: FastAPI, client: httpx.AsyncClient, session: Session, role: Role
) -> None:
    user = make_user(session, role=role)
    _, token = create_api_token(session=session, user=user)
    await login(client, user)
    csrf = await csrf_token(client, "/home")
    routes = routes_with_ids(app)
    assert len(routes) > 30  # the admin pages, the task pages and the API
    for method, path in routes:
        for huge in HUGE:
            url = PARAM.sub(huge, path)
            headers = {"X-CSRF-Token": csrf, "Authorization": f"Bearer {token}"}
            r = await client.request(method, url, headers=headers, data={"csrf_token": csrf})
            assert r.status_code == 404, (method, url, r.status_code, r.text[:200])
            assert "content-security-policy" in r.headers
            if url.startswith("/api/"):
                assert r.json() == {"detail": "no such page or item"}


@pytest.mark.parametrize(
    "url", ["/api/v1/jobs?limit=-2979999999999999999999", "/api/v1/jobs?limit=" + str(2**64)]
)
async def test_an_out_of_range_query_value_is_422(
    client: httpx.AsyncClient, session: Session, url: str
) -> None:
    _, token = create_api_token(session=session, user=make_user(session, role=Role.admin))
    r = await client.get(url, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 422
    assert r.json() == {"detail": "query.limit: out of range"}


async def test_an_out_of_range_value_in_a_page_query_is_422(
    client: httpx.AsyncClient, session: Session
) -> None:
    await login(client, make_user(session, role=Role.admin))
    for url in (f"/admin/users?done=x&user_id={2**64}", f"/admin/models?done=x&model_id={2**63}"):
        r = await client.get(url)
        assert r.status_code == 422 and "This request could not be read" in r.text, url
