"""Request bodies are capped before they are parsed, and large ones need a signed-in sender
(design §15). Each body here is streamed from a generator that counts what the app pulled,
so "refused before reading" is measured, not assumed."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.orm import Session, sessionmaker

from app.auth.models import Role
from app.auth.service import create_api_token
from app.config import Settings
from app.main import create_app
from tests.helpers import csrf_token, login, make_project, make_user

CHUNK = 64 * 1024
CAPS = {"max_api_body_bytes": 256 * 1024, "max_form_body_bytes": 128 * 1024}


@pytest.fixture
def small_caps_app(settings: Settings, session_factory: sessionmaker[Session]) -> Iterator[FastAPI]:
    application = create_app(settings.model_copy(update={**CAPS, "max_upload_bytes": 512 * 1024}))
    application.state.session_factories = {"read": session_factory, "write": session_factory}
    yield application
    application.state.engine.dispose()


@pytest.fixture
async def capped(small_caps_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=small_caps_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


class Body:
    """`size` bytes in CHUNK pieces, counting the pieces the app asked for."""

    def __init__(self, size: int, first: bytes = b"") -> None:
        self.size, self.first, self.pulled = size, first, 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        sent = 0
        while sent < self.size:
            piece = (self.first if sent == 0 else b"") or b"x" * min(CHUNK, self.size - sent)
            self.pulled += 1
            sent += len(piece)
            yield piece


async def test_an_anonymous_api_body_is_refused_before_it_is_read(
    capped: httpx.AsyncClient,
) -> None:
    body = Body(50 * 1024**2, first=b'{"ranking": [')
    r = await capped.post(
        "/api/v1/tasks/1/submit", content=body, headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert r.json() == {"detail": "Missing or invalid API token"}
    assert body.pulled <= 1  # at most what the server had buffered; never the 50 MB
    assert "content-security-policy" in r.headers


async def test_api_bodies_over_the_cap_get_413_declared_or_streamed(
    capped: httpx.AsyncClient, session: Session
) -> None:
    _, token = create_api_token(session=session, user=make_user(session))
    auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    declared = json.dumps({"text": "x" * (300 * 1024)})
    r = await capped.post("/api/v1/tasks/1/submit", content=declared, headers=auth)
    assert r.status_code == 413 and r.json() == {"detail": "An API request may be at most 256 KB."}
    streamed = Body(2 * 1024**2, first=b'{"text": "')  # no Content-Length: chunked
    r = await capped.post("/api/v1/tasks/1/submit", content=streamed, headers=auth)
    assert r.status_code == 413
    assert streamed.pulled <= 256 * 1024 // CHUNK + 1  # stopped at the cap
    small = await capped.post("/api/v1/tasks/999999/submit", json={"text": "ok"}, headers=auth)
    assert small.status_code == 404  # under the cap: read and answered as before


async def test_a_form_over_the_cap_is_refused_with_a_page(capped: httpx.AsyncClient) -> None:
    body = Body(500 * 1024**2)
    r = await capped.post(
        "/logout", content=body, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert r.status_code == 413 and "A form may be at most" in r.text
    assert body.pulled <= 128 * 1024 // CHUNK + 1


async def test_an_anonymous_upload_is_refused_before_a_byte_is_spooled(
    capped: httpx.AsyncClient, session: Session, settings: Settings
) -> None:
    project = make_project(session)
    boundary = b"----rlhf"
    head = (
        b"--"
        + boundary
        + b'\r\nContent-Disposition: form-data; name="file"; filename="a.jsonl"\r\n\r\n'
    )
    body = Body(500 * 1024**2, first=head)
    r = await capped.post(
        f"/admin/projects/{project.id}/import",
        content=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary.decode()}"},
    )
    assert r.status_code == 403 and "Sign in as an admin to upload" in r.text
    assert body.pulled <= 1
    uploads = settings.data_dir / "uploads"
    assert not uploads.exists() or list(uploads.iterdir()) == []


async def test_an_admins_upload_may_be_larger_than_a_form(
    capped: httpx.AsyncClient, session: Session
) -> None:
    """The upload cap, not the form cap, applies to the import page; past it, 413."""
    project = make_project(session)
    admin = make_user(session, role=Role.admin)
    await login(capped, admin)
    token = await csrf_token(capped, f"/admin/projects/{project.id}/import")
    rows = b"".join(b'{"prompt": "prompt %d"}\n' % i for i in range(8000))  # ~190 KB
    assert 128 * 1024 < len(rows) < 512 * 1024
    r = await capped.post(
        f"/admin/projects/{project.id}/import",
        data={"csrf_token": token},
        files={"file": ("rows.jsonl", rows)},
    )
    assert r.status_code == 200, r.text[:500]
    too_big = await capped.post(
        f"/admin/projects/{project.id}/import",
        data={"csrf_token": token},
        files={"file": ("rows.jsonl", rows * 8)},
    )
    assert too_big.status_code == 413 and "An upload may be at most" in too_big.text
