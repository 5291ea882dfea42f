"""The labeler's pages through plain forms and htmx, as the browser sends them."""

from __future__ import annotations

import re

import httpx
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.labeling.models import Assignment, AssignmentState, Comparison, Demonstration
from app.projects.models import Project
from tests.helpers import csrf_token, login, make_project, make_prompt, make_user, visible_text

HTMX = {"HX-Request": "true"}


async def lease_rank(client: httpx.AsyncClient, project: Project) -> tuple[int, list[int], str]:
    token = await csrf_token(client, f"/projects/{project.id}/rank")
    r = await client.post(
        f"/projects/{project.id}/rank/next", headers={**HTMX, "X-CSRF-Token": token}
    )
    assert r.status_code == 200, r.text
    task_id = int(re.search(r'action="/tasks/(\d+)/rank"', r.text).group(1))  # type: ignore[union-attr]
    ids = [int(i) for i in re.findall(r'data-completion="(\d+)"', r.text)]
    return task_id, ids, token


async def test_rank_page_loads_its_task_with_htmx(
    client: httpx.AsyncClient, session: Session
) -> None:
    project = make_project(session, k=4)
    make_prompt(session, project, text="Name a planet")
    await login(client, make_user(session))
    page = await client.get(f"/projects/{project.id}/rank")
    assert page.status_code == 200
    assert (
        f'hx-post="/projects/{project.id}/rank/next"' in page.text
        and 'hx-trigger="load"' in page.text
    )
    task_id, ids, _ = await lease_rank(client, project)
    assert len(ids) == 4
    # The task has its own address, which a reload or a bookmark comes back to.
    again = await client.get(f"/tasks/{task_id}")
    assert "Name a planet" in again.text and "<html" in again.text


async def test_ranking_with_a_tie_a_rating_and_a_flag_then_the_next_task(
    client: httpx.AsyncClient, session: Session
) -> None:
    project = make_project(session, k=4)
    make_prompt(session, project, text="first")
    make_prompt(session, project, text="second")
    await login(client, make_user(session))
    task_id, (a, b, c, d), token = await lease_rank(client, project)
    form = {
        "csrf_token": token, f"rank_{a}": "2", f"rank_{b}": "1", f"rank_{c}": "3", f"rank_{d}": "3",
        f"rating_{b}": "6", f"flag_{d}": "harmful", "seconds_spent": "12.5",
    }  # fmt: skip
    r = await client.post(f"/tasks/{task_id}/rank", data=form, headers=HTMX)
    assert r.status_code == 200
    assert "Ranking saved." in r.text and "<html" not in r.text
    assert "second" in r.text or "first" in r.text  # the next task, swapped in
    stored = session.scalars(select(Comparison)).one()
    assert stored.ranking == [[b], [a], sorted([c, d])]
    assert stored.ratings == {str(b): 6} and stored.flags == {str(d): ["harmful"]}
    assert stored.seconds_spent == 12.5
    # A double click sends the same form again: still one ranking.
    again = await client.post(f"/tasks/{task_id}/rank", data=form, headers=HTMX)
    assert again.status_code == 200
    assert session.scalar(select(func.count()).select_from(Comparison)) == 1


async def test_incomplete_ranking_is_refused_inline_and_keeps_the_choices(
    client: httpx.AsyncClient, session: Session
) -> None:
    project = make_project(session, k=4)
    make_prompt(session, project)
    await login(client, make_user(session))
    task_id, (a, b, c, _), token = await lease_rank(client, project)
    r = await client.post(
        f"/tasks/{task_id}/rank",
        data={"csrf_token": token, f"rank_{a}": "1", f"rank_{b}": "2", f"rank_{c}": "3"},
        headers=HTMX,
    )
    assert r.status_code == 422
    assert "answer D has none yet" in visible_text(r.text)
    assert re.search(rf'name="rank_{a}" value="1" checked', r.text)
    empty = await client.post(f"/tasks/{task_id}/rank", data={"csrf_token": token}, headers=HTMX)
    assert empty.status_code == 422 and "none of these is acceptable" in empty.text
    assert session.scalar(select(func.count()).select_from(Comparison)) == 0


async def test_none_acceptable_and_skip_with_reason(
    client: httpx.AsyncClient, session: Session
) -> None:
    project = make_project(session, k=4)
    make_prompt(session, project, text="one")
    make_prompt(session, project, text="two")
    make_prompt(session, project, text="three")
    user = make_user(session)
    await login(client, user)
    task_id, _, token = await lease_rank(client, project)
    r = await client.post(
        f"/tasks/{task_id}/rank", data={"csrf_token": token, "not_rankable": "on"}, headers=HTMX
    )
    assert r.status_code == 200
    assert session.scalars(select(Comparison)).one().not_rankable
    next_id = int(re.search(r'action="/tasks/(\d+)/rank"', r.text).group(1))  # type: ignore[union-attr]
    no_reason = await client.post(
        f"/tasks/{next_id}/skip", data={"csrf_token": token, "reason": "Other"}, headers=HTMX
    )
    assert no_reason.status_code == 422 and "Say why" in no_reason.text
    skipped = await client.post(
        f"/tasks/{next_id}/skip",
        data={"csrf_token": token, "reason": "Outside my expertise", "reason_detail": "law"},
        headers=HTMX,
    )
    assert skipped.status_code == 200 and "Skipped" in skipped.text
    row = session.get_one(Assignment, next_id)
    assert row.state == AssignmentState.skipped and row.skip_reason == "Outside my expertise - law"


async def test_plain_form_posts_work_without_javascript(
    client: httpx.AsyncClient, session: Session
) -> None:
    project = make_project(session, k=4)
    make_prompt(session, project, text="one")
    await login(client, make_user(session))
    token = await csrf_token(client, f"/projects/{project.id}/rank")
    r = await client.post(f"/projects/{project.id}/rank/next", data={"csrf_token": token})
    assert r.status_code == 303 and r.headers["location"].startswith("/tasks/")
    page = await client.get(r.headers["location"])
    task_id = int(r.headers["location"].rsplit("/", 1)[1])
    ids = [int(i) for i in re.findall(r'data-completion="(\d+)"', page.text)]
    form = {"csrf_token": token, **{f"rank_{cid}": str(n) for n, cid in enumerate(ids, 1)}}
    done = await client.post(f"/tasks/{task_id}/rank", data=form)
    assert done.status_code == 303
    assert (await client.get(done.headers["location"])).status_code == 200


async def test_answers_are_escaped_and_long_ones_kept_whole(
    client: httpx.AsyncClient, session: Session
) -> None:
    project = make_project(session, k=4)
    prompt = make_prompt(session, project, text="<b>bold?</b>", answers=0)
    from app.labeling.models import Completion, text_sha256

    texts = [
        "<script>alert('x')</script> and <img src=x onerror=alert(1)>",
        "x" * 20_000,  # one huge unbroken word
        "word " * 10_000,  # 50 KB
        "```html\n<div>code</div>\n```",
    ]
    for text in texts:
        session.add(
            Completion(
                prompt_id=prompt.id, text=text, text_sha256=text_sha256(text), origin="import:t"
            )
        )
    session.flush()
    await login(client, make_user(session))
    token = await csrf_token(client, f"/projects/{project.id}/rank")
    html = (
        await client.post(
            f"/projects/{project.id}/rank/next", headers={**HTMX, "X-CSRF-Token": token}
        )
    ).text
    assert "<script>alert" not in html and "<img src=x" not in html and "<b>bold" not in html
    assert "&lt;script&gt;alert" in html and "&lt;b&gt;bold?&lt;/b&gt;" in html
    assert "x" * 20_000 in html and html.count("word") >= 10_000  # nothing cut server-side
    assert "&lt;div&gt;code&lt;/div&gt;" in html


async def test_demonstration_with_draft_then_submit(
    client: httpx.AsyncClient, session: Session
) -> None:
    project = make_project(session, k=4)
    make_prompt(session, project, text="Write a haiku about rain", answers=0)
    user = make_user(session)
    await login(client, user)
    token = await csrf_token(client, f"/projects/{project.id}/demonstrate")
    r = await client.post(
        f"/projects/{project.id}/demonstrate/next", headers={**HTMX, "X-CSRF-Token": token}
    )
    task_id = int(re.search(r'action="/tasks/(\d+)/demonstration"', r.text).group(1))  # type: ignore[union-attr]
    saved = await client.post(
        f"/tasks/{task_id}/draft",
        data={"text": "Soft rain on"},
        headers={**HTMX, "X-CSRF-Token": token},
    )
    assert saved.status_code == 200 and "Draft saved" in saved.text
    # A reload brings the draft back.
    reloaded = await client.get(f"/tasks/{task_id}")
    assert "Soft rain on</textarea>" in reloaded.text
    empty = await client.post(
        f"/tasks/{task_id}/demonstration", data={"csrf_token": token, "text": "  "}, headers=HTMX
    )
    assert empty.status_code == 422 and "is empty" in empty.text
    done = await client.post(
        f"/tasks/{task_id}/demonstration",
        data={"csrf_token": token, "text": "Soft rain on the roof"},
        headers=HTMX,
    )
    assert done.status_code == 200 and "Demonstration saved." in done.text
    assert session.scalars(select(Demonstration.text)).one() == "Soft rain on the roof"


async def test_labeler_writes_a_prompt(client: httpx.AsyncClient, session: Session) -> None:
    project = make_project(session)
    await login(client, make_user(session))
    token = await csrf_token(client, f"/projects/{project.id}/prompts/new")
    r = await client.post(
        f"/projects/{project.id}/prompts", data={"csrf_token": token, "prompt": "What is a qubit?"}
    )
    assert r.status_code == 200 and "your prompt was added" in r.text
    bad = await client.post(
        f"/projects/{project.id}/prompts", data={"csrf_token": token, "prompt": " "}
    )
    assert bad.status_code == 422 and "is empty" in bad.text


async def test_someone_elses_task_page_is_404(client: httpx.AsyncClient, session: Session) -> None:
    project = make_project(session, k=4)
    make_prompt(session, project)
    await login(client, make_user(session))
    task_id, _, _ = await lease_rank(client, project)
    await client.post("/logout", data={"csrf_token": await csrf_token(client, "/home")})
    await login(client, make_user(session))
    assert (await client.get(f"/tasks/{task_id}")).status_code == 404


async def test_home_shows_the_queue_and_task_links(
    client: httpx.AsyncClient, session: Session
) -> None:
    project = make_project(session, k=4)
    make_prompt(session, project)
    make_prompt(session, project, text="no answers", answers=0)
    await login(client, make_user(session))
    text = visible_text((await client.get("/home")).text)
    assert "Rank answers 1" in text and "Write demonstrations 2" in text
