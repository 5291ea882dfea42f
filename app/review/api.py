"""``POST /api/v1/comparisons/{id}/review``, ``POST /api/v1/demonstrations/{id}/review`` and
``GET /api/v1/projects/{id}/comparisons`` (design §13): admins only."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query

from app.agreement.service import labeler_key
from app.api_errors import ADMIN_ONLY
from app.deps import ApiAdmin, DbSession
from app.labeling.models import Comparison
from app.projects.service import get_project
from app.review.models import Review, Verdict
from app.review.schemas import ComparisonOut, ReviewIn, ReviewOut, state_out
from app.review.service import ItemKind, ReviewError, ReviewState, list_comparisons, review_item

router = APIRouter(tags=["review"], responses=ADMIN_ONLY)
MAX_LIMIT = 500
VERDICTS = {"accept": Verdict.accepted, "reject": Verdict.rejected}


def _review(
    session: DbSession, user: ApiAdmin, kind: ItemKind, item_id: int, body: ReviewIn
) -> ReviewOut:
    try:
        review = review_item(
            session=session, reviewer=user, kind=kind, item_id=item_id,
            verdict=VERDICTS[body.verdict], note=body.note,
        )  # fmt: skip
    except ReviewError as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from exc
    session.commit()
    return ReviewOut(target=kind, id=item_id, **state_out(review).model_dump())


@router.post("/comparisons/{comparison_id}/review", response_model=ReviewOut)
def api_review_comparison(
    comparison_id: int, body: ReviewIn, session: DbSession, user: ApiAdmin
) -> ReviewOut:
    """Accept or reject a labeler's ranking; a second review replaces the first. A rejected
    ranking is kept but left out of exports, agreement, consensus, training and the
    leaderboard, and its labeler sees the note."""
    return _review(session, user, "comparison", comparison_id, body)


@router.post("/demonstrations/{demonstration_id}/review", response_model=ReviewOut)
def api_review_demonstration(
    demonstration_id: int, body: ReviewIn, session: DbSession, user: ApiAdmin
) -> ReviewOut:
    """Accept or reject a demonstration; a rejected one leaves SFT exports and snapshots."""
    return _review(session, user, "demonstration", demonstration_id, body)


@router.get("/projects/{project_id}/comparisons", response_model=list[ComparisonOut])
def api_list_comparisons(
    project_id: int,
    session: DbSession,
    user: ApiAdmin,
    labeler: Annotated[
        str | None, Query(description="user:ID or external:NAME", pattern=r"^(user|external):.+")
    ] = None,
    review: Annotated[ReviewState | None, Query(description="Only items in this state")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="At most this many")] = 50,
    offset: Annotated[int, Query(ge=0, description="After skipping this many")] = 0,
) -> list[ComparisonOut]:
    """The project's current rankings (latest revision each), newest first."""
    project = get_project(session=session, ref=project_id)
    return [
        _comparison_out(c, r)
        for c, r in list_comparisons(
            session=session, project=project, labeler=labeler, review=review,
            limit=limit, offset=offset,
        )
    ]  # fmt: skip


def _comparison_out(comparison: Comparison, review: Review | None) -> ComparisonOut:
    return ComparisonOut(
        id=comparison.id,
        prompt_id=comparison.prompt_id,
        labeler=labeler_key(comparison.labeler_id, comparison.labeler_external),
        ranking=comparison.ranking,
        not_rankable=comparison.not_rankable,
        created_at=comparison.created_at,
        review=state_out(review),
    )
