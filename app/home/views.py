"""The two home pages: what a labeler can work on, and the admin's overview."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import func, select

from app.db import utcnow
from app.deps import AdminUser, CurrentUser, DbSession
from app.jobs.service import list_jobs
from app.labeling.models import Comparison, Demonstration, TaskKind
from app.labeling.queue import count_available
from app.projects.service import labeler_project, list_projects, project_counts
from app.review.service import rejected_work
from app.web.templating import render

router = APIRouter(tags=["pages"])


@router.get("/", name="root")
def root(user: CurrentUser) -> Response:
    return RedirectResponse("/admin" if user.is_admin else "/home", status_code=303)


@router.get("/home", name="labeler_home")
def labeler_home(request: Request, session: DbSession, user: CurrentUser) -> Response:
    projects = list_projects(session=session, for_user=user)
    counts = project_counts(session=session, projects=projects)
    since = utcnow() - timedelta(hours=24)
    done_today = {
        "rankings": session.scalar(
            select(func.count()).where(
                Comparison.labeler_id == user.id, Comparison.created_at >= since
            )
        )
        or 0,
        "demonstrations": session.scalar(
            select(func.count()).where(
                Demonstration.author_id == user.id, Demonstration.created_at >= since
            )
        )
        or 0,
    }
    done_total = session.scalar(select(func.count()).where(Comparison.labeler_id == user.id)) or 0
    queues = {
        p.id: {
            kind.value: count_available(session=session, project=p, labeler=user, kind=kind)
            for kind in TaskKind
        }
        for p in projects
    }
    return render(
        request,
        "labeler/home.html",
        {
            "projects": projects,
            "counts": counts,
            "queues": queues,
            "done_today": done_today,
            "done_total": done_total,
            "rejected": rejected_work(session=session, user=user),
        },
    )


@router.get("/admin", name="admin_home")
def admin_home(request: Request, session: DbSession, user: AdminUser) -> Response:
    projects = list_projects(session=session)
    counts = project_counts(session=session, projects=projects)
    jobs = list_jobs(session=session, limit=10)
    return render(
        request, "admin/home.html", {"projects": projects, "counts": counts, "jobs": jobs}
    )


@router.get("/projects/{project_id}/guidelines", name="project_guidelines")
def project_guidelines(
    request: Request, session: DbSession, user: CurrentUser, project_id: int
) -> Response:
    project = labeler_project(session=session, ref=project_id, user=user)
    return render(request, "labeler/guidelines.html", {"project": project})
