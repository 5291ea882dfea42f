"""The job life cycle in the worker, run in-process on the test database (no broker)."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from pathlib import Path

import pytest
from celery import Celery
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.db import utcnow
from app.jobs import kinds
from app.jobs.errors import JobFailure, failure_message
from app.jobs.models import Job, JobStatus
from app.jobs.schemas import JobOut
from app.jobs.service import JobError, commit_and_enqueue, create_job, request_cancel
from workers.runner import (
    JobBusyElsewhere,
    JobCancelled,
    JobContext,
    recover_lost_jobs,
    run_job,
)


def _job(session: Session, **params: object) -> Job:
    job = create_job(session=session, kind=kinds.SELFCHECK, params={"delay": 0, **params})
    session.commit()
    return job


def test_selfcheck_succeeds_and_writes_its_report(
    session: Session, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    job = _job(session)
    status = run_job(job_id=job.id, session_factory=session_factory, settings=settings)
    assert status == JobStatus.succeeded
    session.refresh(job)
    assert job.status == JobStatus.succeeded
    assert job.progress == 1.0
    assert job.attempts == 1
    assert job.started_at and job.finished_at and job.finished_at >= job.started_at
    assert job.metrics["torch"].startswith("2.13.0")
    report = json.loads(Path(job.artifacts["report"]).read_text())
    assert report["job_id"] == job.id
    assert "all checks passed" in job.log


def test_a_finished_job_is_not_run_again(
    session: Session, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    job = _job(session)
    run_job(job_id=job.id, session_factory=session_factory, settings=settings)
    session.refresh(job)
    finished_at, log = job.finished_at, job.log
    calls: list[int] = []
    again = run_job(
        job_id=job.id,
        session_factory=session_factory,
        settings=settings,
        impls={kinds.SELFCHECK: lambda ctx: calls.append(ctx.job_id)},
    )
    session.refresh(job)
    assert again == JobStatus.succeeded
    assert calls == []
    assert (job.attempts, job.finished_at, job.log) == (1, finished_at, log)


def test_a_failing_job_records_the_error(
    session: Session, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    job = _job(session)

    def boom(ctx: JobContext) -> None:
        ctx.progress(0.3, "half way")
        raise RuntimeError("the disk is full")

    status = run_job(
        job_id=job.id, session_factory=session_factory, settings=settings,
        impls={kinds.SELFCHECK: boom},
    )  # fmt: skip
    session.refresh(job)
    assert status == job.status == JobStatus.failed
    assert job.error == "The job stopped on an unexpected error: RuntimeError: the disk is full"
    assert job.progress == pytest.approx(0.3)
    assert job.error_detail is not None and job.error_detail.startswith("Traceback")
    assert "RuntimeError: the disk is full" in job.error_detail
    # the log ends with the message; the traceback is kept once, in error_detail
    assert job.log.endswith(f"failed: {job.error}\n") and "Traceback" not in job.log


class NothingToTrainOn(JobFailure, RuntimeError):
    """Like workers/train.py's TrainingError: a job explaining why it stops."""


def test_a_job_that_explains_its_failure_says_it_in_its_own_words(
    session: Session, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    job = _job(session)
    message = "No rankings left to train on: 3 answers longer than max_length; raise it."

    def explained(ctx: JobContext) -> None:
        batch: dict[str, list[int]] = {}
        try:
            batch["input_ids"]
        except KeyError as exc:
            raise NothingToTrainOn(message) from exc

    status = run_job(
        job_id=job.id, session_factory=session_factory, settings=settings,
        impls={kinds.SELFCHECK: explained},
    )  # fmt: skip
    session.refresh(job)
    assert status == JobStatus.failed
    assert job.error == message  # no class name, no "unexpected"
    assert job.error_detail is not None
    assert "KeyError: 'input_ids'" in job.error_detail  # the cause, for whoever digs
    assert "NothingToTrainOn" in job.error_detail
    # `rlhf jobs show ID --json` (and the API) keep `error` and add the traceback.
    shown = JobOut.model_validate(job).model_dump(mode="json")
    assert shown["error"] == message and shown["error_detail"] == job.error_detail
    # Run again (a retry): the new run starts with neither.
    job.status = JobStatus.queued
    session.commit()
    assert run_job(job_id=job.id, session_factory=session_factory, settings=settings) == (
        JobStatus.succeeded
    )
    session.refresh(job)
    assert job.error is None and job.error_detail is None


@pytest.mark.parametrize(
    ("exc", "message"),
    [
        (NothingToTrainOn("Add rankings first."), "Add rankings first."),
        (NothingToTrainOn(""), "The job stopped on an unexpected error: NothingToTrainOn"),
        (KeyError("x"), "The job stopped on an unexpected error: KeyError: 'x'"),
        (MemoryError(), "The job stopped on an unexpected error: MemoryError"),
    ],
)
def test_failure_message(exc: BaseException, message: str) -> None:
    assert failure_message(exc) == message


def test_unknown_kind_fails_with_a_clear_message(
    session: Session, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    job = _job(session)
    status = run_job(job_id=job.id, session_factory=session_factory, settings=settings, impls={})
    session.refresh(job)
    assert status == JobStatus.failed
    assert job.error == "This worker does not know the job kind 'selfcheck'."


def test_cancel_a_queued_job_stops_it_before_it_runs(
    session: Session, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    job = _job(session)
    request_cancel(session=session, job=job, stale_after=settings.job_stale_after)
    session.commit()
    assert job.status == JobStatus.cancelled
    calls: list[int] = []
    run_job(
        job_id=job.id, session_factory=session_factory, settings=settings,
        impls={kinds.SELFCHECK: lambda ctx: calls.append(1)},
    )  # fmt: skip
    assert calls == []


def test_cancel_a_running_job_stops_at_its_next_checkpoint(
    session: Session, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    job = _job(session)
    reached: list[float] = []

    def long_job(ctx: JobContext) -> None:
        for step in range(10):
            if step == 2:  # an admin presses "Cancel" while the job runs
                with session_factory() as other:
                    request_cancel(
                        session=other,
                        job=other.get_one(Job, ctx.job_id),
                        stale_after=settings.job_stale_after,
                    )
                    other.commit()
            ctx.progress(step / 10)
            reached.append(step / 10)

    status = run_job(
        job_id=job.id, session_factory=session_factory, settings=settings,
        impls={kinds.SELFCHECK: long_job},
    )  # fmt: skip
    session.refresh(job)
    assert status == job.status == JobStatus.cancelled
    assert reached == [0.0, 0.1]  # the step that saw the cancel did not go on


def test_a_job_lost_with_its_worker_runs_again(
    session: Session, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    job = _job(session)
    job.status, job.attempts = JobStatus.running, 1
    job.heartbeat_at = utcnow() - timedelta(seconds=10 * settings.job_heartbeat_seconds)
    session.commit()
    status = run_job(job_id=job.id, session_factory=session_factory, settings=settings)
    session.refresh(job)
    assert status == JobStatus.succeeded
    assert job.attempts == 2
    assert "previous worker was lost" in job.log


def test_a_job_running_elsewhere_is_retried_later_not_dropped(
    session: Session, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    job = _job(session)
    job.status, job.attempts, job.heartbeat_at = JobStatus.running, 1, utcnow()
    session.commit()
    calls: list[int] = []
    with pytest.raises(JobBusyElsewhere) as busy:
        run_job(
            job_id=job.id, session_factory=session_factory, settings=settings,
            impls={kinds.SELFCHECK: lambda ctx: calls.append(1)},
        )  # fmt: skip
    assert busy.value.retry_after_seconds == settings.job_stale_after.total_seconds()
    session.refresh(job)
    assert calls == [] and job.attempts == 1 and job.status == JobStatus.running


def test_a_superseded_run_stops_writing(
    session: Session, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    job = _job(session)

    def slow(ctx: JobContext) -> None:
        ctx.progress(0.1)
        # Meanwhile the job was given up for lost and claimed by another worker.
        with session_factory() as other:
            other.get_one(Job, ctx.job_id).attempts += 1
            other.commit()
        ctx.progress(0.9, "must not be written")

    status = run_job(
        job_id=job.id, session_factory=session_factory, settings=settings,
        impls={kinds.SELFCHECK: slow},
    )  # fmt: skip
    session.refresh(job)
    assert status == JobStatus.running
    assert job.progress == pytest.approx(0.1)
    assert job.status == JobStatus.running and job.finished_at is None


def test_heartbeat_beats_during_a_long_step(
    session: Session, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    job = _job(session)
    fast = settings.model_copy(update={"job_heartbeat_seconds": 1})
    beats: list[object] = []

    def long_step(ctx: JobContext) -> None:
        start = utcnow()
        time.sleep(2.5)  # no progress() call in this step
        with session_factory() as other:
            beats.append(other.get_one(Job, ctx.job_id).heartbeat_at)
        assert beats[0] is not None and beats[0] > start  # type: ignore[operator]

    assert run_job(
        job_id=job.id, session_factory=session_factory, settings=fast,
        impls={kinds.SELFCHECK: long_step},
    ) == JobStatus.succeeded  # fmt: skip


def test_lost_jobs_are_queued_again_then_given_up(
    session: Session, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    long_ago = utcnow() - 2 * settings.job_stale_after
    lost, alive, tired = _job(session), _job(session), _job(session)
    for job, attempts, beat in ((lost, 1, long_ago), (alive, 1, utcnow()), (tired, 3, long_ago)):
        job.status, job.attempts, job.heartbeat_at = JobStatus.running, attempts, beat
    session.commit()
    sent: list[tuple[str, list[int], str]] = []

    class Recorder:
        def send_task(self, name: str, args: list[int], queue: str) -> None:
            sent.append((name, args, queue))

    requeued = recover_lost_jobs(
        session_factory=session_factory,
        settings=settings,
        celery=Recorder(),  # type: ignore[arg-type]
    )
    assert requeued == [lost.id]
    assert sent == [(kinds.TASK_RUN_JOB, [lost.id], "default")]
    for job in (lost, alive, tired):
        session.refresh(job)
    assert lost.status == JobStatus.queued and "queued again" in lost.log
    assert alive.status == JobStatus.running
    assert tired.status == JobStatus.failed and "lost its worker 3 times" in (tired.error or "")
    # The queued-again job then runs to the end as its next attempt.
    assert run_job(job_id=lost.id, session_factory=session_factory, settings=settings) == (
        JobStatus.succeeded
    )
    session.refresh(lost)
    assert lost.attempts == 2


def test_cancelling_a_job_whose_worker_is_gone_takes_effect_at_once(
    session: Session, settings: Settings
) -> None:
    job = _job(session)
    job.status, job.heartbeat_at = JobStatus.running, utcnow() - 2 * settings.job_stale_after
    session.commit()
    request_cancel(session=session, job=job, stale_after=settings.job_stale_after)
    assert job.status == JobStatus.cancelled


def test_unknown_kind_cannot_be_created(session: Session) -> None:
    with pytest.raises(JobError, match="unknown job kind 'nope'"):
        create_job(session=session, kind="nope")


def test_broker_down_fails_the_job_visibly(session: Session, settings: Settings) -> None:
    job = create_job(session=session, kind=kinds.SELFCHECK)
    unreachable = Celery("t", broker="redis://127.0.0.1:1/0", set_as_current=False)
    unreachable.conf.broker_connection_retry = False
    unreachable.conf.broker_connection_max_retries = 0
    unreachable.conf.broker_transport_options = {"max_retries": 0}
    commit_and_enqueue(session=session, celery=unreachable, job=job)
    assert job.status == JobStatus.failed
    assert job.error is not None and "Could not reach the job queue" in job.error
    assert job.id is not None  # the row was committed before the broker was asked


def test_job_context_reports_progress(
    session: Session, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    job = _job(session)
    ctx = JobContext(job_id=job.id, attempt=0, settings=settings, session_factory=session_factory)
    ctx.progress(2.5, "clamped", loss=0.5)
    ctx.log("hello")
    session.refresh(job)
    assert (job.progress, job.progress_message, job.metrics) == (1.0, "clamped", {"loss": 0.5})
    assert job.log.endswith("hello\n")
    request_cancel(session=session, job=job, stale_after=settings.job_stale_after)
    session.commit()
    with pytest.raises(JobCancelled):
        ctx.progress(0.5)
