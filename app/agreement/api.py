"""``GET /api/v1/projects/{id}/agreement``: the same JSON as ``rlhf agreement --json``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query

from app.agreement.service import AgreementFilters, FilterError, project_agreement
from app.deps import ApiAdmin, DbSession
from app.projects.service import get_project

router = APIRouter(prefix="/projects", tags=["agreement"])


@router.get("/{project_id}/agreement")
def api_agreement(
    project_id: int,
    session: DbSession,
    user: ApiAdmin,
    since: Annotated[str | None, Query(description="Rankings from this day (YYYY-MM-DD)")] = None,
    until: Annotated[str | None, Query(description="... up to this day, inclusive")] = None,
    labeler: Annotated[str | None, Query(description="user:ID or external:NAME")] = None,
    gold: Annotated[str, Query(description="all, gold or non-gold")] = "all",
    include_imported: Annotated[
        bool,
        Query(
            description="Count imported preferences (import:<file>) as raters in the "
            "project's figures; they are listed apart under 'imported' either way"
        ),
    ] = False,
) -> dict[str, Any]:
    """Agreement figures: `null` and a `reason` where there is not enough data."""
    project = get_project(session=session, ref=project_id)
    try:
        filters = AgreementFilters.parse(
            since=since, until=until, labeler=labeler, gold=gold, include_imported=include_imported
        )
    except FilterError as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from exc
    return project_agreement(session=session, project=project, filters=filters).as_dict()
