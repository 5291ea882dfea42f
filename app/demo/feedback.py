"""``rlhf demo --feedback``: simulated labeling of the demo project, to try the training jobs
before anyone has labeled.

Each demo labeler ranks every answered demo prompt by the demo answer's source
(``demo-large`` > ``demo-medium`` > ``demo-draft`` > ``demo-small``, the demo's intended
order), with a seeded chance of swapping two neighbours, so the labelers disagree a little as
real ones do; and writes one demonstration per prompt (the best demo answer). The rows are
ordinary rankings and demonstrations: agreement, exports and training read them like any
other, and each ranking comes with its submitted task, as if the labeler had been given it by
the queue, so the queue never offers a labeler a prompt they ranked and a prompt with
``overlap`` rankings is full. Safe to run again: a labeler's existing ranking or
demonstration is kept.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.auth.service import get_user_by_email
from app.db import utcnow
from app.demo.seed import DEMO_LABELERS
from app.labeling.models import (
    Assignment,
    AssignmentState,
    Comparison,
    Completion,
    Demonstration,
    Prompt,
    TaskKind,
)
from app.labeling.service import refresh_rank_full
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
        for labeler in labelers:
            ranked = session.scalar(
                select(Comparison.id).where(
                    Comparison.prompt_id == prompt.id, Comparison.labeler_id == labeler.id
                )
            )
            if ranked is None:
                mine = list(order)
                if rng.random() < SWAP_CHANCE:
                    i = rng.randrange(len(mine) - 1)
                    mine[i], mine[i + 1] = mine[i + 1], mine[i]
                shown = list(order)
                rng.shuffle(shown)
                now = utcnow()
                task = Assignment(
                    kind=TaskKind.rank, prompt_id=prompt.id, labeler_id=labeler.id,
                    state=AssignmentState.submitted, display_order=shown, leased_at=now,
                    expires_at=now, finished_at=now,
                )  # fmt: skip
                session.add(task)
                session.flush()
                session.add(
                    Comparison(
                        prompt_id=prompt.id, labeler_id=labeler.id, assignment_id=task.id,
                        displayed_completion_ids=shown, ranking=[[a] for a in mine],
                        seconds_spent=float(rng.randint(40, 180)),
                    )
                )  # fmt: skip
                summary.rankings += 1
        author = labelers[number % len(labelers)] if labelers else None
        written = session.scalar(
            select(Demonstration.id).where(Demonstration.prompt_id == prompt.id)
        )
        if author is not None and written is None:
            session.add(
                Demonstration(
                    prompt_id=prompt.id, author_id=author.id, text=by_source[QUALITY[0]].text,
                    seconds_spent=float(rng.randint(120, 400)),
                )
            )  # fmt: skip
            summary.demonstrations += 1
    session.flush()
    refresh_rank_full(session=session, project=project)
    return summary
