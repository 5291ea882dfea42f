"""The rank queue's orders (design §14): ``oldest``, ``uncertain`` (the reward model's closest
scores first) and ``disagreement`` (extra rankings where labelers disagree, up to
``max_overlap``); and the settings that choose them, through the service, the JSON API, the
edit page and the CLI."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterable, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.audit.models import AuditEvent
from app.auth.models import User
from app.auth.service import create_api_token
from app.labeling import queue
from app.labeling.models import Assignment, Comparison, GoldRanking, Prompt, TaskKind
from app.labeling.queue import Task, count_available, lease_next_task
from app.labeling.scores import refresh_score_gaps, store_scores
from app.labeling.service import (
    ranking_disagreement,
    refresh_disagreement,
    skip_task,
    submit_ranking,
)
from app.models_registry.models import ModelKind, ModelVersion
from app.projects.models import DEFAULT_FLAGS, Project
from app.projects.service import KEEP, ProjectFormError, project_counts, update_project
from app.review.models import Verdict
from app.review.service import review_item
from tests.helpers import (
    csrf_token,
    field_error,
    login,
    make_admin,
    make_project,
    make_prompt,
    make_user,
    visible_text,
)
from tests.processes import rlhf, rlhf_env

LEASE = timedelta(minutes=30)
_versions = iter(range(1, 10**9))


# --- helpers (test_queue_concurrency.py uses them too) --------------------------------------


def reward_model(session: Session) -> ModelVersion:
    """A registered reward-model version: what ``completion_scores`` rows point at."""
    version = ModelVersion(name=f"rm-{next(_versions)}", kind=ModelKind.rm, path="/models/rm")
    session.add(version)
    session.flush()
    return version


def score(
    session: Session,
    project: Project,
    version: ModelVersion,
    scores: Mapping[int, Sequence[float]],
) -> None:
    """Store ``scores[prompt id]`` (one per answer, in id order) as the version's scores and
    set the prompts' gaps from them, as ``rlhf score`` does."""
    by_answer: dict[int, float] = {}
    for prompt_id, values in scores.items():
        prompt = session.get_one(Prompt, prompt_id)
        answers = sorted(c.id for c in prompt.completions)
        by_answer.update(zip(answers, values, strict=True))
    store_scores(session=session, model_version_id=version.id, scores=by_answer)
    refresh_score_gaps(session=session, project=project, model_version_id=version.id)


def counted_rankings(session: Session, prompt_id: int) -> list[Comparison]:
    """The prompt's rankings that use up its slots, in the order they were stored."""
    return list(
        session.scalars(
            select(Comparison)
            .join(Assignment, Assignment.id == Comparison.assignment_id)
            .where(
                Comparison.prompt_id == prompt_id,
                Comparison.is_latest.is_(True),
                Comparison.is_surplus.is_(False),
                Assignment.is_gold.is_(False),
            )
            .order_by(Comparison.id)
        )
    )


def check_caps(session: Session, project: Project, prompt_ids: Iterable[int]) -> dict[int, int]:
    """Each prompt's counted rankings against its cap, ranking by ranking: the n-th counted
    ranking past ``overlap`` was taken only while the n-1 before it disagreed above the
    threshold, under ``disagreement``; under the other orders never past ``overlap``; no
    labeler twice. How many each prompt has."""
    counts = {}
    for prompt_id in prompt_ids:
        rankings = counted_rankings(session, prompt_id)
        labelers = [r.labeler_id for r in rankings]
        assert len(set(labelers)) == len(labelers), (prompt_id, labelers)
        for n in range(project.overlap + 1, len(rankings) + 1):
            assert project.queue_order == "disagreement", (prompt_id, len(rankings))
            assert n <= project.extra_overlap, (prompt_id, len(rankings))
            before = ranking_disagreement([r.ranking for r in rankings[: n - 1]])
            assert before is not None and before > project.disagreement_threshold, (prompt_id, n)
        counts[prompt_id] = len(rankings)
    return counts


# --- leasing in each order -------------------------------------------------------------------


def lease(session: Session, project: Project, user: User) -> Task | None:
    return lease_next_task(
        session=session, project=project, labeler=user, kind=TaskKind.rank, lease_for=LEASE,
        rng=random.Random(5),
    )  # fmt: skip


def submit(session: Session, task: Task, user: User, best_first: Sequence[int]) -> None:
    submit_ranking(
        session=session, assignment_id=task.id, labeler=user, ranking=[[a] for a in best_first]
    )


def answers_of(prompt: Prompt) -> list[int]:
    return sorted(c.id for c in prompt.completions)


def work_through(session: Session, project: Project, user: User) -> list[int]:
    """The prompts this labeler is served, in order, ranking each by answer id."""
    served = []
    while (task := lease(session, project, user)) is not None:
        submit(session, task, user, answers_of(task.prompt))
        served.append(task.prompt.id)
    return served


@pytest.mark.parametrize("order", ["oldest", "uncertain"])
def test_uncertain_serves_the_closest_scores_first_and_unscored_prompts_last(
    session: Session, order: str
) -> None:
    project = make_project(session, k=2, overlap=1)
    p = [make_prompt(session, project, text=f"prompt {i}", answers=2) for i in range(5)]
    version = reward_model(session)
    # Gaps: p0 2.0, p2 0.1, p3 0.5; p1 and p4 were never scored.
    score(session, project, version, {p[0].id: [1.0, 3.0], p[2].id: [0.6, 0.5], p[3].id: [2, 2.5]})
    for prompt in p:
        session.refresh(prompt)
    assert [p[0].score_gap, p[1].score_gap, p[4].score_gap] == [2.0, None, None]
    assert p[2].score_gap == pytest.approx(0.1) and p[3].score_gap == pytest.approx(0.5)
    update_project(session=session, project=project, queue_order=order)

    served = work_through(session, project, make_user(session))

    if order == "uncertain":
        assert served == [p[2].id, p[3].id, p[0].id, p[1].id, p[4].id]
    else:
        assert served == [x.id for x in p]


def test_a_new_scoring_reorders_the_uncertain_queue(session: Session) -> None:
    project = make_project(session, k=2, overlap=1, name="Rescored")
    first, second = (make_prompt(session, project, text=t, answers=2) for t in ("a", "b"))
    update_project(session=session, project=project, queue_order="uncertain")
    score(session, project, reward_model(session), {first.id: [0, 0.1], second.id: [0, 1]})
    labeler = make_user(session)
    task = lease(session, project, labeler)
    assert task is not None and task.prompt.id == first.id
    # A newer reward model finds the second prompt the closer call.
    score(session, project, reward_model(session), {first.id: [0, 3], second.id: [0, 0.2]})
    other = make_user(session)
    task = lease(session, project, other)
    assert task is not None and task.prompt.id == second.id


def test_uncertain_without_any_scores_serves_oldest_first(session: Session) -> None:
    project = make_project(session, k=2, overlap=1)
    prompts = [make_prompt(session, project, text=f"q{i}", answers=2) for i in range(3)]
    update_project(session=session, project=project, queue_order="uncertain")
    assert work_through(session, project, make_user(session)) == [x.id for x in prompts]


def _disagreeing_project(session: Session, *, max_overlap: int | None = 4) -> Project:
    project = make_project(session, k=3, overlap=2)
    update_project(
        session=session, project=project, queue_order="disagreement", max_overlap=max_overlap,
        disagreement_threshold=0.3,
    )  # fmt: skip
    return project


def split_between(
    session: Session, project: Project, pair: Sequence[User], *, older: Prompt, split: Prompt
) -> None:
    """Two labelers each skip the older prompt and rank the split one, in opposite orders."""
    ids = answers_of(split)
    for user, order in zip(pair, (ids, ids[::-1]), strict=True):
        task = lease(session, project, user)
        assert task is not None and task.prompt.id == older.id
        skip_task(session=session, assignment_id=task.id, labeler=user, reason="not for me")
        task = lease(session, project, user)
        assert task is not None and task.prompt.id == split.id
        submit(session, task, user, order)


def test_disagreement_gives_a_disagreeing_prompt_extra_rankings_up_to_max_overlap(
    session: Session,
) -> None:
    project = _disagreeing_project(session)
    older = make_prompt(session, project, text="older", answers=3)
    split = make_prompt(session, project, text="split", answers=3)
    session.refresh(split)
    ids = answers_of(split)
    labelers = [make_user(session) for _ in range(6)]
    # The first two pass over the older prompt and rank the other in opposite orders.
    split_between(session, project, labelers[:2], older=older, split=split)
    session.refresh(split)
    assert split.disagreement == 1.0 and not split.rank_full

    # The disagreeing prompt is served before the older one, until it has max_overlap (4).
    for user in labelers[2:4]:
        task = lease(session, project, user)
        assert task is not None and task.prompt.id == split.id
        submit(session, task, user, ids)
    session.refresh(split)
    assert split.disagreement == pytest.approx(0.5) and split.rank_full
    assert count_available(
        session=session, project=project, labeler=labelers[4], kind=TaskKind.rank
    ) == 1  # fmt: skip

    # The older prompt's labelers agree: it stops at overlap (2).
    for user in labelers:
        work_through(session, project, user)
    counts = check_caps(session, project, [older.id, split.id])
    assert counts == {older.id: 2, split.id: 4}
    session.refresh(older)
    assert older.disagreement == 0.0 and older.rank_full


def test_the_progress_meter_counts_the_slots_the_queue_fills(session: Session) -> None:
    """Rankings wanted: each rankable prompt's cap (max overlap while its labelers disagree);
    done: its submitted tasks up to that cap. A gold prompt (ranked by everyone), a prompt
    short of K answers and an open lease count for neither."""
    project = _disagreeing_project(session)  # K=3, overlap 2, max overlap 4
    older = make_prompt(session, project, text="older", answers=3)
    split = make_prompt(session, project, text="split", answers=3)
    make_prompt(session, project, text="short", answers=2)
    gold = make_prompt(session, project, text="gold", answers=3)
    session.add(GoldRanking(prompt_id=gold.id, ranking=[[a] for a in answers_of(gold)]))
    session.flush()

    def meter() -> tuple[int, int, int]:
        c = project_counts(session=session, projects=[project])[project.id]
        return c.rankings_done, c.rankings_wanted, c.rankings_done_pct

    assert meter() == (0, 4, 0)
    split_between(
        session, project, [make_user(session) for _ in range(2)], older=older, split=split
    )
    # The split prompt disagrees (1.0 > 0.3): it wants 4, so 2 of 2 + 4 are done (the
    # skips did not fill the older prompt's slots).
    assert meter() == (2, 6, 33)
    assert lease(session, project, make_user(session)) is not None  # holds a slot, not done
    assert meter() == (2, 6, 33)
    update_project(session=session, project=project, queue_order="oldest")
    assert meter() == (2, 4, 50)  # under oldest every prompt wants overlap


def test_a_prompt_stops_taking_extra_rankings_once_its_labelers_agree_enough(
    session: Session,
) -> None:
    project = _disagreeing_project(session, max_overlap=6)
    update_project(session=session, project=project, disagreement_threshold=0.6)
    prompt = make_prompt(session, project, answers=3)
    session.refresh(prompt)
    ids = answers_of(prompt)
    orders = [ids, ids[::-1], ids, ids, ids]
    labelers = [make_user(session) for _ in orders]
    seen = []
    for user, order in zip(labelers, orders, strict=True):
        task = lease(session, project, user)
        if task is None:
            break
        submit(session, task, user, order)
        session.refresh(prompt)
        seen.append(prompt.disagreement)
    # 1.0 after two opposite rankings, 6/9 after a third, 9/18 after a fourth: at or under
    # the threshold (0.6), so the fifth labeler gets nothing although max overlap is 6.
    assert seen == [None, 1.0, pytest.approx(2 / 3), pytest.approx(0.5)]
    assert check_caps(session, project, [prompt.id]) == {prompt.id: 4}


def test_under_oldest_a_disagreeing_prompt_stops_at_overlap(session: Session) -> None:
    project = make_project(session, k=3, overlap=2)
    prompt = make_prompt(session, project, answers=3)
    session.refresh(prompt)
    ids = answers_of(prompt)
    for order in (ids, ids[::-1]):
        user = make_user(session)
        task = lease(session, project, user)
        assert task is not None
        submit(session, task, user, order)
    session.refresh(prompt)
    # The disagreement is kept whatever the order, so switching to `disagreement` can use it.
    assert prompt.disagreement == 1.0 and prompt.rank_full
    assert lease(session, project, make_user(session)) is None


def test_a_slot_leased_before_the_labelers_came_to_agree_is_stored_as_surplus(
    session: Session,
) -> None:
    """Two labelers hold the 3rd and 4th slots of a disagreeing prompt; the 3rd ranking brings
    the disagreement under the threshold, so the prompt's cap drops back to overlap (2) and the
    4th ranking is kept, marked surplus: never more counted rankings than the cap."""
    project = _disagreeing_project(session)
    update_project(session=session, project=project, disagreement_threshold=0.7)
    prompt = make_prompt(session, project, answers=3)
    session.refresh(prompt)
    ids = answers_of(prompt)
    for order in (ids, ids[::-1]):
        user = make_user(session)
        task = lease(session, project, user)
        assert task is not None
        submit(session, task, user, order)
    third, fourth = make_user(session), make_user(session)
    third_task, fourth_task = lease(session, project, third), lease(session, project, fourth)
    assert third_task is not None and fourth_task is not None
    assert lease(session, project, make_user(session)) is None  # both extra slots are taken
    submit(session, third_task, third, ids)  # 6/9 agree: under 0.7
    submit(session, fourth_task, fourth, ids)
    stored = session.scalars(
        select(Comparison).where(Comparison.prompt_id == prompt.id).order_by(Comparison.id)
    ).all()
    assert [c.is_surplus for c in stored] == [False, False, False, True]
    assert check_caps(session, project, [prompt.id]) == {prompt.id: 3}


def test_an_expired_lease_comes_back_while_the_prompt_still_has_an_extra_slot(
    session: Session,
) -> None:
    project = _disagreeing_project(session, max_overlap=3)
    prompt = make_prompt(session, project, answers=3)
    session.refresh(prompt)
    ids = answers_of(prompt)
    for order in (ids, ids[::-1]):
        user = make_user(session)
        task = lease(session, project, user)
        assert task is not None
        submit(session, task, user, order)
    late = make_user(session)
    task = lease(session, project, late)
    assert task is not None
    task.assignment.expires_at = task.assignment.leased_at - timedelta(seconds=1)
    session.flush()
    again = lease(session, project, late)
    assert again is not None and again.resumed and again.id == task.id


def test_changing_the_queue_settings_refreshes_which_prompts_are_full(session: Session) -> None:
    project = make_project(session, k=3, overlap=2)  # oldest
    prompt = make_prompt(session, project, answers=3)
    session.refresh(prompt)
    ids = answers_of(prompt)
    for order in (ids, ids[::-1]):
        user = make_user(session)
        task = lease(session, project, user)
        assert task is not None
        submit(session, task, user, order)
    fresh = make_user(session)

    def open_slots() -> int:
        session.refresh(prompt)
        assert prompt.rank_full == (not count_available(
            session=session, project=project, labeler=fresh, kind=TaskKind.rank
        ))  # fmt: skip
        return 0 if prompt.rank_full else 1

    assert open_slots() == 0
    update_project(session=session, project=project, queue_order="disagreement")  # up to 4
    assert open_slots() == 1
    update_project(session=session, project=project, disagreement_threshold=1.0)  # 1.0 is not over
    assert open_slots() == 0
    update_project(session=session, project=project, disagreement_threshold=0.5)
    assert open_slots() == 1
    update_project(session=session, project=project, max_overlap=2)
    assert open_slots() == 0
    update_project(session=session, project=project, max_overlap=None)  # overlap + 2 again
    assert open_slots() == 1 and project.extra_overlap == 4
    update_project(session=session, project=project, overlap=4, max_overlap=KEEP)
    assert open_slots() == 1 and project.extra_overlap == 6
    update_project(session=session, project=project, overlap=2, queue_order="uncertain")
    assert open_slots() == 0


def test_turning_to_disagreement_catches_up_rankings_from_before(session: Session) -> None:
    """Prompts ranked before the submit kept a disagreement (none stored) get theirs when the
    project turns to `disagreement`, so a full prompt whose labelers disagree reopens."""
    project = make_project(session, k=3, overlap=2)
    split, agreed = (
        make_prompt(session, project, text="split", answers=3),
        make_prompt(session, project, answers=3),
    )
    for prompt in (split, agreed):
        session.refresh(prompt)
        ids = answers_of(prompt)
        for order in (ids, ids[::-1] if prompt is split else ids):
            user = make_user(session)
            task = lease(session, project, user)
            assert task is not None and task.prompt.id == prompt.id
            submit(session, task, user, order)
    session.execute(update(Prompt).where(Prompt.project_id == project.id).values(disagreement=None))
    update_project(session=session, project=project, queue_order="disagreement")
    session.refresh(split)
    session.refresh(agreed)
    assert (split.disagreement, split.rank_full) == (1.0, False)
    assert (agreed.disagreement, agreed.rank_full) == (0.0, True)


def test_a_rejected_ranking_holds_its_slot_but_not_the_disagreement(session: Session) -> None:
    project = _disagreeing_project(session)
    prompt = make_prompt(session, project, answers=3)
    session.refresh(prompt)
    ids = answers_of(prompt)
    admin = make_admin(session)
    for order in (ids, ids[::-1]):
        user = make_user(session)
        task = lease(session, project, user)
        assert task is not None
        submit(session, task, user, order)
    session.refresh(prompt)
    assert prompt.disagreement == 1.0 and not prompt.rank_full  # an extra slot is open
    contrary = counted_rankings(session, prompt.id)[-1]

    def review(verdict: Verdict) -> None:
        review_item(
            session=session, reviewer=admin, kind="comparison", item_id=contrary.id,
            verdict=verdict, note="random order" if verdict == Verdict.rejected else None,
        )  # fmt: skip
        session.refresh(prompt)

    # Rejected at once: one ranking left to disagree with, so no extra slot; both still
    # count toward the cap (overlap 2), so the prompt is full.
    review(Verdict.rejected)
    assert prompt.disagreement is None and prompt.rank_full
    assert lease(session, project, make_user(session)) is None
    # The rejection taken back: the labelers disagree again and the extra slot reopens.
    review(Verdict.accepted)
    assert prompt.disagreement == 1.0 and not prompt.rank_full
    third = make_user(session)
    task = lease(session, project, third)
    assert task is not None and task.prompt.id == prompt.id
    submit(session, task, third, ids)
    review(Verdict.rejected)  # of the contrary one: the two kept agree
    assert prompt.disagreement == 0.0 and prompt.rank_full
    assert len(counted_rankings(session, prompt.id)) == 3
    assert lease(session, project, make_user(session)) is None
    prompt.disagreement = None
    refresh_disagreement(session=session, project=project)
    session.refresh(prompt)
    assert prompt.disagreement == 0.0


def test_each_order_builds_its_statements_once(session: Session) -> None:
    """The queue's statements are cached with their parameters bound: leasing in a project of
    any order, again and again, adds no statement after the first lease."""
    labeler = make_user(session)
    projects = []
    for order in ("oldest", "uncertain", "disagreement"):
        project = make_project(session, k=2, overlap=2)
        update_project(session=session, project=project, queue_order=order)
        for i in range(3):
            make_prompt(session, project, text=f"{order} {i}", answers=2)
        projects.append(project)
        task = lease(session, project, labeler)
        assert task is not None
        submit(session, task, labeler, answers_of(task.prompt))
    size = queue._pick_statement.cache_info().currsize
    for project in projects:
        work_through(session, project, labeler)
        assert count_available(session=session, project=project, labeler=labeler,
                               kind=TaskKind.rank) == 0  # fmt: skip
    assert queue._pick_statement.cache_info().currsize == size


# --- disagreement itself ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rankings", "expected"),
    [
        ([], None),
        ([[[1], [2], [3]]], None),  # one labeler: nothing to disagree with
        ([[[1], [2], [3]], [[1], [2], [3]]], 0.0),
        ([[[1], [2], [3]], [[3], [2], [1]]], 1.0),
        ([[[1], [2], [3]], [[2], [1], [3]]], 1 / 3),
        # Pairs tied by either labeler are left out: only (1, 3) and (2, 3) are compared.
        ([[[1, 2], [3]], [[1], [2], [3]]], 0.0),
        ([[[1, 2], [3]], [[3], [1], [2]]], 1.0),
        # Three labelers: 3 labeler pairs x 3 answer pairs, 6 of them disagree.
        ([[[1], [2], [3]], [[1], [2], [3]], [[3], [2], [1]]], 2 / 3),
        ([[[1, 2, 3]], [[3], [2], [1]]], None),  # all tied: no pair ordered by both
        ([[], [[1], [2], [3]]], None),  # not rankable
    ],
)
def test_ranking_disagreement(rankings: list[list[list[int]]], expected: float | None) -> None:
    value = ranking_disagreement(rankings)
    assert value == (None if expected is None else pytest.approx(expected))


# --- settings: the service's rules ------------------------------------------------------------

BAD_SETTINGS = [
    (
        {"queue_order": "random"},
        "queue_order",
        "unknown queue order 'random'; choose one of oldest, uncertain, disagreement",
    ),
    ({"max_overlap": 2}, "max_overlap", "max overlap must be at least the overlap (3), not 2"),
    ({"max_overlap": 101}, "max_overlap", "max overlap must be at most 100, not 101"),
    (
        {"overlap": 6, "max_overlap": KEEP},  # the stored max overlap is 5
        "max_overlap",
        "max overlap must be at least the overlap (6), not 5",
    ),
    (
        {"disagreement_threshold": 1.5},
        "disagreement_threshold",
        "the disagreement threshold is a share of answer pairs, between 0 and 1, not 1.5",
    ),
    (
        {"disagreement_threshold": -0.1},
        "disagreement_threshold",
        "the disagreement threshold is a share of answer pairs, between 0 and 1, not -0.1",
    ),
    (
        {"disagreement_threshold": math.nan},
        "disagreement_threshold",
        "the disagreement threshold is a share of answer pairs, between 0 and 1, not nan",
    ),
]


@pytest.mark.parametrize(("change", "field", "message"), BAD_SETTINGS)
def test_each_queue_setting_rule_has_a_clear_message(
    session: Session, change: dict[str, Any], field: str, message: str
) -> None:
    project = make_project(session, overlap=3)
    update_project(session=session, project=project, max_overlap=5)
    with pytest.raises(ProjectFormError) as caught:
        update_project(session=session, project=project, **change)
    assert caught.value.errors == {field: message}
    assert (project.queue_order, project.overlap, project.max_overlap) == ("oldest", 3, 5)
    assert project.disagreement_threshold == 0.3


# --- settings through the JSON API ------------------------------------------------------------


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_an_admin_sets_the_queue_order_through_the_api(
    client: httpx.AsyncClient, session: Session
) -> None:
    project = make_project(session, k=3, overlap=2)
    _, token = create_api_token(session=session, user=make_admin(session))
    url = f"/api/v1/projects/{project.id}"
    body = {"queue_order": "disagreement", "max_overlap": 5, "disagreement_threshold": 0.25}
    r = await client.patch(url, json=body, headers=bearer(token))
    assert r.status_code == 200, r.text
    shown = r.json()
    assert {k: shown[k] for k in ("overlap", *body)} == {"overlap": 2, **body}
    assert (await client.get(url, headers=bearer(token))).json() == shown
    session.refresh(project)
    assert (project.queue_order, project.extra_overlap) == ("disagreement", 5)
    event = session.scalars(select(AuditEvent).where(AuditEvent.action == "project.update")).one()
    assert event.details["queue_order"] == ["oldest", "disagreement"]
    assert event.details["via"] == "api"

    # Left out: kept. null: the default max overlap (overlap + 2).
    r = await client.patch(url, json={"max_overlap": None}, headers=bearer(token))
    assert r.status_code == 200
    assert (r.json()["queue_order"], r.json()["max_overlap"]) == ("disagreement", None)
    session.refresh(project)
    assert project.extra_overlap == 4


API_BAD = [
    (
        {"queue_order": "random"},
        "body.queue_order: Input should be 'oldest', 'uncertain' or 'disagreement'",
    ),
    ({"max_overlap": 1}, "max overlap must be at least the overlap (3), not 1"),
    # the bounds are in the schema, so OpenAPI clients see them too
    (
        {"disagreement_threshold": 2},
        "body.disagreement_threshold: Input should be less than or equal to 1",
    ),
    (
        {"overlap": 0, "queue_order": "uncertain"},
        "body.overlap: Input should be greater than or equal to 1",
    ),
    ({"disagreement_threshold": False}, "body.disagreement_threshold: Input should be a valid"),
    ({"name": "Renamed"}, "body.name: Extra inputs are not permitted"),
    ({"max_overlap": "lots"}, "body.max_overlap: Input should be a valid integer"),
]


@pytest.mark.parametrize(("body", "detail"), API_BAD)
async def test_bad_queue_settings_through_the_api_change_nothing(
    client: httpx.AsyncClient, session: Session, body: dict[str, Any], detail: str
) -> None:
    project = make_project(session, overlap=3)
    _, token = create_api_token(session=session, user=make_admin(session))
    r = await client.patch(f"/api/v1/projects/{project.id}", json=body, headers=bearer(token))
    assert r.status_code == 422
    assert r.json()["detail"].startswith(detail), r.json()
    session.refresh(project)
    assert (project.queue_order, project.overlap, project.max_overlap) == ("oldest", 3, None)


async def test_only_admins_change_queue_settings_through_the_api(
    client: httpx.AsyncClient, session: Session
) -> None:
    project = make_project(session)
    _, labeler_token = create_api_token(session=session, user=make_user(session))
    _, admin_token = create_api_token(session=session, user=make_admin(session))
    body = {"queue_order": "uncertain"}
    r = await client.patch(
        f"/api/v1/projects/{project.id}", json=body, headers=bearer(labeler_token)
    )
    assert r.status_code == 403
    missing = await client.patch("/api/v1/projects/999999", json=body, headers=bearer(admin_token))
    assert missing.status_code == 404 and missing.json() == {"detail": "no project '999999'"}
    session.refresh(project)
    assert project.queue_order == "oldest"


# --- settings on the edit page ----------------------------------------------------------------

FORM = {
    "name": "Queue project",
    "description": "",
    "k": "2",
    "overlap": "3",
    "likert": "true",
    "flags": "\n".join(DEFAULT_FLAGS),
    "guidelines": "",
    "gold_rate_pct": "0",
    "queue_order": "disagreement",
    "max_overlap": "5",
    "disagreement_threshold": "0.25",
}


async def _admin_page(client: httpx.AsyncClient, session: Session) -> str:
    await login(client, make_admin(session))
    return await csrf_token(client, "/admin/projects/new")


async def test_the_edit_page_sets_the_queue_order(
    client: httpx.AsyncClient, session: Session
) -> None:
    project = make_project(session, name="Queue project", k=2, overlap=3)
    token = await _admin_page(client, session)
    page = (await client.get(f"/admin/projects/{project.id}/edit")).text
    assert '<option value="oldest" selected>Oldest first</option>' in page
    assert '<option value="uncertain">Most uncertain first</option>' in page
    assert 'name="max_overlap" value=""' in page
    assert 'name="disagreement_threshold" value="0.3"' in page
    text = visible_text(page)
    assert "Prompts whose answers the reward model scores closest (from rlhf score)" in text
    assert "serves oldest first until rlhf score PROJECT --reward VERSION has run" in text

    r = await client.post(f"/admin/projects/{project.id}", data={**FORM, "csrf_token": token})
    assert r.status_code == 303, r.text
    session.refresh(project)
    assert (project.queue_order, project.max_overlap) == ("disagreement", 5)
    assert project.disagreement_threshold == 0.25
    event = session.scalars(select(AuditEvent).where(AuditEvent.action == "project.update")).one()
    assert event.details == {
        "queue_order": ["oldest", "disagreement"],
        "max_overlap": [None, 5],
        "disagreement_threshold": [0.3, 0.25],
    }
    detail = visible_text((await client.get(r.headers["location"])).text)
    assert "Queue order More rankings where labelers disagree (up to 5 above 0.25)" in detail

    # A blank max overlap is the default again; the form shows what is stored.
    data = {**FORM, "queue_order": "uncertain", "max_overlap": " ", "csrf_token": token}
    assert (await client.post(f"/admin/projects/{project.id}", data=data)).status_code == 303
    session.refresh(project)
    assert (project.queue_order, project.max_overlap) == ("uncertain", None)
    page = (await client.get(f"/admin/projects/{project.id}/edit")).text
    assert '<option value="uncertain" selected>Most uncertain first</option>' in page
    assert 'name="disagreement_threshold" value="0.25"' in page


async def test_the_unscored_note_goes_once_the_project_has_scores(
    client: httpx.AsyncClient, session: Session
) -> None:
    project = make_project(session, k=2)
    prompt = make_prompt(session, project, answers=2)
    await _admin_page(client, session)
    url = f"/admin/projects/{project.id}/edit"
    assert 'id="queue-order-unscored"' in (await client.get(url)).text
    score(session, project, reward_model(session), {prompt.id: [0.2, 0.9]})
    assert 'id="queue-order-unscored"' not in (await client.get(url)).text


async def test_a_new_project_can_start_with_a_queue_order(
    client: httpx.AsyncClient, session: Session
) -> None:
    token = await _admin_page(client, session)
    new = (await client.get("/admin/projects/new")).text
    assert '<option value="oldest" selected>' in new and 'id="queue-order-unscored"' in new
    r = await client.post("/admin/projects", data={**FORM, "csrf_token": token})
    assert r.status_code == 303, r.text
    project = session.scalars(select(Project).where(Project.name == FORM["name"])).one()
    assert (project.queue_order, project.max_overlap, project.disagreement_threshold) == (
        "disagreement", 5, 0.25,
    )  # fmt: skip


FORM_BAD = [
    (
        {"queue_order": "random"},
        "queue_order",
        "Unknown queue order &#39;random&#39;; choose one of oldest, uncertain, disagreement.",
    ),
    ({"max_overlap": "2"}, "max_overlap", "Max overlap must be at least the overlap (3), not 2."),
    ({"max_overlap": "lots"}, "max_overlap", "Max overlap must be a whole number."),
    (
        {"disagreement_threshold": "1.5"},
        "disagreement_threshold",
        "The disagreement threshold is a share of answer pairs, between 0 and 1, not 1.5.",
    ),
    (
        {"disagreement_threshold": "a third"},
        "disagreement_threshold",
        "The disagreement threshold must be a number.",
    ),
]


@pytest.mark.parametrize(("change", "field", "message"), FORM_BAD)
async def test_bad_queue_settings_are_shown_next_to_their_field(
    client: httpx.AsyncClient, session: Session, change: dict[str, str], field: str, message: str
) -> None:
    project = make_project(session, name="Queue project", k=2, overlap=3)
    token = await _admin_page(client, session)
    data = {**FORM, **change, "csrf_token": token}
    r = await client.post(f"/admin/projects/{project.id}", data=data)
    assert r.status_code == 422
    assert field_error(r.text, field) == message
    assert "One field needs a change" in r.text
    if field != "queue_order":  # what was typed is shown back
        assert f'name="{field}" value="{change[field]}"' in r.text
    session.refresh(project)
    assert (project.queue_order, project.max_overlap) == ("oldest", None)


async def test_the_queue_settings_form_needs_its_csrf_token(
    client: httpx.AsyncClient, session: Session
) -> None:
    project = make_project(session, name="Queue project", k=2, overlap=3)
    await _admin_page(client, session)
    r = await client.post(f"/admin/projects/{project.id}", data=FORM)
    assert r.status_code == 403
    session.refresh(project)
    assert project.queue_order == "oldest"


# --- settings with the CLI ---------------------------------------------------------------------


def test_the_cli_sets_and_shows_the_queue_order(tmp_path: Path) -> None:
    env = rlhf_env(f"sqlite:///{tmp_path / 'cli.db'}", tmp_path / "data")
    assert rlhf(env, "db", "upgrade").returncode == 0
    created = rlhf(env, "projects", "create", "Active", "--queue-order", "uncertain")
    assert created.returncode == 0, created.stderr
    shown = json.loads(rlhf(env, "projects", "show", "Active", "--json").stdout)
    assert (shown["queue_order"], shown["max_overlap"], shown["disagreement_threshold"]) == (
        "uncertain", None, 0.3,
    )  # fmt: skip

    changed = rlhf(env, "projects", "update", "Active", "--queue-order", "disagreement",
                   "--max-overlap", "6", "--disagreement-threshold", "0.4")  # fmt: skip
    assert changed.returncode == 0, changed.stderr
    assert changed.stdout.splitlines()[0] == (
        "Active (id 1): K=4, overlap 3, queue disagreement (up to 6 rankings above 0.4 "
        "disagreement)"
    )
    listed = rlhf(env, "projects", "list").stdout
    assert "queue disagreement (up to 6 rankings above 0.4 disagreement)" in listed
    back = rlhf(env, "projects", "update", "1", "--max-overlap", "default", "--json")
    data = json.loads(back.stdout)
    assert (data["queue_order"], data["max_overlap"], data["disagreement_threshold"]) == (
        "disagreement", None, 0.4,
    )  # fmt: skip

    bad = [
        (
            ["projects", "update", "Active", "--queue-order", "random"],
            "error: Invalid value for '--queue-order'",
        ),
        (
            ["projects", "update", "Active", "--max-overlap", "2"],
            "error: max overlap must be at least the overlap (3), not 2",
        ),
        (
            ["projects", "update", "Active", "--max-overlap", "lots"],
            "error: --max-overlap takes a whole number or 'default', not 'lots'",
        ),
        (
            ["projects", "create", "Other", "--disagreement-threshold", "1.5"],
            "error: the disagreement threshold is a share of answer pairs, between 0 and 1, "
            "not 1.5",
        ),
        (["projects", "update", "Nope", "--queue-order", "oldest"], "error: no project 'Nope'"),
    ]
    for args, message in bad:
        result = rlhf(env, *args)
        assert result.returncode == 2, (args, result.stderr)
        assert result.stderr.startswith(message), result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    again = json.loads(rlhf(env, "projects", "show", "1", "--json").stdout)
    assert again == data
    assert json.loads(rlhf(env, "projects", "list", "--json").stdout)[0]["name"] == "Active"
