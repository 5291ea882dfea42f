"""`rlhf projects`: labeling projects."""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any

import typer

from app.cli.common import db_session, fail, print_json

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

projects_app = typer.Typer(help="Labeling projects.", no_args_is_help=True)


class QueueOrder(StrEnum):
    """app.projects.models.QUEUE_ORDERS"""

    oldest = "oldest"
    uncertain = "uncertain"
    disagreement = "disagreement"


QUEUE_ORDER_HELP = (
    "Which prompt is served next: oldest (first added), uncertain (the reward model's closest "
    "scores first, from `rlhf score`) or disagreement (extra rankings, up to --max-overlap, "
    "where labelers disagree above --disagreement-threshold)"
)
MAX_OVERLAP_HELP = "Most rankings of a prompt whose labelers disagree; 'default': overlap + 2"
THRESHOLD_HELP = "Share of answer pairs (0..1) labelers disagree on that earns extra rankings"


def _max_overlap(text: str) -> int | None:
    """--max-overlap: a whole number, or "default" (overlap + 2)."""
    if text.strip().lower() == "default":
        return None
    try:
        return int(text)
    except ValueError:
        fail(f"--max-overlap takes a whole number or 'default', not {text!r}")


@projects_app.command("create")
def projects_create(
    name: Annotated[str, typer.Argument(help="Project name")],
    k: Annotated[
        int, typer.Option("--k", help="Answers ranked per prompt (2..9)", min=2, max=9)
    ] = 4,
    overlap: Annotated[int, typer.Option(help="Rankings wanted per prompt", min=1)] = 3,
    queue_order: Annotated[QueueOrder, typer.Option(help=QUEUE_ORDER_HELP)] = QueueOrder.oldest,
    max_overlap: Annotated[
        str, typer.Option(metavar="N|default", help=MAX_OVERLAP_HELP)
    ] = "default",
    disagreement_threshold: Annotated[float, typer.Option(help=THRESHOLD_HELP)] = 0.3,
) -> None:
    """Create a project and print its id."""
    from app.projects.service import create_project

    top = _max_overlap(max_overlap)
    with db_session() as session:
        project_id = create_project(
            session=session, name=name, k=k, overlap=overlap, queue_order=queue_order.value,
            max_overlap=top, disagreement_threshold=disagreement_threshold,
        ).id  # fmt: skip
    typer.echo(project_id)


@projects_app.command("update")
def projects_update(
    project: Annotated[str, typer.Argument(help="Project name or id")],
    overlap: Annotated[int | None, typer.Option(help="Rankings wanted per prompt")] = None,
    queue_order: Annotated[QueueOrder | None, typer.Option(help=QUEUE_ORDER_HELP)] = None,
    max_overlap: Annotated[
        str | None, typer.Option(metavar="N|default", help=MAX_OVERLAP_HELP)
    ] = None,
    disagreement_threshold: Annotated[float | None, typer.Option(help=THRESHOLD_HELP)] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False,
) -> None:
    """Change a project's overlap or queue settings (what is not given stays) and show it.
    Which prompts still want rankings follows at once."""
    from app.audit.service import record
    from app.projects.service import (
        KEEP,
        ProjectSettings,
        get_project,
        settings_changes,
        update_project,
    )

    top = KEEP if max_overlap is None else _max_overlap(max_overlap)
    with db_session() as session:
        target = get_project(session=session, ref=project)
        before = ProjectSettings.of(target)
        update_project(
            session=session, project=target, overlap=overlap,
            queue_order=None if queue_order is None else queue_order.value, max_overlap=top,
            disagreement_threshold=disagreement_threshold,
        )  # fmt: skip
        changes = settings_changes(before, ProjectSettings.of(target))
        if changes:
            record(
                session=session, actor_id=None, action="project.update", target_type="project",
                target_id=target.id, details={**changes, "via": "cli"},
            )  # fmt: skip
        data = _project_json(session, target)
    _print_project(data, json_out=json_out)


def _project_json(session: Session, project: Any) -> dict[str, Any]:
    from app.projects.service import project_counts

    counts = project_counts(session=session, projects=[project])[project.id]
    return {
        "id": project.id,
        "name": project.name,
        "k": project.k,
        "overlap": project.overlap,
        "queue_order": project.queue_order,
        "max_overlap": project.max_overlap,
        "disagreement_threshold": project.disagreement_threshold,
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
            "rankings_done": counts.rankings_done,
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
    _print_project(data, json_out=json_out)


def _queue_text(data: dict[str, Any]) -> str:
    """The queue order in words: "queue oldest", or with its extra rankings."""
    if data["queue_order"] != "disagreement":
        return f"queue {data['queue_order']}"
    top = data["max_overlap"] if data["max_overlap"] is not None else data["overlap"] + 2
    return (
        f"queue disagreement (up to {top} rankings above "
        f"{data['disagreement_threshold']:g} disagreement)"
    )


def _print_project(data: dict[str, Any], *, json_out: bool) -> None:
    if json_out:
        print_json(data)
        return
    typer.echo(
        f"{data['name']} (id {data['id']}): K={data['k']}, overlap {data['overlap']}, "
        f"{_queue_text(data)}"
    )
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
            f"rankings {c['rankings_done']}/{c['rankings_wanted']}, {_queue_text(row)})"
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
