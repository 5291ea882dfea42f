"""Reviewing labelers' work (design §13): an admin accepts or rejects a comparison or a
demonstration with a note; the review page's walk through recent work; what a labeler sees of
their rejected items. What rejected work is left out of is decided where each consumer loads
it (``app.review.models.not_rejected_comparison`` and ``not_rejected_demonstration``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, TypeVar

import numpy as np
from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from app.agreement import metrics
from app.agreement.service import (
    PromptSideBySide,
    _whose,
    labeler_key,
    load_rank_table,
    not_ai_rated,
    side_by_side,
)
from app.audit.service import record
from app.auth.models import User
from app.db import utcnow
from app.errors import NotFoundError
from app.labeling.models import Comparison, Demonstration, Prompt
from app.labeling.service import review_changed_disagreement
from app.projects.models import Project
from app.review.models import Review, Verdict

ItemKind = Literal["comparison", "demonstration"]
ReviewState = Literal["pending", "accepted", "rejected"]
REVIEW_STATES: tuple[ReviewState, ...] = ("pending", "accepted", "rejected")
NOTE_MAX = 2000
# The review page walks this many of the newest items of each kind (the filters apply first).
RECENT = 500
SelectT = TypeVar("SelectT", bound="Select[*tuple[Any, ...]]")


class ReviewError(ValueError):
    """A review that cannot be stored as asked (a rejection without a note)."""


def review_state(review: Review | None) -> ReviewState:
    return "pending" if review is None else review.verdict.value


def review_item(
    *,
    session: Session,
    reviewer: User,
    kind: ItemKind,
    item_id: int,
    verdict: Verdict,
    note: str | None,
    project: Project | None = None,
) -> Review:
    """Store the verdict on one comparison or demonstration, replacing an earlier one (the
    audit log keeps each). A rejection needs a note: it is what the labeler reads. With
    ``project`` (the review page's), an item of another project is not found."""
    note = (note or "").strip() or None
    if verdict == Verdict.rejected and note is None:
        raise ReviewError("a rejection needs a note for the labeler")
    if note is not None and len(note) > NOTE_MAX:
        raise ReviewError(f"the note is longer than {NOTE_MAX} characters")
    # The item's row lock keeps two admins' reviews of it from both inserting a row.
    item: Comparison | Demonstration | None = (
        session.get(Comparison, item_id, with_for_update=True)
        if kind == "comparison"
        else session.get(Demonstration, item_id, with_for_update=True)
    )
    if item is None or (
        project is not None and session.get_one(Prompt, item.prompt_id).project_id != project.id
    ):
        raise NotFoundError(f"no {kind} {item_id}")
    target = Review.comparison_id if kind == "comparison" else Review.demonstration_id
    review = session.scalar(select(Review).where(target == item_id))
    previous = review_state(review)
    if review is None:
        review = (
            Review(comparison_id=item_id)
            if kind == "comparison"
            else Review(demonstration_id=item_id)
        )
        session.add(review)
    review.verdict = verdict
    review.note = note
    review.reviewer_id = reviewer.id
    review.reviewed_at = utcnow()
    session.flush()
    if (
        kind == "comparison"
        and previous != verdict.value
        and Verdict.rejected.value
        in (
            previous,
            verdict.value,
        )
    ):
        # A rejected ranking says nothing about disagreement: the queue's figure for its
        # prompt (queue_order="disagreement") is computed again without it.
        prompt = session.get_one(Prompt, item.prompt_id)
        review_changed_disagreement(
            session=session,
            project=session.get_one(Project, prompt.project_id),
            prompt_id=prompt.id,
        )
    record(
        session=session,
        actor_id=reviewer.id,
        action=f"{kind}.review",
        target_type=kind,
        target_id=item_id,
        details={"verdict": verdict.value, "note": note, "previous": previous},
    )
    return review


def _with_state(stmt: SelectT, state: str | None) -> SelectT:
    """Narrow a query that outer-joins ``Review`` to the items in one review state."""
    if state == "pending":
        return stmt.where(Review.id.is_(None))
    if state in ("accepted", "rejected"):
        return stmt.where(Review.verdict == Verdict(state))
    return stmt


def list_comparisons(
    *,
    session: Session,
    project: Project,
    labeler: str | None = None,
    review: ReviewState | None = None,
    limit: int = 50,
    offset: int = 0,
) -> list[tuple[Comparison, Review | None]]:
    """The project's current comparisons, newest first, with their reviews; ``labeler`` a key
    ("user:3", "external:NAME") and ``review`` a state narrow them."""
    stmt = (
        select(Comparison, Review)
        .join(Prompt, Prompt.id == Comparison.prompt_id)
        .outerjoin(Review, Review.comparison_id == Comparison.id)
        .where(Prompt.project_id == project.id, Comparison.is_latest.is_(True))
    )
    if labeler:
        stmt = stmt.where(_whose(labeler))
    stmt = _with_state(stmt, review)
    stmt = stmt.order_by(Comparison.created_at.desc(), Comparison.id.desc())
    return [(c, r) for c, r in session.execute(stmt.limit(limit).offset(offset))]


# --- The review page's walk ----------------------------------------------------------------


@dataclass(frozen=True)
class ComparisonStats:
    agreement: float | None  # with the consensus of the other labelers (leave-one-out)
    gold_miss: bool  # it orders some pair against the gold ranking


def comparison_stats(*, session: Session, project: Project) -> dict[int, ComparisonStats]:
    """Per counted comparison, the agreement figures' own per-ranking numbers: agreement with
    the others' consensus (what the labeler table averages; AI judges are not among the
    others) and whether it misses gold."""
    table = load_rank_table(session=session, project=project).without_ai()
    agreed, counted = metrics.leave_one_out_agreement(table.ranks, table.prompt, table.n_prompts)
    gold_agreed, gold_counted = metrics.agreement_with_reference(
        table.ranks, table.gold[table.prompt]
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(counted > 0, agreed / np.maximum(counted, 1), np.nan)
    return {
        int(cid): ComparisonStats(
            agreement=None if np.isnan(share[i]) else float(share[i]),
            gold_miss=bool(gold_counted[i] > 0 and gold_agreed[i] < gold_counted[i]),
        )
        for i, cid in enumerate(table.comparison_ids)
    }


@dataclass(frozen=True)
class WalkFilters:
    labeler: str = ""  # a labeler key, "" for everyone
    state: str = "pending"  # pending, accepted, rejected or all
    kind: str = "all"  # all, comparison or demonstration
    order: str = "recent"  # recent, or agreement (lowest first)
    gold_misses: bool = False  # only rankings that order a pair against gold

    @classmethod
    def parse(
        cls, *, labeler: str, state: str, kind: str, order: str, gold_misses: str
    ) -> WalkFilters:
        """Unknown values fall back to the defaults (a page's query string, not an API)."""
        return cls(
            labeler=labeler.strip(),
            state=state if state in (*REVIEW_STATES, "all") else "pending",
            kind=kind if kind in ("comparison", "demonstration") else "all",
            order="agreement" if order == "agreement" else "recent",
            gold_misses=gold_misses in ("1", "true", "on"),
        )


@dataclass(frozen=True)
class WalkEntry:
    kind: ItemKind
    item_id: int
    labeler: str  # key
    created_at: datetime
    agreement: float | None = None
    gold_miss: bool = False


def review_walk(*, session: Session, project: Project, filters: WalkFilters) -> list[WalkEntry]:
    """The items the review page walks, in order: the newest first, or (``order=agreement``)
    the rankings that agree least with the others first and the rest after them. People's
    work only: an AI judge's rankings are no labeler's (the agreement page shows them)."""
    state = None if filters.state == "all" else filters.state
    entries: list[WalkEntry] = []
    need_stats = filters.order == "agreement" or filters.gold_misses
    stats = comparison_stats(session=session, project=project) if need_stats else {}
    if filters.kind in ("all", "comparison"):
        stmt = (
            select(
                Comparison.id,
                Comparison.labeler_id,
                Comparison.labeler_external,
                Comparison.created_at,
            )
            .join(Prompt, Prompt.id == Comparison.prompt_id)
            .outerjoin(Review, Review.comparison_id == Comparison.id)
            .where(Prompt.project_id == project.id, Comparison.is_latest.is_(True))
            .where(not_ai_rated())
        )
        if filters.labeler:
            stmt = stmt.where(_whose(filters.labeler))
        if filters.gold_misses:
            misses = [cid for cid, s in stats.items() if s.gold_miss]
            stmt = stmt.where(Comparison.id.in_(misses))
        stmt = _with_state(stmt, state)
        stmt = stmt.order_by(Comparison.created_at.desc(), Comparison.id.desc()).limit(RECENT)
        for cid, labeler_id, external, created in session.execute(stmt):
            s = stats.get(cid)
            entries.append(
                WalkEntry(
                    "comparison", cid, labeler_key(labeler_id, external), created,
                    agreement=s.agreement if s else None, gold_miss=bool(s and s.gold_miss),
                )
            )  # fmt: skip
    if filters.kind in ("all", "demonstration") and not filters.gold_misses:
        dstmt = (
            select(
                Demonstration.id,
                Demonstration.author_id,
                Demonstration.author_external,
                Demonstration.created_at,
            )
            .join(Prompt, Prompt.id == Demonstration.prompt_id)
            .outerjoin(Review, Review.demonstration_id == Demonstration.id)
            .where(Prompt.project_id == project.id)
        )
        if filters.labeler:
            kind_, _, value = filters.labeler.partition(":")
            dstmt = dstmt.where(
                Demonstration.author_id == int(value)
                if kind_ == "user" and value.isdigit()
                else Demonstration.author_external == value
            )
        dstmt = _with_state(dstmt, state)
        dstmt = dstmt.order_by(Demonstration.created_at.desc(), Demonstration.id.desc())
        for did, author_id, external, created in session.execute(dstmt.limit(RECENT)):
            entries.append(
                WalkEntry("demonstration", did, labeler_key(author_id, external), created)
            )
    entries.sort(key=lambda e: (e.created_at, e.item_id), reverse=True)
    if filters.order == "agreement":
        # Lowest agreement first; rankings without a figure, then demonstrations, after.
        entries.sort(
            key=lambda e: (
                e.kind != "comparison",
                e.agreement is None,
                e.agreement if e.agreement is not None else 0.0,
            )
        )
    return entries


@dataclass(frozen=True)
class ReviewedItem:
    """One item as the review page shows it."""

    entry: WalkEntry
    review: Review | None
    labeler_name: str
    comparison: PromptSideBySide | None = None  # the ranking beside the others' and gold
    demonstration: Demonstration | None = None
    prompt_text: str = ""


def reviewed_item(*, session: Session, project: Project, entry: WalkEntry) -> ReviewedItem:
    target = Review.comparison_id if entry.kind == "comparison" else Review.demonstration_id
    review = session.scalar(select(Review).where(target == entry.item_id))
    name = entry.labeler.removeprefix("external:")
    if entry.labeler.startswith("user:"):
        user = session.get(User, int(entry.labeler.removeprefix("user:")))
        name = user.label if user else name
    if entry.kind == "comparison":
        shown = side_by_side(
            session=session, project=project, key=entry.labeler, only=[entry.item_id]
        )
        comparison = shown[0] if shown else None
        prompt_text = comparison.prompt_text if comparison else ""
        if comparison is None:  # a "not rankable" ranking: nothing to put side by side
            row = session.get(Comparison, entry.item_id)
            prompt = session.get(Prompt, row.prompt_id) if row else None
            prompt_text = prompt.text if prompt else ""
        return ReviewedItem(entry, review, name, comparison=comparison, prompt_text=prompt_text)
    demonstration = session.get(Demonstration, entry.item_id)
    prompt = session.get(Prompt, demonstration.prompt_id) if demonstration else None
    return ReviewedItem(
        entry, review, name, demonstration=demonstration, prompt_text=prompt.text if prompt else ""
    )


# --- What the labeler sees -----------------------------------------------------------------


@dataclass(frozen=True)
class RejectedWork:
    kind: ItemKind
    item_id: int
    project_name: str
    prompt_text: str
    note: str
    reviewed_at: datetime


def rejected_work(*, session: Session, user: User, limit: int = 20) -> list[RejectedWork]:
    """The labeler's rejected rankings and demonstrations, newest review first, with the
    admins' notes (their home page)."""
    out: list[RejectedWork] = []
    for kind, model, who in (
        ("comparison", Comparison, Comparison.labeler_id),
        ("demonstration", Demonstration, Demonstration.author_id),
    ):
        target = Review.comparison_id if kind == "comparison" else Review.demonstration_id
        rows = session.execute(
            select(model.id, Project.name, Prompt.text, Review.note, Review.reviewed_at)
            .join(Review, target == model.id)
            .join(Prompt, Prompt.id == model.prompt_id)
            .join(Project, Project.id == Prompt.project_id)
            .where(who == user.id, Review.verdict == Verdict.rejected)
            .order_by(Review.reviewed_at.desc())
            .limit(limit)
        )
        out += [
            RejectedWork(kind, item_id, project_name, text, note or "", at)  # type: ignore[arg-type]
            for item_id, project_name, text, note, at in rows
        ]
    out.sort(key=lambda w: w.reviewed_at, reverse=True)
    return out[:limit]
