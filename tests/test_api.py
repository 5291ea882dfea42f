"""The JSON API with bearer tokens (design §8a)."""

from __future__ import annotations

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.auth.models import ApiToken
from app.auth.service import create_api_token
from app.db import utcnow
from tests.helpers import make_admin, make_project, make_prompt, make_user


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_token_is_stored_hashed_and_works(
    client: httpx.AsyncClient, session: Session
) -> None:
    user = make_user(session)
    row, token = create_api_token(session=session, user=user)
    stored = session.scalars(select(ApiToken.token_hash)).all()
    assert token not in stored and row.token_hash in stored
    r = await client.get("/api/v1/me", headers=bearer(token))
    assert r.status_code == 200
    assert r.json() == {"id": user.id, "email": user.email, "role": "labeler"}
    session.refresh(row)
    assert row.last_used_at is not None


async def test_wrong_or_revoked_token_is_refused(
    client: httpx.AsyncClient, session: Session
) -> None:
    row, token = create_api_token(session=session, user=make_user(session))
    assert (await client.get("/api/v1/me", headers=bearer(token + "x"))).status_code == 401
    row.revoked_at = utcnow()
    session.flush()
    assert (await client.get("/api/v1/me", headers=bearer(token))).status_code == 401


async def test_project_contract(client: httpx.AsyncClient, session: Session) -> None:
    project = make_project(session, k=4, overlap=2)
    make_prompt(session, project, text="one")
    make_prompt(session, project, text="two", answers=2)
    _, token = create_api_token(session=session, user=make_user(session))
    r = await client.get(f"/api/v1/projects/{project.id}", headers=bearer(token))
    assert r.status_code == 200
    assert r.json() == {
        "id": project.id,
        "name": project.name,
        "k": 4,
        "overlap": 2,
        "queue_order": "oldest",
        "max_overlap": None,
        "disagreement_threshold": 0.3,
        "counts": {"prompts": 2, "completions": 6, "demonstrations": 0, "comparisons": 0},
    }
    missing = await client.get("/api/v1/projects/999999", headers=bearer(token))
    assert missing.status_code == 404
    assert missing.json() == {"detail": "no project '999999'"}


async def test_jobs_api_is_for_admins(client: httpx.AsyncClient, session: Session) -> None:
    _, labeler_token = create_api_token(session=session, user=make_user(session))
    _, admin_token = create_api_token(session=session, user=make_admin(session))
    assert (await client.get("/api/v1/jobs", headers=bearer(labeler_token))).status_code == 403
    assert (await client.get("/api/v1/jobs", headers=bearer(admin_token))).status_code == 200


async def test_openapi_describes_the_api(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/api/v1/openapi.json")).json()
    assert "/api/v1/projects/{project_id}" in spec["paths"]
    assert "HTTPBearer" in spec["components"]["securitySchemes"]
