"""Export pages: start an export from the form, see its manifest and card, download its
files (admins only, listed names only), and `rlhf export` end to end."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
from sqlalchemy import create_engine
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.exports.models import Export
from app.jobs.models import Job, JobStatus
from tests.helpers import csrf_token, login, make_admin, make_project, make_prompt, make_user, rank
from tests.processes import rlhf, rlhf_env
from workers.runner import run_job


def _ranked_project(session: Session) -> int:
    project = make_project(session)
    ann, bob = make_user(session), make_user(session)
    for i in range(3):
        prompt = make_prompt(session, project, text=f"Question {i}?")
        rank(session, prompt, ann, [0, 1, 2, 3])
        rank(session, prompt, bob, [1, 0, 2, 3])
    session.commit()
    return project.id


async def test_start_an_export_then_download_it(
    client: httpx.AsyncClient,
    session: Session,
    session_factory: sessionmaker[Session],
    settings: Settings,
) -> None:
    project_id = _ranked_project(session)
    await login(client, make_admin(session))
    page = f"/admin/projects/{project_id}/exports"
    token = await csrf_token(client, page)
    form = {"kind": "pairwise", "format": "jsonl", "validation_pct": "0", "seed": "0",
            "gold": "include", "include_surplus": "true", "csrf_token": token}  # fmt: skip
    r = await client.post(page, data=form)
    assert r.status_code == 303 and r.headers["location"].startswith("/admin/jobs/")
    job = session.get_one(Job, int(r.headers["location"].rsplit("/", 1)[1]))
    assert job.kind == "export" and job.params["validation_ratio"] == 0.0
    assert run_job(job_id=job.id, session_factory=session_factory, settings=settings) == (
        JobStatus.succeeded
    )
    session.expire_all()
    export = session.query(Export).filter_by(job_id=job.id).one()

    listing = (await client.get(page)).text
    assert f'href="/admin/exports/{export.id}"' in listing
    detail = (await client.get(f"/admin/exports/{export.id}")).text
    assert re.search(r"<td[^>]*>36</td>", detail)  # the card's counts, rendered as a table
    assert f"/admin/exports/{export.id}/files/train.jsonl" in detail
    download = await client.get(f"/admin/exports/{export.id}/files/train.jsonl")
    assert download.status_code == 200
    assert "attachment" in download.headers["content-disposition"]
    lines = download.text.splitlines()
    assert len(lines) == 3 * 12 and json.loads(lines[0])["prompt"] == "Question 0?"
    manifest = (await client.get(f"/admin/exports/{export.id}/files/manifest.json")).json()
    assert manifest["counts"]["train"] == 36


async def test_a_bad_form_says_why_and_starts_nothing(
    client: httpx.AsyncClient, session: Session
) -> None:
    project_id = _ranked_project(session)
    await login(client, make_admin(session))
    page = f"/admin/projects/{project_id}/exports"
    token = await csrf_token(client, page)
    r = await client.post(page, data={"kind": "sft", "format": "parquet", "gzip": "true",
                                      "validation_pct": "95", "conversational": "sometimes",
                                      "csrf_token": token})  # fmt: skip
    assert r.status_code == 422
    assert "Gzip applies to JSONL only" in r.text and "validation_ratio must be between" in r.text
    assert "conversational must be one of auto, always, never, not &#39;sometimes&#39;" in r.text
    assert session.query(Job).filter_by(kind="export").count() == 0


async def test_downloads_are_for_admins_and_listed_files_only(
    client: httpx.AsyncClient, session: Session, tmp_path: Path
) -> None:
    project_id = _ranked_project(session)
    secret = tmp_path / "secret.txt"
    secret.write_text("not yours")
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "train.jsonl").write_text("{}\n")
    export = Export(project_id=project_id, kind="pairwise", format="jsonl",
                    files={"train.jsonl": "x"}, directory=str(folder))  # fmt: skip
    session.add(export)
    session.commit()
    await login(client, make_user(session))
    assert (await client.get(f"/admin/exports/{export.id}/files/train.jsonl")).status_code == 403
    client.cookies.clear()
    await login(client, make_admin(session))
    assert (await client.get(f"/admin/exports/{export.id}/files/train.jsonl")).status_code == 200
    for name in ("../secret.txt", "..%2Fsecret.txt", "README.md", "/etc/passwd"):
        r = await client.get(f"/admin/exports/{export.id}/files/{name}")
        assert r.status_code == 404, name
        assert "not yours" not in r.text


def test_rlhf_export_queues_a_job_and_refuses_bad_options(tmp_path: Path) -> None:
    """`rlhf export` queues the job (a worker runs it: the browser test does it end to end);
    bad options and an existing --out folder are one line and exit 2, nothing queued."""
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    env = rlhf_env(url, tmp_path / "data")
    assert rlhf(env, "db", "upgrade").returncode == 0
    engine = create_engine(url)
    with sessionmaker(engine)() as s:
        project_id = _ranked_project(s)
    engine.dispose()
    out = tmp_path / "dataset"
    queued = rlhf(env, "export", str(project_id), "--kind", "pairwise", "--out", str(out),
                  "--conversational", "always")  # fmt: skip
    assert queued.returncode == 0, queued.stderr
    assert queued.stdout.startswith("job ") and "queued" in queued.stdout
    engine = create_engine(url)
    with sessionmaker(engine)() as s:
        assert s.query(Job).filter_by(kind="export").one().params["conversational"] == "always"
    engine.dispose()
    wrong = rlhf(env, "export", str(project_id), "--kind", "sft", "--conversational", "yes")
    assert wrong.returncode == 2 and "conversational must be one of" in wrong.stderr
    again = rlhf(env, "export", str(project_id), "--kind", "pairwise", "--format", "csv")
    assert again.returncode == 2 and "format must be one of" in again.stderr
    exists = rlhf(env, "export", str(project_id), "--kind", "sft", "--out", str(tmp_path))
    assert exists.returncode == 2 and "already exists" in exists.stderr


async def test_the_form_offers_the_projects_labelers(
    client: httpx.AsyncClient, session: Session
) -> None:
    project_id = _ranked_project(session)
    await login(client, make_admin(session))
    page = f"/admin/projects/{project_id}/exports"
    html = (await client.get(page)).text
    keys = re.findall(r'<option value="(user:\d+)"', html)
    assert len(keys) == 2  # the two labelers who ranked
    token = await csrf_token(client, page)
    r = await client.post(page, data={"kind": "pairwise", "labelers": keys[0], "csrf_token": token})
    assert r.status_code == 303
    job = session.get_one(Job, int(r.headers["location"].rsplit("/", 1)[1]))
    assert job.params["labelers"] == [keys[0]]


async def test_the_form_offers_conversational_rows(
    client: httpx.AsyncClient,
    session: Session,
    session_factory: sessionmaker[Session],
    settings: Settings,
) -> None:
    """Auto by default; 'always' makes the string prompts messages, and the export's page says
    which format its rows are in and why."""
    project_id = _ranked_project(session)
    await login(client, make_admin(session))
    page = f"/admin/projects/{project_id}/exports"
    html = (await client.get(page)).text
    choice = re.search(r'<select name="conversational">(.*?)</select>', html)
    assert choice and re.findall(r'<option value="(\w+)"', choice.group(1)) == [
        "auto", "always", "never",
    ]  # fmt: skip
    assert '<option value="auto" selected>' in choice.group(1)
    token = await csrf_token(client, page)
    r = await client.post(page, data={"kind": "prompts", "validation_pct": "0",
                                      "conversational": "always", "csrf_token": token})  # fmt: skip
    assert r.status_code == 303
    job = session.get_one(Job, int(r.headers["location"].rsplit("/", 1)[1]))
    assert job.params["conversational"] == "always"
    assert run_job(job_id=job.id, session_factory=session_factory, settings=settings) == (
        JobStatus.succeeded
    )
    session.expire_all()
    export = session.query(Export).filter_by(job_id=job.id).one()
    detail = (await client.get(f"/admin/exports/{export.id}")).text
    assert (
        "Rows in the conversational format (always was asked for: a string prompt is one user"
        in detail
    )
    lines = (await client.get(f"/admin/exports/{export.id}/files/train.jsonl")).text.splitlines()
    assert json.loads(lines[0])["prompt"] == [{"role": "user", "content": "Question 0?"}]
