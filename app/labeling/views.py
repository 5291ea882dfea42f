"""The labeler's pages: rank K answers, write demonstrations, write prompts.

Each task page is a full page; with htmx, submitting or skipping swaps in the next task
(the ``task`` block of the same template) without a reload. Every form also works as a plain
POST. Leasing happens on POST (it changes state), so the page asks for its task on load.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import func, select
from starlette.datastructures import FormData

from app.auth.models import User
from app.db import utcnow
from app.deps import CurrentUser, DbSession, SettingsDep
from app.errors import NotFoundError
from app.labeling.models import Assignment, AssignmentState, Comparison, Demonstration, TaskKind
from app.labeling.queue import Task, count_available, lease_next_task, task_for
from app.labeling.ranking import answer_label, missing_places, ranks_to_groups
from app.labeling.service import (
    Rewrite,
    SubmissionError,
    TaskConflict,
    get_assignment,
    save_draft,
    skip_task,
    submit_demonstration,
    submit_prompt,
    submit_ranking,
)
from app.projects.models import Project
from app.projects.service import labeler_project, may_label
from app.web.templating import is_htmx, render

router = APIRouter(tags=["labeling"])


async def get_form(request: Request) -> FormData:
    """The posted form (already read and cached by the CSRF check), for sync endpoints whose
    fields are dynamic (one rank, rating and flag field per answer)."""
    return await request.form()


FormDep = Annotated[FormData, Depends(get_form)]

TEMPLATES = {
    TaskKind.rank: "labeling/rank.html",
    TaskKind.demonstration: "labeling/demonstrate.html",
}
SKIP_REASONS = [
    "The prompt is unclear",
    "Outside my expertise",
    "Offensive or disturbing content",
    "The answers are broken (empty, cut off)",
]


def _progress(session: DbSession, project: Project, user: User, kind: TaskKind) -> dict[str, int]:
    since = utcnow() - timedelta(hours=24)
    model = Comparison if kind == TaskKind.rank else Demonstration
    author = Comparison.labeler_id if kind == TaskKind.rank else Demonstration.author_id
    done_today = session.scalar(
        select(func.count())
        .select_from(model)
        .join(Assignment, Assignment.id == model.assignment_id)
        .where(author == user.id, model.created_at >= since, Assignment.kind == kind)
    )
    queued = count_available(session=session, project=project, labeler=user, kind=kind)
    return {"done_today": done_today or 0, "in_queue": queued}


def _render_task(
    request: Request,
    session: DbSession,
    project: Project,
    user: User,
    kind: TaskKind,
    task: Task | None,
    *,
    error: str | None = None,
    values: dict[str, Any] | None = None,
    notice: str | None = None,
    status_code: int = 200,
    autoload: bool = False,
) -> Response:
    context = {
        "autoload": autoload,
        "project": project,
        "kind": kind,
        "task": task,
        "error": error,
        "values": values or {},
        "notice": notice,
        "progress": _progress(session, project, user, kind),
        "skip_reasons": SKIP_REASONS,
        "letters": "ABCDEFGHI",
    }
    return render(request, TEMPLATES[kind], context, block="task", status_code=status_code)


def _lease(
    session: DbSession, settings: SettingsDep, project: Project, user: User, kind: TaskKind
) -> Task | None:
    task = lease_next_task(
        session=session,
        project=project,
        labeler=user,
        kind=kind,
        lease_for=timedelta(minutes=settings.lease_minutes),
    )
    session.commit()
    return task


def _task_page(kind: TaskKind) -> Callable[..., Response]:
    def page(request: Request, session: DbSession, user: CurrentUser, project_id: int) -> Response:
        project = labeler_project(session=session, ref=project_id, user=user)
        return _render_task(request, session, project, user, kind, None, autoload=True)

    return page


def _next_task(kind: TaskKind) -> Callable[..., Response]:
    def lease(
        request: Request,
        session: DbSession,
        settings: SettingsDep,
        user: CurrentUser,
        project_id: int,
    ) -> Response:
        project = labeler_project(session=session, ref=project_id, user=user)
        task = _lease(session, settings, project, user, kind)
        if not is_htmx(request) and task is not None:
            return RedirectResponse(f"/tasks/{task.id}", status_code=303)
        return _render_task(request, session, project, user, kind, task)

    return lease


for _kind, _slug in ((TaskKind.rank, "rank"), (TaskKind.demonstration, "demonstrate")):
    router.add_api_route(
        f"/projects/{{project_id}}/{_slug}",
        _task_page(_kind),
        methods=["GET"],
        name=f"{_slug}_page",
    )
    router.add_api_route(
        f"/projects/{{project_id}}/{_slug}/next",
        _next_task(_kind),
        methods=["POST"],
        name=f"{_slug}_next",
    )


def _own_task(session: DbSession, user: User, task_id: int) -> tuple[Assignment, Project]:
    assignment = get_assignment(session=session, assignment_id=task_id, labeler=user)
    project = session.get_one(
        Project, task_for(session=session, assignment=assignment).prompt.project_id
    )
    if not may_label(session=session, project=project, user=user):
        raise NotFoundError(f"no task {task_id}")  # removed from a restricted project
    return assignment, project


@router.get("/tasks/{task_id}", name="task_page")
def task_page(request: Request, session: DbSession, user: CurrentUser, task_id: int) -> Response:
    """A task by its id (a bookmark or a reload); a finished one sends to the next."""
    assignment, project = _own_task(session, user, task_id)
    slug = "rank" if assignment.kind == TaskKind.rank else "demonstrate"
    if assignment.state != AssignmentState.leased:
        return RedirectResponse(f"/projects/{project.id}/{slug}", status_code=303)
    task = task_for(session=session, assignment=assignment, resumed=True)
    return _render_task(request, session, project, user, assignment.kind, task)


def _ranking_from_form(
    form: FormData, displayed: list[int]
) -> tuple[list[list[int]], dict[int, int], dict[int, list[str]]]:
    ranks: dict[int, int] = {}
    ratings: dict[int, int] = {}
    flags: dict[int, list[str]] = {}
    for completion_id in displayed:
        rank = form.get(f"rank_{completion_id}")
        if isinstance(rank, str) and rank.strip():
            if not rank.strip().isdecimal():
                raise SubmissionError(f"{rank!r} is not a place in the ranking.")
            ranks[completion_id] = int(rank)
        rating = form.get(f"rating_{completion_id}")
        if isinstance(rating, str) and rating.strip():
            if not rating.strip().isdecimal():
                raise SubmissionError(f"{rating!r} is not a rating.")
            ratings[completion_id] = int(rating)
        chosen = [v for v in form.getlist(f"flag_{completion_id}") if isinstance(v, str)]
        if chosen:
            flags[completion_id] = chosen
    unranked = [c for c in displayed if c not in ranks]
    if unranked and ranks:
        # Name the answers by the letters the labeler sees, not by database ids.
        raise SubmissionError(missing_places([answer_label(displayed.index(c)) for c in unranked]))
    return (ranks_to_groups(ranks) if ranks else []), ratings, flags


def _rewrite_from_form(
    form: FormData, ranking: list[list[int]], displayed: list[int]
) -> Rewrite | None:
    """The "Improve this answer" editor: its text rewrites ``rewrite_of`` (set by the page's
    script to the answer ranked first), or the answer ranked first alone. Empty: no rewrite."""
    text = form.get("rewrite_text")
    if not isinstance(text, str) or not text.strip():
        return None
    if not ranking:
        raise SubmissionError(
            "A rewrite improves the answer you ranked best: rank the answers to send one."
        )
    of = form.get("rewrite_of")
    if isinstance(of, str) and of.strip().isdecimal():
        completion_id = int(of)
    elif len(ranking[0]) == 1:
        completion_id = ranking[0][0]
    else:
        tied = [answer_label(displayed.index(c)) for c in ranking[0]]
        raise SubmissionError(
            f"Answers {', '.join(tied)} tie first: rank one of them best to rewrite it."
        )
    if completion_id not in ranking[0]:
        label = (
            answer_label(displayed.index(completion_id))
            if completion_id in displayed
            else str(completion_id)
        )
        raise SubmissionError(
            f"Answer {label} is not ranked first: a rewrite improves the answer you ranked best."
        )
    return Rewrite(completion_id=completion_id, text=text)


def _seconds(form: FormData) -> float | None:
    value = form.get("seconds_spent")
    try:
        return float(value) if isinstance(value, str) and value else None
    except ValueError:
        return None


@router.post("/tasks/{task_id}/rank", name="task_rank")
def rank_submit(
    request: Request, session: DbSession, settings: SettingsDep, user: CurrentUser, task_id: int,
    form: FormDep,
) -> Response:  # fmt: skip
    assignment, project = _own_task(session, user, task_id)
    displayed = list(assignment.display_order or [])
    not_rankable = form.get("not_rankable") == "on"
    try:
        ranking, ratings, flags = _ranking_from_form(form, displayed)
        if not ranking and not not_rankable:
            letters = [answer_label(i) for i in range(len(displayed))]
            raise SubmissionError(
                missing_places(letters)[:-1] + ", or tick \u201cnone of these is acceptable\u201d."
            )
        submit_ranking(
            session=session, assignment_id=task_id, labeler=user, ranking=ranking,
            ratings=ratings, flags=flags, not_rankable=not_rankable, seconds_spent=_seconds(form),
            rewrite=_rewrite_from_form(form, ranking, displayed),
        )  # fmt: skip
    except (SubmissionError, TaskConflict) as exc:
        session.rollback()
        assignment, project = _own_task(session, user, task_id)
        task = task_for(session=session, assignment=assignment, resumed=True)
        values = {k: form.getlist(k) for k in form}
        return _render_task(
            request, session, project, user, TaskKind.rank, task,
            error=str(exc), values=values, status_code=422 if isinstance(exc, SubmissionError) else 409,
        )  # fmt: skip
    session.commit()
    return _after(request, session, settings, project, user, TaskKind.rank, "Ranking saved.")


def _after(
    request: Request, session: DbSession, settings: SettingsDep, project: Project, user: User,
    kind: TaskKind, notice: str,
) -> Response:  # fmt: skip
    """After a submit or skip: the next task at once (htmx), or its page (plain form)."""
    task = _lease(session, settings, project, user, kind)
    if not is_htmx(request):
        slug = "rank" if kind == TaskKind.rank else "demonstrate"
        return RedirectResponse(
            f"/tasks/{task.id}" if task else f"/projects/{project.id}/{slug}", status_code=303
        )
    return _render_task(request, session, project, user, kind, task, notice=notice)


@router.post("/tasks/{task_id}/skip", name="task_skip")
def task_skip(
    request: Request, session: DbSession, settings: SettingsDep, user: CurrentUser, task_id: int,
    form: FormDep,
) -> Response:  # fmt: skip
    assignment, project = _own_task(session, user, task_id)
    reason = form.get("reason")
    detail = form.get("reason_detail")
    text = " - ".join(
        v.strip() for v in (reason, detail) if isinstance(v, str) and v.strip() and v != "Other"
    )
    try:
        skip_task(session=session, assignment_id=task_id, labeler=user, reason=text)
    except (SubmissionError, TaskConflict) as exc:
        session.rollback()
        task = task_for(session=session, assignment=assignment, resumed=True)
        return _render_task(
            request, session, project, user, assignment.kind, task, error=str(exc), status_code=422
        )
    session.commit()
    return _after(
        request,
        session,
        settings,
        project,
        user,
        assignment.kind,
        "Skipped. It will not come back.",
    )


@router.post("/tasks/{task_id}/demonstration", name="task_demonstration")
def demonstration_submit(
    request: Request, session: DbSession, settings: SettingsDep, user: CurrentUser, task_id: int,
    form: FormDep,
) -> Response:  # fmt: skip
    assignment, project = _own_task(session, user, task_id)
    text = form.get("text")
    try:
        submit_demonstration(
            session=session, assignment_id=task_id, labeler=user,
            text=text if isinstance(text, str) else "", seconds_spent=_seconds(form),
        )  # fmt: skip
    except (SubmissionError, TaskConflict) as exc:
        session.rollback()
        assignment, project = _own_task(session, user, task_id)
        task = task_for(session=session, assignment=assignment, resumed=True)
        return _render_task(
            request, session, project, user, TaskKind.demonstration, task, error=str(exc),
            values={"text": [text if isinstance(text, str) else ""]}, status_code=422,
        )  # fmt: skip
    session.commit()
    return _after(
        request, session, settings, project, user, TaskKind.demonstration, "Demonstration saved."
    )


@router.post("/tasks/{task_id}/draft", name="task_draft")
def draft_save(
    request: Request, session: DbSession, user: CurrentUser, task_id: int, form: FormDep
) -> Response:
    value = form.get("text")
    text = value if isinstance(value, str) else ""
    try:
        assignment = save_draft(session=session, assignment_id=task_id, labeler=user, text=text)
    except (SubmissionError, TaskConflict) as exc:
        session.rollback()
        return render(
            request,
            "labeling/_draft_status.html",
            {"error": str(exc), "saved_at": None},
            status_code=409,
        )
    session.commit()
    return render(
        request,
        "labeling/_draft_status.html",
        {"error": None, "saved_at": assignment.draft_saved_at},
    )


@router.get("/projects/{project_id}/prompts/new", name="prompt_form")
def prompt_form(
    request: Request, session: DbSession, user: CurrentUser, project_id: int
) -> Response:
    project = labeler_project(session=session, ref=project_id, user=user)
    return render(
        request,
        "labeling/prompt.html",
        {"project": project, "error": None, "values": {}, "notice": None},
    )


@router.post("/projects/{project_id}/prompts", name="prompt_submit")
def prompt_submit(
    request: Request, session: DbSession, user: CurrentUser, project_id: int, form: FormDep
) -> Response:
    project = labeler_project(session=session, ref=project_id, user=user)
    text, answer = form.get("prompt"), form.get("demonstration")
    values = {
        "prompt": text if isinstance(text, str) else "",
        "demonstration": answer if isinstance(answer, str) else "",
    }
    try:
        submit_prompt(
            session=session, project=project, labeler=user, text=values["prompt"],
            demonstration=values["demonstration"] or None,
        )  # fmt: skip
    except SubmissionError as exc:
        session.rollback()
        return render(
            request, "labeling/prompt.html",
            {"project": project, "error": str(exc), "values": values, "notice": None}, status_code=422,
        )  # fmt: skip
    session.commit()
    return render(
        request, "labeling/prompt.html",
        {"project": project, "error": None, "values": {}, "notice": "Thank you: your prompt was added to the project."},
    )  # fmt: skip
