"""``rlhf demo --feedback``: the simulated rankings behave like submitted tasks, so the queue
never hands a labeler a prompt they ranked, and the next round (new answers) is what they get;
on a demo people already label, the simulated labelers keep the queue's rules."""

from __future__ import annotations

import random
from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.auth.models import User
from app.auth.service import get_user_by_email
from app.db import utcnow
from app.demo.content import DEMO_DIALOGUES, DEMO_PROMPTS
from app.demo.feedback import simulate_feedback
from app.demo.seed import DEMO_LABELERS, seed_demo
from app.labeling.models import (
    Assignment,
    AssignmentState,
    Comparison,
    Completion,
    Demonstration,
    Prompt,
    TaskKind,
    text_sha256,
)
from app.labeling.queue import Task, lease_next_task
from app.labeling.service import skip_task, submit_ranking
from app.projects.models import Project
from tests.helpers import make_user

ANSWERED = len(DEMO_PROMPTS) + len(DEMO_DIALOGUES)  # the demo prompts with 4 answers

LEASE = timedelta(minutes=30)


def test_simulated_rankings_use_up_the_queue_like_submitted_tasks(session: Session) -> None:
    summary = seed_demo(session=session, fixed_passwords=True)
    project = session.get_one(Project, summary.project_id)
    done = simulate_feedback(session=session, project=project)
    assert done.rankings == 3 * ANSWERED
    ranked = set(session.scalars(select(Comparison.prompt_id).distinct()))
    full = set(session.scalars(select(Prompt.id).where(Prompt.rank_full.is_(True))))
    assert full == ranked and len(ranked) == ANSWERED  # overlap 3 reached by the 3 labelers

    labeler = get_user_by_email(session=session, email=DEMO_LABELERS[0])
    assert labeler is not None
    lease = timedelta(minutes=30)
    task = lease_next_task(
        session=session, project=project, labeler=labeler, kind=TaskKind.rank, lease_for=lease
    )
    assert task is None  # every answered prompt is ranked already; the open ones have no answers

    # The next round: a policy answers an open prompt, which becomes the labeler's task.
    open_prompt = session.scalars(
        select(Prompt).where(Prompt.project_id == project.id, Prompt.id.not_in(ranked))
    ).first()
    assert open_prompt is not None
    for i in range(project.k):
        text = f"policy answer {i}"
        session.add(Completion(prompt_id=open_prompt.id, text=text, text_sha256=text_sha256(text),
                               origin="model:1"))  # fmt: skip
    session.flush()
    task = lease_next_task(
        session=session, project=project, labeler=labeler, kind=TaskKind.rank, lease_for=lease
    )
    assert task is not None and task.prompt.id == open_prompt.id
    again = simulate_feedback(session=session, project=project)  # safe to run again
    assert again.rankings == 0
    assert session.scalar(select(func.count()).select_from(Comparison)) == 3 * ANSWERED


def _lease(session: Session, project: Project, labeler: User, kind: TaskKind) -> Task:
    task = lease_next_task(
        session=session, project=project, labeler=labeler, kind=kind, lease_for=LEASE,
        rng=random.Random(0),
    )  # fmt: skip
    assert task is not None
    return task


def _submit(session: Session, task: Task, labeler: User) -> bool:
    """Rank the task's answers in the order shown; True if the ranking is surplus."""
    order = task.assignment.display_order or []
    done = submit_ranking(
        session=session, assignment_id=task.id, labeler=labeler, ranking=[[a] for a in order]
    )
    return session.get_one(Comparison, done.id).is_surplus


def test_simulated_labelers_keep_the_queue_rules_on_a_demo_being_labeled(
    session: Session,
) -> None:
    summary = seed_demo(session=session, fixed_passwords=True)
    project = session.get_one(Project, summary.project_id)
    first, second, third = (get_user_by_email(session=session, email=e) for e in DEMO_LABELERS)
    assert first is not None and second is not None and third is not None
    outsider_a, outsider_b = make_user(session), make_user(session)

    # Real labeling, through the queue, before the simulation runs (prompts 1 and 2 are the
    # oldest answered ones, so the queue hands them out first):
    a, b = (
        _lease(session, project, outsider_a, TaskKind.rank),
        _lease(session, project, outsider_b, TaskKind.rank),
    )
    prompt_1 = a.prompt.id
    assert b.prompt.id == prompt_1  # two outsiders hold live leases on prompt 1
    skipped = _lease(session, project, first, TaskKind.rank)
    assert skipped.prompt.id == prompt_1
    skip_task(session=session, assignment_id=skipped.id, labeler=first, reason="not my field")
    held = _lease(session, project, first, TaskKind.rank)  # first holds prompt 2, live
    prompt_2 = held.prompt.id
    ranked = _lease(session, project, third, TaskKind.rank)
    assert ranked.prompt.id == prompt_1  # prompt 1's last slot
    assert not _submit(session, ranked, third)
    run_out = _lease(session, project, second, TaskKind.rank)
    assert run_out.prompt.id == prompt_2
    run_out.assignment.expires_at = utcnow() - timedelta(hours=1)  # second's lease ran out
    # Demonstrations: first skips the prompts without answers (the queue serves them first)
    # and prompt 1's, and holds prompt 2's.
    skipped_demo = _lease(session, project, first, TaskKind.demonstration)
    unanswered = 0
    while not skipped_demo.prompt.completions:
        skip_task(session=session, assignment_id=skipped_demo.id, labeler=first, reason="unsure")
        unanswered += 1
        skipped_demo = _lease(session, project, first, TaskKind.demonstration)
    assert unanswered == 4 and skipped_demo.prompt.id == prompt_1
    skip_task(session=session, assignment_id=skipped_demo.id, labeler=first, reason="unsure")
    held_demo = _lease(session, project, first, TaskKind.demonstration)
    assert held_demo.prompt.id == prompt_2
    session.flush()

    done = simulate_feedback(session=session, project=project)
    again = simulate_feedback(session=session, project=project)  # safe to run twice
    assert (again.rankings, again.demonstrations) == (0, 0)

    def ranking_of(labeler: User, prompt_id: int) -> Comparison | None:
        return session.scalar(
            select(Comparison).where(
                Comparison.prompt_id == prompt_id, Comparison.labeler_id == labeler.id
            )
        )

    # Prompt 1: first skipped it, second finds no free slot (two live leases and third's
    # ranking fill the overlap of 3): only third's ranking is there, and the prompt still
    # waits for the outsiders, whose rankings then count.
    assert ranking_of(first, prompt_1) is None
    assert session.get_one(Assignment, skipped.id).state == AssignmentState.skipped
    assert ranking_of(second, prompt_1) is None
    # Prompt 2: first's live lease and second's run-out lease are handed in as they were
    # leased (same task, same display order); third takes the last slot.
    for labeler, task in ((first, held), (second, run_out)):
        comparison = ranking_of(labeler, prompt_2)
        assert comparison is not None and comparison.assignment_id == task.id
        assert comparison.displayed_completion_ids == task.assignment.display_order
        assert session.get_one(Assignment, task.id).state == AssignmentState.submitted
    assert ranking_of(third, prompt_2) is not None
    # the other prompts ranked by all three, 3 on prompt 2, none on prompt 1.
    assert done.rankings == 3 * (ANSWERED - 2) + 3

    # The queue's invariants: no surplus ranking, full prompts marked, one task per labeler.
    demo_prompts = session.scalars(
        select(Prompt).where(Prompt.project_id == project.id, Prompt.completions.any())
    ).all()
    for prompt in demo_prompts:
        rankings = session.scalars(
            select(Comparison).where(Comparison.prompt_id == prompt.id)
        ).all()
        assert not any(c.is_surplus for c in rankings)
        assert prompt.rank_full == (len(rankings) >= project.overlap), prompt.id
        assert len(rankings) == (1 if prompt.id == prompt_1 else 3)
    assert (
        lease_next_task(
            session=session, project=project, labeler=second, kind=TaskKind.rank, lease_for=LEASE
        )
        is None
    )  # nothing left that the queue may give second
    assert not _submit(session, a, outsider_a)  # the outsiders' slots were kept for them
    assert not _submit(session, b, outsider_b)
    assert session.get_one(Prompt, prompt_1).rank_full

    # Demonstrations: first's held task is handed in; prompt 1's goes to the next labeler in
    # turn (first skipped it); one per answered prompt.
    demo_1 = session.scalars(select(Demonstration).where(Demonstration.prompt_id == prompt_1)).all()
    assert [d.author_id for d in demo_1] == [second.id]
    demo_2 = session.scalars(select(Demonstration).where(Demonstration.prompt_id == prompt_2)).all()
    assert [(d.author_id, d.assignment_id) for d in demo_2] == [(first.id, held_demo.id)]
    assert session.get_one(Assignment, held_demo.id).state == AssignmentState.submitted
    assert done.demonstrations == len(demo_prompts) == ANSWERED


def test_the_readme_counts_the_demo_as_a_labeler_sees_it(session: Session) -> None:
    """The README's numbers for a fresh demo are what a labeler's queues hold."""
    import re
    from pathlib import Path

    from app.labeling.queue import count_available

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    said = re.search(
        r"has (\d+) prompts: (\d+) with K = 4 answers each\s.*?and (\d+) without answers yet\. "
        r"All (\d+)\s+await a demonstration",
        readme,
        re.S,
    )
    assert said, "the README no longer counts the demo's prompts"
    total, answered, unanswered, awaiting = map(int, said.groups())
    summary = seed_demo(session=session, fixed_passwords=True)
    project = session.get_one(Project, summary.project_id)
    labeler = get_user_by_email(session=session, email=DEMO_LABELERS[0])
    assert labeler is not None
    queue = {
        kind: count_available(session=session, project=project, labeler=labeler, kind=kind)
        for kind in TaskKind
    }
    assert queue[TaskKind.demonstration] == awaiting == total == answered + unanswered
    assert queue[TaskKind.rank] == answered
    first = lease_next_task(
        session=session, project=project, labeler=labeler, kind=TaskKind.demonstration,
        lease_for=timedelta(minutes=30),
    )  # fmt: skip
    assert first is not None and not first.prompt.completions  # an unanswered one first


def test_the_demo_has_dialogues_to_rank(session: Session) -> None:
    """A few demo prompts are conversations ending with the user's turn, each with 4 answers."""
    summary = seed_demo(session=session, fixed_passwords=True)
    dialogues = session.scalars(
        select(Prompt).where(Prompt.project_id == summary.project_id, Prompt.messages.is_not(None))
    ).all()
    assert len(dialogues) == len(DEMO_DIALOGUES) >= 3
    for prompt in dialogues:
        assert prompt.messages is not None and len(prompt.messages) >= 3
        assert prompt.messages[-1]["role"] == "user"
        assert len(prompt.completions) == 4
        assert prompt.text.startswith(("System: ", "User: "))
