"""Admin pages for projects: create, see (settings and counts), edit; the guidelines preview."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from app.agreement.leaderboard import MEAN_RATING, project_leaderboard
from app.audit.service import record
from app.auth.models import User
from app.auth.service import get_user_by_email
from app.deps import AdminUser, CeleryDep, DbSession
from app.jobs import kinds
from app.jobs.service import commit_and_enqueue, create_job
from app.projects.generation import (
    GenerationSettings,
    check_generation_settings,
    update_generation_settings,
)
from app.projects.models import Project
from app.projects.schemas import QUEUE_ORDER_CHOICES, GenerationForm, ProjectForm
from app.projects.service import (
    ProjectFormError,
    ProjectSettings,
    add_member,
    check_project_settings,
    create_project,
    get_project,
    has_comparisons,
    has_score_gaps,
    project_counts,
    project_members,
    remove_member,
    settings_changes,
    update_project,
)
from app.web.charts import interval_chart
from app.web.templating import render

router = APIRouter(prefix="/admin/projects", tags=["projects"])

# ?saved=... on the project page after a redirect says what just happened.
SAVED_NOTES = {
    "created": "Project created.",
    "updated": "Changes saved.",
    "generation": "Generation settings saved; the next generation job uses them.",
    "access": "Access saved.",
}


def _form_page(
    request: Request,
    *,
    form: ProjectForm,
    project: Project | None,
    k_locked: bool = False,
    scored: bool = False,
    errors: dict[str, str] | None = None,
) -> Response:
    """``scored``: some prompt has a reward-model score gap (else the page says that
    ``uncertain`` serves oldest first until ``rlhf score`` has run)."""
    return render(
        request,
        "projects/form.html",
        {
            "form": form, "project": project, "k_locked": k_locked, "scored": scored,
            "errors": errors or {}, "queue_orders": QUEUE_ORDER_CHOICES,
        },
        status_code=422 if errors else 200,
    )  # fmt: skip


def _read_form(
    session: DbSession, form: ProjectForm, project: Project | None
) -> tuple[ProjectSettings, dict[str, str]]:
    """The form's settings and every message at once: numbers that could not be read, and the
    service's rules for the rest."""
    fallback = ProjectSettings.of(project) if project else ProjectSettings(name="")
    settings, unreadable = form.to_settings(fallback)
    _, errors = check_project_settings(session=session, settings=settings, project=project)
    return settings, {**errors, **unreadable}


@router.get("/new", name="project_new")
def new_project(request: Request, user: AdminUser) -> Response:
    return _form_page(request, form=ProjectForm.new(), project=None)


@router.post("", name="project_create")
def create(
    request: Request,
    session: DbSession,
    user: AdminUser,
    form: Annotated[ProjectForm, Form()],
) -> Response:
    settings, errors = _read_form(session, form, None)
    if errors:
        return _form_page(request, form=form, project=None, errors=errors)
    try:
        project = create_project(
            session=session,
            **asdict(settings),  # the service takes the settings' fields by name
            created_by_id=user.id,
        )
    except ProjectFormError as exc:  # a name taken in between
        return _form_page(request, form=form, project=None, errors=exc.errors)
    record(
        session=session,
        actor_id=user.id,
        action="project.create",
        target_type="project",
        target_id=project.id,
        details={"name": project.name, "k": project.k, "overlap": project.overlap},
    )
    session.commit()
    return RedirectResponse(f"/admin/projects/{project.id}?saved=created", status_code=303)


@router.post("/preview-guidelines", name="project_preview_guidelines")
def preview_guidelines(
    request: Request, user: AdminUser, guidelines: Annotated[str, Form()] = ""
) -> Response:
    """The guidelines as labelers will see them (htmx, while the admin types)."""
    return render(request, "projects/_guidelines_preview.html", {"guidelines": guidelines})


@router.get("/{project_id}", name="project_detail")
def project_detail(
    request: Request, session: DbSession, user: AdminUser, project_id: int, saved: str = ""
) -> Response:
    project = get_project(session=session, ref=project_id)
    return _detail_page(request, session, project, saved_note=SAVED_NOTES.get(saved))


def _detail_page(
    request: Request, session: DbSession, project: Project, *, saved_note: str | None = None,
    access_error: str | None = None, members_typed: str | None = None, status_code: int = 200,
) -> Response:  # fmt: skip
    counts = project_counts(session=session, projects=[project])[project.id]
    members = project_members(session=session, project=project)
    leaderboard = project_leaderboard(session=session, project=project)
    chart = interval_chart(
        [(s.name, s.rating, *s.ci) for s in leaderboard.models],
        reference=MEAN_RATING,
    )
    return render(
        request,
        "projects/detail.html",
        {
            "project": project, "counts": counts, "saved_note": saved_note,
            "members": members, "access_error": access_error,
            "leaderboard": leaderboard, "leaderboard_chart": chart,
            "members_typed": members_typed if members_typed is not None
            else "\n".join(m.email for m in members),
        },
        status_code=status_code,
    )  # fmt: skip


@router.post("/{project_id}/access", name="project_access")
def project_access(
    request: Request,
    session: DbSession,
    user: AdminUser,
    project_id: int,
    members: Annotated[str, Form(max_length=200_000)] = "",
    restricted: Annotated[bool, Form()] = False,
) -> Response:
    """Who may label the project: open to every labeler, or to the members listed (one
    email a line). An unknown email changes nothing and is named."""
    project = get_project(session=session, ref=project_id)
    wanted: dict[int, User] = {}
    unknown = []
    for line in members.splitlines():
        email = line.strip()
        if not email:
            continue
        found = get_user_by_email(session=session, email=email)
        if found is None:
            unknown.append(email)
        else:
            wanted[found.id] = found
    if unknown:
        message = (
            "No user with the email " + ", ".join(unknown[:5]) + (" …" if len(unknown) > 5 else "")
        )
        return _detail_page(
            request, session, project, access_error=message + ". Nothing was changed.",
            members_typed=members, status_code=422,
        )  # fmt: skip
    current = {m.id: m for m in project_members(session=session, project=project)}
    for member_id, member in wanted.items():
        if member_id not in current:
            add_member(session=session, project=project, user=member)
    for member_id, member in current.items():
        if member_id not in wanted:
            remove_member(session=session, project=project, user=member)
    project.restricted = restricted
    record(
        session=session, actor_id=user.id, action="project.members", target_type="project",
        target_id=project.id, details={"restricted": restricted, "members": len(wanted)},
    )  # fmt: skip
    session.commit()
    return RedirectResponse(f"/admin/projects/{project.id}?saved=access#access", status_code=303)


@router.get("/{project_id}/edit", name="project_edit")
def edit_project(
    request: Request, session: DbSession, user: AdminUser, project_id: int
) -> Response:
    project = get_project(session=session, ref=project_id)
    return _form_page(
        request,
        form=ProjectForm.of(ProjectSettings.of(project)),
        project=project,
        k_locked=has_comparisons(session=session, project=project),
        scored=has_score_gaps(session=session, project=project),
    )


@router.post("/{project_id}", name="project_update")
def update(
    request: Request,
    session: DbSession,
    user: AdminUser,
    project_id: int,
    form: Annotated[ProjectForm, Form()],
) -> Response:
    project = get_project(session=session, ref=project_id)
    before = ProjectSettings.of(project)
    k_locked = has_comparisons(session=session, project=project)
    scored = has_score_gaps(session=session, project=project)
    settings, errors = _read_form(session, form, project)
    if errors:
        return _form_page(
            request, form=form, project=project, k_locked=k_locked, scored=scored, errors=errors
        )
    try:
        update_project(
            session=session,
            project=project,
            **asdict(settings),  # the service takes the settings' fields by name
        )
    except ProjectFormError as exc:
        return _form_page(
            request, form=form, project=project, k_locked=k_locked, scored=scored,
            errors=exc.errors,
        )  # fmt: skip
    changes = settings_changes(before, ProjectSettings.of(project))
    if changes:
        record(
            session=session,
            actor_id=user.id,
            action="project.update",
            target_type="project",
            target_id=project.id,
            details=changes,
        )
    session.commit()
    return RedirectResponse(f"/admin/projects/{project.id}?saved=updated", status_code=303)


def _generation_page(
    request: Request,
    *,
    project: Project,
    form: GenerationForm,
    errors: dict[str, str] | None = None,
) -> Response:
    return render(
        request,
        "projects/generation.html",
        {"project": project, "form": form, "errors": errors or {}},
        status_code=422 if errors else 200,
    )


@router.get("/{project_id}/generation", name="project_generation")
def generation_settings(
    request: Request, session: DbSession, user: AdminUser, project_id: int
) -> Response:
    project = get_project(session=session, ref=project_id)
    form = GenerationForm.of(GenerationSettings.of(project))
    return _generation_page(request, project=project, form=form)


@router.post("/{project_id}/generation", name="project_generation_update")
def update_generation(
    request: Request,
    session: DbSession,
    user: AdminUser,
    project_id: int,
    form: Annotated[GenerationForm, Form()],
) -> Response:
    project = get_project(session=session, ref=project_id)
    settings, unreadable = form.to_settings(GenerationSettings.of(project))
    _, errors = check_generation_settings(settings)
    errors = {**errors, **unreadable}
    if errors:
        return _generation_page(request, project=project, form=form, errors=errors)
    changes = update_generation_settings(session=session, project=project, settings=settings)
    if changes:
        record(
            session=session,
            actor_id=user.id,
            action="project.generation",
            target_type="project",
            target_id=project.id,
            details=changes,
        )
    session.commit()
    return RedirectResponse(f"/admin/projects/{project.id}?saved=generation", status_code=303)


@router.post("/{project_id}/generate", name="project_generate")
def generate_answers(
    session: DbSession, celery: CeleryDep, user: AdminUser, project_id: int
) -> Response:
    """Start a generation job: every prompt gets its missing answers from the current policy."""
    project = get_project(session=session, ref=project_id)
    job = create_job(
        session=session, kind=kinds.GENERATE, project_id=project.id, created_by_id=user.id
    )
    record(
        session=session, actor_id=user.id, action="job.start", target_type="job", target_id=job.id
    )
    commit_and_enqueue(session=session, celery=celery, job=job)
    return RedirectResponse(f"/admin/jobs/{job.id}", status_code=303)
