"""`rlhf models`: model versions (Hugging Face checkpoints) and project policies."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

import typer

from app.cli.common import db_session, print_json

models_app = typer.Typer(help="Model versions (Hugging Face checkpoints).", no_args_is_help=True)


class ModelKindChoice(StrEnum):
    base = "base"
    sft = "sft"
    rm = "rm"
    policy = "policy"


@models_app.command("list")
def models_list(json_out: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List model versions and the projects that sample with them."""
    from app.models_registry.service import list_models, policy_projects

    with db_session() as session:
        used_by = policy_projects(session=session)
        rows: list[dict[str, Any]] = [
            {
                "id": m.id,
                "name": m.name,
                "kind": m.kind.value,
                "path": m.path,
                "parent_id": m.parent_id,
                "job_id": m.job_id,
                "export_id": m.export_id,
                "metrics": m.metrics,
                "created_at": m.created_at.isoformat(),
                "current_policy_of": [p.name for p in used_by.get(m.id, [])],
            }
            for m in list_models(session=session)
        ]
    if json_out:
        print_json(rows)
        return
    if not rows:
        typer.echo("no models yet (add one with 'rlhf models register PATH --kind KIND')")
    for r in rows:
        policy_of = ", ".join(r["current_policy_of"])
        used = f"  (policy of {policy_of})" if policy_of else ""
        typer.echo(f"{r['id']:>5}  {r['kind']:<7} {r['name']}  {r['path']}{used}")


@models_app.command("register")
def models_register(
    path: Annotated[str, typer.Argument(help="A save_pretrained folder, or a hub id org/name")],
    kind: Annotated[ModelKindChoice, typer.Option("--kind", help="What the model is")],
    name: Annotated[
        str | None, typer.Option(help="Unique name (default: the folder's name)")
    ] = None,
) -> None:
    """Register a model version and print its id."""
    from app.models_registry.models import ModelKind
    from app.models_registry.service import register_model

    with db_session() as session:
        model_id = register_model(
            session=session, path=path, kind=ModelKind(kind.value), name=name
        ).id
    typer.echo(model_id)


@models_app.command("promote")
def models_promote(
    version: Annotated[str, typer.Argument(help="Model version id or name")],
    project: Annotated[str, typer.Argument(help="Project name or id")],
) -> None:
    """Make VERSION the project's current policy (generation samples with it)."""
    from app.models_registry.service import get_model, promote_model
    from app.projects.service import get_project

    with db_session() as session:
        model = get_model(session=session, ref=version)
        target = get_project(session=session, ref=project)
        promote_model(session=session, model=model, project=target, actor_id=None)
        message = f"{model.name} (id {model.id}) is now the policy of project {target.name!r}"
    typer.echo(message)
