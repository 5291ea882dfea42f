"""`rlhf demo`: seed the demo project, its users and its tiny policy."""

from __future__ import annotations

from typing import Annotated

import typer

from app.cli.common import db_session, settings

demo_app = typer.Typer()  # no name: its commands are the root's own (app/cli/__init__.py)


@demo_app.command()
def demo(
    feedback: Annotated[
        bool,
        typer.Option(
            "--feedback",
            help="Also simulate the demo labelers: a ranking of each answered prompt by each "
            "and a demonstration per prompt, to try the training jobs at once",
        ),
    ] = False,
) -> None:
    """Seed a demo: an admin, three labelers and a project with K=4 answers per prompt."""
    from app.demo.model import ensure_demo_policy
    from app.demo.seed import seed_demo
    from app.projects.models import Project

    cfg = settings()
    with db_session() as session:
        summary = seed_demo(session=session, fixed_passwords=cfg.demo_mode)
        policy = ensure_demo_policy(
            session=session,
            project=session.get_one(Project, summary.project_id),
            models_dir=cfg.data_dir / "models",
        )
        if feedback:
            from app.demo.feedback import simulate_feedback

            simulated = simulate_feedback(
                session=session, project=session.get_one(Project, summary.project_id)
            )
    typer.echo(f"demo project id {summary.project_id}: {summary.prompts_added} prompts added")
    if feedback:
        typer.echo(
            f"simulated feedback: {simulated.rankings} rankings and "
            f"{simulated.demonstrations} demonstrations added"
        )
    if policy is not None:
        typer.echo(
            f"demo policy: {policy.name} (a tiny untrained GPT-2: its answers are noise) "
            f"at {policy.path}; `rlhf generate {summary.project_id}` samples answers with it"
        )
    if summary.created_logins:
        typer.echo("logins created (shown once):")
        for email, password in summary.created_logins.items():
            typer.echo(f"  {email:<24} {password}")
    if summary.existing_logins:
        typer.echo(f"existing logins kept: {', '.join(summary.existing_logins)}")
        if cfg.demo_mode:
            typer.echo("  (demo passwords: demo-admin for the admin, demo-labeler for labelers)")
