"""The admin's prompt list and gold rankings: browse, set, edit, delete; then the queue serves it."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import Engine, event, func, select
from sqlalchemy.orm import Session

from app.audit.models import AuditEvent
from app.labeling.models import Comparison, Completion, GoldRanking, Prompt, TaskKind, text_sha256
from app.labeling.queue import lease_next_task
from app.projects.models import Project
from tests.helpers import (
    csrf_token,
    login,
    make_admin,
    make_project,
    make_prompt,
    make_user,
    visible_text,
)

LEASE = timedelta(minutes=30)


def answer_ids(session: Session, prompt: Prompt) -> list[int]:
    return list(
        session.scalars(
            select(Completion.id).where(Completion.prompt_id == prompt.id).order_by(Completion.id)
        )
    )


def row_text(html: str, prompt_id: int) -> str:
    match = re.search(rf'<tr id="prompt-{prompt_id}">(.*?)</tr>', html, re.DOTALL)
    assert match, f"no row for prompt {prompt_id}"
    return visible_text(match.group(1))


def listed_ids(html: str) -> list[int]:
    return [int(i) for i in re.findall(r'<tr id="prompt-(\d+)">', html)]


def add_comparison(
    session: Session, prompt: Prompt, who: str, *, revision: int = 1, latest: bool = True,
    surplus: bool = False,
) -> None:  # fmt: skip
    ids = answer_ids(session, prompt)
    session.add(
        Comparison(
            prompt_id=prompt.id, labeler_external=who, revision=revision, is_latest=latest,
            is_surplus=surplus, displayed_completion_ids=ids, ranking=[[i] for i in ids],
        )
    )  # fmt: skip
    session.flush()


@contextmanager
def count_statements(engine: Engine) -> Iterator[list[str]]:
    statements: list[str] = []

    def before(*args: Any) -> None:
        statements.append(args[2])

    event.listen(engine, "before_cursor_execute", before)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", before)


async def test_list_shows_counts_filters_and_pages(
    client: httpx.AsyncClient, session: Session, engine: Engine
) -> None:
    project = make_project(session, k=4)
    other = make_project(session, k=4)
    make_prompt(session, other, text="from another project")
    ranked = make_prompt(session, project, text="ranked " + "long " * 60)
    add_comparison(session, ranked, "a", revision=1, latest=False)
    add_comparison(session, ranked, "a", revision=2)  # the latest revision counts once
    add_comparison(session, ranked, "b", surplus=True)  # surplus does not count
    add_comparison(session, ranked, "c")
    short = make_prompt(session, project, text="two answers only", answers=2)
    gold = make_prompt(session, project, text="golden")
    session.add(GoldRanking(prompt_id=gold.id, ranking=[[i] for i in answer_ids(session, gold)]))
    fillers = [make_prompt(session, project, text=f"filler {i}", answers=0) for i in range(50)]
    session.flush()
    await login(client, make_admin(session))

    with count_statements(engine) as statements:
        page1 = await client.get(f"/admin/projects/{project.id}/prompts")
    assert page1.status_code == 200
    assert 3 < len(statements) < 15  # grouped counts, not a query per row (50 rows here)
    assert listed_ids(page1.text) == [p.id for p in reversed(fillers)]  # newest first, 50
    assert "Page 1 of 2" in page1.text and '<span class="count">53</span>' in page1.text
    assert f'href="/admin/projects/{project.id}/prompts?page=2"' in page1.text

    page2 = await client.get(f"/admin/projects/{project.id}/prompts?page=2")
    assert listed_ids(page2.text) == [gold.id, short.id, ranked.id]
    assert "from another project" not in page2.text
    # id, preview cut near 140 characters, answers, rankings, gold, link
    text = row_text(page2.text, ranked.id)
    assert text.startswith(f"#{ranked.id} ranked long")
    assert "\u2026" in text and "long " * 30 not in text
    assert re.search(r"\u2026 4 2 no .* Set gold ranking", text), text
    assert re.search(r"two answers only 2 / 4 0 no", row_text(page2.text, short.id))
    gold_row = row_text(page2.text, gold.id)
    assert re.search(r"golden 4 0 yes .* Edit gold ranking", gold_row), gold_row
    # Past the end: the last page.
    past = await client.get(f"/admin/projects/{project.id}/prompts?page=99")
    assert listed_ids(past.text) == listed_ids(page2.text)

    only_gold = await client.get(f"/admin/projects/{project.id}/prompts?filter=gold")
    assert listed_ids(only_gold.text) == [gold.id]
    assert 'aria-current="page"' in only_gold.text
    rankable = await client.get(f"/admin/projects/{project.id}/prompts?filter=rankable")
    assert listed_ids(rankable.text) == [gold.id, ranked.id]
    # The gold page's link remembers the list's page and filter.
    assert f'href="/admin/prompts/{gold.id}/gold?filter=rankable"' in rankable.text
    unknown = await client.get(f"/admin/projects/{project.id}/prompts?filter=nope")
    assert unknown.status_code == 200 and len(listed_ids(unknown.text)) == 50

    empty = make_project(session)
    nothing = await client.get(f"/admin/projects/{empty.id}/prompts?filter=gold")
    assert nothing.status_code == 200 and "No gold prompts yet" in nothing.text
    assert (await client.get("/admin/projects/999999/prompts")).status_code == 404

    detail = await client.get(f"/admin/projects/{project.id}")
    assert f'href="/admin/projects/{project.id}/prompts"' in detail.text


async def test_set_edit_and_delete_a_gold_ranking(
    client: httpx.AsyncClient, session: Session
) -> None:
    project = make_project(session, k=4)
    prompt = make_prompt(session, project, text="Which **planet** is largest?")
    a, b, c, d = answer_ids(session, prompt)
    admin = make_admin(session)
    await login(client, admin)
    page = await client.get(f"/admin/prompts/{prompt.id}/gold?page=2&filter=gold")
    assert page.status_code == 200
    assert "<strong>planet</strong>" in page.text  # the prompt as Markdown
    assert "/static/css/labeling.css" in page.text and 'class="rank-picker"' in page.text
    assert page.text.count('type="radio"') == 16 and " checked" not in page.text
    assert "Remove the gold ranking" not in page.text
    token = await csrf_token(client, f"/admin/prompts/{prompt.id}/gold")

    form = {"csrf_token": token, "page": "2", "filter": "gold",
            f"rank_{a}": "2", f"rank_{b}": "1", f"rank_{c}": "3", f"rank_{d}": "3"}  # fmt: skip
    r = await client.post(f"/admin/prompts/{prompt.id}/gold", data=form)
    assert r.status_code == 303
    assert r.headers["location"] == (
        f"/admin/projects/{project.id}/prompts?filter=gold&page=2&saved=set&prompt={prompt.id}"
    )
    assert session.scalars(select(GoldRanking.ranking)).one() == [[b], [a], sorted([c, d])]
    listed = await client.get(r.headers["location"])
    assert f"Gold ranking saved for prompt #{prompt.id}." in listed.text

    # Editing: the form comes back filled in, ties included.
    again = await client.get(f"/admin/prompts/{prompt.id}/gold")
    for cid, place in ((a, 2), (b, 1), (c, 3), (d, 3)):
        assert re.search(rf'name="rank_{cid}" value="{place}" checked', again.text)
    assert "Edit the gold ranking" in again.text and "Remove the gold ranking" in again.text
    edit = {"csrf_token": token, f"rank_{a}": "1", f"rank_{b}": "2", f"rank_{c}": "3", f"rank_{d}": "4"}  # fmt: skip
    r = await client.post(f"/admin/prompts/{prompt.id}/gold", data=edit)
    assert r.status_code == 303
    assert r.headers["location"] == (
        f"/admin/projects/{project.id}/prompts?saved=set&prompt={prompt.id}"
    )
    gold = session.scalars(select(GoldRanking)).one()
    session.refresh(gold)
    assert gold.ranking == [[a], [b], [c], [d]] and gold.created_by_id == admin.id
    events = session.scalars(
        select(AuditEvent).where(AuditEvent.action == "gold.set").order_by(AuditEvent.id)
    ).all()
    assert [e.target_id for e in events] == [prompt.id, prompt.id]
    assert events[1].actor_id == admin.id
    assert events[1].details == {
        "ranking": [[a], [b], [c], [d]],
        "previous": [[b], [a], sorted([c, d])],
    }

    r = await client.post(
        f"/admin/prompts/{prompt.id}/gold/delete",
        data={"csrf_token": token, "page": "3", "filter": "all"},
    )
    assert r.status_code == 303
    assert r.headers["location"] == (
        f"/admin/projects/{project.id}/prompts?page=3&saved=deleted&prompt={prompt.id}"
    )
    assert session.scalar(select(func.count()).select_from(GoldRanking)) == 0
    deleted = session.scalars(select(AuditEvent).where(AuditEvent.action == "gold.delete")).one()
    assert deleted.target_id == prompt.id and deleted.details == {"ranking": [[a], [b], [c], [d]]}
    assert "Gold ranking removed" in (await client.get(r.headers["location"])).text
    # A second delete (another tab) changes nothing and says so.
    twice = await client.post(f"/admin/prompts/{prompt.id}/gold/delete", data={"csrf_token": token})
    assert twice.status_code == 303 and "saved=absent" in twice.headers["location"]
    assert session.scalar(select(func.count()).select_from(AuditEvent).where(
        AuditEvent.action == "gold.delete")) == 1  # fmt: skip


async def test_incomplete_or_wrong_ranking_is_refused_inline(
    client: httpx.AsyncClient, session: Session
) -> None:
    project = make_project(session, k=4)
    prompt = make_prompt(session, project)
    a, b, c, d = answer_ids(session, prompt)
    await login(client, make_admin(session))
    token = await csrf_token(client, f"/admin/prompts/{prompt.id}/gold")
    url = f"/admin/prompts/{prompt.id}/gold"

    r = await client.post(
        url, data={"csrf_token": token, f"rank_{a}": "1", f"rank_{b}": "2", f"rank_{c}": "2"}
    )
    assert r.status_code == 422
    assert "Give every answer a place: answer D has none yet." in visible_text(r.text)
    assert re.search(rf'name="rank_{a}" value="1" checked', r.text)
    assert re.search(rf'name="rank_{c}" value="2" checked', r.text)
    assert not re.search(rf'name="rank_{d}" value="\d" checked', r.text)

    r = await client.post(url, data={"csrf_token": token})
    assert r.status_code == 422 and "answers A, B, C and D have none yet" in visible_text(r.text)
    for bad in ("5", "0", "x", "\u00b2"):  # out of range, not a number, a superscript digit
        form = {"csrf_token": token, f"rank_{a}": bad, f"rank_{b}": "1", f"rank_{c}": "2", f"rank_{d}": "3"}  # fmt: skip
        r = await client.post(url, data=form)
        assert r.status_code == 422 and "is not a place in the ranking (1 to 4)" in r.text, bad
    assert session.scalar(select(func.count()).select_from(GoldRanking)) == 0
    assert session.scalar(select(func.count()).select_from(AuditEvent).where(
        AuditEvent.action == "gold.set")) == 0  # fmt: skip

    # No answers at all: nothing to rank, and nothing is stored.
    bare = make_prompt(session, project, text="no answers yet", answers=0)
    page = await client.get(f"/admin/prompts/{bare.id}/gold")
    assert page.status_code == 200 and "No answers yet" in page.text
    r = await client.post(f"/admin/prompts/{bare.id}/gold", data={"csrf_token": token})
    assert r.status_code == 422 and "nothing to rank" in r.text
    assert session.scalar(select(func.count()).select_from(GoldRanking)) == 0
    assert (await client.get("/admin/prompts/999999/gold")).status_code == 404


async def test_many_answers_and_answers_added_after_the_gold(
    client: httpx.AsyncClient, session: Session
) -> None:
    project = make_project(session, k=4)
    prompt = make_prompt(session, project, answers=12)
    ids = answer_ids(session, prompt)
    await login(client, make_admin(session))
    page = await client.get(f"/admin/prompts/{prompt.id}/gold")
    # Twelve places do not fit a row of buttons: a select per answer, same field names.
    assert page.text.count(f'<select name="rank_{ids[0]}"') == 1 and 'type="radio"' not in page.text
    token = await csrf_token(client, f"/admin/prompts/{prompt.id}/gold")
    form = {"csrf_token": token, **{f"rank_{cid}": str(12 - n) for n, cid in enumerate(ids)}}
    assert (await client.post(f"/admin/prompts/{prompt.id}/gold", data=form)).status_code == 303
    assert session.scalars(select(GoldRanking.ranking)).one() == [[i] for i in reversed(ids)]

    text = "a late answer"
    session.add(
        Completion(prompt_id=prompt.id, text=text, text_sha256=text_sha256(text), origin="import:x")
    )
    session.flush()
    page = await client.get(f"/admin/prompts/{prompt.id}/gold")
    assert "Answer M came after the gold ranking was saved" in visible_text(page.text)


async def test_prompt_and_answer_text_are_escaped(
    client: httpx.AsyncClient, session: Session
) -> None:
    project = make_project(session, k=4)
    prompt = make_prompt(
        session, project, text="<script>alert('p')</script> <b>bold</b>", answers=0
    )
    for text in ("<script>alert('a')</script>", "<img src=x onerror=alert(1)>", "ok", "fine"):
        session.add(
            Completion(prompt_id=prompt.id, text=text, text_sha256=text_sha256(text), origin="import:<i>x</i>")
        )  # fmt: skip
    session.flush()
    await login(client, make_admin(session))
    for path in (f"/admin/projects/{project.id}/prompts", f"/admin/prompts/{prompt.id}/gold"):
        html = (await client.get(path)).text
        assert "<script>alert" not in html and "<b>bold" not in html, path
        assert "&lt;script&gt;alert(" in html, path
    gold_page = (await client.get(f"/admin/prompts/{prompt.id}/gold")).text
    assert "<img src=x" not in gold_page and "<i>x</i>" not in gold_page
    assert "&lt;script&gt;alert('a')&lt;/script&gt;" in gold_page
    # No inline script or style on the new pages (the CSP forbids them anyway).
    assert "<script>" not in gold_page.replace("&lt;script&gt;", "")
    assert "style=" not in gold_page


async def test_labelers_are_refused_every_gold_route(
    client: httpx.AsyncClient, session: Session
) -> None:
    project = make_project(session, k=4)
    prompt = make_prompt(session, project)
    a, b, c, d = answer_ids(session, prompt)
    await login(client, make_user(session))
    token = await csrf_token(client, "/home")
    form = {"csrf_token": token, f"rank_{a}": "1", f"rank_{b}": "2", f"rank_{c}": "3", f"rank_{d}": "4"}  # fmt: skip
    for method, path in (
        ("GET", f"/admin/projects/{project.id}/prompts"),
        ("GET", f"/admin/prompts/{prompt.id}/gold"),
        ("POST", f"/admin/prompts/{prompt.id}/gold"),
        ("POST", f"/admin/prompts/{prompt.id}/gold/delete"),
    ):
        r = await client.request(method, path, data=form if method == "POST" else None)
        assert r.status_code == 403, (method, path)
    assert session.scalar(select(func.count()).select_from(GoldRanking)) == 0


async def test_a_gold_prompt_is_served_as_gold_at_gold_rate_one(
    client: httpx.AsyncClient, session: Session
) -> None:
    project = make_project(session, k=4, overlap=1)
    older = make_prompt(session, project, text="an ordinary prompt")  # first in the normal queue
    prompt = make_prompt(session, project, text="the gold one", answers=5)
    project.gold_rate = 1.0
    session.flush()
    labeler = make_user(session)
    await login(client, make_admin(session))
    token = await csrf_token(client, f"/admin/prompts/{prompt.id}/gold")
    ids = answer_ids(session, prompt)
    form = {"csrf_token": token, **{f"rank_{cid}": str(n) for n, cid in enumerate(ids, 1)}}
    assert (await client.post(f"/admin/prompts/{prompt.id}/gold", data=form)).status_code == 303

    project = session.get_one(Project, project.id)
    task = lease_next_task(
        session=session, project=project, labeler=labeler, kind=TaskKind.rank, lease_for=LEASE
    )
    assert task is not None
    assert task.prompt.id == prompt.id and task.assignment.is_gold
    assert len(task.completions) == 4 and set(task.assignment.display_order or []) <= set(ids)

    # Without its gold ranking the prompt is an ordinary one again (and waits its turn).
    await client.post(f"/admin/prompts/{prompt.id}/gold/delete", data={"csrf_token": token})
    other = make_user(session)
    task = lease_next_task(
        session=session, project=project, labeler=other, kind=TaskKind.rank, lease_for=LEASE
    )
    assert task is not None and task.prompt.id == older.id and not task.assignment.is_gold
