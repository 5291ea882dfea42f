"""`rlhf jobs`, and how every job-starting command waits for its job and reports on it."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer

from app.cli.common import db_session, print_json, settings

jobs_app = typer.Typer(help="Background jobs.", no_args_is_help=True)


def _job_json(job: Any, *, summary: bool = False) -> dict[str, Any]:
    from app.jobs.schemas import JobOut, JobSummaryOut

    schema = JobSummaryOut if summary else JobOut
    return schema.model_validate(job).model_dump(mode="json")


@jobs_app.command("list")
def jobs_list(
    limit: Annotated[int, typer.Option(help="How many, newest first", min=1)] = 20,
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List recent jobs."""
    from app.jobs.service import list_jobs

    with db_session() as session:
        rows = [_job_json(j, summary=True) for j in list_jobs(session=session, limit=limit)]
    if json_out:
        print_json(rows)
        return
    if not rows:
        typer.echo("no jobs yet")
    for r in rows:
        typer.echo(
            f"{r['id']:>5}  {r['kind']:<12} {r['status']:<10} {round(100 * r['progress']):>3}%  "
            f"{r['created_at'][:19]}  {r['error'] or r['progress_message']}"
        )


@jobs_app.command("show")
def jobs_show(
    job_id: Annotated[int, typer.Argument(help="Job id")],
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Show one job: status, progress, metrics, errors."""
    from app.jobs.service import get_job

    with db_session() as session:
        job = get_job(session=session, job_id=job_id)
        data, log = _job_json(job), job.log
    if json_out:
        print_json({**data, "log": log})
        return
    typer.echo(
        f"job {data['id']} ({data['kind']}): {data['status']}, {round(100 * data['progress'])}%"
    )
    for key in ("progress_message", "error", "attempts", "created_at", "started_at", "finished_at"):
        if data[key] not in (None, ""):
            typer.echo(f"  {key.replace('_', ' '):<17} {data[key]}")
    from app.jobs.training import DATA_REPORT_KEYS

    for key, value in {**data["metrics"], **data["artifacts"]}.items():
        if key not in DATA_REPORT_KEYS:
            typer.echo(f"  {key:<17} {value}")
    echo_data_report(data["metrics"])


def wait_for_job(job_id: int, *, poll_seconds: float = 0.5) -> None:
    """Show a progress bar until the job finishes; exit 1 if it did not succeed."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    from sqlalchemy import select

    from app.jobs.models import Job, JobStatus, JobStep

    with Progress(
        TextColumn("[bold]job {task.fields[job_id]}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
        TextColumn("{task.description}"), TimeElapsedColumn(),
    ) as bar:  # fmt: skip
        task = bar.add_task("queued", total=1.0, job_id=job_id)
        while True:
            with db_session() as session:
                job = session.get_one(Job, job_id)
                status, progress, message, error = (
                    job.status,
                    job.progress,
                    job.progress_message,
                    job.error,
                )
                speed = job.metrics.get("tokens_per_second")
                loss = session.scalar(
                    select(JobStep.values)
                    .where(JobStep.job_id == job_id, JobStep.phase == "train")
                    .order_by(JobStep.step.desc())
                    .limit(1)
                )
            if speed:
                message = f"{message}, {speed:,.0f} tokens/s"
            if loss and "loss" in loss:
                message = f"{message}, loss {loss['loss']:.4f}"
            bar.update(task, completed=progress, description=message or status.value)
            if status.is_finished:
                break
            time.sleep(poll_seconds)
    typer.echo(f"job {job_id} {status.value}" + (f": {error}" if error else ""))
    if status != JobStatus.succeeded:
        raise typer.Exit(1)


@jobs_app.command("selfcheck")
def jobs_selfcheck(
    wait: Annotated[bool, typer.Option("--wait", help="Wait and show progress")] = False,
    delay: Annotated[float, typer.Option(help="Seconds between checks", min=0, max=60)] = 0.2,
) -> None:
    """Start the worker self-check job (database, data directory, ML stack)."""
    from app.jobs import kinds
    from app.jobs.service import commit_and_enqueue, create_job
    from workers.celery_app import create_celery_app

    with db_session() as session:
        job = create_job(session=session, kind=kinds.SELFCHECK, params={"delay": delay})
        commit_and_enqueue(session=session, celery=create_celery_app(settings()), job=job)
        job_id, status = job.id, job.status
    typer.echo(f"job {job_id} {status.value}")
    if wait:
        wait_for_job(job_id)


@jobs_app.command("cancel")
def jobs_cancel(job_id: Annotated[int, typer.Argument(help="Job id")]) -> None:
    """Ask a job to stop (a queued job stops at once, a running one at its next checkpoint)."""
    from app.jobs.service import get_job, request_cancel

    with db_session() as session:
        job = request_cancel(
            session=session,
            job=get_job(session=session, job_id=job_id),
            stale_after=settings().job_stale_after,
        )
        status = job.status.value
    typer.echo(f"job {job_id}: {status}")


def echo_data_report(metrics: dict[str, Any]) -> None:
    """What a training job left out, cut, and warned about its data (design §10)."""
    if metrics.get("left_out"):
        reasons = metrics.get("left_out_reasons") or {}
        typer.echo(f"left out {metrics['left_out']:,}:")
        for reason, count in reasons.items():
            typer.echo(f"  {count:>7,}  {reason}")
    if metrics.get("truncated"):
        typer.echo(f"cut to fit: {metrics['truncated']:,} (--long-answers truncate)")
    for warning in metrics.get("data_warnings") or []:
        typer.echo(f"warning: {warning}", err=True)
