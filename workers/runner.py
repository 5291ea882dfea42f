"""The life of a job in a worker: claim the row, run its kind, record the outcome.

Every write is a short transaction of its own, so the web pages see progress as it happens.
A job found already finished is not run again; a job found running with a fresh heartbeat is
another worker's (a redelivered message) and is left alone; a job found running with a stale
heartbeat was lost with its worker and is run again (kinds are idempotent).
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.db import session_scope, utcnow
from app.jobs.models import Job, JobStatus

log = logging.getLogger(__name__)

MAX_LOG_CHARS = 200_000


class JobCancelled(Exception):
    """Raised at a checkpoint when an admin asked to cancel the job."""


class JobContext:
    """What a job kind's code gets: its parameters and ways to report back."""

    def __init__(
        self, *, job_id: int, settings: Settings, session_factory: sessionmaker[Session]
    ) -> None:
        self.job_id = job_id
        self.settings = settings
        self.session_factory = session_factory
        with session_scope(session_factory) as session:
            job = session.get_one(Job, job_id)
            self.kind = job.kind
            self.params: dict[str, Any] = dict(job.params)
            self.project_id = job.project_id

    def progress(self, fraction: float, message: str = "", **metrics: Any) -> None:
        """Record progress (0..1), merge ``metrics``, beat the heartbeat, honour a cancel."""
        with session_scope(self.session_factory) as session:
            job = session.get_one(Job, self.job_id)
            job.progress = max(0.0, min(1.0, fraction))
            if message:
                job.progress_message = message
            if metrics:
                job.metrics = {**job.metrics, **metrics}
            job.heartbeat_at = utcnow()
            cancel = job.cancel_requested
        if cancel:
            raise JobCancelled()

    def log(self, line: str) -> None:
        stamp = utcnow().strftime("%H:%M:%S")
        with session_scope(self.session_factory) as session:
            job = session.get_one(Job, self.job_id)
            job.log = (job.log + f"[{stamp}] {line}\n")[-MAX_LOG_CHARS:]

    def set_artifacts(self, **artifacts: Any) -> None:
        with session_scope(self.session_factory) as session:
            job = session.get_one(Job, self.job_id)
            job.artifacts = {**job.artifacts, **artifacts}


JobImpl = Callable[[JobContext], None]


def job_impls() -> dict[str, JobImpl]:
    # Imported here: a kind's heavy dependencies load only in the worker that runs it.
    from app.jobs import kinds
    from workers.selfcheck import selfcheck_impl

    return {kinds.SELFCHECK: selfcheck_impl}


def _claim(
    *, job_id: int, session_factory: sessionmaker[Session], settings: Settings
) -> JobStatus | None:
    """Mark the job running. Returns None when it is ours to run, else the status to report."""
    stale_after = timedelta(seconds=3 * settings.job_heartbeat_seconds)
    with session_scope(session_factory) as session:
        job = session.get(Job, job_id, with_for_update=True)
        if job is None:
            log.warning("job %s does not exist; message dropped", job_id)
            return JobStatus.failed
        if job.status.is_finished:
            log.info("job %s is already %s; not run again", job_id, job.status)
            return job.status
        if job.cancel_requested:
            job.status, job.finished_at = JobStatus.cancelled, utcnow()
            return job.status
        now = utcnow()
        if (
            job.status == JobStatus.running
            and job.heartbeat_at is not None
            and now - job.heartbeat_at < stale_after
        ):
            log.info(
                "job %s is running elsewhere (heartbeat %s); left alone", job_id, job.heartbeat_at
            )
            return job.status
        if job.status == JobStatus.running:
            job.log += f"[{now:%H:%M:%S}] the previous worker was lost; running again\n"
        job.status = JobStatus.running
        job.attempts += 1
        job.started_at = job.started_at or now
        job.heartbeat_at = now
        job.error = None
    return None


def _finish(
    *,
    job_id: int,
    session_factory: sessionmaker[Session],
    status: JobStatus,
    error: str | None = None,
    log_line: str = "",
) -> None:
    with session_scope(session_factory) as session:
        job = session.get_one(Job, job_id)
        job.status = status
        job.finished_at = utcnow()
        job.heartbeat_at = job.finished_at
        job.error = error
        if status == JobStatus.succeeded:
            job.progress = 1.0
        if log_line:
            job.log = (job.log + log_line)[-MAX_LOG_CHARS:]


def run_job(
    *,
    job_id: int,
    session_factory: sessionmaker[Session],
    settings: Settings,
    impls: dict[str, JobImpl] | None = None,
) -> JobStatus:
    outcome = _claim(job_id=job_id, session_factory=session_factory, settings=settings)
    if outcome is not None:
        return outcome
    ctx = JobContext(job_id=job_id, settings=settings, session_factory=session_factory)
    impl = (impls if impls is not None else job_impls()).get(ctx.kind)
    if impl is None:
        _finish(
            job_id=job_id,
            session_factory=session_factory,
            status=JobStatus.failed,
            error=f"This worker does not know the job kind {ctx.kind!r}.",
        )
        return JobStatus.failed
    try:
        impl(ctx)
    except JobCancelled:
        _finish(
            job_id=job_id,
            session_factory=session_factory,
            status=JobStatus.cancelled,
            log_line="cancelled at a checkpoint\n",
        )
        return JobStatus.cancelled
    except Exception as exc:
        log.exception("job %s (%s) failed", job_id, ctx.kind)
        _finish(
            job_id=job_id,
            session_factory=session_factory,
            status=JobStatus.failed,
            error=f"{type(exc).__name__}: {exc}",
            log_line=traceback.format_exc(),
        )
        return JobStatus.failed
    _finish(job_id=job_id, session_factory=session_factory, status=JobStatus.succeeded)
    return JobStatus.succeeded
