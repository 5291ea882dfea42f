"""``/api/v1``: lease, submit and skip, so a vendor's own tool can label through the API."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from sqlalchemy import select

from app.api_errors import ErrorOut
from app.auth.models import User
from app.deps import ApiUser, DbSession, SettingsDep
from app.errors import NotFoundError
from app.labeling.models import Assignment, Prompt, TaskKind
from app.labeling.queue import Task, lease_next_task
from app.labeling.schemas import (
    CompletionOut,
    MessageOut,
    NextTaskIn,
    PromptOut,
    SkipIn,
    SkippedOut,
    SubmitIn,
    SubmittedOut,
    TaskOut,
)
from app.labeling.service import (
    Rewrite,
    SubmissionError,
    TaskConflict,
    skip_task,
    submit_demonstration,
    submit_ranking,
)
from app.projects.models import Project
from app.projects.service import labeler_project, may_label

router = APIRouter(tags=["labeling"])


def task_out(task: Task) -> TaskOut:
    return TaskOut(
        task_id=task.id,
        kind=task.assignment.kind,
        prompt=PromptOut(
            id=task.prompt.id,
            text=task.prompt.text,
            messages=[MessageOut(**m) for m in task.prompt.turns],
        ),
        completions=[CompletionOut(id=c.id, text=c.text) for c in task.completions],
        expires_at=task.assignment.expires_at,
        draft=task.assignment.draft,
    )


@router.post(
    "/projects/{project_id}/tasks/next",
    response_model=TaskOut,
    responses={204: {"description": "Nothing is left for this labeler"}},
)
def api_next_task(
    project_id: int, body: NextTaskIn, session: DbSession, settings: SettingsDep, user: ApiUser
) -> Response | TaskOut:
    project = labeler_project(session=session, ref=project_id, user=user)
    task = lease_next_task(
        session=session,
        project=project,
        labeler=user,
        kind=TaskKind(body.kind),
        lease_for=timedelta(minutes=settings.lease_minutes),
    )
    session.commit()
    if task is None:
        return Response(status_code=204)
    return task_out(task)


def _may_label(session: DbSession, assignment: Assignment, user: User) -> bool:
    """Still allowed on the task's project (a labeler removed from a restricted one is not)."""
    project = session.scalars(
        select(Project)
        .join(Prompt, Prompt.project_id == Project.id)
        .where(Prompt.id == assignment.prompt_id)
    ).one()  # one query on the submit path, not a prompt then its project
    return may_label(session=session, project=project, user=user)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=status)


@router.post(
    "/tasks/{task_id}/submit",
    response_model=SubmittedOut,
    status_code=201,
    responses={
        200: {"description": "The same payload was submitted before", "model": SubmittedOut},
        409: {"description": "Already submitted differently, or skipped", "model": ErrorOut},
        422: {"description": "The submission does not fit the task", "model": ErrorOut},
    },
)
def api_submit(task_id: int, body: SubmitIn, session: DbSession, user: ApiUser) -> Response:
    try:
        # Which kind of task: a plain read; the submit below locks the row and checks owner.
        assignment = session.get(Assignment, task_id)
        if (
            assignment is None
            or assignment.labeler_id != user.id
            or not _may_label(session, assignment, user)
        ):
            raise NotFoundError(f"no task {task_id}")
        if assignment.kind == TaskKind.rank:
            if body.ranking is None and not body.not_rankable:
                raise SubmissionError("A rank task needs a `ranking`.")
            result = submit_ranking(
                session=session,
                assignment_id=task_id,
                labeler=user,
                ranking=body.ranking or [],
                ratings=body.ratings,
                flags=body.flags,
                not_rankable=body.not_rankable,
                seconds_spent=body.seconds_spent,
                rewrite=Rewrite(completion_id=body.rewrite.completion_id, text=body.rewrite.text)
                if body.rewrite
                else None,
            )
        else:
            if body.rewrite is not None:
                raise SubmissionError("A rewrite comes with a ranking, not a demonstration.")
            if body.text is None:
                raise SubmissionError("A demonstration task needs a `text`.")
            result = submit_demonstration(
                session=session,
                assignment_id=task_id,
                labeler=user,
                text=body.text,
                seconds_spent=body.seconds_spent,
            )
    except SubmissionError as exc:
        session.rollback()
        return _error(422, str(exc))
    except TaskConflict as exc:
        session.rollback()
        return _error(409, str(exc))
    session.commit()
    return JSONResponse({"id": result.id}, status_code=201 if result.created else 200)


@router.post(
    "/tasks/{task_id}/skip",
    response_model=SkippedOut,
    responses={409: {"description": "Already submitted", "model": ErrorOut}},
)
def api_skip(
    task_id: int, body: SkipIn, session: DbSession, user: ApiUser
) -> Response | SkippedOut:
    held = session.get(Assignment, task_id)
    if held is not None and held.labeler_id == user.id and not _may_label(session, held, user):
        raise NotFoundError(f"no task {task_id}")
    try:
        assignment = skip_task(
            session=session, assignment_id=task_id, labeler=user, reason=body.reason
        )
    except SubmissionError as exc:
        session.rollback()
        return _error(422, str(exc))
    except TaskConflict as exc:
        session.rollback()
        return _error(409, str(exc))
    session.commit()
    return SkippedOut(task_id=assignment.id, state=assignment.state.value)
