"""The home pages show what later features fill: projects with counts, jobs with status."""

from __future__ import annotations

import re

import httpx
from sqlalchemy.orm import Session

from app.jobs.models import JobStatus
from app.jobs.service import create_job
from tests.helpers import login, make_admin, make_project, make_prompt, make_user, visible_text


async def test_labeler_home_lists_projects_with_counts(
    client: httpx.AsyncClient, session: Session
) -> None:
    project = make_project(session, name="Helpful answers", k=4, overlap=2)
    make_prompt(session, project, text="a")
    make_prompt(session, project, text="b")
    make_prompt(session, project, text="c", answers=1)  # not rankable yet
    await login(client, make_user(session))
    page = visible_text((await client.get("/home")).text)
    assert "Helpful answers" in page
    assert "Prompts 3" in page
    assert "Ready to rank 2" in page
    assert re.search(r"Rankings[a-z ]* 0 / 4", page)


async def test_admin_home_lists_projects_and_jobs(
    client: httpx.AsyncClient, session: Session
) -> None:
    make_project(session, name="Alpha project")
    job = create_job(session=session, kind="selfcheck")
    job.status = JobStatus.failed
    session.flush()
    await login(client, make_admin(session))
    page = (await client.get("/admin")).text
    assert "Alpha project" in page
    assert f'href="/admin/jobs/{job.id}"' in page
    assert "badge-failed" in page


async def test_user_text_is_escaped(client: httpx.AsyncClient, session: Session) -> None:
    make_project(session, name="<script>alert(1)</script> project")
    await login(client, make_admin(session))
    for path in ("/admin", "/home"):
        page = (await client.get(path)).text
        assert "<script>alert(1)</script>" not in page
        assert "&lt;script&gt;alert(1)&lt;/script&gt; project" in page


async def test_guidelines_are_rendered_markdown_without_raw_html(
    client: httpx.AsyncClient, session: Session
) -> None:
    project = make_project(session)
    project.guidelines = "# Rules\n\n**Rank** by helpfulness.\n\n<img src=x onerror=alert(1)>"
    session.flush()
    await login(client, make_user(session))
    page = (await client.get(f"/projects/{project.id}/guidelines")).text
    assert '<h1 dir="auto">Rules</h1>' in page
    assert "<strong>Rank</strong>" in page
    assert "<img" not in page
    assert (await client.get("/projects/999999/guidelines")).status_code == 404


async def test_job_page_is_a_full_page_or_an_htmx_fragment(
    client: httpx.AsyncClient, session: Session
) -> None:
    job = create_job(session=session, kind="selfcheck")
    await login(client, make_admin(session))
    full = await client.get(f"/admin/jobs/{job.id}")
    fragment = await client.get(f"/admin/jobs/{job.id}", headers={"HX-Request": "true"})
    assert full.status_code == fragment.status_code == 200
    assert "<html" in full.text and "<html" not in fragment.text
    for text in (f"Job #{job.id}", "badge-queued", 'hx-trigger="every 2s"'):
        assert text in full.text and text in fragment.text
    listing = await client.get("/admin/jobs", headers={"HX-Request": "true"})
    assert "<html" not in listing.text and f"/admin/jobs/{job.id}" in listing.text


async def test_finished_job_page_stops_polling(client: httpx.AsyncClient, session: Session) -> None:
    job = create_job(session=session, kind="selfcheck")
    job.status = JobStatus.succeeded
    session.flush()
    await login(client, make_admin(session))
    page = (await client.get(f"/admin/jobs/{job.id}")).text
    assert "hx-trigger" not in page
    assert "Cancel job" not in page


async def test_static_htmx_is_served_locally(client: httpx.AsyncClient) -> None:
    page = (await client.get("/login")).text
    assert 'src="/static/vendor/htmx.min.js"' in page
    assert "://" not in page.split("<body")[0].replace('content="width', "")  # no CDN in <head>
    r = await client.get("/static/vendor/htmx.min.js")
    assert r.status_code == 200 and "htmx" in r.text[:2000]


async def test_api_docs_are_served_without_a_cdn(client: httpx.AsyncClient) -> None:
    page = (await client.get("/docs")).text
    assert "/static/vendor/swagger-ui/swagger-ui-bundle.js" in page
    assert "cdn" not in page.lower()
    assert (await client.get("/static/vendor/swagger-ui/swagger-ui-bundle.js")).status_code == 200
