"""The export job: a thin wrapper over ``app.exports.service.write_export``."""

from __future__ import annotations

from pathlib import Path

from app.db import session_scope
from app.exports.options import ExportOptions
from app.exports.service import export_folder, record_export, write_export
from app.jobs.models import Job
from app.projects.models import Project
from workers.runner import JobContext


def export_impl(ctx: JobContext) -> None:
    options = ExportOptions.from_dict(ctx.params)  # ExportError: the job fails with its message
    out = ctx.params.get("out")
    assert ctx.project_id is not None, "an export job belongs to a project"
    with session_scope(ctx.read_session_factory()) as session:
        project = session.get_one(Project, ctx.project_id)
        folder = (
            Path(out).expanduser().resolve()
            if out
            else export_folder(ctx.settings.data_dir, project.id, ctx.job_id, options.kind)
        )
        ctx.log(f"writing {options.kind} as {options.format} to {folder}")
        result = write_export(
            session=session,
            project=project,
            options=options,
            folder=folder,
            job_id=ctx.job_id,
            progress=lambda fraction, message: ctx.progress(fraction, message),
        )
    with session_scope(ctx.session_factory) as session:  # a short write, after the long read
        project = session.get_one(Project, ctx.project_id)
        created_by = session.get_one(Job, ctx.job_id).created_by_id
        export = record_export(
            session=session, project=project, options=options, result=result,
            job_id=ctx.job_id, created_by_id=created_by,
        )  # fmt: skip
        export_id = export.id
    total = sum(result.counts.values())
    ctx.log(
        f"{total:,} rows ({result.counts['train']:,} train, {result.counts['validation']:,} "
        f"validation) from {result.prompts:,} prompts"
        + ("; no rows matched these options, the files are valid and empty" if not total else "")
    )
    ctx.set_artifacts(export_id=export_id, directory=str(result.directory), counts=result.counts)
    ctx.progress(1.0, f"{total:,} rows written")
