"""``/api/v1/projects`` (design §8a); an admin changes a project's queue settings with
``PATCH /api/v1/projects/{id}`` (design §14)."""

from __future__ import annotations

from typing import Any, cast

from fastapi import APIRouter, HTTPException

from app.api_errors import ADMIN_ONLY
from app.audit.service import record
from app.deps import ApiAdmin, ApiUser, DbSession
from app.projects.models import Project
from app.projects.schemas import ProjectCountsOut, ProjectOut, ProjectQueueIn, QueueOrder
from app.projects.service import (
    KEEP,
    ProjectCounts,
    ProjectFormError,
    ProjectSettings,
    get_project,
    labeler_project,
    list_projects,
    project_counts,
    settings_changes,
    update_project,
)

router = APIRouter(prefix="/projects", tags=["projects"])


def _out(project: Project, counts: ProjectCounts) -> ProjectOut:
    return ProjectOut(
        id=project.id,
        name=project.name,
        k=project.k,
        overlap=project.overlap,
        queue_order=cast(QueueOrder, project.queue_order),  # checked on the way in
        max_overlap=project.max_overlap,
        disagreement_threshold=project.disagreement_threshold,
        counts=ProjectCountsOut(
            prompts=counts.prompts,
            completions=counts.completions,
            demonstrations=counts.demonstrations,
            comparisons=counts.comparisons,
        ),
    )


@router.get("", response_model=list[ProjectOut])
def api_list_projects(session: DbSession, user: ApiUser) -> list[ProjectOut]:
    projects = list_projects(session=session, for_user=user)
    counts = project_counts(session=session, projects=projects)
    return [_out(p, counts[p.id]) for p in projects]


@router.get("/{project_id}", response_model=ProjectOut)
def api_get_project(project_id: int, session: DbSession, user: ApiUser) -> ProjectOut:
    project = labeler_project(session=session, ref=project_id, user=user)
    counts = project_counts(session=session, projects=[project])[project.id]
    return _out(project, counts)


@router.patch("/{project_id}", response_model=ProjectOut, responses=ADMIN_ONLY)
def api_update_project(
    project_id: int, body: ProjectQueueIn, session: DbSession, user: ApiAdmin
) -> ProjectOut:
    """Change the overlap or the queue settings; what is left out stays. The same rules as
    the edit page: 422 with every wrong field's message."""
    project = get_project(session=session, ref=project_id)
    before = ProjectSettings.of(project)
    given: dict[str, Any] = body.model_dump(exclude_unset=True)
    try:
        update_project(
            session=session,
            project=project,
            overlap=given.get("overlap"),
            queue_order=given.get("queue_order"),
            max_overlap=given.get("max_overlap", KEEP),
            disagreement_threshold=given.get("disagreement_threshold"),
        )
    except ProjectFormError as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from exc
    changes = settings_changes(before, ProjectSettings.of(project))
    if changes:
        record(
            session=session, actor_id=user.id, action="project.update", target_type="project",
            target_id=project.id, details={**changes, "via": "api"},
        )  # fmt: skip
    session.commit()
    counts = project_counts(session=session, projects=[project])[project.id]
    return _out(project, counts)
