"""`rlhf export`: a dataset from a project's feedback (a job)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from app.cli.common import db_session, fail, settings
from app.cli.jobs import wait_for_job

export_app = typer.Typer()  # no name: its commands are the root's own (app/cli/__init__.py)


@export_app.command("export")
def export_command(
    project: Annotated[str, typer.Argument(help="Project name or id")],
    kind: Annotated[str, typer.Option(help="pairwise, kwise, sft or prompts")],
    format: Annotated[str, typer.Option(help="jsonl, parquet or hf (save_to_disk)")] = "jsonl",
    out: Annotated[
        str | None,
        typer.Option(help="Folder to write (default: the data dir's exports/); must be new"),
    ] = None,
    gzip: Annotated[bool, typer.Option("--gzip", help="Gzip the JSONL files")] = False,
    validation_ratio: Annotated[
        float, typer.Option(help="Share of prompt submitters for validation")
    ] = 0.1,
    seed: Annotated[int, typer.Option(help="Seed of the train/validation split")] = 0,
    min_agreement: Annotated[
        float | None, typer.Option(help="Drop prompts whose labelers agree less (0..1)")
    ] = None,
    consensus_only: Annotated[
        bool, typer.Option("--consensus-only", help="One consensus ranking per prompt")
    ] = False,
    gold: Annotated[str, typer.Option(help="Gold prompts: include, exclude or only")] = "include",
    surplus: Annotated[
        bool, typer.Option("--surplus/--no-surplus", help="Rankings beyond the overlap")
    ] = True,
    since: Annotated[str | None, typer.Option(help="Rankings from this day (YYYY-MM-DD)")] = None,
    until: Annotated[str | None, typer.Option(help="... up to this day, inclusive")] = None,
    labeler: Annotated[
        list[str] | None, typer.Option(help="Only this labeler's rankings (email); repeatable")
    ] = None,
    conversational: Annotated[
        str,
        typer.Option(
            help="TRL's conversational rows (prompts as messages): auto (when a prompt of the "
            "export is a dialogue), always or never (dialogues as plain text)"
        ),
    ] = "auto",
    ai: Annotated[
        str,
        typer.Option(
            help="AI judges' rankings (ai:<name>): exclude (the default), include or only them"
        ),
    ] = "exclude",
    wait: Annotated[bool, typer.Option("--wait", help="Wait for the job, with progress")] = False,
) -> None:
    """Export a dataset (a job): train/validation files, manifest.json and a dataset card."""
    from app.exports.options import ExportError, ExportOptions
    from app.jobs import kinds
    from app.jobs.service import commit_and_enqueue, create_job
    from app.projects.service import get_project
    from app.users.service import find_user
    from workers.celery_app import create_celery_app

    if out is not None and Path(out).expanduser().exists():
        fail(f"{out} already exists: give a new folder (exports never overwrite)")
    with db_session() as session:
        target = get_project(session=session, ref=project)
        keys = [f"user:{find_user(session=session, email=e).id}" for e in labeler or []]
        raw = {
            "kind": kind, "format": format, "gzip": gzip, "validation_ratio": validation_ratio,
            "seed": seed, "min_agreement": min_agreement, "consensus_only": consensus_only,
            "gold": gold, "include_surplus": surplus, "since": since, "until": until,
            "labelers": keys, "conversational": conversational, "ai": ai,
        }  # fmt: skip
        try:
            params = ExportOptions.from_dict(raw).as_dict()
        except ExportError as exc:
            fail(str(exc))
        if out is not None:
            params["out"] = str(Path(out).expanduser().resolve())
        job = create_job(session=session, kind=kinds.EXPORT, project_id=target.id, params=params)
        commit_and_enqueue(session=session, celery=create_celery_app(settings()), job=job)
        job_id, status = job.id, job.status
    typer.echo(f"job {job_id} {status.value}")
    if wait:
        wait_for_job(job_id)
        with db_session() as session:
            from app.jobs.service import get_job

            artifacts = get_job(session=session, job_id=job_id).artifacts
        if artifacts.get("directory"):
            counts = artifacts.get("counts", {})
            typer.echo(
                f"wrote {artifacts['directory']} ({counts.get('train', 0):,} train, "
                f"{counts.get('validation', 0):,} validation rows)"
            )
