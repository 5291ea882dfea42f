"""Review (design §13): an admin accepts or rejects a labeler's ranking or demonstration with
a note; rejected work is kept but leaves exports, agreement, consensus, training snapshots and
the leaderboard; the labeler sees the note; the review page walks the work (SQLite and
Postgres)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.agreement.leaderboard import build_project_leaderboard, counted_rankings
from app.agreement.service import build_report, consensus_rankings
from app.audit.models import AuditEvent
from app.auth.models import User
from app.auth.service import create_api_token
from app.exports.options import ExportOptions
from app.exports.service import write_export
from app.labeling.models import Comparison, Demonstration, GoldRanking
from app.projects.models import Project
from app.review.models import Review, Verdict
from tests.helpers import (
    answers,
    csrf_token,
    login,
    make_admin,
    make_project,
    make_prompt,
    make_user,
    rank,
    visible_text,
)

NOTE = "You put the <b>wrong</b> answer first: read the guidelines on facts."


def _bearer(session: Session, user: User) -> dict[str, str]:
    _, token = create_api_token(session=session, user=user, name="t")
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def work(session: Session) -> dict[str, Any]:
    """Three labelers rank two prompts; the third (careless) reverses the others' order."""
    project = make_project(session, k=4, overlap=3)
    ann, bob, cat = make_user(session), make_user(session), make_user(session)
    prompts = [make_prompt(session, project, text=f"Question {i}?") for i in range(2)]
    comparisons = {}
    for prompt in prompts:
        comparisons[(ann.id, prompt.id)] = rank(session, prompt, ann, [0, 1, 2, 3])
        comparisons[(bob.id, prompt.id)] = rank(session, prompt, bob, [0, 1, 3, 2])
        comparisons[(cat.id, prompt.id)] = rank(session, prompt, cat, [3, 2, 1, 0])
    demo = Demonstration(prompt_id=prompts[0].id, author_id=cat.id, text="A lazy answer.")
    session.add(demo)
    admin = make_admin(session)
    session.commit()
    return {
        "project": project, "ann": ann, "bob": bob, "cat": cat, "prompts": prompts,
        "bad": comparisons[(cat.id, prompts[0].id)], "comparisons": comparisons,
        "demonstration": demo, "admin": admin,
    }  # fmt: skip


def _rows(session: Session, project: Project, kind: str, folder: Path) -> list[dict[str, Any]]:
    """The rows ``write_export`` writes (what the training job's snapshot calls), both splits."""
    options = ExportOptions.from_dict({"kind": kind, "validation_ratio": 0})
    out = write_export(session=session, project=project, options=options, folder=folder).directory
    rows = []
    for path in sorted(out.glob("*.jsonl")):
        rows += [json.loads(line) for line in path.read_text().splitlines()]
    return rows


async def test_a_rejected_ranking_leaves_exports_agreement_snapshots_and_the_leaderboard(
    client: httpx.AsyncClient, session: Session, work: dict[str, Any], tmp_path: Path
) -> None:
    project, bad, cat = work["project"], work["bad"], work["cat"]
    cat_key = f"user:{cat.id}"
    before = build_report(session=session, project=project)
    pairwise_before = _rows(session, project, "pairwise", tmp_path / "p0")
    kwise_before = _rows(session, project, "kwise", tmp_path / "k0")
    assert sum(r["labeler"] == cat_key for r in pairwise_before) == 2 * 6
    assert bad.id in set(counted_rankings(session=session, project=project).comparison_ids)
    for prompt in work["prompts"]:  # four origins, so that each ranking gives the board pairs
        for i, completion in enumerate(prompt.completions):
            completion.origin = f"import:model-{i}"
    session.flush()
    board_before = build_project_leaderboard(session=session, project=project, resamples=5)
    assert board_before.n_rankings == 6

    r = await client.post(
        f"/api/v1/comparisons/{bad.id}/review",
        json={"verdict": "reject", "note": NOTE},
        headers=_bearer(session, work["admin"]),
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["verdict"] == "rejected" and body["note"] == NOTE and body["id"] == bad.id
    session.expire_all()

    # Kept, and marked.
    assert session.get(Comparison, bad.id) is not None
    review = session.scalar(select(Review).where(Review.comparison_id == bad.id))
    assert review is not None and review.verdict == Verdict.rejected
    # Gone from the next export's rows: pairwise, and the K-wise rows an RM snapshot trains on.
    pairwise = _rows(session, project, "pairwise", tmp_path / "p1")
    kwise = _rows(session, project, "kwise", tmp_path / "k1")
    assert sum(r["labeler"] == cat_key for r in pairwise) == 6  # only their other prompt
    assert len(pairwise) == len(pairwise_before) - 6
    assert len(kwise) == len(kwise_before) - 1
    assert all(r["comparison_id"] != bad.id for r in [*pairwise, *kwise])
    # Gone from the agreement figures (and so from the consensus and the leaderboard).
    after = build_report(session=session, project=project)
    assert after.n_comparisons == before.n_comparisons - 1
    assert after.micro.value is not None and before.micro.value is not None
    assert after.micro.value > before.micro.value  # the careless ranking no longer counts
    cat_row = next(row for row in after.labelers if row.key == cat_key)
    assert cat_row.n_comparisons == 1
    consensus = consensus_rankings(session=session, project=project)
    assert consensus[work["prompts"][0].id][0] == [answers(work["prompts"][0])[0]]
    assert bad.id not in set(counted_rankings(session=session, project=project).comparison_ids)
    board = build_project_leaderboard(session=session, project=project, resamples=5)
    assert board.n_rankings == 5


async def test_the_api_answer_is_cached_no_longer_than_the_review(
    client: httpx.AsyncClient, session: Session, work: dict[str, Any]
) -> None:
    """The agreement API caches reports while the data is unchanged: a review changes it."""
    headers = _bearer(session, work["admin"])
    project = work["project"]
    url = f"/api/v1/projects/{project.id}/agreement"
    assert (await client.get(url, headers=headers)).json()["n_comparisons"] == 6
    await client.post(
        f"/api/v1/comparisons/{work['bad'].id}/review",
        json={"verdict": "reject", "note": "no"},
        headers=headers,
    )
    assert (await client.get(url, headers=headers)).json()["n_comparisons"] == 5


async def test_the_labeler_sees_the_note_on_their_home_page(
    client: httpx.AsyncClient, session: Session, work: dict[str, Any]
) -> None:
    headers = _bearer(session, work["admin"])
    await client.post(
        f"/api/v1/comparisons/{work['bad'].id}/review",
        json={"verdict": "reject", "note": NOTE},
        headers=headers,
    )
    await client.post(
        f"/api/v1/demonstrations/{work['demonstration'].id}/review",
        json={"verdict": "reject", "note": "Too short to teach anything."},
        headers=headers,
    )
    await login(client, work["cat"])
    page = (await client.get("/home")).text
    text = visible_text(page)
    assert "Sent back by a reviewer" in text
    assert "Too short to teach anything." in text
    # The note is shown as text, never as markup.
    assert "&lt;b&gt;wrong&lt;/b&gt;" in page and "<b>wrong</b>" not in page
    assert "Question 0?" in text
    # Nobody else sees it.
    await client.post("/logout", data={"csrf_token": await csrf_token(client, "/home")})
    await login(client, work["ann"])
    assert "Sent back by a reviewer" not in (await client.get("/home")).text


async def test_a_rejected_demonstration_leaves_sft_rows(
    client: httpx.AsyncClient, session: Session, work: dict[str, Any], tmp_path: Path
) -> None:
    demo = work["demonstration"]
    assert [r["demonstration_id"] for r in _rows(session, work["project"], "sft", tmp_path / "a")]
    r = await client.post(
        f"/api/v1/demonstrations/{demo.id}/review",
        json={"verdict": "reject", "note": "Off topic."},
        headers=_bearer(session, work["admin"]),
    )
    assert r.status_code == 200 and r.json()["target"] == "demonstration"
    session.expire_all()
    assert _rows(session, work["project"], "sft", tmp_path / "b") == []
    assert session.get(Demonstration, demo.id) is not None


async def test_a_re_review_replaces_the_verdict_and_each_is_audited(
    client: httpx.AsyncClient, session: Session, work: dict[str, Any], tmp_path: Path
) -> None:
    headers = _bearer(session, work["admin"])
    url = f"/api/v1/comparisons/{work['bad'].id}/review"
    assert (
        await client.post(url, json={"verdict": "reject", "note": "x"}, headers=headers)
    ).is_success
    r = await client.post(url, json={"verdict": "accept"}, headers=headers)
    assert r.status_code == 200 and r.json()["verdict"] == "accepted" and r.json()["note"] is None
    session.expire_all()
    reviews = session.scalars(select(Review).where(Review.comparison_id == work["bad"].id)).all()
    assert len(reviews) == 1 and reviews[0].verdict == Verdict.accepted
    assert reviews[0].reviewer_id == work["admin"].id
    events = session.scalars(
        select(AuditEvent)
        .where(AuditEvent.action == "comparison.review", AuditEvent.target_id == work["bad"].id)
        .order_by(AuditEvent.id)
    ).all()
    assert [(e.actor_id, e.details["verdict"], e.details["previous"]) for e in events] == [
        (work["admin"].id, "rejected", "pending"),
        (work["admin"].id, "accepted", "rejected"),
    ]
    assert events[0].target_type == "comparison" and events[0].details["note"] == "x"
    # Accepted work counts again.
    assert build_report(session=session, project=work["project"]).n_comparisons == 6


async def test_only_admins_review_and_bad_requests_are_refused(
    client: httpx.AsyncClient, session: Session, work: dict[str, Any]
) -> None:
    labeler = _bearer(session, work["ann"])
    admin = _bearer(session, work["admin"])
    session.commit()
    bad, demo, project = work["bad"], work["demonstration"], work["project"]
    good = {"verdict": "reject", "note": "n"}
    for url, body in [
        (f"/api/v1/comparisons/{bad.id}/review", good),
        (f"/api/v1/demonstrations/{demo.id}/review", good),
    ]:
        assert (await client.post(url, json=body, headers=labeler)).status_code == 403
    assert (
        await client.get(f"/api/v1/projects/{project.id}/comparisons", headers=labeler)
    ).status_code == 403
    # Unknown ids.
    for url in ["/api/v1/comparisons/999999/review", "/api/v1/demonstrations/999999/review"]:
        r = await client.post(url, json=good, headers=admin)
        assert r.status_code == 404 and "detail" in r.json()
    assert (
        await client.get("/api/v1/projects/999999/comparisons", headers=admin)
    ).status_code == 404
    # Bodies that do not fit, each with its reason.
    url = f"/api/v1/comparisons/{bad.id}/review"
    for body, reason in [
        ({"verdict": "maybe"}, "verdict"),
        ({}, "verdict"),
        ({"verdict": "reject"}, "needs a note"),
        ({"verdict": "reject", "note": "   "}, "needs a note"),
        ({"verdict": "accept", "note": "x" * 2001}, "note"),
        ({"verdict": "accept", "extra": 1}, "extra"),
    ]:
        r = await client.post(url, json=body, headers=admin)
        assert r.status_code == 422, (body, r.text)
        assert reason in r.json()["detail"], (body, r.json())
    assert session.scalar(select(Review).where(Review.comparison_id == bad.id)) is None
    r = await client.get(f"/api/v1/projects/{project.id}/comparisons?review=maybe", headers=admin)
    assert r.status_code == 422


async def test_the_list_filters_by_labeler_and_review_and_pages(
    client: httpx.AsyncClient, session: Session, work: dict[str, Any]
) -> None:
    headers = _bearer(session, work["admin"])
    project, bad, cat = work["project"], work["bad"], work["cat"]
    await client.post(
        f"/api/v1/comparisons/{bad.id}/review",
        json={"verdict": "reject", "note": NOTE},
        headers=headers,
    )
    url = f"/api/v1/projects/{project.id}/comparisons"
    everything = (await client.get(url, headers=headers)).json()
    assert len(everything) == 6
    assert set(everything[0]) >= {"id", "prompt_id", "labeler", "ranking", "review"}
    theirs = (await client.get(url, params={"labeler": f"user:{cat.id}"}, headers=headers)).json()
    assert {c["labeler"] for c in theirs} == {f"user:{cat.id}"} and len(theirs) == 2
    rejected = (await client.get(url, params={"review": "rejected"}, headers=headers)).json()
    assert [c["id"] for c in rejected] == [bad.id]
    assert rejected[0]["review"]["verdict"] == "rejected" and rejected[0]["review"]["note"] == NOTE
    assert rejected[0]["ranking"] == bad.ranking
    pending = (await client.get(url, params={"review": "pending"}, headers=headers)).json()
    assert len(pending) == 5 and bad.id not in {c["id"] for c in pending}
    assert all(c["review"] == {"verdict": "pending", "note": None, "reviewer_id": None,
                               "reviewed_at": None} for c in pending)  # fmt: skip
    assert (await client.get(url, params={"review": "accepted"}, headers=headers)).json() == []
    first = (await client.get(url, params={"limit": 4}, headers=headers)).json()
    rest = (await client.get(url, params={"limit": 4, "offset": 4}, headers=headers)).json()
    assert len(first) == 4 and len(rest) == 2
    assert [c["id"] for c in first + rest] == [c["id"] for c in everything]
    assert (await client.get(url, params={"limit": 0}, headers=headers)).status_code == 422


# --- The review page -----------------------------------------------------------------------


async def test_the_review_page_walks_lowest_agreement_first_and_rejects_with_a_note(
    client: httpx.AsyncClient, session: Session, work: dict[str, Any]
) -> None:
    project, bad, cat = work["project"], work["bad"], work["cat"]
    await login(client, work["admin"])
    detail = (await client.get(f"/admin/projects/{project.id}")).text
    assert f'href="/admin/projects/{project.id}/review"' in detail
    path = f"/admin/projects/{project.id}/review"
    page = await client.get(path, params={"order": "agreement", "kind": "comparison"})
    assert page.status_code == 200
    # The careless labeler's rankings agree least with the others: theirs come first.
    assert f"by {cat.label}" in visible_text(page.text)
    first = page.text.split('data-review-item="comparison-')[1].split('"')[0]
    assert int(first) in {c.id for (who, _), c in work["comparisons"].items() if who == cat.id}
    token = await csrf_token(client, f"{path}?order=agreement")
    form = {"csrf_token": token, "f_order": "agreement", "f_kind": "comparison", "at": "0"}
    # A rejection without a note is refused in words, nothing stored.
    r = await client.post(f"{path}/comparison/{bad.id}", data={**form, "verdict": "reject"})
    assert r.status_code == 422 and "needs a note" in r.text
    # Through another project's page the item is not found (nothing stored).
    other = make_project(session, name="Another project")
    session.commit()
    r = await client.post(
        f"/admin/projects/{other.id}/review/comparison/{bad.id}",
        data={**form, "verdict": "reject", "note": NOTE},
    )
    assert r.status_code == 404
    assert session.scalar(select(Review).where(Review.comparison_id == bad.id)) is None
    r = await client.post(
        f"{path}/comparison/{bad.id}", data={**form, "verdict": "reject", "note": NOTE}
    )
    assert r.status_code == 303 and "order=agreement" in r.headers["location"]
    session.expire_all()
    review = session.scalar(select(Review).where(Review.comparison_id == bad.id))
    assert review is not None and review.verdict == Verdict.rejected and review.note == NOTE
    # Pending work only (the default): the rejected ranking is no longer walked.
    page = await client.get(path, params={"kind": "comparison"})
    assert f'data-review-item="comparison-{bad.id}"' not in page.text
    assert "of 5" in visible_text(page.text)
    rejected = await client.get(path, params={"state": "rejected"})
    assert f'data-review-item="comparison-{bad.id}"' in rejected.text
    assert "&lt;b&gt;wrong&lt;/b&gt;" in rejected.text and "<b>wrong</b>" not in rejected.text


async def test_the_review_page_filters_by_labeler_and_gold_misses(
    client: httpx.AsyncClient, session: Session, work: dict[str, Any]
) -> None:
    project, ann, cat = work["project"], work["ann"], work["cat"]
    gold_prompt = work["prompts"][1]
    session.add(GoldRanking(prompt_id=gold_prompt.id, ranking=[[a] for a in answers(gold_prompt)]))
    session.commit()
    await login(client, work["admin"])
    path = f"/admin/projects/{project.id}/review"
    misses = (await client.get(path, params={"gold_misses": "1"})).text
    # Only the careless ranking of the gold prompt misses gold (Bob swaps one pair: a miss too).
    missed = work["comparisons"][(cat.id, gold_prompt.id)].id
    assert f'data-review-item="comparison-{missed}"' in misses and "misses gold" in misses
    assert "of 2" in visible_text(misses)  # Cat's and Bob's; Ann matches gold
    mine = (await client.get(path, params={"labeler": f"user:{ann.id}"})).text
    assert f"by {ann.label}" in visible_text(mine) and "of 2" in visible_text(mine)
    demos = (await client.get(path, params={"kind": "demonstration"})).text
    assert "A lazy answer." in demos and "of 1" in visible_text(demos)
    # Walking on: the next link, then nothing past the end.
    assert "data-review-next" in mine
    second = (await client.get(path, params={"labeler": f"user:{ann.id}", "at": "1"})).text
    assert "2 of 2" in visible_text(second) and "data-review-next" not in second


async def test_the_review_page_is_for_admins(
    client: httpx.AsyncClient, session: Session, work: dict[str, Any]
) -> None:
    await login(client, work["ann"])
    project = work["project"]
    assert (await client.get(f"/admin/projects/{project.id}/review")).status_code == 403
    token = await csrf_token(client, "/home")
    r = await client.post(
        f"/admin/projects/{project.id}/review/comparison/{work['bad'].id}",
        data={"csrf_token": token, "verdict": "accept"},
    )
    assert r.status_code == 403
    assert session.scalar(select(Review)) is None
