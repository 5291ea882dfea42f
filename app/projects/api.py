"""``/api/v1/projects`` (design §8a)."""

from __future__ import annotations

from fastapi import APIRouter

from app.deps import ApiUser, DbSession
from app.projects.models import Project
from app.projects.schemas import ProjectCountsOut, ProjectOut
from app.projects.service import ProjectCounts, labeler_project, list_projects, project_counts

router = APIRouter(prefix="/projects", tags=["projects"])


def _out(project: Project, counts: ProjectCounts) -> ProjectOut:
    return ProjectOut(
        id=project.id,
        name=project.name,
        k=project.k,
        overlap=project.overlap,
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
