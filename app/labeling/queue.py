"""Handing out work (design §4): which prompt a labeler gets next, leased for a while.

A labeler asks for the next task of a kind in a project. If they still hold one, they get it
back (their draft included): work in progress is never lost by asking again. Otherwise the
server picks, in the project's ``queue_order`` (design §14), the first prompt that

- still needs work: fewer submitted rankings plus live leases than its cap (rank), or no
  demonstration yet (demonstration: prompts without answers come first);
- this labeler has not done, skipped or been given before, did not submit, and whose answers
  do not include their own demonstration;
- for ranking, has at least K answers.

Rank tasks come ``oldest`` first (by id), or ``uncertain``: the smallest reward-model
``score_gap`` first, prompts never scored after the scored ones; or ``disagreement``: a prompt
whose labelers disagree above the project's threshold may take rankings up to
``extra_overlap`` instead of ``overlap`` (its cap), and those still open come first, then the
rest oldest first. Under the other orders every prompt's cap is ``overlap``.

Gold prompts (those with a reference ranking) are served at the project's gold rate to every
labeler, not limited by overlap nor ordered by ``queue_order``. On Postgres the pick takes
the prompt row with ``FOR UPDATE SKIP LOCKED``, so concurrent labelers never wait on each
other and never take the same last slot; on SQLite the whole lease is one write transaction.
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
    Float,
    Integer,
    Select,
    and_,
    bindparam,
    case,
    exists,
    func,
    literal,
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
_EXTRA: BindParameter[int] = bindparam("extra_overlap", type_=Integer())
_THRESHOLD: BindParameter[float] = bindparam("threshold", type_=Float())
_NOW: BindParameter[datetime] = bindparam("now", type_=UTCDateTime())
_PROMPT: BindParameter[int] = bindparam("prompt_id", type_=Integer())


def _cap_params(project: Project) -> dict[str, Any]:
    return {
        "overlap": project.overlap,
        "extra_overlap": project.extra_overlap,
        "threshold": project.disagreement_threshold,
    }


def _params(*, project: Project, labeler: User, now: datetime) -> dict[str, Any]:
    return {
        "project_id": project.id,
        "labeler_id": labeler.id,
        "k": project.k,
        "now": now,
        **_cap_params(project),
    }


def _cap(
    order: str,
    *,
    overlap: ColumnElement[int] = _OVERLAP,
    extra: ColumnElement[int] = _EXTRA,
    threshold: ColumnElement[float] = _THRESHOLD,
) -> ColumnElement[int]:
    """The most rank slots a prompt may fill (see ``rank_cap``), as SQL on ``Prompt``."""
    if order == "disagreement":
        return case((Prompt.disagreement > threshold, extra), else_=overlap)
    return overlap


def cap_of(project: Project) -> ColumnElement[int]:
    """The project's cap of each ``Prompt``, its settings filled in (for statements that are
    not cached, such as ``refresh_rank_full``)."""
    return _cap(
        project.queue_order,
        overlap=literal(project.overlap),
        extra=literal(project.extra_overlap),
        threshold=literal(project.disagreement_threshold),
    )


def cap_of_each_project() -> ColumnElement[int]:
    """Each ``Prompt``'s cap under its own ``Project``'s settings (joined in), for statements
    over many projects, such as the progress meters' counts."""
    overlap = Project.overlap.expression
    extra = func.coalesce(Project.max_overlap, overlap + 2)  # Project.extra_overlap
    disagreement = _cap(
        "disagreement", overlap=overlap, extra=extra,
        threshold=Project.disagreement_threshold.expression,
    )  # fmt: skip
    return case((Project.queue_order == "disagreement", disagreement), else_=overlap)


def rank_cap(*, project: Project, disagreement: float | None) -> int:
    """The most rankings a prompt takes: ``overlap``, or under ``queue_order="disagreement"``
    ``extra_overlap`` while its labelers disagree above the threshold (design §14)."""
    if (
        project.queue_order == "disagreement"
        and disagreement is not None
        and disagreement > project.disagreement_threshold
    ):
        return project.extra_overlap
    return project.overlap


def _eligible(*, kind: TaskKind, gold: bool, order: str) -> list[ColumnElement[bool]]:
    """Conditions on ``Prompt`` for a task a labeler may get now (see ``_params``); ``order``
    is the project's queue order, which sets each prompt's cap."""
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
        _taken(Prompt.id, _NOW).correlate(Prompt).scalar_subquery() < _cap(order),
    ]
    return conditions


def _taken(prompt_id: Any, now: Any) -> Select[int]:
    """Rank slots of a prompt in use: submitted tasks plus live leases."""
    return select(func.count()).where(
        Assignment.prompt_id == prompt_id,
        Assignment.kind == TaskKind.rank,
        or_(Assignment.state == AssignmentState.submitted, _live_lease(now)),
    )


@functools.cache
def _free_slot_statement(order: str) -> Select[bool]:
    taken = _taken(Prompt.id, _NOW).correlate(Prompt).scalar_subquery()
    return select(taken < _cap(order)).where(Prompt.id == _PROMPT)


def has_free_slot(*, session: Session, project: Project, prompt_id: int, now: Any) -> bool:
    """The prompt has fewer submitted rank tasks plus live leases than its cap (design §4,
    §14). Its cap is read from the row as it is now: under the prompt's row lock, exact."""
    params = {**_cap_params(project), "prompt_id": prompt_id, "now": now}
    return bool(session.scalar(_free_slot_statement(project.queue_order), params))


def _order(kind: TaskKind, order: str) -> list[ColumnElement[Any]]:
    """The queue order (oldest first unless the project says otherwise); a demonstration goes
    first to prompts with no answers yet, whose only work is a demonstration (the others can
    be ranked meanwhile)."""
    if kind == TaskKind.demonstration:
        answered = exists().where(Completion.prompt_id == Prompt.id).correlate(Prompt)
        return [case((answered, 1), else_=0), Prompt.id.asc()]
    if order == "uncertain":
        # The order of ix_prompts_project_id_rank_full_score_gap on Postgres (NULLs last).
        return [Prompt.score_gap.asc().nulls_last(), Prompt.id.asc()]
    return [Prompt.id.asc()]


def _walks(*, kind: TaskKind, gold: bool, order: str) -> tuple[tuple[str, bool], ...]:
    """The (order, disagreeing first) walks a pick tries in turn. ``disagreement`` walks the
    open prompts whose labelers disagree first, then all: two index walks in id order that
    stop at the first match, where one walk sorted by disagreement would visit every open
    prompt of the project on each lease. Gold and demonstration tasks ignore the order."""
    if gold or kind == TaskKind.demonstration:
        return (("oldest", False),)
    if order == "disagreement":
        return ((order, True), (order, False))
    return ((order, False),)


@functools.cache
def _pick_statement(
    kind: TaskKind, gold: bool, postgres: bool, order: str, disagreeing: bool
) -> Select[Prompt]:
    conditions = _eligible(kind=kind, gold=gold, order=order)
    if disagreeing:
        conditions.append(Prompt.disagreement > _THRESHOLD)
    stmt = select(Prompt).where(*conditions).order_by(*_order(kind, order)).limit(1)
    if postgres:
        passed: BindParameter[int] = bindparam("passed", type_=Integer(), expanding=True)
        stmt = stmt.where(Prompt.id.not_in(passed)).with_for_update(of=Prompt, skip_locked=True)
    return stmt


@functools.cache
def _count_statement(kind: TaskKind, gold: bool, order: str) -> Select[int]:
    eligible = select(Prompt.id).where(*_eligible(kind=kind, gold=gold, order=order))
    capped = eligible.limit(bindparam("limit")).subquery()
    return select(func.count()).select_from(capped)


MAX_PICKS = 8


@functools.cache
def _answers_if_free_statement(order: str) -> Select[Completion, bool]:
    """The prompt's answers, each with whether it has a free slot (``has_free_slot``): the
    recheck under the row lock and the answers the task needs, in one round trip."""
    taken = _taken(Prompt.id, _NOW).correlate(Prompt).scalar_subquery()
    free = select(taken < _cap(order)).where(Prompt.id == _PROMPT).scalar_subquery()
    return select(Completion, free).where(Completion.prompt_id == _PROMPT)


@dataclass(frozen=True)
class _Picked:
    prompt: Prompt
    answers: list[Completion] | None = None  # None: not read yet


def _pick(
    *, session: Session, project: Project, labeler: User, kind: TaskKind, now: datetime, gold: bool
) -> _Picked | None:
    params = _params(project=project, labeler=labeler, now=now)
    walks = _walks(kind=kind, gold=gold, order=project.queue_order)
    if session.get_bind().dialect.name != "postgresql":
        # SQLite: this whole transaction holds the write lock, so the first match is ours.
        for order, disagreeing in walks:
            found = session.scalar(_pick_statement(kind, gold, False, order, disagreeing), params)
            if found is not None:
                return _Picked(found)
        return None
    passed: list[int] = []
    for order, disagreeing in walks:
        statement = _pick_statement(kind, gold, True, order, disagreeing)
        for _ in range(MAX_PICKS):
            prompt = session.scalar(statement, {**params, "passed": passed})
            if prompt is None:
                break
            if gold or kind == TaskKind.demonstration:
                return _Picked(prompt)
            # The row lock is ours now. Under READ COMMITTED the slot count above (and the
            # prompt's disagreement, its cap) may predate a lease or submit committed while we
            # waited for the row, so check again with a fresh snapshot (every lease and submit
            # of this prompt holds the same row lock), reading its answers on the way.
            rows = session.execute(
                _answers_if_free_statement(project.queue_order),
                {**_cap_params(project), "prompt_id": prompt.id, "now": now},
            ).all()
            if rows and rows[0][1]:
                return _Picked(prompt, [answer for answer, _ in rows])
            passed.append(prompt.id)
    return None


def _resume(
    *, session: Session, project: Project, labeler: User, kind: TaskKind
) -> Assignment | None:
    """The task this labeler holds (leased, not finished), even if its lease ran out."""
    return session.scalar(
        _resume_statement(kind), {"project_id": project.id, "labeler_id": labeler.id}
    )


@functools.cache
def _resume_statement(kind: TaskKind) -> Select[Assignment]:
    return (
        select(Assignment)
        .join(Prompt, Prompt.id == Assignment.prompt_id)
        .where(
            Prompt.project_id == _PROJECT,
            Assignment.labeler_id == _LABELER,
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
    # Its own lease ran out, so the prompt's taken slots are the others'.
    return has_free_slot(session=session, project=project, prompt_id=assignment.prompt_id, now=now)


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
        # One lease at a time per labeler (a double click must not lease two prompts). And no
        # JIT for this transaction: the pick's LIMIT 1 walk stops at its first match in well
        # under a millisecond, but its cost is estimated as if it read every open prompt,
        # which can make Postgres spend half a second compiling it.
        session.execute(
            select(func.pg_advisory_xact_lock(labeler.id), func.set_config("jit", "off", True))
        )

    held = _resume(session=session, project=project, labeler=labeler, kind=kind)
    if held is not None:
        if _still_worth_doing(session=session, project=project, assignment=held, now=now):
            held.expires_at = now + lease_for
            session.flush()
            return task_for(session=session, assignment=held, resumed=True)
        held.state, held.finished_at = AssignmentState.expired, now

    picked = None
    is_gold = False
    if kind == TaskKind.rank and project.gold_rate > 0 and rng.random() < project.gold_rate:
        picked = _pick(
            session=session, project=project, labeler=labeler, kind=kind, now=now, gold=True
        )
        is_gold = picked is not None
    if picked is None:
        picked = _pick(
            session=session, project=project, labeler=labeler, kind=kind, now=now, gold=False
        )
    if picked is None:
        session.flush()
        return None

    prompt = picked.prompt
    display_order: list[int] | None = None
    answers: list[Completion] = []
    if kind == TaskKind.rank:
        answers = (
            picked.answers
            if picked.answers is not None
            else list(session.scalars(select(Completion).where(Completion.prompt_id == prompt.id)))
        )
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
    order = project.queue_order if kind == TaskKind.rank else "oldest"
    total = 0
    for gold in (False, True) if kind == TaskKind.rank else (False,):
        statement = _count_statement(kind, gold, "oldest" if gold else order)
        total += session.scalar(statement, {**params, "limit": limit - total}) or 0
        if total >= limit:
            break
    return total
