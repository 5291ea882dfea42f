"""Admin pages for jobs: the list, one job (polled by htmx while it runs), start and cancel."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from app.audit.service import record
from app.deps import AdminUser, CeleryDep, DbSession, SettingsDep
from app.jobs import kinds
from app.jobs.models import Job
from app.jobs.service import (
    commit_and_enqueue,
    create_job,
    get_job,
    list_jobs,
    request_cancel,
    step_samples,
    step_series,
)
from app.jobs.training import DATA_REPORT_KEYS
from app.web.charts import metric_chart
from app.web.templating import render

router = APIRouter(prefix="/admin/jobs", tags=["jobs"])


@router.get("", name="jobs_list")
def jobs_list(request: Request, session: DbSession, user: AdminUser) -> Response:
    jobs = list_jobs(session=session, limit=100)
    return render(request, "jobs/list.html", {"jobs": jobs}, block="jobs_table")


@router.get("/{job_id}", name="job_detail")
def job_detail(request: Request, session: DbSession, user: AdminUser, job_id: int) -> Response:
    job = get_job(session=session, job_id=job_id)
    return render(request, "jobs/detail.html", _detail(session, job), block="job_status")


def _detail(session: DbSession, job: Job) -> dict[str, Any]:
    series = step_series(session=session, job_id=job.id)
    charts = [metric_chart(metric, lines) for metric, lines in series.items()]
    samples = step_samples(session=session, job_id=job.id)
    notes = DataNotes.of(job.metrics)
    metrics = {k: v for k, v in job.metrics.items() if k not in DataNotes.KEYS}
    return {"job": job, "charts": charts, "samples": samples, "notes": notes, "metrics": metrics}


@dataclass(frozen=True)
class DataNotes:
    """What a training job says about its data (design §10), from its metrics: the rows it
    left out, by reason, and its warnings (too little data to learn or validate on). The page
    shows them in words above the charts, not in the metrics list."""

    KEYS: ClassVar[frozenset[str]] = DATA_REPORT_KEYS

    left_out: int = 0
    reasons: tuple[tuple[str, int], ...] = ()
    warnings: tuple[str, ...] = ()
    truncated: int = 0  # answers or prompts cut to fit (--long-answers truncate)

    @property
    def too_long(self) -> bool:
        """Some rows were left out for their length (the long-input options would help)."""
        return any("longer than" in reason for reason, _ in self.reasons)

    @classmethod
    def of(cls, metrics: dict[str, Any]) -> DataNotes:
        left_out = metrics.get("left_out")
        reasons = metrics.get("left_out_reasons")
        warnings = metrics.get("data_warnings")
        truncated = metrics.get("truncated")
        return cls(
            truncated=truncated if type(truncated) is int and truncated > 0 else 0,
            left_out=left_out if type(left_out) is int and left_out > 0 else 0,
            reasons=tuple((str(r), n) for r, n in reasons.items() if isinstance(n, int) and n)
            if isinstance(reasons, dict)
            else (),
            warnings=tuple(str(w) for w in warnings if str(w).strip())
            if isinstance(warnings, list)
            else (),
        )


@router.post("/selfcheck", name="job_selfcheck")
def start_selfcheck(session: DbSession, celery: CeleryDep, user: AdminUser) -> Response:
    job = create_job(session=session, kind=kinds.SELFCHECK, created_by_id=user.id)
    record(
        session=session, actor_id=user.id, action="job.start", target_type="job", target_id=job.id
    )
    commit_and_enqueue(session=session, celery=celery, job=job)
    return RedirectResponse(f"/admin/jobs/{job.id}", status_code=303)


@router.post("/{job_id}/cancel", name="job_cancel")
def cancel_job(
    request: Request, session: DbSession, settings: SettingsDep, user: AdminUser, job_id: int
) -> Response:
    job = get_job(session=session, job_id=job_id)
    request_cancel(session=session, job=job, stale_after=settings.job_stale_after)
    record(
        session=session, actor_id=user.id, action="job.cancel", target_type="job", target_id=job.id
    )
    session.commit()
    return render(request, "jobs/detail.html", _detail(session, job), block="job_status")
