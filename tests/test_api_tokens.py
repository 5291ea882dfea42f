"""API tokens have a lifetime (design §15): they expire when asked to, can be revoked from the
user's admin page, and a password reset or a deactivation revokes them all."""

from __future__ import annotations

import re
from datetime import timedelta

import httpx
from sqlalchemy.orm import Session

from app.auth.models import Role
from app.auth.service import create_api_token
from tests.helpers import csrf_token, login, make_user


async def _works(client: httpx.AsyncClient, token: str) -> bool:
    r = await client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code in (200, 401), r.text
    return r.status_code == 200


async def test_an_expired_token_stops_working(client: httpx.AsyncClient, session: Session) -> None:
    user = make_user(session)
    row, token = create_api_token(session=session, user=user, expires_in=timedelta(days=1))
    assert await _works(client, token) and row.state == "live"
    row.expires_at = row.created_at - timedelta(seconds=1)
    session.flush()
    assert row.state == "expired" and not await _works(client, token)


async def test_the_admin_lists_and_revokes_a_users_tokens(
    client: httpx.AsyncClient, session: Session
) -> None:
    labeler = make_user(session)
    _, kept = create_api_token(session=session, user=labeler, name="laptop")
    row, revoked = create_api_token(session=session, user=labeler, name="old script")
    assert await _works(client, revoked)  # used once: the page shows when
    await login(client, make_user(session, role=Role.admin))
    page = await client.get(f"/admin/users/{labeler.id}/tokens")
    assert page.status_code == 200
    assert "laptop" in page.text and "old script" in page.text
    assert re.search(r"old script.*?just now", page.text, re.S)  # its last use
    token = await csrf_token(client, f"/admin/users/{labeler.id}/tokens")
    r = await client.post(
        f"/admin/users/{labeler.id}/tokens/{row.id}/revoke", data={"csrf_token": token}
    )
    assert r.status_code == 303
    assert "revoked" in (await client.get(r.headers["location"])).text
    assert not await _works(client, revoked)
    assert await _works(client, kept)
    # Another user's token is not reached through this user's page.
    other = make_user(session)
    stranger, _ = create_api_token(session=session, user=other)
    r = await client.post(
        f"/admin/users/{labeler.id}/tokens/{stranger.id}/revoke", data={"csrf_token": token}
    )
    assert r.status_code == 404 and stranger.revoked_at is None


async def test_a_password_reset_or_deactivation_revokes_every_token(
    client: httpx.AsyncClient, session: Session
) -> None:
    reset, deactivated = make_user(session), make_user(session)
    _, reset_token = create_api_token(session=session, user=reset)
    _, gone_token = create_api_token(session=session, user=deactivated)
    await login(client, make_user(session, role=Role.admin))
    csrf = await csrf_token(client, "/admin/users")
    r = await client.post(
        f"/admin/users/{reset.id}/reset-password",
        data={"password_mode": "generate", "csrf_token": csrf},
    )
    assert r.status_code == 200 and "API tokens are revoked" in r.text
    assert not await _works(client, reset_token)
    for action in ("deactivate", "reactivate"):
        r = await client.post(f"/admin/users/{deactivated.id}/{action}", data={"csrf_token": csrf})
        assert r.status_code in (200, 303), r.text
    session.refresh(deactivated)
    assert deactivated.is_active  # back, but the old token stays dead
    assert not await _works(client, gone_token)
