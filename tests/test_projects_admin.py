"""Admin project pages: create, see, edit (the form's rules, shown next to their fields)."""

from __future__ import annotations

import html
import re

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.audit.models import AuditEvent
from app.labeling.models import Comparison, Prompt
from app.projects.models import Project
from app.projects.service import ProjectFormError, create_project, update_project
from tests.helpers import (
    csrf_token,
    field_error,
    login,
    make_admin,
    make_project,
    make_prompt,
    make_user,
)

FORM = {
    "name": "Helpful answers",
    "description": "Rank answers to everyday questions.",
    "k": "5",
    "overlap": "2",
    "likert": "true",
    "flags": "  harmful \nHarmful\n\noff-topic\n",
    "guidelines": "# Rules\n\nBe **kind**.",
    "gold_rate_pct": "12.5",
}


async def _admin(client: httpx.AsyncClient, session: Session) -> str:
    await login(client, make_admin(session))
    return await csrf_token(client, "/admin/projects/new")


async def test_admin_creates_a_project(client: httpx.AsyncClient, session: Session) -> None:
    token = await _admin(client, session)
    r = await client.post("/admin/projects", data={**FORM, "csrf_token": token})
    assert r.status_code == 303, r.text
    project = session.scalars(select(Project).where(Project.name == "Helpful answers")).one()
    assert r.headers["location"] == f"/admin/projects/{project.id}?saved=created"
    assert (project.k, project.overlap, project.gold_rate) == (5, 2, 0.125)
    assert project.description == "Rank answers to everyday questions."
    # Trimmed, blank lines and duplicates (ignoring case) dropped, first spelling kept.
    assert project.label_schema == {"likert": True, "flags": ["harmful", "off-topic"]}
    assert project.guidelines == "# Rules\n\nBe **kind**."
    event = session.scalars(select(AuditEvent).where(AuditEvent.action == "project.create")).one()
    assert event.target_id == project.id

    page = await client.get(r.headers["location"])
    assert page.status_code == 200
    assert "Project created." in page.text
    assert "<h1>Helpful answers</h1>" in page.text
    assert f'href="/admin/projects/{project.id}/import"' in page.text
    assert f'href="/admin/projects/{project.id}/edit"' in page.text
    assert "12.5%" in page.text and "off-topic" in page.text


async def test_new_project_form_starts_with_sensible_defaults(
    client: httpx.AsyncClient, session: Session
) -> None:
    await _admin(client, session)
    page = (await client.get("/admin/projects/new")).text
    assert 'name="k" value="4"' in page and 'name="overlap" value="3"' in page
    assert 'name="likert" value="true" checked' in page
    assert "hallucination\nharmful" in page
    assert 'hx-post="/admin/projects/preview-guidelines"' in page


async def test_unticked_likert_and_no_flags(client: httpx.AsyncClient, session: Session) -> None:
    token = await _admin(client, session)
    data = {**FORM, "flags": "\n \n", "csrf_token": token}
    del data["likert"]
    assert (await client.post("/admin/projects", data=data)).status_code == 303
    project = session.scalars(select(Project).where(Project.name == FORM["name"])).one()
    assert project.label_schema == {"likert": False, "flags": []}


async def test_admin_edits_a_project(client: httpx.AsyncClient, session: Session) -> None:
    project = make_project(session, name="Before", k=4, overlap=3)
    token = await _admin(client, session)
    form = (await client.get(f"/admin/projects/{project.id}/edit")).text
    assert 'name="name" value="Before"' in form and "readonly" not in form

    r = await client.post(
        f"/admin/projects/{project.id}", data={**FORM, "name": "After", "csrf_token": token}
    )
    assert r.status_code == 303, r.text
    assert r.headers["location"] == f"/admin/projects/{project.id}?saved=updated"
    session.refresh(project)
    assert (project.name, project.k, project.overlap, project.gold_rate) == ("After", 5, 2, 0.125)
    assert project.label_schema["flags"] == ["harmful", "off-topic"]
    event = session.scalars(select(AuditEvent).where(AuditEvent.action == "project.update")).one()
    assert event.details["name"] == ["Before", "After"]
    assert event.details["k"] == [4, 5]
    assert "Changes saved." in (await client.get(r.headers["location"])).text


async def test_project_page_shows_the_counts(client: httpx.AsyncClient, session: Session) -> None:
    project = make_project(session, k=4, overlap=2)
    make_prompt(session, project, text="a")
    make_prompt(session, project, text="b")
    make_prompt(session, project, text="c", answers=1)
    await _admin(client, session)
    page = (await client.get(f"/admin/projects/{project.id}")).text
    text = " ".join(re.sub(r"<[^>]+>", " ", page).split())
    assert "3 prompts" in text
    assert "9 answers" in text
    assert "2 ready to rank" in text
    assert "0 demonstrations" in text
    assert "0 / 4 wanted" in text
    assert (await client.get("/admin/projects/999999")).status_code == 404


INVALID = [
    ({"name": "   "}, "name", "A project needs a name."),
    ({"name": "2024"}, "name", "A project name cannot be only digits (it would read as an id)."),
    ({"name": "x" * 201}, "name", "A project name has at most 200 characters."),
    ({"name": "Taken"}, "name", "A project named &#39;Taken&#39; already exists."),
    ({"description": "d" * 2001}, "description", "The description has at most 2000 characters."),
    ({"k": "12"}, "k", "K must be between 2 and 9, not 12."),
    ({"k": "1"}, "k", "K must be between 2 and 9, not 1."),
    ({"k": "four"}, "k", "K must be a whole number."),
    ({"overlap": "0"}, "overlap", "Overlap must be at least 1, not 0."),
    ({"overlap": "1.5"}, "overlap", "Overlap must be a whole number."),
    ({"flags": "\n".join(f"flag {i}" for i in range(13))}, "flags", "At most 12 flags, not 13."),
    ({"flags": "ok\n" + "y" * 41}, "flags", "A flag name has at most 40 characters"),
    ({"gold_rate_pct": "150"}, "gold_rate", "The gold rate must be between 0% and 100%, not 150%."),
    ({"gold_rate_pct": "-1"}, "gold_rate", "The gold rate must be between 0% and 100%, not -1%."),
    ({"gold_rate_pct": "lots"}, "gold_rate", "The gold rate must be a number from 0 to 100."),
    ({"gold_rate_pct": "nan"}, "gold_rate", "The gold rate must be a number from 0 to 100."),
]


@pytest.mark.parametrize(("change", "field", "message"), INVALID)
@pytest.mark.parametrize("editing", [False, True], ids=["create", "edit"])
async def test_each_rule_is_shown_next_to_its_field_with_the_input_kept(
    client: httpx.AsyncClient,
    session: Session,
    change: dict[str, str],
    field: str,
    message: str,
    editing: bool,
) -> None:
    make_project(session, name="Taken")
    project = make_project(session, name="Mine") if editing else None
    token = await _admin(client, session)
    count = len(session.scalars(select(Project)).all())
    data = {**FORM, **change, "csrf_token": token}
    url = f"/admin/projects/{project.id}" if project else "/admin/projects"
    r = await client.post(url, data=data)
    assert r.status_code == 422
    assert r.headers["content-type"].startswith("text/html")
    assert field_error(r.text, field).startswith(message), field_error(r.text, field)
    assert "need" in r.text and "Nothing was saved." in r.text
    # What was typed is still there, the wrong value included.
    typed = {**FORM, **change}
    for key in ("description", "flags", "guidelines"):
        assert f">{typed[key]}</textarea>" in r.text, key
    for key in ("name", "k", "overlap", "gold_rate_pct"):
        shown = html.escape(typed[key])
        assert f'name="{key}" value="{shown}"' in r.text, key
    assert len(session.scalars(select(Project)).all()) == count
    if project is not None:
        session.refresh(project)
        assert project.name == "Mine" and project.k == 4


async def test_several_wrong_fields_are_all_reported(
    client: httpx.AsyncClient, session: Session
) -> None:
    token = await _admin(client, session)
    data = {**FORM, "name": "", "k": "x", "gold_rate_pct": "200", "csrf_token": token}
    r = await client.post("/admin/projects", data=data)
    assert r.status_code == 422
    assert "3 fields need a change" in r.text
    assert (
        field_error(r.text, "name")
        and field_error(r.text, "k")
        and field_error(r.text, "gold_rate")
    )


def _rank(session: Session, project: Project) -> None:
    prompt = make_prompt(session, project, answers=project.k)
    session.refresh(prompt)
    labeler = make_user(session)
    ids = [c.id for c in prompt.completions]
    session.add(
        Comparison(
            prompt_id=prompt.id,
            labeler_id=labeler.id,
            displayed_completion_ids=ids,
            ranking=[[i] for i in ids],
        )
    )
    session.flush()


async def test_k_cannot_change_once_there_are_rankings(
    client: httpx.AsyncClient, session: Session
) -> None:
    project = make_project(session, name="Ranked", k=4, overlap=3)
    _rank(session, project)
    token = await _admin(client, session)
    form = (await client.get(f"/admin/projects/{project.id}/edit")).text
    assert "readonly" in form and "Fixed: this project already has rankings of 4 answers" in form

    data = {**FORM, "name": "Ranked", "k": "5", "csrf_token": token}
    r = await client.post(f"/admin/projects/{project.id}", data=data)
    assert r.status_code == 422
    assert field_error(r.text, "k").startswith("K cannot change from 4 to 5")
    session.refresh(project)
    assert (project.k, project.overlap) == (4, 3)

    # Everything else may still change.
    data = {**data, "k": "4", "overlap": "5", "flags": "new flag", "gold_rate_pct": "5"}
    assert (await client.post(f"/admin/projects/{project.id}", data=data)).status_code == 303
    session.refresh(project)
    assert (project.k, project.overlap, project.gold_rate) == (4, 5, 0.05)
    assert project.label_schema["flags"] == ["new flag"]


def test_update_project_service_shares_the_rules(session: Session) -> None:
    project = make_project(session, name="Service", k=4)
    update_project(session=session, project=project, overlap=7)  # None keeps the rest
    assert (project.name, project.k, project.overlap) == ("Service", 4, 7)
    update_project(session=session, project=project, k=6)  # no rankings yet: K may change
    assert project.k == 6
    _rank(session, project)
    with pytest.raises(ProjectFormError) as caught:
        update_project(session=session, project=project, k=3, gold_rate=2.0)
    assert set(caught.value.errors) == {"k", "gold_rate"}
    assert project.k == 6 and project.gold_rate == 0.0
    with pytest.raises(ProjectFormError) as caught:
        create_project(session=session, name="Service")
    assert str(caught.value) == "a project named 'Service' already exists"


async def test_guidelines_preview_is_sanitized_markdown(
    client: httpx.AsyncClient, session: Session
) -> None:
    token = await _admin(client, session)
    text = "# Title\n\n**bold** <script>alert(1)</script> [x](javascript:alert(1))"
    r = await client.post(
        "/admin/projects/preview-guidelines",
        data={"guidelines": text},
        headers={"HX-Request": "true", "X-CSRF-Token": token},
    )
    assert r.status_code == 200
    assert '<h1 dir="auto">Title</h1>' in r.text and "<strong>bold</strong>" in r.text
    assert "<script>" not in r.text and "&lt;script&gt;" in r.text  # shown as text
    assert 'href="javascript' not in r.text
    assert "<html" not in r.text
    refused = await client.post(
        "/admin/projects/preview-guidelines",
        data={"guidelines": text},
        headers={"HX-Request": "true"},
    )
    assert refused.status_code == 403


async def test_overview_links_to_project_pages(client: httpx.AsyncClient, session: Session) -> None:
    project = make_project(session, name="Linked")
    await _admin(client, session)
    page = (await client.get("/admin")).text
    assert f'href="/admin/projects/{project.id}">Linked</a>' in page
    assert 'href="/admin/projects/new"' in page
    detail = (await client.get(f"/admin/projects/{project.id}")).text
    assert re.search(r'href="/admin"\s+aria-current="page"', detail)  # Overview stays current


async def test_labeler_gets_403_on_every_project_admin_page(
    client: httpx.AsyncClient, session: Session
) -> None:
    project = make_project(session)
    await login(client, make_user(session))
    token = await csrf_token(client, "/home")
    headers = {"X-CSRF-Token": token}
    for method, path in [
        ("GET", "/admin/projects/new"),
        ("POST", "/admin/projects"),
        ("POST", "/admin/projects/preview-guidelines"),
        ("GET", f"/admin/projects/{project.id}"),
        ("GET", f"/admin/projects/{project.id}/edit"),
        ("POST", f"/admin/projects/{project.id}"),
    ]:
        r = await client.request(method, path, headers=headers, data={**FORM, "name": "Sneaky"})
        assert r.status_code == 403, (method, path)
    assert session.scalars(select(Project).where(Project.name == "Sneaky")).first() is None


async def test_project_text_is_escaped_on_every_page(
    client: httpx.AsyncClient, session: Session
) -> None:
    project = create_project(
        session=session,
        name="<script>alert(1)</script>",
        description="<b>bold?</b>",
        flags=["<i>flag</i>"],
    )
    token = await _admin(client, session)
    for path in ("/admin", f"/admin/projects/{project.id}", f"/admin/projects/{project.id}/edit"):
        page = (await client.get(path)).text
        assert "<script>alert(1)</script>" not in page, path
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page, path
        assert "<b>bold?</b>" not in page and "<i>flag</i>" not in page, path
    # ... and when the form comes back with an error.
    data = {**FORM, "name": "<script>alert(1)</script>", "k": "99", "csrf_token": token}
    page = (await client.post("/admin/projects", data=data)).text
    assert "<script>alert(1)</script>" not in page
    assert 'value="&lt;script&gt;alert(1)&lt;/script&gt;"' in page


def test_prompts_are_untouched_by_a_settings_change(session: Session) -> None:
    project = make_project(session, k=4)
    make_prompt(session, project)
    update_project(session=session, project=project, k=5, overlap=1)
    prompts = session.scalars(select(Prompt).where(Prompt.project_id == project.id)).all()
    assert len(prompts) == 1
