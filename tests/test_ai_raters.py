"""AI judges' rankings (``ai:<name>``, design §14) beside people's: they leave every human
figure as it was (with imported preferences counted or not), get a row of their own in the
agreement report (agreement with people, with an interval), show apart on the dashboard, in
its JSON and in `rlhf agreement`, are exported only when asked (``ai`` exclude, include or
only), never reach the leaderboard, the review walk or a training snapshot by default, and
never take a slot of the overlap."""

from __future__ import annotations

import html
import json
import random
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session, sessionmaker

from app.agreement.leaderboard import build_project_leaderboard
from app.agreement.service import (
    AI_NO_PERSON,
    AgreementFilters,
    build_report,
    consensus_rankings,
    labeler_choices,
    project_agreement,
)
from app.auth.models import User
from app.auth.service import create_api_token
from app.config import Settings
from app.db import make_engine, make_session_factory
from app.exports.options import ExportError, ExportOptions
from app.exports.service import write_export
from app.jobs import kinds
from app.jobs.models import Job, JobStatus
from app.jobs.service import create_job
from app.labeling.models import Comparison, Prompt, TaskKind
from app.labeling.queue import lease_next_task
from app.labeling.service import submit_ranking
from app.projects.models import Project
from app.review.service import WalkFilters, comparison_stats, review_walk
from tests.conftest import make_settings
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
from tests.processes import rlhf, rlhf_env
from workers.runner import JobContext, run_job
from workers.train import snapshot

JUDGE = "ai:gpt-judge"
JUDGE_KEY = f"external:{JUDGE}"
IMPORTED = "import:pairs.jsonl"
HTMX = {"HX-Request": "true"}


def judge(session: Session, prompt: Prompt, places: list[int], *, name: str = JUDGE) -> Comparison:
    """An AI judge's ranking as `rlhf judge` stores it: an external rater ``ai:<name>`` with
    no assignment. ``places[i]``: the place (0 = best; equal places tie) of answer i."""
    return _external(session, prompt, places, name)


def _external(session: Session, prompt: Prompt, places: list[int], name: str) -> Comparison:
    ids = answers(prompt)
    groups: dict[int, list[int]] = {}
    for answer, place in zip(ids, places, strict=True):
        groups.setdefault(place, []).append(answer)
    comparison = Comparison(
        prompt_id=prompt.id,
        labeler_external=name,
        displayed_completion_ids=ids,
        ranking=[groups[p] for p in sorted(groups)],
        assignment_id=None,
    )
    session.add(comparison)
    session.flush()
    return comparison


def _people(session: Session) -> tuple[Project, list[Prompt], User, User]:
    """Two people rank three K=4 prompts (in an order of their own shown, so position bias
    has something to count); they disagree on one pair of "Question 2". A file's imported
    preference ranks "Question 0" against them."""
    project = make_project(session, k=4)
    ann, bob = make_user(session), make_user(session)
    prompts = []
    for i in range(3):
        prompt = make_prompt(session, project, text=f"Question {i}")
        rank(session, prompt, ann, [0, 1, 2, 3], shown=[1, 0, 2, 3])
        rank(session, prompt, bob, [1, 0, 2, 3] if i == 2 else [0, 1, 2, 3])
        prompts.append(prompt)
    _external(session, prompts[0], [3, 2, 1, 0], IMPORTED)
    session.commit()
    return project, prompts, ann, bob


def _judge_everything(session: Session, project: Project, prompts: list[Prompt]) -> None:
    """The judge ranks every prompt against the people (answer 3 first), and a prompt no
    person ranked; a second judge ranks one prompt."""
    for prompt in prompts:
        judge(session, prompt, [3, 2, 1, 0])
    judge(session, make_prompt(session, project, text="Only the judge"), [0, 1, 2, 3])
    judge(session, prompts[1], [0, 0, 1, 1], name="ai:rm-judge")
    session.commit()


def _human_part(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k not in ("ai", "computed_at")}


@pytest.mark.parametrize("include_imported", [False, True], ids=["people", "with-imports"])
def test_ai_rankings_leave_every_human_figure_unchanged(
    session: Session, include_imported: bool
) -> None:
    project, prompts, ann, bob = _people(session)
    filters = AgreementFilters(include_imported=include_imported)
    before = build_report(session=session, project=project, filters=filters).as_dict()
    consensus_before = consensus_rankings(session=session, project=project)
    stats_before = comparison_stats(session=session, project=project)
    _judge_everything(session, project, prompts)
    after = build_report(session=session, project=project, filters=filters).as_dict()

    assert before["ai"] == []
    assert _human_part(after) == _human_part(before)  # every figure, row and list
    assert after["n_labelers"] == 2
    assert [r["labeler_key"] for r in after["labelers"]] == [f"user:{ann.id}", f"user:{bob.id}"]
    assert [r["labeler_key"] for r in after["imported"]] == [f"external:{IMPORTED}"]
    assert [r["labeler"] for r in after["ai"]] == ["ai:gpt-judge", "ai:rm-judge"]
    assert consensus_rankings(session=session, project=project) == consensus_before
    # The review page's per-ranking figures for people: the judges are not "the others".
    stats_after = comparison_stats(session=session, project=project)
    assert {cid: stats_after[cid] for cid in stats_before} == stats_before
    judged = session.scalars(select(Comparison.id).where(Comparison.labeler_external == JUDGE))
    assert not set(judged) & set(stats_after)


def test_the_cache_sees_new_ai_rankings(session: Session) -> None:
    project, prompts, *_ = _people(session)
    first = project_agreement(session=session, project=project)
    assert first.ai == []
    judge(session, prompts[0], [0, 1, 2, 3])
    session.commit()
    second = project_agreement(session=session, project=project)
    assert second is not first and [row.key for row in second.ai] == [JUDGE_KEY]
    assert second.n_comparisons == first.n_comparisons


def test_agreement_with_people_by_hand(session: Session) -> None:
    project = make_project(session, k=4)
    ann, bob = make_user(session), make_user(session)
    one = make_prompt(session, project, text="One")
    judge(session, one, [0, 1, 2, 3])
    # ann swaps answers 0 and 1 only: 5 of the 6 pairs as the judge. bob puts answer 0 last
    # and keeps the others in order: (0,1), (0,2), (0,3) against the judge, 3 of 6 with it.
    rank(session, one, ann, [1, 0, 2, 3])
    rank(session, one, bob, [3, 0, 1, 2])
    # Neither an import nor another judge is a person to agree with.
    _external(session, one, [3, 2, 1, 0], IMPORTED)
    judge(session, one, [3, 2, 1, 0], name="ai:other")
    session.commit()

    row = {r.key: r for r in build_report(session=session, project=project).ai}[JUDGE_KEY]
    assert (row.agreement.value, row.agreement.n) == (pytest.approx(8 / 12), 12)
    assert (row.n_prompts, row.n_comparisons, row.n_tied_pairs_left_out) == (1, 1, 0)
    assert row.agreement.low is None  # one prompt: nothing to resample

    # A second prompt: ann ties answers 0 and 1 (that pair is left out), the 5 others agree.
    two = make_prompt(session, project, text="Two")
    judge(session, two, [0, 1, 2, 3])
    rank(session, two, ann, [0, 0, 1, 2])
    session.commit()
    data = {r["labeler_key"]: r for r in build_report(session=session, project=project).as_dict()["ai"]}  # fmt: skip
    row_json = data[JUDGE_KEY]
    assert row_json["labeler"] == JUDGE
    assert row_json["agreement_with_humans"] == pytest.approx(13 / 17)
    assert (row_json["n_pairs"], row_json["n_prompts"], row_json["n_tied_pairs_left_out"]) == (
        17,
        2,
        1,
    )
    assert row_json["n_comparisons"] == 2 and row_json["reason"] is None
    # Resampling two prompts gives "One" twice (8/12), "Two" twice (5/5) or both (13/17), each
    # of the first two a quarter of the time: the 95% interval runs from one to the other.
    low, high = row_json["agreement_ci95"]
    assert (low, high) == (pytest.approx(8 / 12), pytest.approx(1.0))
    # The other judge reverses the order: with ann only on the pair (0, 1) she swaps (1 of 6),
    # with bob on the three pairs that put answer 0 last (3 of 6).
    assert data["external:ai:other"]["agreement_with_humans"] == pytest.approx(4 / 12)


def test_a_judge_of_prompts_no_person_ranked_has_no_figure(session: Session) -> None:
    project = make_project(session, k=4)
    ann, bob = make_user(session), make_user(session)
    people = make_prompt(session, project, text="People")
    rank(session, people, ann, [0, 1, 2, 3])
    rank(session, people, bob, [0, 1, 2, 3])
    alone = make_prompt(session, project, text="Alone")
    judge(session, alone, [0, 1, 2, 3])
    _external(session, alone, [1, 0, 2, 3], IMPORTED)  # an import is no person either
    session.commit()
    (row,) = build_report(session=session, project=project).as_dict()["ai"]
    assert row["agreement_with_humans"] is None and row["agreement_ci95"] is None
    assert row["reason"] == AI_NO_PERSON and row["n_pairs"] == 0 and row["n_comparisons"] == 1


def test_filters_pick_the_judges_too(session: Session) -> None:
    project, prompts, ann, _bob = _people(session)
    _judge_everything(session, project, prompts)
    on_judge = build_report(
        session=session, project=project, filters=AgreementFilters.parse(labeler=JUDGE_KEY)
    )
    assert [row.key for row in on_judge.ai] == [JUDGE_KEY] and on_judge.labelers == []
    assert on_judge.n_labelers == 2  # the people who ranked the judge's prompts
    on_person = build_report(
        session=session, project=project, filters=AgreementFilters.parse(labeler=f"user:{ann.id}")
    )
    assert on_person.ai == [] and [row.key for row in on_person.labelers] == [f"user:{ann.id}"]


def test_labeler_choices_name_ai_judges(session: Session) -> None:
    project, prompts, ann, _ = _people(session)
    judge(session, prompts[0], [0, 1, 2, 3])
    session.commit()
    choices = dict(labeler_choices(session=session, project=project))
    assert choices[JUDGE_KEY] == f"{JUDGE} (AI judge)"
    assert choices[f"external:{IMPORTED}"] == f"{IMPORTED} (imported)"
    people = dict(labeler_choices(session=session, project=project, ai_judges=False))
    assert JUDGE_KEY not in people and f"user:{ann.id}" in people


def _section(page: str, start: str, end: str) -> str:
    match = re.search(re.escape(start) + r"(.*?)" + re.escape(end), page, re.S)
    return match.group(1) if match else ""


@pytest.mark.parametrize("headers", [{}, HTMX], ids=["page", "htmx"])
async def test_the_dashboard_shows_ai_judges_apart(
    client: httpx.AsyncClient, session: Session, headers: dict[str, str]
) -> None:
    project, prompts, *_ = _people(session)
    for prompt in prompts:
        judge(session, prompt, [0, 1, 2, 3], name="ai:<b>judge</b>")
    session.commit()
    await login(client, make_admin(session))
    url = f"/admin/projects/{project.id}/agreement"
    raw = (await client.get(url, headers=headers)).text
    assert "<b>judge</b>" not in raw and "ai:&lt;b&gt;judge&lt;/b&gt;" in raw
    page = html.unescape(raw)

    section = _section(page, 'aria-labelledby="ai-title"', "</section>")
    assert "AI judges" in section and "ai:<b>judge</b>" in section
    report = build_report(session=session, project=project)
    (row,) = report.ai
    assert row.agreement.value is not None and row.agreement.low is not None
    text = visible_text(section)
    assert f"{row.agreement.value * 100:.1f}%" in text
    assert row.agreement.high is not None
    assert f"{row.agreement.low * 100:.1f}% to {row.agreement.high * 100:.1f}%" in text
    assert "They are not people" in text
    # Not among the labelers, and the figures are people's.
    labelers = _section(page, 'id="labeler-table"', "</table>")
    assert re.findall(r"key=(\w+)%3A", labelers) == ["user", "user"] and "judge" not in labelers
    assert "6 rankings of 3 prompts by 2 labelers" in visible_text(page)
    assert "3 rankings by AI judges are listed apart below" in visible_text(page)
    if not headers:  # the filter (outside the fragment htmx swaps) offers it as what it is
        assert "ai:<b>judge</b> (AI judge)</option>" in page


async def test_the_dashboard_has_no_ai_section_without_judges(
    client: httpx.AsyncClient, session: Session
) -> None:
    project, *_ = _people(session)
    await login(client, make_admin(session))
    page = (await client.get(f"/admin/projects/{project.id}/agreement")).text
    assert 'aria-labelledby="ai-title"' not in page and "by AI judges" not in page


async def test_a_project_only_judges_ranked_says_so(
    client: httpx.AsyncClient, session: Session
) -> None:
    project = make_project(session, k=4)
    judge(session, make_prompt(session, project), [0, 1, 2, 3])
    session.commit()
    await login(client, make_admin(session))
    page = visible_text((await client.get(f"/admin/projects/{project.id}/agreement")).text)
    assert "No rankings by people yet" in page and "AI judges are not labelers either" in page
    assert f"{JUDGE} 1 Not enough data: {AI_NO_PERSON}" in page


async def test_the_api_lists_ai_judges_apart(client: httpx.AsyncClient, session: Session) -> None:
    project, prompts, *_ = _people(session)
    _judge_everything(session, project, prompts)
    admin = make_admin(session)
    _, token = create_api_token(session=session, user=admin, name="t")
    session.commit()
    headers = {"Authorization": f"Bearer {token}"}
    for query in ("", "?include_imported=true"):
        data = (await client.get(f"/api/v1/projects/{project.id}/agreement{query}", headers=headers)).json()  # fmt: skip
        expected = json.loads(
            json.dumps(
                build_report(
                    session=session,
                    project=project,
                    filters=AgreementFilters.parse(include_imported=bool(query)),
                ).as_dict()
            )
        )
        assert data["ai"] == expected["ai"] and len(data["ai"]) == 2
        assert data["n_labelers"] == 2 and data["n_comparisons"] == 6 + (1 if query else 0)
        first = data["ai"][0]
        assert set(first) == {
            "labeler", "labeler_key", "n_comparisons", "agreement_with_humans",
            "agreement_ci95", "n_pairs", "n_tied_pairs_left_out", "n_prompts", "reason",
        }  # fmt: skip
        assert (first["labeler"], first["n_comparisons"]) == (JUDGE, 4)


def test_rlhf_agreement_carries_the_ai_section(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    env = rlhf_env(url, tmp_path / "data")
    assert rlhf(env, "db", "upgrade").returncode == 0
    engine = create_engine(url)
    with sessionmaker(engine)() as s:
        project, prompts, *_ = _people(s)
        _judge_everything(s, project, prompts)
        expected = json.loads(json.dumps(build_report(session=s, project=project).as_dict()))
        name = project.name
    engine.dispose()
    result = rlhf(env, "agreement", name, "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["ai"] == expected["ai"]
    text = rlhf(env, "agreement", name)
    assert text.returncode == 0, text.stderr
    assert "AI judges: agreement with people" in text.stdout
    row = expected["ai"][0]
    low, high = row["agreement_ci95"]
    shown = f"{row['agreement_with_humans']:.3f} [{low:.3f}, {high:.3f}]"
    assert f"{row['n_comparisons']:>8} {row['n_pairs']:>6}  {JUDGE}: {shown}" in text.stdout
    assert "ai:rm-judge: not enough data" not in text.stdout  # it shares prompt 1 with people


# --- Exports --------------------------------------------------------------------------------


def _rows(folder: Path) -> list[dict[str, Any]]:
    rows = []
    for split in ("train", "validation"):
        with (folder / f"{split}.jsonl").open(encoding="utf-8") as f:
            rows += [json.loads(line) for line in f]
    return rows


def _export(session: Session, project: Project, folder: Path, **options: Any) -> list[dict[str, Any]]:  # fmt: skip
    opts = ExportOptions.from_dict({"kind": "pairwise", **options})
    return _rows(write_export(session=session, project=project, options=opts, folder=folder).directory)  # fmt: skip


def _judged_project(session: Session) -> tuple[Project, User, User]:
    """Two people on two prompts (6 pairs each per ranking), the judge on both (the reverse
    order: 6 pairs each) and on a third prompt nobody else ranked."""
    project = make_project(session, k=4)
    ann, bob = make_user(session), make_user(session)
    for i in range(2):
        prompt = make_prompt(session, project, text=f"Question {i}?")
        rank(session, prompt, ann, [0, 1, 2, 3])
        rank(session, prompt, bob, [1, 0, 2, 3])
        judge(session, prompt, [3, 2, 1, 0])
    judge(session, make_prompt(session, project, text="Judged only"), [0, 1, 2, 3])
    session.commit()
    return project, ann, bob


def test_exports_leave_ai_rankings_out_unless_asked(session: Session, tmp_path: Path) -> None:
    project, ann, bob = _judged_project(session)
    people = {f"user:{ann.id}", f"user:{bob.id}"}
    default = _export(session, project, tmp_path / "default", validation_ratio=0)
    assert len(default) == 2 * 2 * 6 and {r["labeler"] for r in default} == people
    assert {r["source"] for r in default} == {"ranking"}
    # The rows' agreement is the people's: the judge (who reverses everything) is no labeler.
    assert all(r["agreement"] == pytest.approx(5 / 6) for r in default)

    included = _export(session, project, tmp_path / "include", ai="include", validation_ratio=0)
    by_judge = [r for r in included if r["labeler"] == JUDGE_KEY]
    assert len(included) == len(default) + 3 * 6 and len(by_judge) == 18
    assert {r["source"] for r in by_judge} == {"ai"}
    assert [r for r in included if r["labeler"] != JUDGE_KEY] == default
    judged_only = {r["prompt_id"] for r in by_judge} - {r["prompt_id"] for r in default}
    assert all(r["agreement"] is None for r in by_judge if r["prompt_id"] in judged_only)
    assert all(
        r["agreement"] == pytest.approx(5 / 6)
        for r in by_judge
        if r["prompt_id"] not in judged_only
    )

    only = _export(session, project, tmp_path / "only", ai="only", validation_ratio=0)
    assert only == by_judge

    kwise = _export(session, project, tmp_path / "kwise", kind="kwise", ai="only")
    assert len(kwise) == 3 and {r["labeler"] for r in kwise} == {JUDGE_KEY}
    kwise_default = _export(session, project, tmp_path / "kwise-default", kind="kwise")
    assert len(kwise_default) == 4 and JUDGE_KEY not in {r["labeler"] for r in kwise_default}

    # Consensus: of the people by default, of the judge alone with only.
    consensus = _export(session, project, tmp_path / "c", consensus_only=True, validation_ratio=0)
    judged_consensus = _export(
        session, project, tmp_path / "c-ai", consensus_only=True, ai="only", validation_ratio=0
    )
    prompt_ids = {r["prompt_id"] for r in consensus}
    assert len(prompt_ids) == 2 and len({r["prompt_id"] for r in judged_consensus}) == 3
    first = min(prompt_ids)
    # The people put answer 0 or 1 first, the judge answer 3: the consensus says which.
    best = {(r["chosen"], r["rejected"]) for r in consensus if r["prompt_id"] == first}
    assert ("Answer 3 to Question 0?", "Answer 0 to Question 0?") not in best
    assert ("Answer 3 to Question 0?", "Answer 0 to Question 0?") in {
        (r["chosen"], r["rejected"]) for r in judged_consensus if r["prompt_id"] == first
    }
    assert {r["source"] for r in judged_consensus} == {"ai"}


def test_ai_export_options_are_checked() -> None:
    with pytest.raises(
        ExportError, match="the ai option must be one of exclude, include, only, not 'all'"
    ):
        ExportOptions.from_dict({"kind": "pairwise", "ai": "all"})
    with pytest.raises(ExportError, match=r"labelers name an AI judge \(external:ai:x\)"):
        ExportOptions.from_dict({"kind": "pairwise", "labelers": ["external:ai:x"]})
    picked = ExportOptions.from_dict({"kind": "pairwise", "labelers": ["external:ai:x"], "ai": "only"})  # fmt: skip
    assert picked.ai == "only" and picked.as_dict()["ai"] == "only"
    assert ExportOptions.from_dict({"kind": "sft"}).ai == "exclude"
    assert ExportOptions.from_dict(picked.as_dict()) == picked  # stored params check again


def test_a_training_snapshot_leaves_ai_rankings_out(
    session: Session, session_factory: sessionmaker[Session], settings: Settings, tmp_path: Path
) -> None:
    """The RM and DPO jobs train on `workers.train.snapshot`, an export with the default
    options: no AI judge's ranking gets in."""
    project, ann, bob = _judged_project(session)
    job = create_job(session=session, kind=kinds.TRAIN_RM, project_id=project.id, params={})
    session.commit()
    ctx = JobContext(
        job_id=job.id, attempt=job.attempts, settings=settings, session_factory=session_factory
    )
    for kind, size in (("pairwise", 2 * 2 * 6), ("kwise", 4)):
        _, folder = snapshot(
            ctx, kind, tmp_path / kind, validation_ratio=0, seed=0, key=f"{kind}_export_id"
        )
        rows = _rows(folder)
        assert len(rows) == size and {r["labeler"] for r in rows} == {f"user:{ann.id}", f"user:{bob.id}"}  # fmt: skip


async def test_the_export_form_offers_and_passes_the_ai_choice(
    client: httpx.AsyncClient,
    session: Session,
    session_factory: sessionmaker[Session],
    settings: Settings,
) -> None:
    project, *_ = _judged_project(session)
    await login(client, make_admin(session))
    page = f"/admin/projects/{project.id}/exports"
    listing = (await client.get(page)).text
    select_ = _section(listing, '<select name="ai">', "</select>")
    assert re.findall(r'value="(\w+)"', select_) == ["exclude", "include", "only"]
    assert 'value="exclude" selected' in select_
    token = await csrf_token(client, page)
    form = {"kind": "pairwise", "format": "jsonl", "validation_pct": "0", "seed": "0",
            "gold": "include", "include_surplus": "true", "ai": "only", "csrf_token": token}  # fmt: skip
    r = await client.post(page, data=form)
    assert r.status_code == 303, r.text
    job = session.get_one(Job, int(r.headers["location"].rsplit("/", 1)[1]))
    assert job.params["ai"] == "only"
    assert run_job(job_id=job.id, session_factory=session_factory, settings=settings) == (
        JobStatus.succeeded
    )
    session.refresh(job)
    rows = _rows(Path(job.artifacts["directory"]))
    assert len(rows) == 18 and {r["labeler"] for r in rows} == {JUDGE_KEY}

    bad = await client.post(page, data={**form, "ai": "sometimes"})
    assert bad.status_code == 422
    assert (
        "The ai option must be one of exclude, include, only, not &#39;sometimes&#39;" in bad.text
    )
    assert session.query(Job).filter_by(kind="export").count() == 1


def test_rlhf_export_ai(tmp_path: Path) -> None:
    """`rlhf export --ai only` queues a job that exports the judge's rankings alone; the
    default leaves them out; a bad value is one line and exit 2."""
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    data_dir = tmp_path / "data"
    env = rlhf_env(url, data_dir)
    assert rlhf(env, "db", "upgrade").returncode == 0
    engine = make_engine(url)
    factory = make_session_factory(engine, writes=True)
    with factory() as s:
        project, _ann, _bob = _judged_project(s)
        project_id = project.id
    settings = make_settings(database_url=url, data_dir=data_dir)
    counts = {}
    for choice in ("only", "exclude", "include"):
        out = tmp_path / f"out-{choice}"
        args = ["--ai", choice] if choice != "exclude" else []
        queued = rlhf(env, "export", str(project_id), "--kind", "pairwise", "--out", str(out),
                      "--validation-ratio", "0", *args)  # fmt: skip
        assert queued.returncode == 0, queued.stderr
        job_id = int(queued.stdout.split()[1])
        with factory() as s:
            assert s.get_one(Job, job_id).params["ai"] == choice
        assert run_job(job_id=job_id, session_factory=factory, settings=settings) == (
            JobStatus.succeeded
        )
        rows = _rows(out)
        counts[choice] = len(rows)
        if choice == "only":
            assert {r["labeler"] for r in rows} == {JUDGE_KEY}
        if choice == "exclude":
            assert JUDGE_KEY not in {r["labeler"] for r in rows}
    engine.dispose()
    assert counts == {"only": 18, "exclude": 24, "include": 42}
    bad = rlhf(env, "export", str(project_id), "--kind", "pairwise", "--ai", "yes")
    assert bad.returncode == 2
    assert (
        bad.stderr.strip()
        == "error: the ai option must be one of exclude, include, only, not 'yes'"
    )


# --- Leaderboard, review, overlap -----------------------------------------------------------


def test_the_leaderboard_ignores_ai_rankings(session: Session) -> None:
    project = make_project(session, k=4)
    ann, bob = make_user(session), make_user(session)
    prompts = []
    for i in range(4):
        prompt = make_prompt(session, project, text=f"Question {i}")
        for n, completion in enumerate(prompt.completions):
            completion.origin = f"import:model-{'ab'[n % 2]}"
        rank(session, prompt, ann, [0, 1, 2, 3])
        rank(session, prompt, bob, [0, 1, 2, 3] if i else [1, 0, 2, 3])
        prompts.append(prompt)
    session.commit()
    before = build_project_leaderboard(session=session, project=project, resamples=50).as_dict()
    for prompt in prompts:  # the judge prefers model b's answers everywhere
        judge(session, prompt, [3, 0, 2, 1])
    session.commit()
    after = build_project_leaderboard(session=session, project=project, resamples=50).as_dict()
    assert after == before and before["rankings"] == 8
    assert before["models"][0]["origin"] == "import:model-a"


def test_the_review_walk_leaves_ai_rankings_out(session: Session) -> None:
    project, prompts, ann, bob = _people(session)
    _judge_everything(session, project, prompts)
    for order in ("recent", "agreement"):
        filters = WalkFilters(state="all", order=order)
        walk = review_walk(session=session, project=project, filters=filters)
        assert {entry.labeler for entry in walk} == {
            f"user:{ann.id}",
            f"user:{bob.id}",
            f"external:{IMPORTED}",
        }
    only_judge = WalkFilters(labeler=JUDGE_KEY, state="all")
    assert review_walk(session=session, project=project, filters=only_judge) == []


def test_an_ai_ranking_takes_no_slot_of_the_overlap(session: Session) -> None:
    project = make_project(session, k=4, overlap=2)
    prompt = make_prompt(session, project, text="Judged first")
    judge(session, prompt, [0, 1, 2, 3])
    judge(session, prompt, [3, 2, 1, 0], name="ai:second")
    session.commit()
    served = []
    for user in [make_user(session) for _ in range(3)]:
        task = lease_next_task(
            session=session, project=project, labeler=user, kind=TaskKind.rank,
            lease_for=timedelta(minutes=30), rng=random.Random(7),
        )  # fmt: skip
        if task is not None:
            assert task.prompt.id == prompt.id
            submit_ranking(
                session=session, assignment_id=task.id, labeler=user,
                ranking=[[c.id] for c in task.completions],
            )  # fmt: skip
            served.append(user.id)
    assert len(served) == 2  # the overlap's two people, the judges beside them
    rows = session.scalars(select(Comparison).where(Comparison.prompt_id == prompt.id)).all()
    assert len(rows) == 4 and not any(c.is_surplus for c in rows)
    report = build_report(session=session, project=project)
    assert (report.n_comparisons, report.n_labelers, report.n_prompts_with_overlap) == (2, 2, 1)
