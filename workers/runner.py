"""The life of a job in a worker: claim the row, run its kind, record the outcome.

Every write is a short transaction of its own, so the web pages see progress as it happens.

- A job found already finished is not run again.
- Claiming a job bumps its ``attempts``; that number is the run's ownership. Every later write
  of the run checks it, so if a job was given up for lost and started again elsewhere, the
  old run stops at its next write instead of overwriting the new one.
- While a job runs, a heartbeat thread stamps ``heartbeat_at``. A job found running with a
  fresh heartbeat belongs to another worker (a redelivered message): the task is retried
  later rather than dropped, so a job whose worker died is never left without a message.
- ``recover_lost_jobs`` (run by every worker on start and then periodically) puts running jobs
  whose heartbeat went stale back in the queue, and fails them after ``MAX_ATTEMPTS``.
"""

from __future__ import annotations

import functools
import logging
import threading
import traceback
from collections.abc import Callable
from typing import Any

from celery import Celery
from sqlalchemy import Engine, delete, select, update
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.db import SQLITE_IMMEDIATE, session_scope, utcnow
from app.jobs.errors import failure_message
from app.jobs.models import Job, JobStatus, JobStep

log = logging.getLogger(__name__)

MAX_LOG_CHARS = 200_000
MAX_ERROR_DETAIL_CHARS = 50_000  # a traceback's end names the failing line; keep that
MAX_ATTEMPTS = 3


class JobCancelled(Exception):
    """Raised at a checkpoint when an admin asked to cancel the job."""


class JobSuperseded(Exception):
    """This run no longer owns the job (it was given up for lost and started again)."""


class JobBusyElsewhere(Exception):
    """The job is running in another worker right now; try this message again later."""

    def __init__(self, retry_after_seconds: float) -> None:
        super().__init__(f"job is running elsewhere; retry in {retry_after_seconds:.0f}s")
        self.retry_after_seconds = retry_after_seconds


class JobContext:
    """What a job kind's code gets: its parameters and ways to report back."""

    def __init__(
        self,
        *,
        job_id: int,
        attempt: int,
        settings: Settings,
        session_factory: sessionmaker[Session],
    ) -> None:
        self.job_id = job_id
        self.attempt = attempt
        self.settings = settings
        self.session_factory = session_factory
        with session_scope(session_factory) as session:
            job = session.get_one(Job, job_id)
            self.kind = job.kind
            self.params: dict[str, Any] = dict(job.params)
            self.project_id = job.project_id

    def read_session_factory(self) -> sessionmaker[Session]:
        """Sessions for a long read (an export's stream): on SQLite they do not take the write
        lock (BEGIN, not BEGIN IMMEDIATE), so progress and logs can still be written."""
        bind = self.session_factory.kw.get("bind")
        if isinstance(bind, Engine):
            return sessionmaker(
                bind=bind.execution_options(**{SQLITE_IMMEDIATE: False}), expire_on_commit=False
            )
        return self.session_factory  # bound to a connection (tests): share it

    def _own(self, session: Session) -> Job:
        job = session.get_one(Job, self.job_id)
        if job.attempts != self.attempt:
            raise JobSuperseded()
        return job

    def progress(self, fraction: float, message: str = "", **metrics: Any) -> None:
        """Record progress (0..1), merge ``metrics``, beat the heartbeat, honour a cancel."""
        with session_scope(self.session_factory) as session:
            job = self._own(session)
            job.progress = max(0.0, min(1.0, fraction))
            if message:
                job.progress_message = message
            if metrics:
                job.metrics = {**job.metrics, **metrics}
            job.heartbeat_at = utcnow()
            cancel = job.cancel_requested
        if cancel:
            raise JobCancelled()

    def check_cancel(self) -> None:
        """Raise ``JobCancelled`` when an admin asked to cancel (``JobSuperseded`` when this
        run no longer owns the job); writes nothing, so on SQLite it takes no write lock."""
        with session_scope(self.read_session_factory()) as session:
            cancel = self._own(session).cancel_requested
        if cancel:
            raise JobCancelled()

    def log(self, line: str) -> None:
        stamp = utcnow().strftime("%H:%M:%S")
        with session_scope(self.session_factory) as session:
            job = self._own(session)
            job.log = (job.log + f"[{stamp}] {line}\n")[-MAX_LOG_CHARS:]

    def record_step(self, step: int, values: dict[str, Any], *, phase: str = "train") -> None:
        """Store one logged step (the job page charts them). Logging the same step again (a run
        resumed from a checkpoint redoes the steps after it) replaces the earlier values."""
        with session_scope(self.session_factory) as session:
            self._own(session)
            session.execute(
                delete(JobStep).where(
                    JobStep.job_id == self.job_id, JobStep.step == step, JobStep.phase == phase
                )
            )
            session.add(JobStep(job_id=self.job_id, step=step, phase=phase, values=values))

    def forget_steps_after(self, step: int) -> None:
        """Drop the steps a lost run logged after its last checkpoint (they are redone)."""
        with session_scope(self.session_factory) as session:
            self._own(session)
            session.execute(
                delete(JobStep).where(JobStep.job_id == self.job_id, JobStep.step > step)
            )

    def set_artifacts(self, **artifacts: Any) -> None:
        with session_scope(self.session_factory) as session:
            job = self._own(session)
            job.artifacts = {**job.artifacts, **artifacts}


class Heartbeat:
    """Stamps ``heartbeat_at`` every ``interval`` seconds while a run owns the job, so a long
    step (loading a model, an epoch) is not mistaken for a lost worker."""

    def __init__(
        self, *, job_id: int, attempt: int, session_factory: sessionmaker[Session], interval: float
    ) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(job_id, attempt, session_factory, interval), daemon=True
        )

    def _run(
        self, job_id: int, attempt: int, session_factory: sessionmaker[Session], interval: float
    ) -> None:
        while not self._stop.wait(interval):
            try:
                with session_scope(session_factory) as session:
                    session.execute(
                        update(Job)
                        .where(Job.id == job_id, Job.attempts == attempt)
                        .values(heartbeat_at=utcnow())
                    )
            except Exception:  # a missed beat is retried at the next interval
                log.warning("heartbeat of job %s failed", job_id, exc_info=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


JobImpl = Callable[[JobContext], None]


def job_impls() -> dict[str, JobImpl]:
    # Imported here: a kind's heavy dependencies load only in the worker that runs it.
    from app.jobs import kinds
    from workers.export import export_impl
    from workers.generate import generate_impl
    from workers.judge import judge_impl
    from workers.ppo_job import ppo_impl
    from workers.score import score_impl
    from workers.selfcheck import selfcheck_impl
    from workers.train import train_impl

    return {
        kinds.SELFCHECK: selfcheck_impl,
        kinds.GENERATE: generate_impl,
        kinds.EXPORT: export_impl,
        kinds.TRAIN_SFT: train_impl,
        kinds.TRAIN_RM: train_impl,
        kinds.TRAIN_DPO: train_impl,
        kinds.TRAIN_PPO: ppo_impl,
        kinds.SCORE: score_impl,
        kinds.JUDGE: judge_impl,
    }


def _claim(
    *, job_id: int, session_factory: sessionmaker[Session], settings: Settings
) -> int | JobStatus:
    """Mark the job running and return this run's attempt number, or the status to report
    when the job is not ours to run. Raises JobBusyElsewhere for a live run elsewhere."""
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
        if job.status == JobStatus.running:
            if job.heartbeat_at is not None and now - job.heartbeat_at < settings.job_stale_after:
                raise JobBusyElsewhere(settings.job_stale_after.total_seconds())
            job.log += f"[{now:%H:%M:%S}] the previous worker was lost; running again\n"
        job.status = JobStatus.running
        job.attempts += 1
        job.started_at = job.started_at or now
        job.heartbeat_at = now
        job.error = job.error_detail = None
        return job.attempts


def _finish(
    *,
    job_id: int,
    attempt: int,
    session_factory: sessionmaker[Session],
    status: JobStatus,
    error: str | None = None,
    error_detail: str | None = None,
    log_line: str = "",
) -> None:
    with session_scope(session_factory) as session:
        job = session.get_one(Job, job_id)
        if job.attempts != attempt:
            return  # a newer run owns the job now
        job.status = status
        job.finished_at = utcnow()
        job.heartbeat_at = job.finished_at
        job.error = error
        job.error_detail = error_detail[-MAX_ERROR_DETAIL_CHARS:] if error_detail else None
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
    claimed = _claim(job_id=job_id, session_factory=session_factory, settings=settings)
    if isinstance(claimed, JobStatus):
        return claimed
    attempt = claimed
    finish = functools.partial(
        _finish, job_id=job_id, attempt=attempt, session_factory=session_factory
    )
    ctx = JobContext(
        job_id=job_id, attempt=attempt, settings=settings, session_factory=session_factory
    )
    impl = (impls if impls is not None else job_impls()).get(ctx.kind)
    if impl is None:
        error = f"This worker does not know the job kind {ctx.kind!r}."
        finish(status=JobStatus.failed, error=error)
        return JobStatus.failed
    try:
        with Heartbeat(
            job_id=job_id,
            attempt=attempt,
            session_factory=session_factory,
            interval=settings.job_heartbeat_seconds,
        ):
            impl(ctx)
    except JobCancelled:
        finish(status=JobStatus.cancelled, log_line="cancelled at a checkpoint\n")
        return JobStatus.cancelled
    except JobSuperseded:
        log.warning("job %s attempt %s was superseded by a newer run; stopped", job_id, attempt)
        return JobStatus.running
    except Exception as exc:
        log.exception("job %s (%s) failed", job_id, ctx.kind)
        # The message first, in plain words (a JobFailure's own); the traceback apart, folded
        # below it on the job page; the log ends with the message (stamped like every line).
        detail = getattr(exc, "detail", None) or traceback.format_exc()
        message = failure_message(exc)
        finish(
            status=JobStatus.failed,
            error=message,
            error_detail=detail,
            log_line=f"[{utcnow():%H:%M:%S}] failed: {message}\n",
        )
        return JobStatus.failed
    finish(status=JobStatus.succeeded)
    return JobStatus.succeeded


def recover_lost_jobs(
    *, session_factory: sessionmaker[Session], settings: Settings, celery: Celery
) -> list[int]:
    """Queue again the running jobs whose worker stopped heartbeating (killed, out of memory,
    machine lost); fail those that were lost ``MAX_ATTEMPTS`` times. Returns the ids queued."""
    from app.jobs.kinds import TASK_RUN_JOB

    requeued: list[int] = []
    cutoff = utcnow() - settings.job_stale_after
    with session_scope(session_factory) as session:
        lost = session.scalars(
            select(Job)
            .where(Job.status == JobStatus.running, Job.heartbeat_at < cutoff)
            .with_for_update(skip_locked=True)
        ).all()
        now = utcnow()
        for job in lost:
            if job.attempts >= MAX_ATTEMPTS or job.cancel_requested:
                job.status = JobStatus.cancelled if job.cancel_requested else JobStatus.failed
                job.finished_at = now
                if job.status == JobStatus.failed:
                    job.error = f"The job lost its worker {job.attempts} times; giving up."
                continue
            job.status = JobStatus.queued
            job.log += f"[{now:%H:%M:%S}] its worker stopped responding; queued again\n"
            requeued.append(job.id)
        queues = {job.id: job.queue for job in lost}
    for job_id in requeued:  # after the commit, as for every enqueue
        celery.send_task(TASK_RUN_JOB, args=[job_id], queue=queues[job_id])
    if requeued:
        log.warning("queued again jobs lost with their worker: %s", requeued)
    return requeued


def start_recovery_thread(
    *, session_factory: sessionmaker[Session], settings: Settings, celery: Celery
) -> threading.Thread:
    """In a worker's main process: recover lost jobs now and then every few heartbeats."""

    def loop() -> None:
        while True:
            try:
                recover_lost_jobs(session_factory=session_factory, settings=settings, celery=celery)
            except Exception:
                log.warning("recovering lost jobs failed; will try again", exc_info=True)
            threading.Event().wait(2 * settings.job_heartbeat_seconds)

    thread = threading.Thread(target=loop, name="rlhf-job-recovery", daemon=True)
    thread.start()
    return thread
