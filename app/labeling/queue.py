"""Handing out work (design §4): which prompt a labeler gets next, leased for a while.

A labeler asks for the next task of a kind in a project. If they still hold one, they get it
back (their draft included): work in progress is never lost by asking again. Otherwise the
server picks the oldest prompt that

- still needs work: fewer than ``overlap`` submitted rankings plus live leases (rank), or no
  demonstration yet (demonstration: prompts without answers come first);
- this labeler has not done, skipped or been given before, did not submit, and whose answers
  do not include their own demonstration;
- for ranking, has at least K answers.

Gold prompts (those with a reference ranking) are served at the project's gold rate to every
labeler and are not limited by overlap. On Postgres the pick takes the prompt row with
``FOR UPDATE SKIP LOCKED``, so concurrent labelers never wait on each other and never take the
same last slot; on SQLite the whole lease is one write transaction.
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Integer,
    Select,
    and_,
    bindparam,
    case,
    exists,
    func,
    or_,
    select,
)
from sqlalchemy.orm import Session, aliased

from app.auth.models import User
from app.db import UTCDateTime, utcnow
from app.labeling.models import (
    Assignment,
    AssignmentState,
    Completion,
    Demonstration,
    GoldRanking,
    Prompt,
    TaskKind,
)
from app.labeling.scores import served_answer_ids
from app.projects.models import Project


@dataclass(frozen=True)
class Task:
    """A leased task with what the labeler sees, answers in their display order."""

    assignment: Assignment
    prompt: Prompt
    completions: list[Completion]
    resumed: bool = False

    @property
    def id(self) -> int:
        return self.assignment.id


def _live_lease(now: Any) -> ColumnElement[bool]:
    return and_(Assignment.state == AssignmentState.leased, Assignment.expires_at > now)


def _is_gold() -> ColumnElement[bool]:
    return exists().where(GoldRanking.prompt_id == Prompt.id)


# The queue's statements are built once and run with these parameters: building them is a
# large part of a lease's cost, and the lease is the hottest path of the app.
_PROJECT: BindParameter[int] = bindparam("project_id", type_=Integer())
_LABELER: BindParameter[int] = bindparam("labeler_id", type_=Integer())
_K: BindParameter[int] = bindparam("k", type_=Integer())
_OVERLAP: BindParameter[int] = bindparam("overlap", type_=Integer())
_NOW: BindParameter[datetime] = bindparam("now", type_=UTCDateTime())


def _params(*, project: Project, labeler: User, now: datetime) -> dict[str, Any]:
    return {
        "project_id": project.id,
        "labeler_id": labeler.id,
        "k": project.k,
        "overlap": project.overlap,
        "now": now,
    }


def _eligible(*, kind: TaskKind, gold: bool) -> list[ColumnElement[bool]]:
    """Conditions on ``Prompt`` for a task a labeler may get now (see ``_params``)."""
    mine = aliased(Assignment)
    conditions: list[ColumnElement[bool]] = [
        Prompt.project_id == _PROJECT,
        # Never their own prompt.
        or_(Prompt.submitter_id.is_(None), Prompt.submitter_id != _LABELER),
        # Never a task of this kind they were given before (done, skipped or expired).
        ~exists().where(
            mine.prompt_id == Prompt.id, mine.labeler_id == _LABELER, mine.kind == kind
        ),
    ]
    if kind == TaskKind.demonstration:
        conditions += [
            ~exists().where(Demonstration.prompt_id == Prompt.id),
            ~exists().where(
                Assignment.prompt_id == Prompt.id, Assignment.kind == kind, _live_lease(_NOW)
            ),
        ]
        return conditions

    answers = (
        select(func.count())
        .where(Completion.prompt_id == Prompt.id)
        .correlate(Prompt)
        .scalar_subquery()
    )
    own_answer = (
        exists()
        .where(
            Completion.prompt_id == Prompt.id,
            Completion.demonstration_id == Demonstration.id,
            Demonstration.author_id == _LABELER,
        )
        .correlate(Prompt)
    )
    conditions += [answers >= _K, ~own_answer]
    if gold:
        conditions.append(_is_gold())
        return conditions
    conditions += [
        Prompt.rank_full.is_(False),
        ~_is_gold(),
        _taken(Prompt.id, _NOW).correlate(Prompt).scalar_subquery() < _OVERLAP,
    ]
    return conditions


def _taken(prompt_id: Any, now: Any) -> Select[int]:
    """Rank slots of a prompt in use: submitted tasks plus live leases."""
    return select(func.count()).where(
        Assignment.prompt_id == prompt_id,
        Assignment.kind == TaskKind.rank,
        or_(Assignment.state == AssignmentState.submitted, _live_lease(now)),
    )


def has_free_slot(*, session: Session, prompt_id: int, overlap: int, now: Any) -> bool:
    """The prompt has fewer than ``overlap`` submitted rank tasks plus live leases (design §4)."""
    return (session.scalar(_taken(prompt_id, now)) or 0) < overlap


def _order(kind: TaskKind) -> list[ColumnElement[Any]]:
    """Oldest first; a demonstration goes first to prompts with no answers yet, whose only
    work is a demonstration (the others can be ranked meanwhile)."""
    if kind == TaskKind.demonstration:
        answered = exists().where(Completion.prompt_id == Prompt.id).correlate(Prompt)
        return [case((answered, 1), else_=0), Prompt.id.asc()]
    return [Prompt.id.asc()]


@functools.cache
def _pick_statement(kind: TaskKind, gold: bool, postgres: bool) -> Select[Prompt]:
    stmt = select(Prompt).where(*_eligible(kind=kind, gold=gold)).order_by(*_order(kind)).limit(1)
    if postgres:
        passed: BindParameter[int] = bindparam("passed", type_=Integer(), expanding=True)
        stmt = stmt.where(Prompt.id.not_in(passed)).with_for_update(of=Prompt, skip_locked=True)
    return stmt


@functools.cache
def _count_statement(kind: TaskKind, gold: bool) -> Select[int]:
    eligible = select(Prompt.id).where(*_eligible(kind=kind, gold=gold))
    capped = eligible.limit(bindparam("limit")).subquery()
    return select(func.count()).select_from(capped)


MAX_PICKS = 8


def _pick(
    *, session: Session, project: Project, labeler: User, kind: TaskKind, now: datetime, gold: bool
) -> Prompt | None:
    params = _params(project=project, labeler=labeler, now=now)
    if session.get_bind().dialect.name != "postgresql":
        # SQLite: this whole transaction holds the write lock, so the first match is ours.
        return session.scalar(_pick_statement(kind, gold, False), params)
    passed: list[int] = []
    for _ in range(MAX_PICKS):
        prompt = session.scalar(_pick_statement(kind, gold, True), {**params, "passed": passed})
        if prompt is None or gold or kind == TaskKind.demonstration:
            return prompt
        # The row lock is ours now. Under READ COMMITTED the slot count above may predate a
        # lease committed while we waited for the row, so count again with a fresh snapshot
        # (every lease and submit of this prompt holds the same row lock).
        if has_free_slot(session=session, prompt_id=prompt.id, overlap=project.overlap, now=now):
            return prompt
        passed.append(prompt.id)
    return None


def _resume(
    *, session: Session, project: Project, labeler: User, kind: TaskKind
) -> Assignment | None:
    """The task this labeler holds (leased, not finished), even if its lease ran out."""
    return session.scalar(
        select(Assignment)
        .join(Prompt, Prompt.id == Assignment.prompt_id)
        .where(
            Prompt.project_id == project.id,
            Assignment.labeler_id == labeler.id,
            Assignment.kind == kind,
            Assignment.state == AssignmentState.leased,
        )
        .order_by(Assignment.leased_at.desc())
        .limit(1)
    )


def _still_worth_doing(
    *, session: Session, project: Project, assignment: Assignment, now: datetime
) -> bool:
    """An expired rank lease is given back only while its prompt still needs rankings (or is
    gold); a demonstration lease always is (the draft is there). Otherwise it expires."""
    if assignment.expires_at > now or assignment.kind == TaskKind.demonstration:
        return True
    if assignment.is_gold:
        return True
    others = session.scalar(
        select(func.count()).where(
            Assignment.prompt_id == assignment.prompt_id,
            Assignment.kind == TaskKind.rank,
            Assignment.id != assignment.id,
            or_(Assignment.state == AssignmentState.submitted, _live_lease(now)),
        )
    )
    return (others or 0) < project.overlap


def task_for(
    *,
    session: Session,
    assignment: Assignment,
    resumed: bool = False,
    completions: list[Completion] | None = None,
) -> Task:
    prompt = session.get_one(Prompt, assignment.prompt_id)
    order = assignment.display_order or []
    if completions is None and order:
        completions = list(session.scalars(select(Completion).where(Completion.id.in_(order))))
    by_id = {c.id: c for c in completions or []}
    shown = [by_id[i] for i in order if i in by_id]
    return Task(assignment=assignment, prompt=prompt, completions=shown, resumed=resumed)


def lease_next_task(
    *,
    session: Session,
    project: Project,
    labeler: User,
    kind: TaskKind,
    lease_for: timedelta,
    rng: random.Random | None = None,
) -> Task | None:
    """The labeler's current task, or a newly leased one, or None when nothing is left."""
    rng = rng or random.Random()  # noqa: S311 - display order and gold mixing, not secrets
    now = utcnow()
    if session.get_bind().dialect.name == "postgresql":
        # One lease at a time per labeler (a double click must not lease two prompts).
        session.execute(select(func.pg_advisory_xact_lock(labeler.id)))

    held = _resume(session=session, project=project, labeler=labeler, kind=kind)
    if held is not None:
        if _still_worth_doing(session=session, project=project, assignment=held, now=now):
            held.expires_at = now + lease_for
            session.flush()
            return task_for(session=session, assignment=held, resumed=True)
        held.state, held.finished_at = AssignmentState.expired, now

    prompt = None
    is_gold = False
    if kind == TaskKind.rank and project.gold_rate > 0 and rng.random() < project.gold_rate:
        prompt = _pick(
            session=session, project=project, labeler=labeler, kind=kind, now=now, gold=True
        )
        is_gold = prompt is not None
    if prompt is None:
        prompt = _pick(
            session=session, project=project, labeler=labeler, kind=kind, now=now, gold=False
        )
    if prompt is None:
        session.flush()
        return None

    display_order: list[int] | None = None
    answers: list[Completion] = []
    if kind == TaskKind.rank:
        answers = list(session.scalars(select(Completion).where(Completion.prompt_id == prompt.id)))
        # Every labeler of a prompt ranks the same K answers, so their rankings can be
        # compared (agreement); each sees them in their own random order (position bias).
        same_for_all = served_answer_ids(prompt.id, (c.id for c in answers), project.k)
        display_order = rng.sample(same_for_all, project.k)
    assignment = Assignment(
        kind=kind,
        prompt_id=prompt.id,
        labeler_id=labeler.id,
        state=AssignmentState.leased,
        leased_at=now,
        expires_at=now + lease_for,
        display_order=display_order,
        is_gold=is_gold,
    )
    session.add(assignment)
    session.flush()
    return task_for(session=session, assignment=assignment, completions=answers)


QUEUE_COUNT_LIMIT = 500


def count_available(
    *,
    session: Session,
    project: Project,
    labeler: User,
    kind: TaskKind,
    limit: int = QUEUE_COUNT_LIMIT,
) -> int:
    """How many tasks of this kind this labeler could still get (the "in queue" figure),
    counted up to ``limit``: pages show "500+" rather than scan a huge project each time."""
    params = _params(project=project, labeler=labeler, now=utcnow())
    total = 0
    for gold in (False, True) if kind == TaskKind.rank else (False,):
        total += (
            session.scalar(_count_statement(kind, gold), {**params, "limit": limit - total}) or 0
        )
        if total >= limit:
            break
    return total
