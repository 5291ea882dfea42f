"""Imported preferences beside people's rankings (design §10): the pseudo-labelers
``import:<file>`` are not people, so the agreement report, its JSON and the dashboard keep them
out of the labelers, the figures and the prompts to review by default and show them apart;
``include_imported`` counts them in."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.agreement.service import AgreementFilters, build_report, project_agreement
from app.auth.service import create_api_token
from app.imports.service import import_file
from app.labeling.models import Prompt
from app.projects.models import Project
from tests.helpers import (
    login,
    make_admin,
    make_project,
    make_prompt,
    make_user,
    rank,
    visible_text,
)

HTMX = {"HX-Request": "true"}
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
IMPORTED = "external:import:pairs.jsonl"

# Answer texts as ``make_prompt`` writes them, so the imported pair lands on the same answers.
PAIRS = [
    # People rank answer 0 above answer 3 of "Question 0": this file says the opposite.
    {"prompt": "Question 0", "chosen": "Answer 3 to Question 0", "rejected": "Answer 0 to Question 0"},
    # A prompt only the file ranks, twice, each way round (import:pairs.jsonl and ...#2):
    # two "raters" who disagree on everything, which people never saw.
    {"prompt": "Only imported", "chosen": "X", "rejected": "Y"},
    {"prompt": "Only imported", "chosen": "Y", "rejected": "X"},
    {"prompt": "Imported alone", "chosen": "A", "rejected": "B"},
]  # fmt: skip


def _people(session: Session) -> tuple[Project, list[int]]:
    """Two people rank three K=4 prompts; they disagree on one pair of "Question 2"."""
    project = make_project(session, k=4)
    ann, bob = make_user(session), make_user(session)
    for i in range(3):
        prompt = make_prompt(session, project, text=f"Question {i}")
        rank(session, prompt, ann, [0, 1, 2, 3], shown=[1, 0, 2, 3])
        rank(session, prompt, bob, [1, 0, 2, 3] if i == 2 else [0, 1, 2, 3])
    session.commit()
    return project, [ann.id, bob.id]


def _import_pairs(session: Session, project: Project, tmp_path: Path) -> None:
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in PAIRS), encoding="utf-8")
    summary = import_file(session=session, project=project, path=path, source_name=path.name)
    assert summary.comparisons_added == 4
    session.commit()


def _prompt_id(session: Session, project: Project, text: str) -> int:
    stmt = select(Prompt.id).where(Prompt.project_id == project.id, Prompt.text == text)
    return session.scalars(stmt).one()


def test_the_report_keeps_people_apart_from_imported_preferences(
    session: Session, tmp_path: Path
) -> None:
    project, people = _people(session)
    before = build_report(session=session, project=project).as_dict()
    _import_pairs(session, project, tmp_path)
    data = build_report(session=session, project=project).as_dict()

    assert [row["labeler_key"] for row in data["labelers"]] == [f"user:{i}" for i in people]
    imported = {row["labeler_key"]: row for row in data["imported"]}
    assert set(imported) == {IMPORTED, f"{IMPORTED}#2"}
    file_row = imported[IMPORTED]
    assert (file_row["labeler"], file_row["n_comparisons"]) == ("import:pairs.jsonl", 3)
    # Measured against the others on the prompts it shares: the people on "Question 0" and
    # its own #2 on "Only imported", both reversed.
    assert (file_row["pairwise_agreement"], file_row["n_pairs"]) == (0.0, 2)
    assert file_row["position_bias"]["first_shown_ranked_best"] is None  # never shown

    only_imported = _prompt_id(session, project, "Only imported")
    assert only_imported not in [p["prompt_id"] for p in data["lowest_agreement_prompts"]]
    # People's figures are what they were before the import.
    for key in (
        "n_comparisons",
        "n_prompts",
        "n_labelers",
        "pairwise_agreement",
        "kendall_w",
        "kendall_tau_b",
        "position_bias",
        "length_bias",
        "lowest_agreement_prompts",
    ):
        assert data[key] == before[key], key  # fmt: skip
    assert data["filters"]["include_imported"] is False


def test_include_imported_counts_them_as_raters_but_not_as_labelers(
    session: Session, tmp_path: Path
) -> None:
    project, people = _people(session)
    people_only = build_report(session=session, project=project)
    _import_pairs(session, project, tmp_path)
    filters = AgreementFilters.parse(include_imported="1")
    data = build_report(session=session, project=project, filters=filters).as_dict()

    assert data["filters"]["include_imported"] is True
    assert data["n_comparisons"] == 6 + 4 and data["n_labelers"] == 2
    assert [row["labeler_key"] for row in data["labelers"]] == [f"user:{i}" for i in people]
    assert {row["labeler_key"] for row in data["imported"]} == {IMPORTED, f"{IMPORTED}#2"}
    assert data["pairwise_agreement"]["n_pairs"] > people_only.micro.n
    assert data["pairwise_agreement"]["micro"] < (people_only.micro.value or 0)
    lowest = [p["prompt_id"] for p in data["lowest_agreement_prompts"]]
    assert _prompt_id(session, project, "Only imported") in lowest
    # Position bias is people's alone either way: imported answers were never shown.
    assert data["position_bias"]["first_shown_ranked_best"] == people_only.first_shown_best


def test_the_cache_keeps_each_choice_apart(session: Session, tmp_path: Path) -> None:
    project, _ = _people(session)
    _import_pairs(session, project, tmp_path)
    people = project_agreement(session=session, project=project)
    everyone = project_agreement(
        session=session, project=project, filters=AgreementFilters(include_imported=True)
    )
    assert everyone is not people and everyone.n_comparisons == people.n_comparisons + 4
    assert project_agreement(session=session, project=project) is people


def test_a_bad_include_imported_value_is_said() -> None:
    with pytest.raises(ValueError, match="include_imported must be 1 or 0"):
        AgreementFilters.parse(include_imported="maybe")
    assert AgreementFilters.parse(include_imported="").include_imported is False
    assert AgreementFilters.parse(include_imported="true").include_imported is True


def _section(page: str, start: str, end: str) -> str:
    match = re.search(re.escape(start) + r"(.*?)" + re.escape(end), page, re.S)
    return match.group(1) if match else ""


@pytest.mark.parametrize("headers", [{}, HTMX], ids=["page", "htmx"])
async def test_the_dashboard_shows_imported_preferences_apart(
    client: httpx.AsyncClient, session: Session, tmp_path: Path, headers: dict[str, str]
) -> None:
    project, _ = _people(session)
    _import_pairs(session, project, tmp_path)
    await login(client, make_admin(session))
    url = f"/admin/projects/{project.id}/agreement"
    page = html.unescape((await client.get(url, headers=headers)).text)

    labelers = _section(page, 'id="labeler-table"', "</table>")
    assert re.findall(r"key=(\w+)%3A", labelers) == ["user", "user"]
    imported = _section(page, 'aria-labelledby="imported-title"', "</section>")
    assert "Imported preferences" in imported
    assert "import:pairs.jsonl</a>" in imported and "import:pairs.jsonl#2</a>" in imported
    assert "6 rankings of 3 prompts by 2 labelers" in visible_text(page)
    assert "4 imported preferences are listed apart below" in visible_text(page)
    review = _section(page, '<ol class="review-list">', "</ol>")
    assert "Question" in review and "Only imported" not in review

    counted = html.unescape((await client.get(f"{url}?include_imported=1", headers=headers)).text)
    assert "Only imported" in _section(counted, '<ol class="review-list">', "</ol>")
    assert "They include 4 imported preferences" in visible_text(counted)
    assert re.findall(r"key=(\w+)%3A", _section(counted, 'id="labeler-table"', "</table>")) == [
        "user",
        "user",
    ]
    # Sorting keeps the choice.
    assert "include_imported=1&amp;sort=" in (await client.get(f"{url}?include_imported=1")).text
    # The file's name leads to its preferences beside the people's.
    own = await client.get(f"{url}/labeler?key={IMPORTED}")
    assert own.status_code == 200 and "Consensus of the others" in own.text


async def test_the_api_lists_imported_preferences_apart(
    client: httpx.AsyncClient, session: Session, tmp_path: Path
) -> None:
    project, people = _people(session)
    _import_pairs(session, project, tmp_path)
    admin = make_admin(session)
    _, token = create_api_token(session=session, user=admin, name="t")
    session.commit()
    headers = {"Authorization": f"Bearer {token}"}
    url = f"/api/v1/projects/{project.id}/agreement"
    data = (await client.get(url, headers=headers)).json()
    assert [row["labeler_key"] for row in data["labelers"]] == [f"user:{i}" for i in people]
    assert {row["labeler_key"] for row in data["imported"]} == {IMPORTED, f"{IMPORTED}#2"}
    assert data["n_comparisons"] == 6
    counted = (await client.get(f"{url}?include_imported=true", headers=headers)).json()
    assert counted["n_comparisons"] == 10 and counted["filters"]["include_imported"] is True
    bad = await client.get(f"{url}?include_imported=maybe", headers=headers)
    assert bad.status_code == 422


async def test_a_project_of_imported_pairs_only_says_so(
    client: httpx.AsyncClient, session: Session
) -> None:
    """The shared HH-RLHF dev file (1,393 pairs) and nobody else: no person has ranked, so
    there are no figures; the file is listed apart, with no position bias (never shown)."""
    hh = SHARED_DATA / "hh_harmless_pairs_dev.jsonl"
    if not hh.is_file():
        pytest.skip(f"{hh} is not here (the shared data folder is not part of a clone)")
    project = make_project(session, k=2)
    summary = import_file(session=session, project=project, path=hh, source_name=hh.name)
    assert summary.comparisons_added == 1393
    session.commit()
    report = build_report(session=session, project=project)
    assert (report.n_comparisons, report.labelers, report.lowest) == (0, [], [])
    assert report.first_shown_best is None
    assert sum(row.n_comparisons for row in report.imported) == 1393
    assert all(row.first_shown_best is None for row in report.imported)

    await login(client, make_admin(session))
    page = html.unescape((await client.get(f"/admin/projects/{project.id}/agreement")).text)
    assert "No rankings by people yet" in page
    assert "1,393 imported preferences are listed apart below" in visible_text(page)
    assert f"import:{hh.name}</a>" in page
