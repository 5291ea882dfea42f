"""`rlhf projects`: labeling projects."""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any

import typer

from app.cli.common import db_session, print_json

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

projects_app = typer.Typer(help="Labeling projects.", no_args_is_help=True)


@projects_app.command("create")
def projects_create(
    name: Annotated[str, typer.Argument(help="Project name")],
    k: Annotated[
        int, typer.Option("--k", help="Answers ranked per prompt (2..9)", min=2, max=9)
    ] = 4,
    overlap: Annotated[int, typer.Option(help="Rankings wanted per prompt", min=1)] = 3,
) -> None:
    """Create a project and print its id."""
    from app.projects.service import create_project

    with db_session() as session:
        project_id = create_project(session=session, name=name, k=k, overlap=overlap).id
    typer.echo(project_id)


def _project_json(session: Session, project: Any) -> dict[str, Any]:
    from app.projects.service import project_counts

    counts = project_counts(session=session, projects=[project])[project.id]
    return {
        "id": project.id,
        "name": project.name,
        "k": project.k,
        "overlap": project.overlap,
        "gold_rate": project.gold_rate,
        "label_schema": project.label_schema,
        "current_policy_id": project.current_policy_id,
        "counts": {
            "prompts": counts.prompts,
            "completions": counts.completions,
            "demonstrations": counts.demonstrations,
            "comparisons": counts.comparisons,
            "rankable_prompts": counts.rankable_prompts,
            "rankings_wanted": counts.rankings_wanted,
        },
    }


@projects_app.command("show")
def projects_show(
    project: Annotated[str, typer.Argument(help="Project name or id")],
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False,
) -> None:
    """Show a project and its counts."""
    from app.projects.service import get_project

    with db_session() as session:
        data = _project_json(session, get_project(session=session, ref=project))
    if json_out:
        print_json(data)
        return
    typer.echo(f"{data['name']} (id {data['id']}): K={data['k']}, overlap {data['overlap']}")
    for key, value in data["counts"].items():
        typer.echo(f"  {key.replace('_', ' '):<18} {value}")


@projects_app.command("list")
def projects_list(json_out: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List projects with their counts."""
    from app.projects.service import list_projects

    with db_session() as session:
        rows = [_project_json(session, p) for p in list_projects(session=session)]
    if json_out:
        print_json(rows)
        return
    for row in rows:
        c = row["counts"]
        typer.echo(
            f"{row['id']:>5}  {row['name']}  (K={row['k']}, prompts {c['prompts']}, "
            f"rankings {c['comparisons']}/{c['rankings_wanted']})"
        )


class TrueFalse(StrEnum):
    true = "true"
    false = "false"


@projects_app.command("members")
def projects_members(
    project: Annotated[str, typer.Argument(help="Project name or id")],
    add: Annotated[
        list[str] | None, typer.Option("--add", metavar="EMAIL", help="Make a labeler a member")
    ] = None,
    remove: Annotated[
        list[str] | None, typer.Option("--remove", metavar="EMAIL", help="Remove a member")
    ] = None,
    restricted: Annotated[
        TrueFalse | None,
        typer.Option(help="true: only members may label it; false: every labeler"),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Who may label a project (design §13). Open to every labeler unless restricted; a
    labeler outside a restricted project does not see it. Prints the members."""
    from app.audit.service import record
    from app.projects.service import add_member, get_project, project_members, remove_member
    from app.users.service import find_user

    with db_session() as session:
        target = get_project(session=session, ref=project)
        changes: dict[str, Any] = {}
        for email in add or []:
            if add_member(
                session=session, project=target, user=find_user(session=session, email=email)
            ):
                changes.setdefault("added", []).append(email)
        for email in remove or []:
            if remove_member(
                session=session, project=target, user=find_user(session=session, email=email)
            ):
                changes.setdefault("removed", []).append(email)
        wanted = None if restricted is None else restricted == TrueFalse.true
        if wanted is not None and wanted != target.restricted:
            target.restricted = wanted
            changes["restricted"] = wanted
        if changes:
            record(
                session=session, actor_id=None, action="project.members", target_type="project",
                target_id=target.id, details={**changes, "via": "cli"},
            )  # fmt: skip
        data: dict[str, Any] = {
            "project": target.id,
            "restricted": target.restricted,
            "members": [u.email for u in project_members(session=session, project=target)],
        }
    if json_out:
        print_json(data)
        return
    access = "members only" if data["restricted"] else "every labeler (open)"
    typer.echo(f"project {data['project']}: {access}; {len(data['members'])} member(s)")
    for email in data["members"]:
        typer.echo(f"  {email}")
