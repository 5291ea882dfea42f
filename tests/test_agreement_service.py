"""A project's agreement report from the database: the numbers, the per-labeler table, gold,
filters, the cache, and "not enough data"."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy.orm import Session

from app.agreement.service import (
    AgreementFilters,
    build_report,
    consensus_of,
    consensus_rankings,
    json_integers,
    load_rank_table,
    project_agreement,
)
from app.labeling.models import (
    Assignment,
    AssignmentState,
    Comparison,
    Completion,
    GoldRanking,
    TaskKind,
    text_sha256,
)
from app.projects.models import Project
from tests.helpers import answers, make_admin, make_project, make_prompt, make_user, rank


@pytest.fixture
def project(session: Session) -> Project:
    return make_project(session, k=4, overlap=3)


def test_two_labelers_on_one_prompt(session: Session, project: Project) -> None:
    """The public vector's case through the database: they disagree on one pair of six."""
    prompt = make_prompt(session, project)
    ann, bob = make_user(session), make_user(session)
    rank(session, prompt, ann, [0, 1, 2, 3])
    rank(session, prompt, bob, [1, 0, 2, 3])
    report = build_report(session=session, project=project)
    assert report.micro.value == pytest.approx(5 / 6) and report.micro.n == 6
    assert report.macro.value == pytest.approx(5 / 6) and report.macro.n == 1
    assert report.tau_b.value == pytest.approx(2 / 3)
    assert report.kendall_w.value is not None and report.kendall_w.n == 1
    rows = {row.name: row for row in report.labelers}
    assert rows[ann.label].agreement.value == pytest.approx(5 / 6)
    assert rows[ann.label].n_comparisons == 1
    data = report.as_dict()
    # The keys of design §8a.
    assert data["pairwise_agreement"]["micro"] == pytest.approx(5 / 6)
    assert {"micro", "macro", "n_pairs", "n_tied_pairs_left_out"} <= set(data["pairwise_agreement"])
    assert {"mean", "n_prompts"} <= set(data["kendall_w"])
    assert {"labeler", "n_comparisons", "pairwise_agreement"} <= set(data["labelers"][0])


def test_no_overlap_yet_says_why(session: Session, project: Project) -> None:
    ann = make_user(session)
    for _ in range(3):
        rank(session, make_prompt(session, project), ann, [0, 1, 2, 3])
    report = build_report(session=session, project=project)
    data = report.as_dict()
    assert data["pairwise_agreement"]["micro"] is None
    assert "no answer pair was ordered by two labelers" in data["pairwise_agreement"]["reason"]
    assert data["kendall_w"]["mean"] is None and data["kendall_w"]["reason"]
    assert data["labelers"][0]["pairwise_agreement"] is None
    assert "no prompt shared" in data["labelers"][0]["reason"]
    assert data["labels"][0]["krippendorff_alpha"]["value"] is None


def test_an_empty_project(session: Session, project: Project) -> None:
    data = build_report(session=session, project=project).as_dict()
    assert data["n_comparisons"] == 0 and data["labelers"] == []
    assert data["pairwise_agreement"]["micro"] is None and data["weekly"] == []


def test_ties_are_left_out_and_counted(session: Session, project: Project) -> None:
    prompt = make_prompt(session, project)
    ann, bob = make_user(session), make_user(session)
    rank(session, prompt, ann, [0, 0, 1, 1])  # two ties
    rank(session, prompt, bob, [0, 1, 2, 3])
    data = build_report(session=session, project=project).as_dict()["pairwise_agreement"]
    assert (data["micro"], data["n_pairs"], data["n_tied_pairs_left_out"]) == (1.0, 4, 2)


def test_per_labeler_quality_figures(session: Session, project: Project) -> None:
    """Leave-one-out agreement, gold, time, skips, not rankable and both biases."""
    ann, bob, cy = make_user(session), make_user(session), make_user(session)
    admin = make_admin(session)
    p1, p2, p3 = (make_prompt(session, project, text=f"Q{i}") for i in range(3))
    for prompt in (p1, p2):
        rank(session, prompt, ann, [0, 1, 2, 3], seconds=10)
        rank(session, prompt, bob, [0, 1, 2, 3], seconds=20)
        rank(session, prompt, cy, [3, 2, 1, 0], seconds=40)  # always against the others
    rank(session, p3, ann, [0, 1, 2, 3], seconds=30, shown=[3, 2, 1, 0])
    rank(session, p3, cy, [], not_rankable=True)
    # A gold ranking on p1 that ann matches and cy reverses.
    session.add(
        GoldRanking(prompt_id=p1.id, ranking=[[a] for a in answers(p1)], created_by_id=admin.id)
    )
    # bob skipped one rank task and submitted two.
    for prompt, state in ((p3, AssignmentState.skipped), (p1, AssignmentState.submitted),
                          (p2, AssignmentState.submitted)):  # fmt: skip
        session.add(
            Assignment(
                kind=TaskKind.rank, prompt_id=prompt.id, labeler_id=bob.id, state=state,
                expires_at=datetime.now(UTC), finished_at=datetime.now(UTC),
            )
        )  # fmt: skip
    session.flush()
    report = build_report(session=session, project=project)
    rows = {row.user_id: row for row in report.labelers}
    # ann vs mean(bob, cy): the rest is all tied on p1/p2 (one says up, one down): nothing.
    assert rows[ann.id].agreement.value is None
    # cy vs mean(ann, bob) = a > b > c > d: all 12 pairs of p1 and p2 disagree.
    assert (rows[cy.id].agreement.value, rows[cy.id].agreement.n) == (0.0, 12)
    assert rows[ann.id].gold_agreement.value == 1.0 and rows[cy.id].gold_agreement.value == 0.0
    assert rows[bob.id].skip_rate == pytest.approx(1 / 3)
    assert rows[ann.id].median_seconds == 10.0  # of 10, 10, 30
    assert rows[cy.id].n_comparisons == 3 and rows[cy.id].not_rankable_share == pytest.approx(1 / 3)
    # ann was shown answer 0 first on p1 and p2 (placed best), answer 3 first on p3 (worst).
    assert rows[ann.id].first_shown_best == pytest.approx(2 / 3)
    assert rows[ann.id].first_shown_chance == pytest.approx(1 / 4)
    # Answer i is "Answer i to Qn": all the same length -> no length pairs.
    assert rows[ann.id].longer_wins is None and rows[ann.id].n_length_pairs == 0
    # Gold pairs: ann's 6 agree, bob's 6 agree, cy's 6 disagree.
    assert (report.gold.value, report.gold.n) == (pytest.approx(12 / 18), 18)


def test_length_bias_counts_the_longer_answer_winning(session: Session, project: Project) -> None:
    prompt = make_prompt(session, project, answers=0)
    for text in ("short", "a bit longer", "the longest answer of all", "mid length"):
        session.add(
            Completion(prompt_id=prompt.id, text=text, text_sha256=text_sha256(text), origin="t")
        )
    session.flush()
    session.refresh(prompt)
    ann = make_user(session)
    rank(session, prompt, ann, [3, 1, 0, 2])  # exactly by length, longest best
    row = build_report(session=session, project=project).labelers[0]
    assert (row.longer_wins, row.n_length_pairs) == (1.0, 6)


def test_likert_and_flags(session: Session, project: Project) -> None:
    ann, bob = make_user(session), make_user(session)
    for i in range(4):
        prompt = make_prompt(session, project, text=f"Q{i}")
        rank(session, prompt, ann, [0, 1, 2, 3], ratings=[7, 5, 3, 1], flags={3: ["harmful"]})
        rank(session, prompt, bob, [0, 1, 2, 3], ratings=[7, 5, 3, 2], flags={3: ["harmful"]})
    labels = {
        item["name"]: item
        for item in build_report(session=session, project=project).as_dict()["labels"]
    }
    likert = labels["Likert rating (1-7)"]["krippendorff_alpha"]
    assert likert["value"] is not None and 0.9 < likert["value"] < 1 and likert["n"] == 16
    harmful = labels["Flag: harmful"]
    assert harmful["krippendorff_alpha"]["value"] == pytest.approx(1.0)  # real agreement: both
    assert harmful["fleiss_kappa"]["value"] == pytest.approx(1.0)  # flag answer 3 only
    never = labels["Flag: hallucination"]
    assert never["krippendorff_alpha"]["value"] is None  # nobody used it: one category only
    assert "same value" in never["krippendorff_alpha"]["reason"]


def test_only_the_latest_revision_counts(session: Session, project: Project) -> None:
    prompt = make_prompt(session, project)
    ann, bob = make_user(session), make_user(session)
    old = rank(session, prompt, ann, [3, 2, 1, 0])
    old.is_latest = False
    session.flush()
    new = Comparison(
        prompt_id=prompt.id, labeler_id=ann.id, revision=2, supersedes_id=old.id,
        displayed_completion_ids=old.displayed_completion_ids,
        ranking=[[a] for a in answers(prompt)],
    )  # fmt: skip
    session.add(new)
    rank(session, prompt, bob, [0, 1, 2, 3])
    assert build_report(session=session, project=project).micro.value == 1.0


def test_filters_by_date_labeler_and_gold(session: Session, project: Project) -> None:
    ann, bob, cy = make_user(session), make_user(session), make_user(session)
    admin = make_admin(session)
    long_ago = datetime(2026, 1, 5, 12, tzinfo=UTC)
    agreed = make_prompt(session, project, text="agreed")
    rank(session, agreed, ann, [0, 1, 2, 3], at=long_ago)
    rank(session, agreed, bob, [0, 1, 2, 3], at=long_ago)
    argued = make_prompt(session, project, text="argued")
    rank(session, argued, ann, [0, 1, 2, 3])
    rank(session, argued, cy, [3, 2, 1, 0])
    session.add(
        GoldRanking(
            prompt_id=argued.id, ranking=[[a] for a in answers(argued)], created_by_id=admin.id
        )
    )
    session.flush()
    everything = build_report(session=session, project=project)
    assert everything.micro.value == pytest.approx(6 / 12)
    recent = build_report(
        session=session,
        project=project,
        filters=AgreementFilters(since=date.today() - timedelta(days=3)),
    )
    assert recent.micro.value == 0.0
    old = build_report(
        session=session, project=project, filters=AgreementFilters(until=date(2026, 1, 31))
    )
    assert old.micro.value == 1.0
    only_bob = build_report(
        session=session, project=project, filters=AgreementFilters(labeler=f"user:{bob.id}")
    )
    assert only_bob.micro.value == 1.0 and [r.user_id for r in only_bob.labelers] == [bob.id]
    gold = build_report(session=session, project=project, filters=AgreementFilters(gold="gold"))
    assert gold.micro.value == 0.0 and gold.n_prompts == 1
    non_gold = build_report(
        session=session, project=project, filters=AgreementFilters(gold="non-gold")
    )
    assert non_gold.micro.value == 1.0
    # Week by week: the January pair, then this week's.
    assert [w.agreement for w in everything.weekly] == [1.0, 0.0]
    assert everything.weekly[0].week == date(2026, 1, 5)  # a Monday
    assert everything.lowest[0].text == "argued" and everything.lowest[0].agreement == 0.0


def test_the_cached_report_refreshes_when_a_ranking_arrives(
    session: Session, project: Project
) -> None:
    prompt = make_prompt(session, project)
    ann, bob, cy = make_user(session), make_user(session), make_user(session)
    rank(session, prompt, ann, [0, 1, 2, 3])
    rank(session, prompt, bob, [0, 1, 2, 3])
    first = project_agreement(session=session, project=project)
    assert project_agreement(session=session, project=project) is first  # nothing new
    rank(session, prompt, cy, [3, 2, 1, 0])
    second = project_agreement(session=session, project=project)
    assert second is not first and second.micro.value == pytest.approx(6 / 18)


def test_each_prompt_gets_one_column_per_answer_shown(session: Session, project: Project) -> None:
    prompt = make_prompt(session, project, answers=5)
    ann = make_user(session)
    rank(session, prompt, ann, [0, 1, 2, 3, 0], shown=None)
    table = load_rank_table(session=session, project=project)
    assert table.ranks.shape == (1, 5)
    assert table.answer_ids[0].tolist() == answers(prompt)


def test_consensus_rankings_per_prompt(session: Session, project: Project) -> None:
    """Borda: mean place over the labelers; equal means tie; an unranked prompt is absent."""
    prompt = make_prompt(session, project)
    make_prompt(session, project)  # nobody ranked it
    a, b, c, d = answers(prompt)
    ann, bob, cy = make_user(session), make_user(session), make_user(session)
    rank(session, prompt, ann, [0, 1, 2, 3])
    rank(session, prompt, bob, [1, 0, 2, 3])
    rank(session, prompt, cy, [0, 1, 3, 2])
    consensus = consensus_rankings(session=session, project=project)
    # Places (0, 1/3, 2/3, 1): a = 1/9, b = 2/9, c = 7/9, d = 8/9.
    assert consensus == {prompt.id: [[a], [b], [c], [d]]}
    assert consensus_of([[[a], [b]], [[b], [a]]]) == [[a, b]]  # one each way: a tie


def test_json_integers_parses_every_row_at_once() -> None:
    texts = ["[[12], [10, 11], [13]]", "[]", None, "null", '{"7": 5, "123456": 1}', "[[3, 4]]"]
    row, value, closed = json_integers(texts)
    assert row.tolist() == [0, 0, 0, 0, 4, 4, 4, 4, 5, 5]
    assert value.tolist() == [12, 10, 11, 13, 7, 5, 123456, 1, 3, 4]
    assert closed[:4].tolist() == [0, 1, 1, 2]  # the group of each answer
    assert closed[8:].tolist() == [0, 0]
    empty = json_integers([])
    assert all(len(part) == 0 for part in empty)
