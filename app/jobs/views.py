"""Admin pages for jobs: the list, one job (polled by htmx while it runs), start and cancel."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from app.audit.service import record
from app.deps import AdminUser, CeleryDep, DbSession, SettingsDep
from app.exports.models import Export
from app.jobs import kinds
from app.jobs.labels import artifact_label, kind_label, metric_label
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
    charts = [
        metric_chart(metric, lines, title=metric_label(metric)) for metric, lines in series.items()
    ]
    samples = step_samples(session=session, job_id=job.id)
    notes = DataNotes.of(job.metrics, kind=job.kind)
    metrics = [
        Output.of(metric_label(key), key, value)
        for key, value in job.metrics.items()
        if key not in DataNotes.KEYS
    ]
    export = _export_written(session, job)
    return {
        "job": job, "kind": kind_label(job.kind), "charts": charts,
        "curves_note": curves_note(job, series), "samples": samples, "notes": notes,
        "metrics": metrics, "export": export,
        "outputs": [] if export else _outputs(job.artifacts),
    }  # fmt: skip


@dataclass(frozen=True)
class Output:
    """One figure or output of a job as the page shows it: a label, the value, and the page
    it links to (an export, a model version), if any."""

    #: keys whose value is the id of another page: key -> (URL prefix, how the link reads)
    LINKS: ClassVar[dict[str, tuple[str, str]]] = {
        "export_id": ("/admin/exports/", "export #{}"),
        "ptx_export_id": ("/admin/exports/", "export #{}"),
        "model_version_id": ("/admin/models/", "version #{}"),
        "reward_model_id": ("/admin/models/", "version #{}"),
    }

    label: str
    value: Any
    href: str | None = None
    path: bool = False  # a file or folder on the worker's disk, shown as code

    @classmethod
    def of(cls, label: str, key: str, value: Any) -> Output:
        link = cls.LINKS.get(key)
        if link and type(value) is int:
            return cls(label=label, value=link[1].format(value), href=f"{link[0]}{value}")
        return cls(label=label, value=value)


def _outputs(artifacts: dict[str, Any]) -> list[Output]:
    """A job's artifacts in words: the exports and model versions it made, linked to their
    pages, and the folders and files it wrote (as code)."""
    return [
        Output(label=artifact_label(key), value=value, path=True)
        if isinstance(value, str)
        else Output.of(artifact_label(key), key, value)
        for key, value in artifacts.items()
    ]


def _export_written(session: DbSession, job: Job) -> Export | None:
    """The export an export job wrote (its page lists the files and their counts)."""
    export_id = job.artifacts.get("export_id")
    if job.kind != kinds.EXPORT or type(export_id) is not int:
        return None
    return session.get(Export, export_id)


def curves_note(job: Job, series: dict[str, dict[str, list[tuple[int, float]]]]) -> str:
    """What the training curves show and when their validation points are measured, true
    for the job's kind: PPO logs every step and scores held-out prompts every few steps, SFT
    and RM log every few steps and validate after each epoch."""
    running = "" if job.status.is_finished else "; they grow as the job runs"
    validated = any("validation" in lines for lines in series.values())
    if job.kind == kinds.TRAIN_PPO:
        note = f"Logged after every step{running}."
        if validated:
            every, steps = job.params.get("eval_every"), job.params.get("steps")
            often = (
                f", every {every:,} steps"
                if type(every) is int and type(steps) is int and 0 < every < steps
                else ""
            )
            note += (
                " Validation: answers to held-out prompts, sampled and scored before the first "
                f"step{often} and after the last."
            )
        return note
    note = f"Logged every few steps{running}."
    if validated:
        epochs = job.params.get("epochs")
        one = isinstance(epochs, int | float) and epochs <= 1
        note += " Validation is measured " + ("after the epoch." if one else "after each epoch.")
    return note


_ACTIVITY = {kinds.SCORE: ("scoring", "scored"), kinds.JUDGE: ("judging", "judged")}


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
    activity: str = "training"  # what the rows were left out of ...
    did: str = "trained on"  # ... and what the job did with the rest

    @property
    def too_long(self) -> bool:
        """Some rows were left out for their length (the long-input options would help)."""
        return any("longer than" in reason for reason, _ in self.reasons)

    @classmethod
    def of(cls, metrics: dict[str, Any], *, kind: str = "") -> DataNotes:
        left_out = metrics.get("left_out")
        reasons = metrics.get("left_out_reasons")
        warnings = metrics.get("data_warnings")
        truncated = metrics.get("truncated")
        activity, did = _ACTIVITY.get(kind, ("training", "trained on"))
        return cls(
            activity=activity,
            did=did,
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
