"""Concurrent labelers on real connections (SQLite and Postgres): nothing lost, nothing
doubled, each prompt's cap kept, in every queue order. Data is committed here (threads need
it), then deleted."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest
from sqlalchemy import Engine, delete, exists, func, select
from sqlalchemy.orm import Session, sessionmaker

from app.auth.models import User
from app.db import make_session_factory, utcnow
from app.labeling.models import Assignment, AssignmentState, Comparison, Prompt, TaskKind
from app.labeling.queue import lease_next_task, rank_cap
from app.labeling.service import ranking_disagreement, submit_ranking
from app.models_registry.models import ModelVersion
from app.projects.models import QUEUE_ORDERS, Project
from app.projects.service import update_project
from tests.helpers import make_project, make_prompt, make_user
from tests.test_queue_orders import check_caps, counted_rankings, reward_model, score

LEASE = timedelta(minutes=30)


@pytest.fixture
def factory(engine: Engine) -> sessionmaker[Session]:
    return make_session_factory(engine, writes=True)


@pytest.fixture
def world(factory: sessionmaker[Session]) -> Iterator[Callable[..., tuple[int, list[int]]]]:
    created: list[tuple[int, list[int]]] = []
    versions: list[int] = []

    def build(
        *, labelers: int, prompts: int, k: int, overlap: int, order: str = "oldest"
    ) -> tuple[int, list[int]]:
        """``order="uncertain"`` also scores every answer (random scores, a seeded draw)."""
        with factory() as s:
            project = make_project(s, k=k, overlap=overlap)
            update_project(session=s, project=project, queue_order=order)
            rows = [make_prompt(s, project, text=f"prompt {i}", answers=k) for i in range(prompts)]
            if order == "uncertain":
                draw = random.Random(11)
                version = reward_model(s)
                versions.append(version.id)
                score(s, project, version, {p.id: [draw.random() for _ in range(k)] for p in rows})
            users = [make_user(s).id for _ in range(labelers)]
            s.commit()
            created.append((project.id, users))
            return project.id, users

    yield build
    with factory() as s:
        for project_id, users in created:
            s.execute(delete(Project).where(Project.id == project_id))
            s.execute(delete(User).where(User.id.in_(users)))
        s.execute(delete(ModelVersion).where(ModelVersion.id.in_(versions)))
        s.commit()


def run_threads(targets: list[Callable[[], None]]) -> None:
    errors: list[BaseException] = []

    def guard(fn: Callable[[], None]) -> None:
        try:
            fn()
        except BaseException as exc:  # surfaced below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=guard, args=(t,)) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors


def work_until_empty(
    factory: sessionmaker[Session], project_id: int, user_id: int, done: list[int] | None = None
) -> None:
    """Lease and submit (ranking in display order) until nothing is left and nobody else is
    at work on the project (a submit can reopen a prompt under `disagreement`, and a prompt
    another lease has locked is passed over for now); each stored submission's id goes to
    ``done``."""
    while True:
        with factory() as s:
            project, user = s.get_one(Project, project_id), s.get_one(User, user_id)
            task = lease_next_task(
                session=s, project=project, labeler=user, kind=TaskKind.rank, lease_for=LEASE
            )
            s.commit()
            if task is None:
                if not _others_at_work(s, project_id):
                    return
                time.sleep(0.01)
                continue
            ranking = [[c.id] for c in task.completions]
            task_id = task.id
        with factory() as s:
            user = s.get_one(User, user_id)
            submitted = submit_ranking(
                session=s, assignment_id=task_id, labeler=user, ranking=ranking
            )
            s.commit()
            if done is not None:
                done.append(submitted.id)


def _others_at_work(session: Session, project_id: int) -> bool:
    live = exists().where(
        Assignment.prompt_id == Prompt.id,
        Assignment.state == AssignmentState.leased,
        Assignment.expires_at > utcnow(),
    )
    found = session.scalar(select(Prompt.id).where(Prompt.project_id == project_id, live).limit(1))
    session.rollback()
    return found is not None


@pytest.mark.parametrize("order", QUEUE_ORDERS)
def test_concurrent_labelers_keep_each_prompts_cap_and_lose_nothing(
    factory: sessionmaker[Session], world: Callable[..., tuple[int, list[int]]], order: str
) -> None:
    """Under `disagreement` the labelers' random orders (K=2) leave about half the prompt
    pairs disagreeing, so many prompts take extra rankings up to the cap (5) while others stop
    at 3; a slot leased just before the labelers came to agree is kept as surplus."""
    project_id, users = world(labelers=8, prompts=12, k=2, overlap=3, order=order)
    done: list[int] = []
    run_threads([lambda u=u: work_until_empty(factory, project_id, u, done) for u in users])
    with factory() as s:
        project = s.get_one(Project, project_id)
        prompts = s.scalars(select(Prompt).where(Prompt.project_id == project_id)).all()
        stored = s.scalars(select(Comparison.id).where(Comparison.labeler_id.in_(users))).all()
        counts = check_caps(s, project, [p.id for p in prompts])
        for prompt in prompts:
            # Every prompt got the rankings it wanted, and its disagreement is that of its
            # counted rankings (the submits kept it under the row lock).
            rankings = [c.ranking for c in counted_rankings(s, prompt.id)]
            assert prompt.disagreement == ranking_disagreement(rankings), prompt.id
            cap = rank_cap(project=project, disagreement=prompt.disagreement)
            assert counts[prompt.id] >= cap and prompt.rank_full, (prompt.id, counts[prompt.id])
        surplus = s.scalar(
            select(func.count()).where(Comparison.labeler_id.in_(users), Comparison.is_surplus)
        )
    assert sorted(stored) == sorted(done) and len(set(done)) == len(done)  # each stored once
    if order != "disagreement":
        assert set(counts.values()) == {3} and surplus == 0
    else:
        assert max(counts.values()) > 3, counts  # the extra slots were used
        assert set(counts.values()) <= {3, 4, 5}


@pytest.mark.parametrize("order", QUEUE_ORDERS)
def test_two_labelers_racing_for_the_last_slot_are_both_kept(
    factory: sessionmaker[Session], world: Callable[..., tuple[int, list[int]]], order: str
) -> None:
    project_id, (slow_id, fast_id) = world(labelers=2, prompts=1, k=4, overlap=1, order=order)
    tasks = {}
    for user_id in (slow_id, fast_id):
        with factory() as s:
            task = lease_next_task(
                session=s, project=s.get_one(Project, project_id),
                labeler=s.get_one(User, user_id), kind=TaskKind.rank, lease_for=LEASE,
            )  # fmt: skip
            assert task is not None, "both must get the prompt"
            tasks[user_id] = (task.id, [[c.id] for c in task.completions])
            if user_id == slow_id:  # the slow labeler's lease runs out before the fast one asks
                task.assignment.expires_at = utcnow() - timedelta(seconds=1)
            s.commit()

    def submit(user_id: int) -> None:
        task_id, ranking = tasks[user_id]
        with factory() as s:
            submit_ranking(
                session=s, assignment_id=task_id, labeler=s.get_one(User, user_id), ranking=ranking
            )
            s.commit()

    run_threads([lambda: submit(slow_id), lambda: submit(fast_id)])
    with factory() as s:
        stored = s.scalars(
            select(Comparison).where(Comparison.labeler_id.in_([slow_id, fast_id]))
        ).all()
    assert len(stored) == 2
    assert sorted(c.is_surplus for c in stored) == [False, True]


@pytest.mark.parametrize("order", QUEUE_ORDERS)
def test_a_double_click_stores_one_ranking(
    factory: sessionmaker[Session], world: Callable[..., tuple[int, list[int]]], order: str
) -> None:
    project_id, (user_id,) = world(labelers=1, prompts=1, k=4, overlap=3, order=order)
    with factory() as s:
        task = lease_next_task(
            session=s, project=s.get_one(Project, project_id), labeler=s.get_one(User, user_id),
            kind=TaskKind.rank, lease_for=LEASE,
        )  # fmt: skip
        assert task is not None
        task_id, ranking = task.id, [[c.id] for c in task.completions]
        s.commit()
    ids: list[int] = []

    def click() -> None:
        with factory() as s:
            result = submit_ranking(
                session=s, assignment_id=task_id, labeler=s.get_one(User, user_id), ranking=ranking
            )
            s.commit()
            ids.append(result.id)

    run_threads([click] * 4)
    with factory() as s:
        count = s.scalar(select(func.count()).where(Comparison.labeler_id == user_id))
    assert count == 1 and len(set(ids)) == 1 and len(ids) == 4
