"""``/api/v1``: lease, submit and skip, so a vendor's own tool can label through the API."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.api_errors import ErrorOut
from app.auth.models import User
from app.config import Settings
from app.deps import (
    ApiUser,
    BearerCredentials,
    DbSession,
    authenticate_api,
    request_session,
)
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
    hold_task,
    skip_task,
    submit_demonstration,
    submit_held_ranking,
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
async def api_next_task(
    project_id: int, body: NextTaskIn, request: Request, credentials: BearerCredentials
) -> Response:
    return await run_in_threadpool(_next_task, request, credentials, project_id, body)


def _next_task(
    request: Request,
    credentials: HTTPAuthorizationCredentials | None,
    project_id: int,
    body: NextTaskIn,
) -> Response:
    """The lease, from the token check to the commit, in one worker thread: the hot path of a
    labeling tool (plain ``def`` dependencies would each cost a thread switch)."""
    settings: Settings = request.app.state.settings
    with request_session(request) as session:
        user = authenticate_api(session, credentials)
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
        return Response(task_out(task).model_dump_json(), media_type="application/json")


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
async def api_submit(
    task_id: int, body: SubmitIn, request: Request, credentials: BearerCredentials
) -> Response:
    return await run_in_threadpool(_submit, request, credentials, task_id, body)


def _submit(
    request: Request,
    credentials: HTTPAuthorizationCredentials | None,
    task_id: int,
    body: SubmitIn,
) -> Response:
    """The submit in one worker thread, as the lease (``_next_task``)."""
    with request_session(request) as session:
        user = authenticate_api(session, credentials)
        return _submit_as(session, user, task_id, body)


def _submit_as(session: Session, user: User, task_id: int, body: SubmitIn) -> Response:
    try:
        # One statement: the task and its prompt locked, with its project (and which kind).
        held = hold_task(session=session, assignment_id=task_id, labeler=user, lock_prompt=True)
        if not may_label(session=session, project=held.project, user=user):
            raise NotFoundError(f"no task {task_id}")  # removed from a restricted project
        if held.assignment.kind == TaskKind.rank:
            if body.ranking is None and not body.not_rankable:
                raise SubmissionError("A rank task needs a `ranking`.")
            result = submit_held_ranking(
                session=session,
                held=held,
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
