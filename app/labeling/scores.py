"""Reward-model scores of answers (``rlhf score``, design §14) and what the queue reads from
them: each prompt's ``score_gap``, the distance between the two best scores of the answers
its labelers are served. ``queue_order="uncertain"`` serves the smallest gap first: the
prompts the current reward model can least tell apart."""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.labeling.models import Completion, CompletionScore, Prompt
from app.projects.models import Project


def served_answer_ids(prompt_id: int, answer_ids: Iterable[int], k: int) -> list[int]:
    """The K answers every labeler of the prompt ranks (the same for all, so rankings can be
    compared): a sample seeded by the prompt, of its answers in id order."""
    ids = sorted(answer_ids)
    return random.Random(prompt_id).sample(ids, k)  # noqa: S311 - not a secret


def score_gap(scores: Sequence[float]) -> float | None:
    """How far apart the two best scores are (None for fewer than two)."""
    if len(scores) < 2:
        return None
    best, second = sorted(scores, reverse=True)[:2]
    return float(best - second)


def scored_completion_ids(*, session: Session, project: Project, model_version_id: int) -> set[int]:
    """The project's answers this reward-model version has scored already."""
    return set(
        session.scalars(
            select(CompletionScore.completion_id)
            .join(Completion, Completion.id == CompletionScore.completion_id)
            .join(Prompt, Prompt.id == Completion.prompt_id)
            .where(
                Prompt.project_id == project.id,
                CompletionScore.model_version_id == model_version_id,
            )
        )
    )


def store_scores(*, session: Session, model_version_id: int, scores: Mapping[int, float]) -> int:
    """Store each answer's score (completion id -> score) unless this version has one; how
    many were new."""
    if not scores:
        return 0
    have = set(
        session.scalars(
            select(CompletionScore.completion_id).where(
                CompletionScore.model_version_id == model_version_id,
                CompletionScore.completion_id.in_(list(scores)),
            )
        )
    )
    new = [
        CompletionScore(completion_id=cid, model_version_id=model_version_id, score=float(s))
        for cid, s in scores.items()
        if cid not in have
    ]
    session.add_all(new)
    session.flush()
    return len(new)


def refresh_score_gaps(*, session: Session, project: Project, model_version_id: int) -> int:
    """Set each prompt's ``score_gap`` from this version's scores of its served answers (the
    latest scoring wins); prompts with fewer than K answers or unscored ones are left as
    they are. How many prompts got a gap."""
    rows = session.execute(
        select(Completion.prompt_id, Completion.id, CompletionScore.score)
        .join(Prompt, Prompt.id == Completion.prompt_id)
        .outerjoin(
            CompletionScore,
            (CompletionScore.completion_id == Completion.id)
            & (CompletionScore.model_version_id == model_version_id),
        )
        .where(Prompt.project_id == project.id)
        .order_by(Completion.prompt_id)
    ).all()
    by_prompt: dict[int, dict[int, float | None]] = {}
    for prompt_id, completion_id, score in rows:
        by_prompt.setdefault(prompt_id, {})[completion_id] = score
    gaps: list[dict[str, object]] = []
    for prompt_id, answers in by_prompt.items():
        if len(answers) < project.k:
            continue
        values = [answers[i] for i in served_answer_ids(prompt_id, answers, project.k)]
        if all(v is not None for v in values):
            gaps.append({"id": prompt_id, "score_gap": score_gap([float(v or 0) for v in values])})
    if gaps:  # one executemany by primary key
        session.execute(update(Prompt), gaps)
    session.flush()
    return len(gaps)
