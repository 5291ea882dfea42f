"""The review page (admins, design §13): walks a project's recent rankings and demonstrations
one at a time, by labeler, lowest agreement first or only gold misses; accept, reject with a
note, or go on to the next (keys A, R, N; static/js/review.js)."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from app.agreement.service import labeler_choices
from app.deps import AdminUser, DbSession
from app.projects.models import Project
from app.projects.service import get_project
from app.review.models import Verdict
from app.review.service import (
    NOTE_MAX,
    REVIEW_STATES,
    ReviewError,
    WalkFilters,
    review_item,
    review_walk,
    reviewed_item,
)
from app.web.templating import render

router = APIRouter(prefix="/admin/projects", tags=["review"])


def _query(filters: WalkFilters, at: int) -> str:
    kept = {
        "labeler": filters.labeler,
        "state": filters.state if filters.state != "pending" else "",
        "kind": filters.kind if filters.kind != "all" else "",
        "order": filters.order if filters.order != "recent" else "",
        "gold_misses": "1" if filters.gold_misses else "",
        "at": str(at) if at else "",
    }
    return urlencode({k: v for k, v in kept.items() if v})


def _page(
    request: Request,
    session: DbSession,
    project: Project,
    filters: WalkFilters,
    at: int,
    *,
    error: str | None = None,
    note: str = "",
    status_code: int = 200,
) -> Response:
    walk = review_walk(session=session, project=project, filters=filters)
    at = min(max(at, 0), max(len(walk) - 1, 0))
    item = reviewed_item(session=session, project=project, entry=walk[at]) if walk else None
    path = f"/admin/projects/{project.id}/review"
    context = {
        "project": project,
        "filters": filters,
        "walk_size": len(walk),
        "at": at,
        "item": item,
        "error": error,
        "note": note,
        "note_max": NOTE_MAX,
        "states": REVIEW_STATES,
        # People's work only (review_walk): an AI judge is no labeler to pick.
        "labeler_choices": labeler_choices(
            session=session, project=project, authors=True, ai_judges=False
        ),
        "next_url": f"{path}?{_query(filters, at + 1)}" if at + 1 < len(walk) else None,
        "previous_url": f"{path}?{_query(filters, at - 1)}" if at > 0 else None,
    }
    return render(request, "review/page.html", context, status_code=status_code)


@router.get("/{project_id}/review", name="project_review")
def review_page(
    request: Request,
    session: DbSession,
    user: AdminUser,
    project_id: int,
    labeler: str = "",
    state: str = "pending",
    kind: str = "all",
    order: str = "recent",
    gold_misses: str = "",
    at: int = 0,
) -> Response:
    project = get_project(session=session, ref=project_id)
    filters = WalkFilters.parse(
        labeler=labeler, state=state, kind=kind, order=order, gold_misses=gold_misses
    )
    return _page(request, session, project, filters, at)


@router.post("/{project_id}/review/{kind}/{item_id}", name="project_review_item")
def review_post(
    request: Request,
    session: DbSession,
    user: AdminUser,
    project_id: int,
    kind: str,
    item_id: int,
    verdict: Annotated[str, Form()] = "",
    note: Annotated[str, Form(max_length=NOTE_MAX * 2)] = "",
    f_labeler: Annotated[str, Form()] = "",
    f_state: Annotated[str, Form()] = "pending",
    f_kind: Annotated[str, Form()] = "all",
    f_order: Annotated[str, Form()] = "recent",
    f_gold_misses: Annotated[str, Form()] = "",
    at: Annotated[int, Form()] = 0,
) -> Response:
    project = get_project(session=session, ref=project_id)
    filters = WalkFilters.parse(
        labeler=f_labeler, state=f_state, kind=f_kind, order=f_order, gold_misses=f_gold_misses
    )
    if kind not in ("comparison", "demonstration") or verdict not in ("accept", "reject"):
        return _page(
            request, session, project, filters, at, error="Choose accept or reject.",
            status_code=422,
        )  # fmt: skip
    try:
        review_item(
            session=session, reviewer=user, kind=kind,  # type: ignore[arg-type]
            item_id=item_id, verdict=Verdict.accepted if verdict == "accept" else Verdict.rejected,
            note=note, project=project,
        )  # fmt: skip
    except ReviewError as exc:
        return _page(
            request, session, project, filters, at, error=str(exc).capitalize() + ".",
            note=note, status_code=422,
        )  # fmt: skip
    session.commit()
    # An item whose new state is not the one walked leaves the list: the next takes its place.
    new_state = "accepted" if verdict == "accept" else "rejected"
    at_next = at + 1 if filters.state in ("all", new_state) else at
    path = f"/admin/projects/{project.id}/review"
    return RedirectResponse(f"{path}?{_query(filters, at_next)}", status_code=303)
