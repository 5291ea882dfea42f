"""``GET /api/v1/projects/{id}/agreement``: the same JSON as ``rlhf agreement --json``; and
``GET /api/v1/projects/{id}/leaderboard``: the model leaderboard."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query

from app.agreement.leaderboard import project_leaderboard
from app.agreement.schemas import LeaderboardOut
from app.agreement.service import AgreementFilters, FilterError, GoldFilter, project_agreement
from app.api_errors import ADMIN_ONLY
from app.deps import ApiAdmin, DbSession
from app.projects.service import get_project

# A day as YYYY-MM-DD, nothing else (a bare number is not a day); the calendar is checked by
# AgreementFilters.parse.
DAY: dict[str, Any] = {"pattern": r"^\d{4}-\d{2}-\d{2}$", "json_schema_extra": {"format": "date"}}

router = APIRouter(prefix="/projects", tags=["agreement"], responses=ADMIN_ONLY)


@router.get("/{project_id}/agreement")
def api_agreement(
    project_id: int,
    session: DbSession,
    user: ApiAdmin,
    since: Annotated[str | None, Query(description="Rankings from this day", **DAY)] = None,
    until: Annotated[
        str | None, Query(description="... up to this day, inclusive (not before since)", **DAY)
    ] = None,
    labeler: Annotated[
        str | None, Query(description="user:ID or external:NAME", pattern=r"^(user|external):.+")
    ] = None,
    gold: Annotated[GoldFilter, Query(description="Which prompts: all, gold or non-gold")] = "all",
    include_imported: Annotated[
        bool,
        Query(
            description="Count imported preferences (import:<file>) as raters in the "
            "project's figures; they are listed apart under 'imported' either way"
        ),
    ] = False,
) -> dict[str, Any]:
    """Agreement figures: `null` and a `reason` where there is not enough data. AI judges
    (`ai:<name>`) count in none of them: each is listed under `ai` with its agreement with
    people's rankings of the same prompts."""
    project = get_project(session=session, ref=project_id)
    try:
        filters = AgreementFilters.parse(
            since=since, until=until, labeler=labeler, gold=gold, include_imported=include_imported
        )
    except FilterError as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from exc
    return project_agreement(session=session, project=project, filters=filters).as_dict()


@router.get("/{project_id}/leaderboard", response_model=LeaderboardOut)
def api_leaderboard(project_id: int, session: DbSession, user: ApiAdmin) -> dict[str, Any]:
    """Bradley-Terry ratings of each answer origin from people's rankings, best first (design
    §14): each ranking counts once, intervals from a bootstrap over prompts."""
    project = get_project(session=session, ref=project_id)
    return project_leaderboard(session=session, project=project).as_dict()
