"""The queue's rules (design §4): overlap, exclusions, leases, gold, idempotent submits."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.auth.models import User
from app.db import utcnow
from app.labeling.models import (
    Assignment,
    AssignmentState,
    Comparison,
    Completion,
    Demonstration,
    Prompt,
    PromptSource,
    TaskKind,
    text_sha256,
)
from app.labeling.queue import Task, count_available, lease_next_task
from app.labeling.service import (
    SubmissionError,
    TaskConflict,
    save_draft,
    set_gold_ranking,
    skip_task,
    submit_demonstration,
    submit_prompt,
    submit_ranking,
)
from app.projects.models import Project
from tests.helpers import make_admin, make_project, make_prompt, make_user

LEASE = timedelta(minutes=30)


def lease(
    session: Session, project: Project, user: User, kind: TaskKind = TaskKind.rank
) -> Task | None:
    return lease_next_task(
        session=session,
        project=project,
        labeler=user,
        kind=kind,
        lease_for=LEASE,
        rng=random.Random(7),
    )


def rank_all(session: Session, task: Task, user: User, **kw: object) -> int:
    ranking = [[c.id] for c in task.completions]
    return submit_ranking(
        session=session,
        assignment_id=task.id,
        labeler=user,
        ranking=ranking,
        **kw,  # type: ignore[arg-type]
    ).id


def test_each_prompt_gets_overlap_rankings_then_no_more(session: Session) -> None:
    project = make_project(session, k=4, overlap=2)
    prompts = [make_prompt(session, project, text=f"p{i}") for i in range(3)]
    labelers = [make_user(session) for _ in range(4)]
    done: dict[int, int] = {}
    for user in labelers:
        while (task := lease(session, project, user)) is not None:
            rank_all(session, task, user)
            done[task.prompt.id] = done.get(task.prompt.id, 0) + 1
    assert done == {p.id: 2 for p in prompts}
    surplus = session.scalar(select(func.count()).where(Comparison.is_surplus.is_(True)))
    assert surplus == 0


def test_every_labeler_ranks_the_same_k_answers_in_their_own_order(session: Session) -> None:
    """Of a prompt's 6 answers, each labeler is shown the same 4 (so their rankings can be
    compared), in a recorded order of their own (so position bias can be measured)."""
    project = make_project(session, k=4, overlap=3)
    prompt = make_prompt(session, project, answers=6)
    a, b = make_user(session), make_user(session)
    task_a = lease_next_task(
        session=session,
        project=project,
        labeler=a,
        kind=TaskKind.rank,
        lease_for=LEASE,
        rng=random.Random(1),
    )
    task_b = lease_next_task(
        session=session,
        project=project,
        labeler=b,
        kind=TaskKind.rank,
        lease_for=LEASE,
        rng=random.Random(2),
    )
    assert task_a is not None and task_b is not None
    all_ids = {c.id for c in prompt.completions}
    for task in (task_a, task_b):
        shown = [c.id for c in task.completions]
        assert len(shown) == 4 and set(shown) <= all_ids
        assert task.assignment.display_order == shown
    assert task_a.assignment.display_order != task_b.assignment.display_order
    assert set(task_a.assignment.display_order) == set(task_b.assignment.display_order)


def test_prompts_with_fewer_than_k_answers_are_not_served(session: Session) -> None:
    project = make_project(session, k=4)
    make_prompt(session, project, answers=3)
    assert lease(session, project, make_user(session)) is None


def test_never_your_own_prompt_or_demonstration(session: Session) -> None:
    project = make_project(session, k=2, overlap=3)
    author = make_user(session)
    own = submit_prompt(session=session, project=project, labeler=author, text="mine")
    for i in range(2):
        session.add(
            Completion(
                prompt_id=own.id, text=f"a{i}", text_sha256=text_sha256(f"a{i}"), origin="import:t"
            )
        )
    other = make_prompt(session, project, text="other", answers=1)
    demo = Demonstration(prompt_id=other.id, author_id=author.id, text="my answer")
    session.add(demo)
    session.flush()
    session.add(
        Completion(
            prompt_id=other.id,
            text="my answer",
            text_sha256=text_sha256("my answer"),
            origin="demonstration",
            demonstration_id=demo.id,
        )
    )
    session.flush()
    assert lease(session, project, author) is None
    someone = make_user(session)
    served = {lease(session, project, someone).prompt.id}  # type: ignore[union-attr]
    assert served <= {own.id, other.id}


def test_a_skipped_task_is_never_served_again(session: Session) -> None:
    project = make_project(session, k=4)
    make_prompt(session, project)
    user = make_user(session)
    task = lease(session, project, user)
    assert task is not None
    skip_task(session=session, assignment_id=task.id, labeler=user, reason="not my language")
    assert lease(session, project, user) is None
    # ... but another labeler gets it.
    assert lease(session, project, make_user(session)) is not None


def test_skip_needs_a_reason(session: Session) -> None:
    project = make_project(session, k=4)
    make_prompt(session, project)
    user = make_user(session)
    task = lease(session, project, user)
    assert task is not None
    with pytest.raises(SubmissionError, match="Say why"):
        skip_task(session=session, assignment_id=task.id, labeler=user, reason="  ")


def test_asking_again_gives_back_the_task_in_hand(session: Session) -> None:
    project = make_project(session, k=4)
    make_prompt(session, project, text="one")
    make_prompt(session, project, text="two")
    user = make_user(session)
    first = lease(session, project, user)
    again = lease(session, project, user)
    assert first is not None and again is not None
    assert again.id == first.id and again.resumed
    assert again.completions == first.completions


def test_an_expired_lease_returns_to_the_pool(session: Session) -> None:
    project = make_project(session, k=4, overlap=1)
    make_prompt(session, project)
    slow, other = make_user(session), make_user(session)
    task = lease(session, project, slow)
    assert task is not None
    assert lease(session, project, other) is None  # the only slot is leased
    task.assignment.expires_at = utcnow() - timedelta(seconds=1)
    session.flush()
    taken = lease(session, project, other)
    assert taken is not None and taken.prompt.id == task.prompt.id


def test_a_late_submission_is_kept_and_marked_surplus(session: Session) -> None:
    project = make_project(session, k=4, overlap=1)
    make_prompt(session, project)
    slow, fast = make_user(session), make_user(session)
    slow_task = lease(session, project, slow)
    assert slow_task is not None
    slow_task.assignment.expires_at = utcnow() - timedelta(seconds=1)
    session.flush()
    fast_task = lease(session, project, fast)
    assert fast_task is not None
    rank_all(session, fast_task, fast)
    late_id = rank_all(session, slow_task, slow)
    late = session.get_one(Comparison, late_id)
    assert late.is_surplus
    assert session.scalar(select(func.count()).select_from(Comparison)) == 2


def test_an_expired_lease_on_a_full_prompt_is_not_given_back(session: Session) -> None:
    project = make_project(session, k=4, overlap=1)
    make_prompt(session, project, text="a")
    second = make_prompt(session, project, text="b")
    slow, fast = make_user(session), make_user(session)
    slow_task = lease(session, project, slow)
    assert slow_task is not None
    slow_task.assignment.expires_at = utcnow() - timedelta(seconds=1)
    session.flush()
    fast_task = lease(session, project, fast)
    assert fast_task is not None and fast_task.prompt.id == slow_task.prompt.id
    rank_all(session, fast_task, fast)
    back = lease(session, project, slow)
    assert back is not None and back.prompt.id == second.id
    session.refresh(slow_task.assignment)
    assert slow_task.assignment.state == AssignmentState.expired


def test_submitting_twice_stores_one_ranking(session: Session) -> None:
    project = make_project(session, k=4)
    make_prompt(session, project)
    user = make_user(session)
    task = lease(session, project, user)
    assert task is not None
    first = rank_all(session, task, user)
    second = rank_all(session, task, user)
    assert first == second
    assert session.scalar(select(func.count()).select_from(Comparison)) == 1
    with pytest.raises(TaskConflict):
        submit_ranking(
            session=session,
            assignment_id=task.id,
            labeler=user,
            ranking=[[c.id for c in task.completions]],
        )


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda ids, other: [[i] for i in ids[:-1]], "is not ranked yet"),
        (lambda ids, other: [[i] for i in ids] + [[other]], "is not one of this task's answers"),
        (lambda ids, other: [[i] for i in ids] + [[ids[0]]], "is ranked more than once"),
        (lambda ids, other: [["x"]], "is not an answer id"),
    ],
)
def test_bad_rankings_are_refused_with_a_reason(session: Session, mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    project = make_project(session, k=4)
    make_prompt(session, project, text="mine")
    foreign = make_prompt(session, project, text="another").completions[0].id
    user = make_user(session)
    task = lease(session, project, user)
    assert task is not None
    ids = [c.id for c in task.completions]
    with pytest.raises(SubmissionError, match=message):
        submit_ranking(
            session=session, assignment_id=task.id, labeler=user, ranking=mutate(ids, foreign)
        )
    assert session.scalar(select(func.count()).select_from(Comparison)) == 0


def test_ties_ratings_flags_and_not_rankable(session: Session) -> None:
    project = make_project(session, k=4)
    make_prompt(session, project)
    make_prompt(session, project, text="second")
    user = make_user(session)
    task = lease(session, project, user)
    assert task is not None
    a, b, c, d = (x.id for x in task.completions)
    cid = submit_ranking(
        session=session,
        assignment_id=task.id,
        labeler=user,
        ranking=[[c], [a, d], [b]],
        ratings={c: 7, b: 1},
        flags={b: ["harmful", "hallucination"]},
    ).id
    stored = session.get_one(Comparison, cid)
    assert stored.ranking == [[c], sorted([a, d]), [b]]
    assert stored.ratings == {str(c): 7, str(b): 1}
    assert stored.flags == {str(b): ["hallucination", "harmful"]}
    with pytest.raises(SubmissionError, match="Ratings go from 1 to 7"):
        submit_ranking(
            session=session,
            assignment_id=task.id,
            labeler=user,
            ranking=[[a, b, c, d]],
            ratings={a: 8},
        )
    with pytest.raises(SubmissionError, match="Unknown flag"):
        submit_ranking(
            session=session,
            assignment_id=task.id,
            labeler=user,
            ranking=[[a, b, c, d]],
            flags={a: ["rude"]},
        )
    nxt = lease(session, project, user)
    assert nxt is not None
    bad = submit_ranking(
        session=session, assignment_id=nxt.id, labeler=user, ranking=[], not_rankable=True
    )
    assert session.get_one(Comparison, bad.id).not_rankable


def test_someone_elses_task_looks_missing(session: Session) -> None:
    from app.errors import NotFoundError

    project = make_project(session, k=4)
    make_prompt(session, project)
    owner, intruder = make_user(session), make_user(session)
    task = lease(session, project, owner)
    assert task is not None
    with pytest.raises(NotFoundError):
        rank_all(session, task, intruder)


def test_demonstrations_queue_with_draft_that_survives_a_lost_lease(session: Session) -> None:
    project = make_project(session, k=4)
    prompt = make_prompt(session, project, answers=0)
    user = make_user(session)
    task = lease(session, project, user, TaskKind.demonstration)
    assert task is not None and task.prompt.id == prompt.id
    save_draft(session=session, assignment_id=task.id, labeler=user, text="Half of my answer")
    task.assignment.expires_at = utcnow() - timedelta(hours=2)
    session.flush()
    back = lease(session, project, user, TaskKind.demonstration)
    assert back is not None and back.id == task.id and back.assignment.draft == "Half of my answer"
    submitted = submit_demonstration(
        session=session, assignment_id=task.id, labeler=user, text="My whole answer."
    )
    again = submit_demonstration(
        session=session, assignment_id=task.id, labeler=user, text="My whole answer."
    )
    assert submitted.id == again.id and submitted.created and not again.created
    # A prompt with a demonstration leaves the demonstration queue.
    assert lease(session, project, make_user(session), TaskKind.demonstration) is None


def test_the_demonstration_queue_holds_every_prompt_and_serves_unanswered_ones_first(
    session: Session,
) -> None:
    """Any prompt without a demonstration may get one (SFT data); those without answers come
    first, since a demonstration is the only work they can get. Oldest first within each."""
    project = make_project(session, k=4)
    answered = [make_prompt(session, project, text=f"Ranked {i}") for i in range(2)]
    unanswered = [make_prompt(session, project, text=f"Open {i}", answers=0) for i in range(2)]
    user = make_user(session)
    assert (
        count_available(session=session, project=project, labeler=user, kind=TaskKind.demonstration)
        == 4
    )
    served = []
    for _ in range(4):
        task = lease(session, project, user, TaskKind.demonstration)
        assert task is not None
        served.append(task.prompt.id)
        submit_demonstration(session=session, assignment_id=task.id, labeler=user, text="Mine.")
    assert served == [p.id for p in unanswered + answered]


@pytest.mark.parametrize(
    ("text", "message"),
    [("   ", "is empty"), ("a\x00b", "NUL character"), ("x" * 100_001, "the limit is 100,000")],
)
def test_bad_demonstration_text_is_refused(session: Session, text: str, message: str) -> None:
    project = make_project(session, k=4)
    make_prompt(session, project, answers=0)
    user = make_user(session)
    task = lease(session, project, user, TaskKind.demonstration)
    assert task is not None
    with pytest.raises(SubmissionError, match=message):
        submit_demonstration(session=session, assignment_id=task.id, labeler=user, text=text)


def test_gold_prompts_are_mixed_in_and_not_limited_by_overlap(session: Session) -> None:
    project = make_project(session, k=4, overlap=1)
    project.gold_rate = 1.0
    gold_prompt = make_prompt(session, project, text="gold")
    make_prompt(session, project, text="regular")
    set_gold_ranking(
        session=session,
        prompt=gold_prompt,
        ranking=[[c.id] for c in gold_prompt.completions],
        admin=make_admin(session),
    )
    for _ in range(3):  # every labeler gets the gold prompt first, beyond the overlap of 1
        user = make_user(session)
        task = lease(session, project, user)
        assert task is not None and task.prompt.id == gold_prompt.id and task.assignment.is_gold
        assert not session.get_one(Comparison, rank_all(session, task, user)).is_surplus
    project.gold_rate = 0.0
    user = make_user(session)
    task = lease(session, project, user)
    assert task is not None and task.prompt.id != gold_prompt.id


def test_queue_size_counts_what_is_left(session: Session) -> None:
    project = make_project(session, k=4, overlap=1)
    for i in range(3):
        make_prompt(session, project, text=f"q{i}")
    user = make_user(session)
    assert count_available(session=session, project=project, labeler=user, kind=TaskKind.rank) == 3
    task = lease(session, project, user)
    assert task is not None
    rank_all(session, task, user)
    assert count_available(session=session, project=project, labeler=user, kind=TaskKind.rank) == 2


def test_labeler_prompts_are_stored_with_their_submitter(session: Session) -> None:
    project = make_project(session)
    user = make_user(session)
    prompt = submit_prompt(
        session=session,
        project=project,
        labeler=user,
        text="Explain tides.",
        demonstration="The moon pulls...",
    )
    assert prompt.source == PromptSource.labeler and prompt.submitter_id == user.id
    assert (
        session.scalar(select(Demonstration.text).where(Demonstration.prompt_id == prompt.id))
        == "The moon pulls..."
    )
    assert (
        session.scalar(
            select(func.count()).select_from(Prompt).where(Prompt.project_id == project.id)
        )
        == 1
    )
    assert session.scalar(select(func.count()).select_from(Assignment)) == 0


def test_raising_the_overlap_reopens_full_prompts(session: Session) -> None:
    from app.projects.service import update_project

    project = make_project(session, k=4, overlap=1)
    make_prompt(session, project)
    first, second = make_user(session), make_user(session)
    task = lease(session, project, first)
    assert task is not None
    rank_all(session, task, first)
    assert lease(session, project, second) is None  # full at overlap 1
    update_project(session=session, project=project, overlap=2)
    again = lease(session, project, second)
    assert again is not None and again.prompt.id == task.prompt.id


def test_queue_size_is_counted_up_to_a_limit(session: Session) -> None:
    from app.web.templating import templates

    project = make_project(session, k=4, overlap=1)
    for i in range(3):
        make_prompt(session, project, text=f"c{i}")
    user = make_user(session)
    assert (
        count_available(session=session, project=project, labeler=user, kind=TaskKind.rank, limit=2)
        == 2
    )
    shown = templates.env.filters["queue_count"]
    assert (shown(499), shown(500)) == ("499", "500+")
