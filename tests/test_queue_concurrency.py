"""Concurrent labelers on real connections (SQLite and Postgres): nothing lost, nothing
doubled, overlap kept. Data is committed here (threads need it), then deleted."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest
from sqlalchemy import Engine, delete, func, select
from sqlalchemy.orm import Session, sessionmaker

from app.auth.models import User
from app.db import make_session_factory, utcnow
from app.labeling.models import Assignment, Comparison, TaskKind
from app.labeling.queue import lease_next_task
from app.labeling.service import submit_ranking
from app.projects.models import Project
from tests.helpers import make_project, make_prompt, make_user

LEASE = timedelta(minutes=30)


@pytest.fixture
def factory(engine: Engine) -> sessionmaker[Session]:
    return make_session_factory(engine, writes=True)


@pytest.fixture
def world(factory: sessionmaker[Session]) -> Iterator[Callable[..., tuple[int, list[int]]]]:
    created: list[tuple[int, list[int]]] = []

    def build(*, labelers: int, prompts: int, k: int, overlap: int) -> tuple[int, list[int]]:
        with factory() as s:
            project = make_project(s, k=k, overlap=overlap)
            for i in range(prompts):
                make_prompt(s, project, text=f"prompt {i}", answers=k)
            users = [make_user(s).id for _ in range(labelers)]
            s.commit()
            created.append((project.id, users))
            return project.id, users

    yield build
    with factory() as s:
        for project_id, users in created:
            s.execute(delete(Project).where(Project.id == project_id))
            s.execute(delete(User).where(User.id.in_(users)))
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


def work_until_empty(factory: sessionmaker[Session], project_id: int, user_id: int) -> None:
    while True:
        with factory() as s:
            project, user = s.get_one(Project, project_id), s.get_one(User, user_id)
            task = lease_next_task(
                session=s, project=project, labeler=user, kind=TaskKind.rank, lease_for=LEASE
            )
            s.commit()
            if task is None:
                return
            ranking = [[c.id] for c in task.completions]
            task_id = task.id
        with factory() as s:
            user = s.get_one(User, user_id)
            submit_ranking(session=s, assignment_id=task_id, labeler=user, ranking=ranking)
            s.commit()


def test_concurrent_labelers_keep_overlap_and_lose_nothing(
    factory: sessionmaker[Session], world: Callable[..., tuple[int, list[int]]]
) -> None:
    project_id, users = world(labelers=8, prompts=12, k=2, overlap=3)
    run_threads([lambda u=u: work_until_empty(factory, project_id, u) for u in users])
    with factory() as s:
        rows = s.execute(
            select(
                Comparison.prompt_id, func.count(), func.count(func.distinct(Comparison.labeler_id))
            )
            .join(Assignment, Assignment.id == Comparison.assignment_id)
            .where(Comparison.labeler_id.in_(users))
            .group_by(Comparison.prompt_id)
        ).all()
        surplus = s.scalar(
            select(func.count()).where(Comparison.labeler_id.in_(users), Comparison.is_surplus)
        )
    assert len(rows) == 12
    assert all(n == 3 and distinct == 3 for _, n, distinct in rows), rows
    assert surplus == 0


def test_two_labelers_racing_for_the_last_slot_are_both_kept(
    factory: sessionmaker[Session], world: Callable[..., tuple[int, list[int]]]
) -> None:
    project_id, (slow_id, fast_id) = world(labelers=2, prompts=1, k=4, overlap=1)
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


def test_a_double_click_stores_one_ranking(
    factory: sessionmaker[Session], world: Callable[..., tuple[int, list[int]]]
) -> None:
    project_id, (user_id,) = world(labelers=1, prompts=1, k=4, overlap=3)
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
