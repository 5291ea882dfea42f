"""What labelers hand in: rankings, demonstrations, skips, drafts and their own prompts.

Submitting is idempotent per task: the same payload twice stores one row and returns it; a
different payload for a task already handed in is refused. A submission after the lease ran
out is still stored; when the prompt already has all the rankings it wants, it is stored and
marked surplus (never lost). Services flush; the caller commits.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    Update,
    bindparam,
    exists,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.sql.dml import ReturningInsert

from app.agreement.metrics import pairwise_agreement
from app.auth.models import User
from app.db import utcnow
from app.errors import NotFoundError
from app.labeling.models import (
    Assignment,
    AssignmentState,
    Comparison,
    Completion,
    Demonstration,
    GoldRanking,
    Prompt,
    PromptSource,
    TaskKind,
)
from app.labeling.queue import cap_of, rank_cap
from app.labeling.ranking import RankingError, validate_ranking
from app.projects.models import Project
from app.review.models import Review, Verdict

MAX_TEXT_CHARS = 100_000  # a demonstration or a prompt; far above any real answer
MAX_SKIP_REASON_CHARS = 500
LIKERT_RANGE = range(1, 8)


class TaskConflict(Exception):
    """The task was already handed in differently, or skipped (HTTP 409)."""


class SubmissionError(ValueError):
    """The submission does not fit the task; the message is shown as it is (HTTP 422)."""


@dataclass(frozen=True)
class HeldTask:
    """A task of the labeler's, its row locked for the submission, with its prompt and
    project as they are now."""

    assignment: Assignment
    prompt: Prompt
    project: Project


@functools.cache
def _hold_statement(lock_prompt: bool) -> Select[Assignment, Prompt, Project]:
    """Built once per variant (as the queue's statements are): the submit is a hot path."""
    return (
        select(Assignment, Prompt, Project)
        .join(Prompt, Prompt.id == Assignment.prompt_id)
        .join(Project, Project.id == Prompt.project_id)
        .where(Assignment.id == bindparam("assignment_id"))
        .with_for_update(of=[Assignment, Prompt] if lock_prompt else [Assignment])
        .execution_options(populate_existing=True)
    )


def hold_task(
    *, session: Session, assignment_id: int, labeler: User, lock_prompt: bool = False
) -> HeldTask:
    """The task locked, with its prompt (``lock_prompt``: locked too, as a ranking's submit
    needs it) and project: one statement, whose rows replace any older copies this session
    holds. Someone else's task is reported as missing, so task ids reveal nothing."""
    row = session.execute(
        _hold_statement(lock_prompt), {"assignment_id": assignment_id}
    ).one_or_none()
    if row is None or row.Assignment.labeler_id != labeler.id:
        raise NotFoundError(f"no task {assignment_id}")
    return HeldTask(assignment=row.Assignment, prompt=row.Prompt, project=row.Project)


def get_assignment(*, session: Session, assignment_id: int, labeler: User) -> Assignment:
    """A task of this labeler's, locked for the submission (see ``hold_task``)."""
    return hold_task(session=session, assignment_id=assignment_id, labeler=labeler).assignment


def _clean_text(text: str, *, what: str, limit: int = MAX_TEXT_CHARS) -> str:
    if "\x00" in text:
        raise SubmissionError(f"The {what} contains a NUL character, which cannot be stored.")
    if not text.strip():
        raise SubmissionError(f"The {what} is empty.")
    if len(text) > limit:
        raise SubmissionError(f"The {what} has {len(text):,} characters; the limit is {limit:,}.")
    return text


@dataclass(frozen=True)
class Rewrite:
    """A labeler's better version of the answer they ranked best (design §13)."""

    completion_id: int
    text: str


@dataclass(frozen=True)
class Submitted:
    id: int
    created: bool  # False when the same payload was handed in before


def _ratings(
    ratings: dict[int, int] | None, displayed: list[int], schema: dict[str, Any]
) -> dict[str, int] | None:
    if not ratings:
        return None
    if not schema.get("likert", False):
        raise SubmissionError("This project does not use ratings.")
    clean: dict[str, int] = {}
    for completion_id, value in ratings.items():
        if completion_id not in displayed:
            raise SubmissionError(f"Answer {completion_id} is not one of this task's answers.")
        if isinstance(value, bool) or not isinstance(value, int) or value not in LIKERT_RANGE:
            raise SubmissionError(f"Ratings go from 1 to 7; {value!r} is not one of them.")
        clean[str(completion_id)] = value
    return clean


def _flags(
    flags: dict[int, list[str]] | None, displayed: list[int], schema: dict[str, Any]
) -> dict[str, list[str]] | None:
    if not flags:
        return None
    allowed = list(schema.get("flags", []))
    clean: dict[str, list[str]] = {}
    for completion_id, names in flags.items():
        if completion_id not in displayed:
            raise SubmissionError(f"Answer {completion_id} is not one of this task's answers.")
        unknown = [n for n in names if n not in allowed]
        if unknown:
            raise SubmissionError(
                f"Unknown flag {unknown[0]!r}; this project's flags are: {', '.join(allowed)}."
            )
        if names:
            clean[str(completion_id)] = sorted(set(names), key=allowed.index)
    return clean or None


def submit_ranking(
    *,
    session: Session,
    assignment_id: int,
    labeler: User,
    ranking: list[list[int]],
    ratings: dict[int, int] | None = None,
    flags: dict[int, list[str]] | None = None,
    not_rankable: bool = False,
    seconds_spent: float | None = None,
    rewrite: Rewrite | None = None,
) -> Submitted:
    """A ranking, with the labeler's rewrite of the answer they ranked best if they wrote one:
    stored as their demonstration of the prompt, tied to this task and to that answer."""
    held = hold_task(
        session=session, assignment_id=assignment_id, labeler=labeler, lock_prompt=True
    )
    return submit_held_ranking(
        session=session, held=held, labeler=labeler, ranking=ranking, ratings=ratings,
        flags=flags, not_rankable=not_rankable, seconds_spent=seconds_spent, rewrite=rewrite,
    )  # fmt: skip


def submit_held_ranking(
    *,
    session: Session,
    held: HeldTask,
    labeler: User,
    ranking: list[list[int]],
    ratings: dict[int, int] | None = None,
    flags: dict[int, list[str]] | None = None,
    not_rankable: bool = False,
    seconds_spent: float | None = None,
    rewrite: Rewrite | None = None,
) -> Submitted:
    """``submit_ranking`` of a task this transaction holds with its prompt locked
    (``hold_task(lock_prompt=True)``): the API's submit reads the task once."""
    assignment, prompt, project = held.assignment, held.prompt, held.project
    if assignment.kind != TaskKind.rank:
        raise SubmissionError("This task asks for a demonstration, not a ranking.")
    displayed = list(assignment.display_order or [])
    try:
        groups = validate_ranking(ranking, displayed) if (ranking or not not_rankable) else []
    except RankingError as exc:
        raise SubmissionError(str(exc)) from exc
    clean_ratings = _ratings(ratings, displayed, project.label_schema)
    clean_flags = _flags(flags, displayed, project.label_schema)
    clean_rewrite = _rewrite(session, rewrite, groups) if rewrite is not None else None

    # Only a submitted task can have one (the submit sets both in one transaction).
    existing = (
        session.scalar(select(Comparison).where(Comparison.assignment_id == assignment.id))
        if assignment.state == AssignmentState.submitted
        else None
    )
    if existing is not None:
        stored = session.scalar(
            select(Demonstration).where(Demonstration.assignment_id == assignment.id)
        )
        stored_rewrite = (
            Rewrite(completion_id=stored.rewrite_of_id or 0, text=stored.text) if stored else None
        )
        same = (
            existing.ranking == groups
            and existing.ratings == clean_ratings
            and existing.flags == clean_flags
            and existing.not_rankable == not_rankable
            and stored_rewrite == clean_rewrite
        )
        if not same:
            raise TaskConflict("This task was already submitted with a different ranking.")
        return Submitted(id=existing.id, created=False)
    if assignment.state == AssignmentState.skipped:
        raise TaskConflict("You skipped this task; it cannot be submitted any more.")
    if clean_rewrite is not None and session.scalar(
        select(Demonstration.id).where(
            Demonstration.prompt_id == prompt.id, Demonstration.author_id == labeler.id
        )
    ):
        raise SubmissionError(
            "You already wrote a demonstration of this prompt, so it takes no rewrite from "
            "you; submit the ranking without it."
        )

    # The prompt's row lock (taken with the task's) orders concurrent submits (and leases) of
    # this prompt, so the count that decides "surplus" is exact, and so is the cap it is held
    # to: the row was read under the lock, as the last submit left its disagreement.
    counted = [] if assignment.is_gold else _counted_rows(session, prompt.id)
    cap = rank_cap(project=project, disagreement=prompt.disagreement)
    surplus = not assignment.is_gold and len(counted) >= cap
    # The writes are prebuilt statements rather than a flush of new and changed objects (the
    # submit is the hot path), and the loaded rows are told what was written.
    connection = session.connection()
    now = utcnow()
    comparison_id = connection.execute(
        _insert_comparison(),
        {
            "prompt_id": prompt.id, "labeler_id": labeler.id, "assignment_id": assignment.id,
            "displayed_completion_ids": displayed, "ranking": groups, "ratings": clean_ratings,
            "flags": clean_flags, "not_rankable": not_rankable, "is_surplus": surplus,
            "seconds_spent": _seconds(seconds_spent), "created_at": now,
        },
    ).scalar_one()  # fmt: skip
    connection.execute(_finish_task(), {"task_id": assignment.id, "finished": now})
    set_committed_value(assignment, "state", AssignmentState.submitted)
    set_committed_value(assignment, "finished_at", now)
    if not assignment.is_gold and not surplus:
        kept = [row.ranking for row in counted if not row.rejected]
        disagreement = ranking_disagreement([*kept, groups])
        full = len(counted) + 1 >= rank_cap(project=project, disagreement=disagreement)
        connection.execute(
            _count_ranking(), {"prompt": prompt.id, "disagreement": disagreement, "full": full}
        )
        set_committed_value(prompt, "disagreement", disagreement)
        set_committed_value(prompt, "rank_full", full)
    if clean_rewrite is not None:
        session.add(
            Demonstration(
                prompt_id=prompt.id,
                author_id=labeler.id,
                assignment_id=assignment.id,
                text=clean_rewrite.text,
                rewrite_of_id=clean_rewrite.completion_id,
            )
        )
        session.flush()
    return Submitted(id=comparison_id, created=True)


@functools.cache
def _insert_comparison() -> ReturningInsert[int]:
    return insert(Comparison).returning(Comparison.id)


@functools.cache
def _finish_task() -> Update:
    return (
        update(Assignment)
        .where(Assignment.id == bindparam("task_id"))
        .values(state=AssignmentState.submitted, finished_at=bindparam("finished"))
    )


@functools.cache
def _count_ranking() -> Update:
    """A prompt's disagreement and whether it is full, after a counted ranking."""
    return (
        update(Prompt)
        .where(Prompt.id == bindparam("prompt"))
        .values(disagreement=bindparam("disagreement"), rank_full=bindparam("full"))
    )


def _rewrite(session: Session, rewrite: Rewrite, groups: list[list[int]]) -> Rewrite:
    """The rewrite, trimmed, if it improves an answer ranked best (first, or tied first) in
    this ranking and says something else."""
    if not groups:
        raise SubmissionError(
            "A rewrite improves the answer you ranked best: rank the answers to send one."
        )
    if rewrite.completion_id not in groups[0]:
        shown = {a for group in groups for a in group}
        if rewrite.completion_id not in shown:
            raise SubmissionError(
                f"Answer {rewrite.completion_id} is not one of this task's answers; a rewrite "
                "improves the answer you ranked best."
            )
        raise SubmissionError(
            f"A rewrite improves the answer you ranked best; answer {rewrite.completion_id} "
            "is not ranked first."
        )
    text = _clean_text(rewrite.text.strip(), what="rewrite")
    original = session.get_one(Completion, rewrite.completion_id)
    if text == original.text.strip():
        raise SubmissionError(
            "The rewrite is the same as the answer it rewrites: change it, or leave it out."
        )
    return Rewrite(completion_id=original.id, text=text)


def _counted() -> list[ColumnElement[bool]]:
    """Rankings that count toward a prompt's cap: current, not surplus, by our labelers in the
    queue (gold answers, imported preferences and AI judges have no task, so they do not use
    up slots). Joined to ``Assignment`` on ``Comparison.assignment_id``."""
    return [
        Comparison.is_latest.is_(True),
        Comparison.is_surplus.is_(False),
        Assignment.is_gold.is_(False),
    ]


def _counted_rankings_of(prompt_id: Any) -> Select[int]:
    return (
        select(func.count())
        .select_from(Comparison)
        .join(Assignment, Assignment.id == Comparison.assignment_id)
        .where(Comparison.prompt_id == prompt_id, *_counted())
    )


def _rejected() -> ColumnElement[bool]:
    return exists().where(Review.comparison_id == Comparison.id, Review.verdict == Verdict.rejected)


def _counted_rows(session: Session, prompt_id: int) -> Sequence[Any]:
    """The prompt's counted rankings (``ranking``, ``rejected``): one small query. A ranking
    an admin rejected still holds its slot but says nothing about disagreement."""
    return session.execute(_counted_rows_statement(), {"prompt_id": prompt_id}).all()


@functools.cache
def _counted_rows_statement() -> Select[list[list[int]], bool]:
    return (
        select(Comparison.ranking, _rejected().label("rejected"))
        .join(Assignment, Assignment.id == Comparison.assignment_id)
        .where(Comparison.prompt_id == bindparam("prompt_id"), *_counted())
    )


def ranking_disagreement(rankings: Sequence[list[list[int]]]) -> float | None:
    """The share of (labeler pair x answer pair) on which two labelers order the answers
    differently; pairs tied by either are left out (as in pairwise agreement, of which this
    is the complement). None with fewer than two rankings, or no answer pair both ordered."""
    if len(rankings) < 2:
        return None
    places = {
        str(i): {
            str(answer): float(place) for place, group in enumerate(ranking) for answer in group
        }
        for i, ranking in enumerate(rankings)
    }
    agreement = pairwise_agreement(places).value
    return None if agreement is None else 1.0 - agreement


def review_changed_disagreement(*, session: Session, project: Project, prompt_id: int) -> None:
    """After a ranking of the prompt was rejected (or the rejection taken back): its
    disagreement without the rejected rankings, and whether it is full under the cap that
    gives, under the prompt's row lock as a submit takes it."""
    prompt = session.get_one(Prompt, prompt_id, with_for_update=True)
    counted = _counted_rows(session, prompt_id)
    prompt.disagreement = ranking_disagreement([r.ranking for r in counted if not r.rejected])
    prompt.rank_full = len(counted) >= rank_cap(project=project, disagreement=prompt.disagreement)
    session.flush()


def refresh_disagreement(*, session: Session, project: Project) -> None:
    """Every prompt's ``disagreement`` from its counted rankings, computed again (the submit
    keeps it; this catches up rankings from before, and reviews since): run when a project
    turns to ``queue_order="disagreement"``."""
    rows = session.execute(
        select(Comparison.prompt_id, Comparison.ranking)
        .join(Assignment, Assignment.id == Comparison.assignment_id)
        .join(Prompt, Prompt.id == Comparison.prompt_id)
        .where(Prompt.project_id == project.id, *_counted(), ~_rejected())
        .order_by(Comparison.prompt_id, Comparison.id)
    ).all()
    by_prompt: dict[int, list[list[list[int]]]] = {}
    for prompt_id, ranking in rows:
        by_prompt.setdefault(prompt_id, []).append(ranking)
    session.execute(
        update(Prompt)
        .where(Prompt.project_id == project.id)
        .values(disagreement=None)
        .execution_options(synchronize_session=False)
    )
    values = [
        {"id": prompt_id, "disagreement": value}
        for prompt_id, rankings in by_prompt.items()
        if (value := ranking_disagreement(rankings)) is not None
    ]
    if values:  # one executemany by primary key
        session.execute(update(Prompt), values)
    session.flush()


def refresh_rank_full(*, session: Session, project: Project) -> None:
    """After the project's overlap or queue settings changed: which prompts are full (have
    their cap of counted rankings) is computed again."""
    counted = _counted_rankings_of(Prompt.id).correlate(Prompt).scalar_subquery()
    session.execute(
        update(Prompt)
        .where(Prompt.project_id == project.id)
        .values(rank_full=counted >= cap_of(project))
        .execution_options(synchronize_session=False)
    )


def _seconds(value: float | None) -> float | None:
    if value is None:
        return None
    return max(0.0, min(float(value), 24 * 3600.0))


def submit_demonstration(
    *,
    session: Session,
    assignment_id: int,
    labeler: User,
    text: str,
    seconds_spent: float | None = None,
) -> Submitted:
    assignment = get_assignment(session=session, assignment_id=assignment_id, labeler=labeler)
    if assignment.kind != TaskKind.demonstration:
        raise SubmissionError("This task asks for a ranking, not a demonstration.")
    text = _clean_text(text, what="demonstration")
    existing = (
        session.scalar(select(Demonstration).where(Demonstration.assignment_id == assignment.id))
        if assignment.state == AssignmentState.submitted
        else None
    )
    if existing is not None:
        if existing.text != text:
            raise TaskConflict("This task was already submitted with a different text.")
        return Submitted(id=existing.id, created=False)
    if assignment.state == AssignmentState.skipped:
        raise TaskConflict("You skipped this task; it cannot be submitted any more.")
    demonstration = Demonstration(
        prompt_id=assignment.prompt_id,
        author_id=labeler.id,
        assignment_id=assignment.id,
        text=text,
        seconds_spent=_seconds(seconds_spent),
    )
    session.add(demonstration)
    assignment.state = AssignmentState.submitted
    assignment.finished_at = utcnow()
    assignment.draft = None
    session.flush()
    return Submitted(id=demonstration.id, created=True)


def skip_task(*, session: Session, assignment_id: int, labeler: User, reason: str) -> Assignment:
    """Skip with a reason; the task is never served to this labeler again."""
    assignment = get_assignment(session=session, assignment_id=assignment_id, labeler=labeler)
    reason = reason.strip()
    if not reason:
        raise SubmissionError("Say why you skip this task (it helps the project's admins).")
    if len(reason) > MAX_SKIP_REASON_CHARS:
        raise SubmissionError(f"Keep the reason under {MAX_SKIP_REASON_CHARS} characters.")
    if assignment.state == AssignmentState.submitted:
        raise TaskConflict("This task was already submitted.")
    if assignment.state != AssignmentState.skipped:
        assignment.state = AssignmentState.skipped
        assignment.skip_reason = reason
        assignment.finished_at = utcnow()
        session.flush()
    return assignment


def save_draft(*, session: Session, assignment_id: int, labeler: User, text: str) -> Assignment:
    """Autosave of a demonstration being written; kept even after the lease runs out."""
    assignment = get_assignment(session=session, assignment_id=assignment_id, labeler=labeler)
    if assignment.state != AssignmentState.leased:
        raise TaskConflict("This task is finished; the draft was not saved.")
    if len(text) > MAX_TEXT_CHARS:
        raise SubmissionError(f"The draft has more than {MAX_TEXT_CHARS:,} characters.")
    assignment.draft = text.replace("\x00", "")
    assignment.draft_saved_at = utcnow()
    session.flush()
    return assignment


def submit_prompt(
    *,
    session: Session,
    project: Project,
    labeler: User,
    text: str,
    demonstration: str | None = None,
) -> Prompt:
    """A labeler-written prompt (InstructGPT's labelers wrote many), optionally with the ideal
    answer they would give to it."""
    text = _clean_text(text, what="prompt")
    prompt = Prompt(
        project_id=project.id, text=text, source=PromptSource.labeler, submitter_id=labeler.id
    )
    session.add(prompt)
    session.flush()
    if demonstration and demonstration.strip():
        session.add(
            Demonstration(
                prompt_id=prompt.id,
                author_id=labeler.id,
                text=_clean_text(demonstration, what="demonstration"),
            )
        )
        session.flush()
    return prompt


def set_gold_ranking(
    *, session: Session, prompt: Prompt, ranking: list[list[int]], admin: User
) -> GoldRanking:
    """An admin's reference ranking over all of the prompt's answers."""
    answer_ids = list(
        session.scalars(select(Completion.id).where(Completion.prompt_id == prompt.id))
    )
    try:
        groups = validate_ranking(ranking, answer_ids)
    except RankingError as exc:
        raise SubmissionError(str(exc)) from exc
    gold = session.scalar(select(GoldRanking).where(GoldRanking.prompt_id == prompt.id))
    if gold is None:
        gold = GoldRanking(prompt_id=prompt.id, ranking=groups, created_by_id=admin.id)
        session.add(gold)
    else:
        # created_at moves too: it is when this ranking was set (agreement caches key on it).
        gold.ranking, gold.created_by_id, gold.created_at = groups, admin.id, utcnow()
    session.flush()
    return gold
