"""`rlhf generate`: sample the answers labelers rank (a job)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from app.cli.common import db_session, fail, settings
from app.cli.jobs import wait_for_job

generate_app = typer.Typer()  # no name: its commands are the root's own (app/cli/__init__.py)


@generate_app.command()
def generate(
    project: Annotated[str, typer.Argument(help="Project name or id")],
    model: Annotated[
        str | None,
        typer.Option(
            help="A registered version (id or name) or a model folder; default: the project's policy"
        ),
    ] = None,
    k: Annotated[
        int | None,
        typer.Option("--k", help="Answers per prompt (default: the project's K)", min=2, max=9),
    ] = None,
    endpoint: Annotated[
        str | None,
        typer.Option(help="An OpenAI-compatible server to sample from instead (vLLM, TGI, ...)"),
    ] = None,
    endpoint_model: Annotated[
        str | None, typer.Option(help="The model name the endpoint serves")
    ] = None,
    chat: Annotated[bool, typer.Option("--chat", help="Use /v1/chat/completions")] = False,
    wait: Annotated[bool, typer.Option("--wait", help="Wait and show progress")] = False,
) -> None:
    """Sample the missing answers of every prompt of PROJECT (a job on the `train` queue)."""
    if endpoint is not None and not endpoint_model:
        fail("--endpoint needs --endpoint-model (the model name the server serves)")
    from app.errors import NotFoundError
    from app.jobs import kinds
    from app.jobs.service import commit_and_enqueue, create_job
    from app.models_registry.service import get_model
    from app.projects.service import get_project
    from workers.celery_app import create_celery_app

    with db_session() as session:
        target = get_project(session=session, ref=project)
        params: dict[str, Any] = {}
        if model is not None:
            try:
                params["model"] = get_model(session=session, ref=model).id
            except NotFoundError:
                path = Path(model).expanduser()
                if not path.exists():
                    fail(f"no registered model or model folder {model!r}")
                params["model"] = str(path.resolve())
        if k is not None:
            params["k"] = k
        if endpoint is not None:
            params["endpoint"] = {"url": endpoint, "model": endpoint_model, "chat": chat}
        job = create_job(session=session, kind=kinds.GENERATE, project_id=target.id, params=params)
        commit_and_enqueue(session=session, celery=create_celery_app(settings()), job=job)
        job_id, status = job.id, job.status
    typer.echo(f"job {job_id} {status.value}")
    if wait:
        wait_for_job(job_id)
