"""Rewrites (design §13): a labeler improves the answer they ranked best; the rewrite is their
demonstration of the prompt and one more pairwise row, preferred over the original."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.exports.options import ExportOptions
from app.exports.service import write_export
from app.imports.service import IMPORT_LABELER_PREFIX
from app.labeling.models import Comparison, Completion, Demonstration
from app.projects.models import Project
from tests.helpers import csrf_token, login, make_project, make_prompt, make_user
from tests.test_labeling_api import auth
from tests.test_labeling_pages import HTMX, lease_rank


def _rows(session: Session, project: Project, folder: Path, kind: str) -> list[dict[str, Any]]:
    options = ExportOptions.from_dict({"kind": kind, "validation_ratio": 0})
    out = write_export(session=session, project=project, options=options, folder=folder)
    lines = (out.directory / "train.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


async def _lease(
    client: httpx.AsyncClient, project: Project, headers: dict[str, str]
) -> tuple[int, list[int]]:
    r = await client.post(
        f"/api/v1/projects/{project.id}/tasks/next", json={"kind": "rank"}, headers=headers
    )
    assert r.status_code == 200, r.text
    task = r.json()
    return task["task_id"], [c["id"] for c in task["completions"]]


def _texts(session: Session, ids: list[int]) -> dict[int, str]:
    return {c.id: c.text for c in session.scalars(select(Completion).where(Completion.id.in_(ids)))}


async def test_a_rewrite_is_a_demonstration_and_one_more_pairwise_row(
    client: httpx.AsyncClient, session: Session, tmp_path: Path
) -> None:
    project = make_project(session, k=4, overlap=2)
    prompt = make_prompt(session, project, text="Why is the sea salty?")
    labeler, headers = auth(session)
    task_id, ids = await _lease(client, project, headers)
    best = ids[2]
    payload = {
        "ranking": [[best], [ids[0]], [ids[1]], [ids[3]]],
        "rewrite": {"completion_id": best, "text": "  Rivers carry salts to the sea.\n"},
    }
    first = await client.post(f"/api/v1/tasks/{task_id}/submit", json=payload, headers=headers)
    assert first.status_code == 201, first.text
    again = await client.post(f"/api/v1/tasks/{task_id}/submit", json=payload, headers=headers)
    assert again.status_code == 200 and again.json() == first.json()

    # One rewrite, whatever the double submit: the labeler's demonstration of the prompt.
    (demonstration,) = session.scalars(select(Demonstration)).all()
    assert demonstration.prompt_id == prompt.id and demonstration.author_id == labeler.id
    assert demonstration.rewrite_of_id == best
    assert demonstration.text == "Rivers carry salts to the sea."  # trimmed

    rows = _rows(session, project, tmp_path / "pairs", "pairwise")
    ranking_rows = [r for r in rows if r["source"] == "ranking"]
    assert len(ranking_rows) == 6  # 4 answers in 4 places: C(4, 2) pairs
    (rewrite_row,) = [r for r in rows if r["source"] == "rewrite"]
    assert len(rows) == 7 and rows[-1] == rewrite_row
    assert rewrite_row["chosen"] == "Rivers carry salts to the sea."
    assert rewrite_row["rejected"] == _texts(session, [best])[best]
    assert (rewrite_row["chosen_id"], rewrite_row["rejected_id"]) == (None, best)
    assert rewrite_row["labeler"] == f"user:{labeler.id}" and rewrite_row["margin"] == 1
    assert rewrite_row["comparison_id"] == first.json()["id"]

    sft = _rows(session, project, tmp_path / "sft", "sft")
    assert [(r["completion"], r["demonstration_id"]) for r in sft] == [
        ("Rivers carry salts to the sea.", demonstration.id)
    ]


async def test_a_double_submit_differing_in_its_rewrite_is_refused(
    client: httpx.AsyncClient, session: Session
) -> None:
    project = make_project(session, k=4)
    make_prompt(session, project)
    _, headers = auth(session)
    task_id, ids = await _lease(client, project, headers)
    ranking = [[i] for i in ids]
    first = await client.post(
        f"/api/v1/tasks/{task_id}/submit",
        json={"ranking": ranking, "rewrite": {"completion_id": ids[0], "text": "Hello there."}},
        headers=headers,
    )
    assert first.status_code == 201, first.text
    for other in (
        {"ranking": ranking},
        {"ranking": ranking, "rewrite": {"completion_id": ids[0], "text": "Hi."}},
    ):
        r = await client.post(f"/api/v1/tasks/{task_id}/submit", json=other, headers=headers)
        assert r.status_code == 409, r.text
    assert session.scalar(select(func.count()).select_from(Demonstration)) == 1


@pytest.mark.parametrize(
    ("rewrite", "reason"),
    [
        ({"completion": 999_999, "text": "Better."}, "is not one of this task's answers"),
        ({"completion": 1, "text": "Better."}, "is not ranked first"),
        ({"completion": 0, "text": "  \n "}, "The rewrite is empty"),
        ({"completion": 0, "text": "x" * 100_001}, "the limit is 100,000"),
        ({"completion": 0, "text": "a\x00b"}, "NUL character"),
        ({"completion": 0, "text": "same"}, "the same as the answer it rewrites"),
    ],
)
async def test_a_bad_rewrite_is_422_with_a_reason(
    client: httpx.AsyncClient, session: Session, rewrite: dict[str, Any], reason: str
) -> None:
    project = make_project(session, k=4)
    make_prompt(session, project)
    _, headers = auth(session)
    task_id, ids = await _lease(client, project, headers)
    at = rewrite["completion"]
    completion_id = ids[at] if at < len(ids) else at
    text = rewrite["text"]
    if text == "same":
        text = f"  {_texts(session, [ids[0]])[ids[0]]} \n"
    r = await client.post(
        f"/api/v1/tasks/{task_id}/submit",
        json={"ranking": [[i] for i in ids], "rewrite": {"completion_id": completion_id, "text": text}},
        headers=headers,
    )  # fmt: skip
    assert r.status_code == 422, r.text
    assert reason in r.json()["detail"]
    assert session.scalar(select(func.count()).select_from(Comparison)) == 0  # nothing stored


async def test_no_rewrite_without_a_ranking_or_on_a_demonstration(
    client: httpx.AsyncClient, session: Session
) -> None:
    project = make_project(session, k=4)
    prompt = make_prompt(session, project)
    _, headers = auth(session)
    task_id, ids = await _lease(client, project, headers)
    rewrite = {"completion_id": ids[0], "text": "Better."}
    r = await client.post(
        f"/api/v1/tasks/{task_id}/submit",
        json={"not_rankable": True, "rewrite": rewrite},
        headers=headers,
    )
    assert r.status_code == 422 and "rank the answers" in r.json()["detail"]

    bare = make_prompt(session, project, answers=0)
    r = await client.post(
        f"/api/v1/projects/{project.id}/tasks/next", json={"kind": "demonstration"}, headers=headers
    )
    assert r.status_code == 200 and r.json()["prompt"]["id"] == bare.id, r.text
    r = await client.post(
        f"/api/v1/tasks/{r.json()['task_id']}/submit",
        json={"text": "An answer.", "rewrite": rewrite},
        headers=headers,
    )
    assert r.status_code == 422 and "comes with a ranking" in r.json()["detail"]
    assert prompt.id != bare.id


async def test_no_second_demonstration_of_a_prompt_by_the_same_labeler(
    client: httpx.AsyncClient, session: Session
) -> None:
    project = make_project(session, k=4)
    prompt = make_prompt(session, project)
    labeler, headers = auth(session)
    session.add(Demonstration(prompt_id=prompt.id, author_id=labeler.id, text="Mine."))
    session.commit()
    task_id, ids = await _lease(client, project, headers)
    body = {"ranking": [[i] for i in ids], "rewrite": {"completion_id": ids[0], "text": "New."}}
    r = await client.post(f"/api/v1/tasks/{task_id}/submit", json=body, headers=headers)
    assert r.status_code == 422 and "already wrote a demonstration" in r.json()["detail"]
    body.pop("rewrite")
    r = await client.post(f"/api/v1/tasks/{task_id}/submit", json=body, headers=headers)
    assert r.status_code == 201, r.text


def test_imported_preferences_are_source_import(session: Session, tmp_path: Path) -> None:
    project = make_project(session, k=2)
    prompt = make_prompt(session, project, answers=2)
    a, b = (c.id for c in prompt.completions)
    session.add(
        Comparison(
            prompt_id=prompt.id,
            labeler_external=f"{IMPORT_LABELER_PREFIX}pairs.jsonl",
            displayed_completion_ids=[a, b],
            ranking=[[a], [b]],
        )
    )
    session.flush()
    (row,) = _rows(session, project, tmp_path / "pairs", "pairwise")
    assert row["source"] == "import" and (row["chosen_id"], row["rejected_id"]) == (a, b)


async def test_the_rank_page_sends_a_rewrite_and_escapes_it(
    client: httpx.AsyncClient, session: Session, tmp_path: Path
) -> None:
    project = make_project(session, k=4)
    make_prompt(session, project, text="Name a planet")
    labeler = make_user(session)
    await login(client, labeler)
    task_id, ids, token = await lease_rank(client, project)
    page = await client.get(f"/tasks/{task_id}")
    assert "Improve this answer" in page.text and 'name="rewrite_text"' in page.text

    form = {f"rank_{c}": str(n) for n, c in enumerate(ids, start=1)}
    hostile = "<script>alert(1)</script> Mars."
    # The rewrite of an answer not ranked first: refused, and the text is shown back escaped.
    bad = {**form, "rewrite_of": str(ids[1]), "rewrite_text": hostile}
    r = await client.post(
        f"/tasks/{task_id}/rank", data=bad, headers={**HTMX, "X-CSRF-Token": token}
    )
    assert r.status_code == 422 and "is not ranked first" in r.text
    assert "<script>alert(1)" not in r.text and "&lt;script&gt;alert(1)" in r.text

    good = {**form, "rewrite_of": str(ids[0]), "rewrite_text": hostile}
    r = await client.post(
        f"/tasks/{task_id}/rank", data=good, headers={**HTMX, "X-CSRF-Token": token}
    )
    assert r.status_code == 200 and "Ranking saved" in r.text, r.text
    (demonstration,) = session.scalars(select(Demonstration)).all()
    assert (demonstration.author_id, demonstration.rewrite_of_id) == (labeler.id, ids[0])
    assert demonstration.text == hostile  # stored as written, escaped where it is shown

    # Without a rewrite the page submits as before (an empty editor sends nothing).
    make_prompt(session, project, text="Name a moon")
    task_id, ids, token = await lease_rank(client, project)
    plain = {f"rank_{c}": str(n) for n, c in enumerate(ids, start=1)}
    plain |= {"rewrite_of": str(ids[0]), "rewrite_text": ""}
    r = await client.post(
        f"/tasks/{task_id}/rank", data=plain, headers={**HTMX, "X-CSRF-Token": token}
    )
    assert r.status_code == 200 and "Ranking saved" in r.text, r.text
    assert session.scalar(select(func.count()).select_from(Demonstration)) == 1
    assert await csrf_token(client, f"/projects/{project.id}/rank")
