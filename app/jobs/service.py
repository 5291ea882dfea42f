"""Creating, listing and cancelling jobs (design §2: commit the row, then enqueue its id)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db import utcnow
from app.errors import NotFoundError
from app.jobs.kinds import (
    QUEUE_BY_KIND,
    QUEUE_TRAIN,
    QUEUES,
    TASK_RUN_JOB,
    TRAIN_QUEUE_PREFIX,
    is_queue,
)
from app.jobs.models import Job, JobStatus, JobStep

if TYPE_CHECKING:
    from celery import Celery  # a type only: importing Celery costs every `rlhf` command

log = logging.getLogger(__name__)


class JobError(ValueError):
    """A job could not be created or found; the message is shown as it is."""


def create_job(
    *,
    session: Session,
    kind: str,
    params: dict[str, Any] | None = None,
    project_id: int | None = None,
    created_by_id: int | None = None,
    queue: str | None = None,
) -> Job:
    """A queued job of ``kind`` on its kind's queue, or on ``queue`` (a training job sent to
    one machine's own ``train-...`` queue)."""
    if kind not in QUEUE_BY_KIND:
        raise JobError(f"unknown job kind {kind!r}; known: {', '.join(sorted(QUEUE_BY_KIND))}")
    own = QUEUE_BY_KIND[kind]
    if queue not in (None, own) and (own != QUEUE_TRAIN or queue in QUEUES or not is_queue(queue)):
        raise JobError(
            f"a {kind} job runs on the {own!r} queue"
            + (f" or a training machine's own ({TRAIN_QUEUE_PREFIX}NAME)"
               if own == QUEUE_TRAIN else "")
            + f", not {queue!r}"
        )  # fmt: skip
    job = Job(
        kind=kind,
        queue=queue or QUEUE_BY_KIND[kind],
        params=params or {},
        project_id=project_id,
        created_by_id=created_by_id,
        status=JobStatus.queued,
    )
    session.add(job)
    session.flush()
    return job


def commit_and_enqueue(*, session: Session, celery: Celery, job: Job) -> Job:
    """The edge of every request or command that starts a job: the row is committed first, so
    a worker never receives an id it cannot read; a broker failure fails the job visibly."""
    session.commit()
    try:
        result = celery.send_task(TASK_RUN_JOB, args=[job.id], queue=job.queue)
    except Exception as exc:  # the broker is down or misconfigured
        log.exception("could not enqueue job %s", job.id)
        job.status = JobStatus.failed
        job.error = (
            f"Could not reach the job queue ({type(exc).__name__}: {exc}). Is the broker running?"
        )
        job.finished_at = utcnow()
        session.commit()
        return job
    job.celery_task_id = result.id
    session.commit()
    return job


def get_job(*, session: Session, job_id: int) -> Job:
    job = session.get(Job, job_id)
    if job is None:
        raise NotFoundError(f"no job {job_id}")
    return job


def list_jobs(
    *,
    session: Session,
    project_id: int | None = None,
    status: JobStatus | None = None,
    limit: int = 50,
) -> Sequence[Job]:
    stmt = select(Job).order_by(Job.created_at.desc(), Job.id.desc()).limit(limit)
    if project_id is not None:
        stmt = stmt.where(Job.project_id == project_id)
    if status is not None:
        stmt = stmt.where(Job.status == status)
    return session.scalars(stmt).all()


def request_cancel(*, session: Session, job: Job, stale_after: timedelta) -> Job:
    """A queued job, or a running one whose worker stopped heartbeating (``stale_after``), is
    cancelled at once; a live running one stops at its next checkpoint."""
    if job.status.is_finished:
        return job
    job.cancel_requested = True
    now = utcnow()
    lost = job.heartbeat_at is None or now - job.heartbeat_at > stale_after
    if job.status == JobStatus.queued or lost:
        job.status = JobStatus.cancelled
        job.finished_at = now
    session.flush()
    return job


#: the metrics a training job's page charts, in this order (others follow by name)
CHART_ORDER = (
    "loss", "accuracy", "margin", "perplexity",
    "score", "reward", "kl", "kl_k3", "entropy", "clip_fraction", "approx_kl", "policy_loss",
    "value_loss", "response_length", "eos_rate", "ptx_loss", "kl_coef",
    "learning_rate", "grad_norm",
)  # fmt: skip
#: figures kept with a step but not worth a chart (bookkeeping, timings)
NOT_CHARTED = frozenset(
    {"epoch", "minibatches", "skipped_minibatches", "first_ratio_max_error", "score_normalised",
     "value_clip_fraction", "ratio"}
)  # fmt: skip
SERIES_NAMES = {"train": "train", "eval": "validation"}


def step_series(*, session: Session, job_id: int) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """{metric: {"train" | "validation": [(step, value), ...]}} from a job's logged steps."""
    found: dict[str, dict[str, list[tuple[int, float]]]] = {}
    rows = session.execute(
        select(JobStep.step, JobStep.phase, JobStep.values)
        .where(JobStep.job_id == job_id)
        .order_by(JobStep.step, JobStep.id)
    )
    for step, phase, values in rows:
        series = SERIES_NAMES.get(phase, phase)
        for metric, value in values.items():
            charted = metric not in NOT_CHARTED and not metric.startswith("time_")
            if charted and isinstance(value, int | float) and not isinstance(value, bool):
                found.setdefault(metric, {}).setdefault(series, []).append((step, float(value)))
    order = {name: i for i, name in enumerate(CHART_ORDER)}
    return {
        # train before validation in every chart, whichever was logged first (PPO scores its
        # held-out prompts before its first step)
        metric: dict(sorted(lines.items(), key=lambda line: line[0] != "train"))
        for metric, lines in sorted(
            found.items(), key=lambda item: (order.get(item[0], 99), item[0])
        )
    }


def step_samples(*, session: Session, job_id: int, last: int = 3) -> list[tuple[int, list[Any]]]:
    """The sample answers a PPO job logged, newest first: [(step, [{prompt, response,
    score}, ...]), ...] for the ``last`` steps that have them."""
    rows = session.execute(
        select(JobStep.step, JobStep.values)
        .where(JobStep.job_id == job_id, JobStep.phase == "samples")
        .order_by(JobStep.step.desc())
        .limit(last)
    )
    return [(step, list(values.get("samples") or [])) for step, values in rows]
