"""Project membership (design §13): a restricted project is its members' only. A labeler
outside sees nothing of it (home, pages, API: 404); members, admins and every labeler of an
open project work as before. Routes x roles, on the real app."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy.orm import Session

from app.auth.models import Role, User
from app.auth.service import create_api_token
from app.labeling.models import TaskKind
from app.labeling.queue import lease_next_task
from app.projects.models import Project
from app.projects.service import add_member, remove_member
from tests.helpers import csrf_token, login, make_project, make_prompt, make_user

PAGES = [  # (method, path) of every labeler page of a project
    ("GET", "/projects/{p}/rank"),
    ("GET", "/projects/{p}/demonstrate"),
    ("POST", "/projects/{p}/rank/next"),
    ("POST", "/projects/{p}/demonstrate/next"),
    ("GET", "/projects/{p}/prompts/new"),
    ("POST", "/projects/{p}/prompts"),
    ("GET", "/projects/{p}/guidelines"),
]
API = [
    ("GET", "/api/v1/projects/{p}", None),
    ("POST", "/api/v1/projects/{p}/tasks/next", {"kind": "rank"}),
]


def restricted_project(session: Session, *members: User) -> Project:
    project = make_project(session, name="Clinic notes (restricted)", k=4)
    make_prompt(session, project, text="Summarise this visit.")
    project.restricted = True
    for member in members:
        add_member(session=session, project=project, user=member)
    session.flush()
    return project


@pytest.mark.parametrize("who", ["outsider", "member", "admin"])
async def test_every_page_and_api_route_of_a_restricted_project(
    client: httpx.AsyncClient, session: Session, who: str
) -> None:
    member = make_user(session)
    project = restricted_project(session, member)
    user = {"outsider": make_user(session), "member": member}.get(who) or make_user(
        session, role=Role.admin
    )
    _, token = create_api_token(session=session, user=user)
    await login(client, user)
    csrf = await csrf_token(client, "/home")
    home = await client.get("/home")
    assert (project.name in home.text) == (who != "outsider")
    for method, path in PAGES:
        url = path.format(p=project.id)
        r = await client.request(
            method, url, data={"csrf_token": csrf, "prompt": "A prompt of mine"},
            headers={"X-CSRF-Token": csrf},
        )  # fmt: skip
        assert (r.status_code == 404) == (who == "outsider"), (who, method, url, r.status_code)
    auth = {"Authorization": f"Bearer {token}"}
    listed = (await client.get("/api/v1/projects", headers=auth)).json()
    assert (project.id in [p["id"] for p in listed]) == (who != "outsider")
    for method, path, body in API:
        r = await client.request(method, path.format(p=project.id), json=body, headers=auth)
        assert (r.status_code == 404) == (who == "outsider"), (who, method, path, r.status_code)
        if who == "outsider":
            assert r.json() == {"detail": f"no project '{project.id}'"}


async def test_an_open_project_is_every_labelers(
    client: httpx.AsyncClient, session: Session
) -> None:
    project = make_project(session, name="Open to all", k=4)
    make_prompt(session, project)
    await login(client, make_user(session))
    assert "Open to all" in (await client.get("/home")).text
    assert (await client.get(f"/projects/{project.id}/rank")).status_code == 200


async def test_a_removed_member_loses_the_task_in_hand(
    client: httpx.AsyncClient, session: Session
) -> None:
    from datetime import timedelta

    member = make_user(session)
    project = restricted_project(session, member)
    task = lease_next_task(
        session=session, project=project, labeler=member, kind=TaskKind.rank,
        lease_for=timedelta(minutes=30),
    )  # fmt: skip
    assert task is not None
    _, token = create_api_token(session=session, user=member)
    remove_member(session=session, project=project, user=member)
    await login(client, member)
    assert (await client.get(f"/tasks/{task.id}")).status_code == 404
    ranking = [[c.id] for c in task.completions]
    r = await client.post(
        f"/api/v1/tasks/{task.id}/submit", json={"ranking": ranking},
        headers={"Authorization": f"Bearer {token}"},
    )  # fmt: skip
    assert r.status_code == 404
    r = await client.post(
        f"/api/v1/tasks/{task.id}/skip", json={"reason": "x"},
        headers={"Authorization": f"Bearer {token}"},
    )  # fmt: skip
    assert r.status_code == 404


async def test_the_admin_restricts_a_project_on_its_page(
    client: httpx.AsyncClient, session: Session
) -> None:
    project = make_project(session, name="Going private", k=4)
    member, outsider = make_user(session), make_user(session)
    await login(client, make_user(session, role=Role.admin))
    token = await csrf_token(client, f"/admin/projects/{project.id}")
    url = f"/admin/projects/{project.id}/access"
    bad = await client.post(
        url, data={"csrf_token": token, "restricted": "true", "members": "nobody@x.test"}
    )
    assert bad.status_code == 422 and "No user with the email nobody@x.test" in bad.text
    session.refresh(project)
    assert not project.restricted  # nothing was changed
    r = await client.post(
        url, data={"csrf_token": token, "restricted": "true", "members": f"  {member.email}\n\n"}
    )
    assert r.status_code == 303
    page = await client.get(r.headers["location"])
    assert "Access saved." in page.text and "Only its 1 member" in page.text
    session.refresh(project)
    assert project.restricted
    client.cookies.clear()
    await login(client, outsider)
    assert (await client.get(f"/projects/{project.id}/rank")).status_code == 404
    client.cookies.clear()
    await login(client, member)
    assert (await client.get(f"/projects/{project.id}/rank")).status_code == 200
