"""A database held by another writer (a long import on SQLite) makes requests wait briefly,
then answer 503 with Retry-After: never a 500 (design §15). A real lock on a real file."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from app.auth.service import create_api_token
from app.db import make_engine, make_session_factory
from app.main import create_app
from tests.conftest import make_settings, migrate
from tests.helpers import csrf_token, make_project, make_prompt, make_user


@pytest.fixture
def busy_app(tmp_path: Path) -> Iterator[tuple[FastAPI, str, int, Path]]:
    url = f"sqlite:///{tmp_path / 'busy.db'}"
    migrate(url)
    engine = make_engine(url)
    with make_session_factory(engine, writes=True)() as session:
        user = make_user(session)
        _, token = create_api_token(session=session, user=user)
        project = make_project(session, k=4)
        make_prompt(session, project)
        session.commit()
        project_id = project.id
    engine.dispose()
    app = create_app(make_settings(database_url=url, data_dir=tmp_path, sqlite_busy_seconds=0.2))
    yield app, token, project_id, tmp_path / "busy.db"
    app.state.engine.dispose()


async def test_a_write_while_another_holds_the_lock_is_503_then_works(busy_app) -> None:  # type: ignore[no-untyped-def]
    app, token, project_id, path = busy_app
    auth = {"Authorization": f"Bearer {token}"}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        form_token = await csrf_token(client)
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # what a long import's write transaction holds
        try:
            r = await client.post(
                f"/api/v1/projects/{project_id}/tasks/next", json={"kind": "rank"}, headers=auth
            )
            assert r.status_code == 503 and r.headers["retry-after"].isdigit()
            assert "busy" in r.json()["detail"]
            page = await client.post(
                "/login",
                data={"email": "x@y.test", "password": "nope-nope", "csrf_token": form_token},
            )
            assert page.status_code == 503 and "Try again in a moment" in page.text
            assert "content-security-policy" in page.headers
            assert (await client.get("/login")).status_code == 200  # reading still works
        finally:
            other.execute("ROLLBACK")
            other.close()
        r = await client.post(
            f"/api/v1/projects/{project_id}/tasks/next", json={"kind": "rank"}, headers=auth
        )
        assert r.status_code == 200, r.text


def test_a_large_import_holds_the_write_lock_one_batch_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between two batches another writer gets the lock at once (it would wait out the whole
    import if the import were one transaction)."""
    import json

    from sqlalchemy import func, select

    from app.imports import service as imports
    from app.labeling.models import Prompt

    url = f"sqlite:///{tmp_path / 'import.db'}"
    migrate(url)
    engine = make_engine(url)
    source = tmp_path / "rows.jsonl"
    source.write_text("".join(json.dumps({"prompt": f"prompt {i}"}) + "\n" for i in range(55)))
    monkeypatch.setattr(imports, "BATCH_ROWS", 10)
    others = 0
    with make_session_factory(engine, writes=True)() as session:
        project = make_project(session)
        session.commit()

        def commit_then_another_writer() -> None:
            nonlocal others
            session.commit()
            other = sqlite3.connect(tmp_path / "import.db", timeout=0, isolation_level=None)
            other.execute("BEGIN IMMEDIATE")  # "database is locked" if the import still held it
            other.execute("ROLLBACK")
            other.close()
            others += 1

        imports.import_file(
            session=session, project=project, path=source, source_name=source.name,
            commit=commit_then_another_writer,
        )  # fmt: skip
        session.commit()
        stored = session.scalar(select(func.count()).select_from(Prompt))
    engine.dispose()
    assert others == 5 and stored == 55
