"""The agreement dashboard, the labeler page, the API and `rlhf agreement`: the same numbers
everywhere, sorting and filters with and without htmx, roles and escaping."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from app.agreement.service import build_report
from app.auth.models import User
from app.auth.service import create_api_token
from app.labeling.models import GoldRanking, Prompt
from app.projects.models import Project
from tests.helpers import (
    answers,
    login,
    make_admin,
    make_project,
    make_prompt,
    make_user,
    rank,
    visible_text,
)
from tests.processes import rlhf, rlhf_env

HTMX = {"HX-Request": "true"}


def _seed(session: Session) -> tuple[Project, User, User, User]:
    """Three labelers on three prompts: ann and bob agree, cy disagrees with both."""
    project = make_project(session)
    ann, bob, cy = make_user(session), make_user(session), make_user(session)
    for i in range(3):
        prompt = make_prompt(session, project, text=f"Question {i}")
        rank(session, prompt, ann, [0, 1, 2, 3], seconds=12)
        rank(session, prompt, bob, [0, 1, 2, 3] if i else [1, 0, 2, 3], seconds=20)
        rank(session, prompt, cy, [3, 2, 1, 0], seconds=50)
    session.commit()
    return project, ann, bob, cy


def _percent(value: float) -> str:
    return f"{value * 100:.1f}%"


async def test_dashboard_shows_the_reports_numbers(
    client: httpx.AsyncClient, session: Session
) -> None:
    project, _ann, _bob, cy = _seed(session)
    report = build_report(session=session, project=project)
    await login(client, make_admin(session))
    page = await client.get(f"/admin/projects/{project.id}/agreement")
    assert page.status_code == 200
    text = visible_text(page.text)
    assert report.micro.value is not None
    assert f"Pairwise agreement {_percent(report.micro.value)}" in text
    assert "9 rankings of 3 prompts by 3 labelers" in text
    assert "<svg" in page.text and "InstructGPT 72.6%" in text  # the weekly chart
    # The labeler table: lowest agreement first by default, cy at the top.
    names = re.findall(r'agreement/labeler\?key=user%3A(\d+)">', page.text)
    assert names[0] == str(cy.id)
    assert "Not enough data" in text  # no gold yet: said, not faked


async def test_sorting_the_labeler_table_with_htmx_swaps_only_the_table(
    client: httpx.AsyncClient, session: Session
) -> None:
    project, ann, bob, cy = _seed(session)
    await login(client, make_admin(session))
    url = f"/admin/projects/{project.id}/agreement?sort=seconds&dir=desc"
    fragment = await client.get(url, headers={**HTMX, "HX-Target": "labeler-table"})
    assert fragment.status_code == 200
    assert fragment.text.lstrip().startswith("<table")  # the table alone, not the page
    order = re.findall(r'key=user%3A(\d+)"', fragment.text)
    assert order == [str(cy.id), str(bob.id), str(ann.id)]  # 50 s, 20 s, 12 s
    assert 'aria-sort="descending"' in fragment.text
    # The same address without htmx is the whole page, sorted the same way.
    full = await client.get(url)
    assert "<html" in full.text
    assert re.findall(r'key=user%3A(\d+)"', full.text)[:3] == order


async def test_filters_apply_with_htmx_and_bad_ones_are_said(
    client: httpx.AsyncClient, session: Session
) -> None:
    project, _ann, bob, _cy = _seed(session)
    await login(client, make_admin(session))
    path = f"/admin/projects/{project.id}/agreement"
    only_bob = await client.get(f"{path}?labeler=user:{bob.id}", headers=HTMX)
    assert "<html" not in only_bob.text and "Pairwise agreement" in only_bob.text
    assert re.findall(r'key=user%3A(\d+)"', only_bob.text) == [str(bob.id)]
    bad = await client.get(f"{path}?since=yesterday")
    assert bad.status_code == 200
    assert "Since must be a date like 2026-11-21" in visible_text(bad.text)
    assert "9 rankings" in visible_text(bad.text)  # everything shown instead
    backwards = await client.get(f"{path}?since=2026-02-01&until=2026-01-01")
    assert "is after until" in backwards.text


async def test_the_labeler_page_puts_their_rankings_beside_the_others(
    client: httpx.AsyncClient, session: Session
) -> None:
    project, ann, bob, cy = _seed(session)
    admin = make_admin(session)
    prompt = session.scalars(select(Prompt).where(Prompt.project_id == project.id)).first()
    assert prompt is not None
    gold = [[a] for a in answers(prompt)]
    session.add(GoldRanking(prompt_id=prompt.id, ranking=gold, created_by_id=admin.id))
    session.commit()
    await login(client, admin)
    page = await client.get(f"/admin/projects/{project.id}/agreement/labeler?key=user:{cy.id}")
    assert page.status_code == 200
    text = visible_text(page.text)
    assert cy.label in text and "Consensus of the others" in text and "Gold" in text
    assert ann.label in text and bob.label in text
    assert "0.0% with the others" in text  # cy reversed everyone
    missing = await client.get(f"/admin/projects/{project.id}/agreement/labeler?key=user:999999")
    assert missing.status_code == 404 and "No such labeler" in missing.text


async def test_labelers_cannot_see_agreement(client: httpx.AsyncClient, session: Session) -> None:
    project, ann, bob, _cy = _seed(session)
    await login(client, ann)
    for path in (
        f"/admin/projects/{project.id}/agreement",
        f"/admin/projects/{project.id}/agreement/labeler?key=user:{bob.id}",
    ):
        assert (await client.get(path)).status_code == 403
    _, token = create_api_token(session=session, user=ann, name="t")
    session.commit()
    api = await client.get(
        f"/api/v1/projects/{project.id}/agreement", headers={"Authorization": f"Bearer {token}"}
    )
    assert api.status_code == 403


async def test_text_is_escaped(client: httpx.AsyncClient, session: Session) -> None:
    project = make_project(session)
    ann, bob = make_user(session), make_user(session)
    ann.display_name = "<b>Ann</b>"
    prompt = make_prompt(session, project, text="<script>alert(1)</script>")
    rank(session, prompt, ann, [0, 1, 2, 3])
    rank(session, prompt, bob, [3, 2, 1, 0])
    session.commit()
    await login(client, make_admin(session))
    for path in (
        f"/admin/projects/{project.id}/agreement",
        f"/admin/projects/{project.id}/agreement/labeler?key=user:{ann.id}",
    ):
        page = (await client.get(path)).text
        assert "<script>alert(1)" not in page and "<b>Ann</b>" not in page
        assert "&lt;b&gt;Ann&lt;/b&gt;" in page


async def test_the_api_returns_the_same_json_as_the_cli_code(
    client: httpx.AsyncClient, session: Session
) -> None:
    project, *_ = _seed(session)
    admin = make_admin(session)
    _, token = create_api_token(session=session, user=admin, name="t")
    session.commit()
    headers = {"Authorization": f"Bearer {token}"}
    r = await client.get(f"/api/v1/projects/{project.id}/agreement", headers=headers)
    assert r.status_code == 200
    data = r.json()
    expected = json.loads(json.dumps(build_report(session=session, project=project).as_dict()))
    data.pop("computed_at"), expected.pop("computed_at")
    assert data == expected
    assert data["pairwise_agreement"]["micro_ci95"] is not None
    bad = await client.get(f"/api/v1/projects/{project.id}/agreement?gold=maybe", headers=headers)
    assert bad.status_code == 422 and "query.gold" in bad.json()["detail"]
    assert "'non-gold'" in bad.json()["detail"]
    for query, said in [
        ("since=21-11-2026", "query.since"),
        ("until=0", "query.until"),
        ("until=2026-02-30", "until must be a date like"),
        ("labeler=3", "query.labeler"),
        ("since=2026-11-22&until=2026-11-21", "since (2026-11-22) is after until (2026-11-21)"),
    ]:
        bad = await client.get(f"/api/v1/projects/{project.id}/agreement?{query}", headers=headers)
        assert bad.status_code == 422 and said in bad.json()["detail"], (query, bad.text)
    # the filters are in the description as they are checked (schemathesis: bench/schemathesis)
    parameters = {
        p["name"]: p["schema"]
        for p in (await client.get("/api/v1/openapi.json")).json()["paths"][
            "/api/v1/projects/{project_id}/agreement"
        ]["get"]["parameters"]
    }
    assert parameters["gold"]["enum"] == ["all", "gold", "non-gold"]
    assert parameters["since"]["format"] == "date"
    assert any("pattern" in option for option in parameters["since"]["anyOf"])
    assert any("pattern" in option for option in parameters["labeler"]["anyOf"])


def test_rlhf_agreement_prints_the_figures(tmp_path: Path) -> None:
    """The real command on a real database file: --json has the §8a keys and the numbers of
    the report; the text form shows them; a bad filter is one line and exit 2."""
    from sqlalchemy.orm import sessionmaker

    url = f"sqlite:///{tmp_path / 'cli.db'}"
    env = rlhf_env(url, tmp_path / "data")
    assert rlhf(env, "db", "upgrade").returncode == 0
    engine = create_engine(url)
    with sessionmaker(engine)() as s:
        project, *_ = _seed(s)
        expected = json.loads(json.dumps(build_report(session=s, project=project).as_dict()))
        name = project.name
    engine.dispose()
    result = rlhf(env, "agreement", name, "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    data.pop("computed_at"), expected.pop("computed_at")
    assert data == expected
    assert {"micro", "macro", "n_pairs", "n_tied_pairs_left_out"} <= set(data["pairwise_agreement"])
    text = rlhf(env, "agreement", name)
    assert text.returncode == 0
    micro = expected["pairwise_agreement"]["micro"]
    assert f"pairwise agreement (micro) {micro:.3f}" in text.stdout
    bad = rlhf(env, "agreement", name, "--since", "soon")
    assert bad.returncode == 2
    assert bad.stderr.strip() == "error: since must be a date like 2026-11-21, not 'soon'"


@pytest.mark.parametrize("path", ["/admin/projects/999999/agreement"])
async def test_unknown_project(client: httpx.AsyncClient, session: Session, path: str) -> None:
    await login(client, make_admin(session))
    assert (await client.get(path)).status_code == 404
