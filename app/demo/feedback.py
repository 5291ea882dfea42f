"""``rlhf demo --feedback``: simulated labeling of the demo project, to try the training jobs
before anyone has labeled.

Each demo labeler ranks every answered demo prompt by the demo answer's source
(``demo-large`` > ``demo-medium`` > ``demo-draft`` > ``demo-small``, the demo's intended
order), with a seeded chance of swapping two neighbours, so the labelers disagree a little as
real ones do; and one demonstration per prompt is written (the best demo answer). The rows
are ordinary rankings and demonstrations: agreement, exports and training read them like any
other.

The simulated labelers keep the queue's rules (design §4), whatever state the demo is in:

- a task a labeler holds (leased, its lease running or run out) is handed in through the
  labeling service, as their own submit would be;
- a prompt a labeler skipped, or whose task they let expire, is left alone for them: the
  queue never gives it to them again;
- any other ranking comes with its own task, taken only while the prompt still has a free
  slot (fewer than ``overlap`` submitted tasks plus live leases, anyone's), so the queue never
  offers a labeler a prompt they ranked and a prompt with ``overlap`` rankings is full.

Safe to run again: a labeler's existing ranking and a prompt's demonstration are kept.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from app.auth.models import User
from app.auth.service import get_user_by_email
from app.db import utcnow
from app.demo.seed import DEMO_LABELERS
from app.labeling.models import (
    Assignment,
    AssignmentState,
    Comparison,
    Completion,
    Demonstration,
    GoldRanking,
    Prompt,
    TaskKind,
)
from app.labeling.queue import has_free_slot
from app.labeling.service import submit_demonstration, submit_ranking
from app.projects.models import Project

QUALITY = ("demo-large", "demo-medium", "demo-draft", "demo-small")  # best first
SWAP_CHANCE = 0.25


@dataclass
class FeedbackSummary:
    rankings: int = 0
    demonstrations: int = 0


def simulate_feedback(*, session: Session, project: Project, seed: int = 0) -> FeedbackSummary:
    rng = random.Random(seed)  # noqa: S311 - simulated labelers, not secrets
    summary = FeedbackSummary()
    labelers = [
        u for email in DEMO_LABELERS if (u := get_user_by_email(session=session, email=email))
    ]
    prompts = session.scalars(
        select(Prompt).where(Prompt.project_id == project.id).order_by(Prompt.id)
    ).all()
    for number, prompt in enumerate(prompts):
        answers = session.scalars(
            select(Completion).where(Completion.prompt_id == prompt.id).order_by(Completion.id)
        ).all()
        by_source = {a.origin.removeprefix("import:"): a for a in answers}
        if not all(source in by_source for source in QUALITY):
            continue  # not a demo prompt with its four demo answers
        order = [by_source[source].id for source in QUALITY]
        summary.rankings += _rank(
            session=session, project=project, prompt=prompt, labelers=labelers, order=order,
            rng=rng,
        )  # fmt: skip
        if labelers:
            best = by_source[QUALITY[0]].text
            summary.demonstrations += _demonstrate(
                session=session, prompt=prompt, labelers=labelers, first=number, text=best,
                rng=rng,
            )  # fmt: skip
    session.flush()
    return summary


def _tasks(*, session: Session, prompt: Prompt, kind: TaskKind) -> dict[int, Assignment]:
    """Each labeler's task of this kind on the prompt (one at most: the table's unique key)."""
    rows = session.scalars(
        select(Assignment).where(Assignment.prompt_id == prompt.id, Assignment.kind == kind)
    )
    return {a.labeler_id: a for a in rows}


def _rank(
    *,
    session: Session,
    project: Project,
    prompt: Prompt,
    labelers: Sequence[User],
    order: list[int],
    rng: random.Random,
) -> int:
    """The demo labelers' rankings of one prompt; returns how many were added."""
    ranked = set(
        session.scalars(select(Comparison.labeler_id).where(Comparison.prompt_id == prompt.id))
    )
    tasks = _tasks(session=session, prompt=prompt, kind=TaskKind.rank)
    gold = bool(session.scalar(select(exists().where(GoldRanking.prompt_id == prompt.id))))
    place = {answer: i for i, answer in enumerate(order)}
    added = 0
    # Held tasks first: a live lease already has its slot, and one that ran out is handed in
    # before new tasks could fill the prompt (as a late submit that still counts).
    for labeler in sorted(labelers, key=lambda u: u.id not in tasks):
        if labeler.id in ranked:
            continue
        task = tasks.get(labeler.id)
        if task is None:
            if prompt.submitter_id == labeler.id:
                continue  # never their own prompt
            now = utcnow()
            if not gold and not _has_free_slot(session=session, project=project, prompt=prompt):
                continue  # the queue would not offer it
            shown = list(order)
            rng.shuffle(shown)
            task = Assignment(
                kind=TaskKind.rank, prompt_id=prompt.id, labeler_id=labeler.id,
                state=AssignmentState.leased, display_order=shown, leased_at=now,
                expires_at=now, is_gold=gold,
            )  # fmt: skip
            session.add(task)
            session.flush()
        elif task.state != AssignmentState.leased:
            continue  # skipped or let expire: never served to this labeler again
        # Best first by demo source; any other answer on the task comes after them.
        shown_ids = list(task.display_order or [])
        mine = sorted(shown_ids, key=lambda a: place.get(a, len(place)))
        if len(mine) > 1 and rng.random() < SWAP_CHANCE:
            i = rng.randrange(len(mine) - 1)
            mine[i], mine[i + 1] = mine[i + 1], mine[i]
        submitted = submit_ranking(
            session=session, assignment_id=task.id, labeler=labeler,
            ranking=[[a] for a in mine], seconds_spent=float(rng.randint(40, 180)),
        )  # fmt: skip
        if submitted.created:
            added += 1
    return added


def _has_free_slot(*, session: Session, project: Project, prompt: Prompt) -> bool:
    """The queue's test (design §4): fewer than ``overlap`` submitted tasks plus live leases."""
    if prompt.rank_full:
        return False
    return has_free_slot(session=session, project=project, prompt_id=prompt.id, now=utcnow())


def _demonstrate(
    *,
    session: Session,
    prompt: Prompt,
    labelers: Sequence[User],
    first: int,
    text: str,
    rng: random.Random,
) -> int:
    """One demonstration of the prompt, if it has none; returns how many were added (0 or 1).

    A demo labeler who holds the prompt's demonstration task writes it through that task;
    otherwise the labelers take turns by prompt, passing over one who skipped the task."""
    if session.scalar(select(exists().where(Demonstration.prompt_id == prompt.id))):
        return 0
    tasks = _tasks(session=session, prompt=prompt, kind=TaskKind.demonstration)
    turns = [labelers[(first + i) % len(labelers)] for i in range(len(labelers))]
    held = [u for u in turns if (t := tasks.get(u.id)) and t.state == AssignmentState.leased]
    free = [u for u in turns if u.id not in tasks and prompt.submitter_id != u.id]
    seconds = float(rng.randint(120, 400))
    if held:
        author = held[0]
        submit_demonstration(
            session=session, assignment_id=tasks[author.id].id, labeler=author, text=text,
            seconds_spent=seconds,
        )  # fmt: skip
        return 1
    if not free:
        return 0
    session.add(
        Demonstration(prompt_id=prompt.id, author_id=free[0].id, text=text, seconds_spent=seconds)
    )
    return 1
