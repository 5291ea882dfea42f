"""The labeling API contract (design §8a), as a vendor's tool would use it."""

from __future__ import annotations

import httpx
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.auth.models import User
from app.auth.service import create_api_token
from app.labeling.models import Comparison, Demonstration
from tests.helpers import make_project, make_prompt, make_user


def auth(session: Session, user: User | None = None) -> tuple[User, dict[str, str]]:
    user = user or make_user(session)
    _, token = create_api_token(session=session, user=user)
    session.commit()
    return user, {"Authorization": f"Bearer {token}"}


async def test_lease_rank_submit_and_resubmit(client: httpx.AsyncClient, session: Session) -> None:
    project = make_project(session, k=4, overlap=2)
    prompt = make_prompt(session, project, text="Why is the sea salty?")
    _, headers = auth(session)
    r = await client.post(
        f"/api/v1/projects/{project.id}/tasks/next", json={"kind": "rank"}, headers=headers
    )
    assert r.status_code == 200, r.text
    task = r.json()
    assert set(task) >= {"task_id", "kind", "prompt", "completions", "expires_at"}
    assert task["prompt"] == {
        "id": prompt.id,
        "text": "Why is the sea salty?",
        "messages": [{"role": "user", "content": "Why is the sea salty?"}],
    }
    ids = [c["id"] for c in task["completions"]]
    assert sorted(ids) == sorted(c.id for c in prompt.completions)

    payload = {"ranking": [[ids[2]], [ids[0], ids[1]], [ids[3]]], "ratings": {str(ids[2]): 6}}
    first = await client.post(
        f"/api/v1/tasks/{task['task_id']}/submit", json=payload, headers=headers
    )
    assert first.status_code == 201, first.text
    again = await client.post(
        f"/api/v1/tasks/{task['task_id']}/submit", json=payload, headers=headers
    )
    assert again.status_code == 200 and again.json() == first.json()
    assert session.scalar(select(func.count()).select_from(Comparison)) == 1

    other = await client.post(
        f"/api/v1/tasks/{task['task_id']}/submit", json={"ranking": [ids]}, headers=headers
    )
    assert other.status_code == 409


async def test_nothing_left_is_204(client: httpx.AsyncClient, session: Session) -> None:
    project = make_project(session, k=4)
    _, headers = auth(session)
    r = await client.post(
        f"/api/v1/projects/{project.id}/tasks/next", json={"kind": "rank"}, headers=headers
    )
    assert r.status_code == 204 and r.content == b""


async def test_invalid_ranking_is_422_with_a_reason(
    client: httpx.AsyncClient, session: Session
) -> None:
    project = make_project(session, k=4)
    make_prompt(session, project)
    _, headers = auth(session)
    task = (
        await client.post(f"/api/v1/projects/{project.id}/tasks/next", json={}, headers=headers)
    ).json()
    ids = [c["id"] for c in task["completions"]]
    for ranking, reason in (
        ([[i] for i in ids[:3]], "is not ranked yet"),
        ([[i] for i in ids] + [[ids[0]]], "is ranked more than once"),
        ([[i] for i in ids] + [[999_999]], "is not one of this task's answers"),
    ):
        r = await client.post(
            f"/api/v1/tasks/{task['task_id']}/submit", json={"ranking": ranking}, headers=headers
        )
        assert r.status_code == 422 and reason in r.json()["detail"], r.text
    wrong_type = await client.post(
        f"/api/v1/tasks/{task['task_id']}/submit", json={"ranking": "1,2"}, headers=headers
    )
    assert wrong_type.status_code == 422


async def test_demonstration_and_skip(client: httpx.AsyncClient, session: Session) -> None:
    project = make_project(session, k=4)
    make_prompt(session, project, text="Write a haiku", answers=0)
    make_prompt(session, project, text="Write a limerick", answers=0)
    _, headers = auth(session)
    task = (
        await client.post(
            f"/api/v1/projects/{project.id}/tasks/next",
            json={"kind": "demonstration"},
            headers=headers,
        )
    ).json()
    assert task["kind"] == "demonstration" and task["completions"] == []
    r = await client.post(
        f"/api/v1/tasks/{task['task_id']}/submit",
        json={"text": "Old pond, a frog"},
        headers=headers,
    )
    assert r.status_code == 201
    assert (
        session.scalar(select(Demonstration.text).where(Demonstration.id == r.json()["id"]))
        == "Old pond, a frog"
    )

    nxt = (
        await client.post(
            f"/api/v1/projects/{project.id}/tasks/next",
            json={"kind": "demonstration"},
            headers=headers,
        )
    ).json()
    skipped = await client.post(
        f"/api/v1/tasks/{nxt['task_id']}/skip", json={"reason": "I cannot rhyme"}, headers=headers
    )
    assert skipped.status_code == 200 and skipped.json()["state"] == "skipped"
    for blank in ("", " \t", "\x1f\x85\u3000"):  # nothing but what str.strip() removes
        empty = await client.post(
            f"/api/v1/tasks/{nxt['task_id']}/skip", json={"reason": blank}, headers=headers
        )
        assert empty.status_code == 422 and "body.reason" in empty.json()["detail"], blank
    late = await client.post(
        f"/api/v1/tasks/{nxt['task_id']}/submit", json={"text": "x"}, headers=headers
    )
    assert late.status_code == 409
    done = await client.post(
        f"/api/v1/projects/{project.id}/tasks/next", json={"kind": "demonstration"}, headers=headers
    )
    assert done.status_code == 204


async def test_another_labelers_task_is_404(client: httpx.AsyncClient, session: Session) -> None:
    project = make_project(session, k=4)
    make_prompt(session, project)
    _, owner = auth(session)
    _, intruder = auth(session)
    task = (
        await client.post(f"/api/v1/projects/{project.id}/tasks/next", json={}, headers=owner)
    ).json()
    r = await client.post(
        f"/api/v1/tasks/{task['task_id']}/skip", json={"reason": "mine now"}, headers=intruder
    )
    assert r.status_code == 404


async def test_api_paths_are_in_openapi(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/api/v1/openapi.json")).json()["paths"]
    for path in (
        "/api/v1/projects/{project_id}/tasks/next",
        "/api/v1/tasks/{task_id}/submit",
        "/api/v1/tasks/{task_id}/skip",
    ):
        assert path in paths


def test_the_skip_reason_pattern_is_what_strip_leaves() -> None:
    """SOME_TEXT (in the schema, so schemathesis generates by it) accepts a reason exactly when
    the server's str.strip() leaves something of it."""
    import re

    from app.labeling.schemas import SOME_TEXT

    for code in range(0x3100):
        char = chr(code)
        assert bool(re.search(SOME_TEXT, char)) == bool(char.strip()), hex(code)
