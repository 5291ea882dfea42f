"""`rlhf import`: prompts, answers, demonstrations and preferences from a file."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated

import typer

from app.cli.common import db_session, fail


class Transcript(enum.StrEnum):
    none = "none"
    hh = "hh"


import_app = typer.Typer()  # no name: its commands are the root's own (app/cli/__init__.py)


@import_app.command("import")
def import_command(
    project: Annotated[str, typer.Argument(help="Project name or id")],
    file: Annotated[
        str, typer.Argument(help="A .jsonl, .json or .csv file, optionally gzipped (.gz)")
    ],
    skip_invalid: Annotated[
        bool,
        typer.Option("--skip-invalid", help="Import the valid rows; write the others to --rejects"),
    ] = False,
    rejects: Annotated[
        str | None,
        typer.Option(
            help="Where to write rejected rows (JSON Lines) (default: FILE.rejects.jsonl)"
        ),
    ] = None,
    transcript: Annotated[
        Transcript,
        typer.Option(
            help="hh: read string prompts in the Anthropic HH form ('Human: ...\\n\\nAssistant: "
            "...') as dialogues, and preference rows without a prompt (as hh-rlhf ships them) "
            "by the turns their two transcripts share"
        ),
    ] = Transcript.none,
) -> None:
    """Import prompts, answers to rank, demonstrations and preferences from FILE.

    A row's fields tell its kind: "prompt" alone, or with "completions",
    "completion" (a demonstration), or "chosen" and "rejected" (a preference).
    A prompt may be a dialogue: "prompt" (or "messages") an array of
    {"role", "content"} messages ending with a user turn.
    If any row is invalid, nothing is imported (unless --skip-invalid).
    Importing the same file again adds nothing twice."""
    from app.imports.parse import ImportFileError, file_format
    from app.imports.service import import_file, write_rejects
    from app.projects.service import get_project

    path = Path(file)
    try:
        with db_session() as session:
            target = get_project(session=session, ref=project)
            summary = import_file(
                session=session,
                project=target,
                path=path,
                source_name=path.name,
                skip_invalid=skip_invalid,
                commit=session.commit,
                transcript=None if transcript is Transcript.none else transcript.value,
            )
            project_label = f"{target.name!r} (id {target.id})"
    except ImportFileError as exc:
        fail(str(exc))
    errors = summary.errors
    for error in errors[:20]:
        typer.echo(f"line {error.line}: {error.reason}", err=True)
    if len(errors) > 20:
        typer.echo(f"... and {len(errors) - 20} more", err=True)
    if errors and (skip_invalid or rejects is not None):
        stem = path.name.removesuffix(file_format(path.name)[1])
        out = Path(rejects) if rejects else path.with_name(f"{stem}.rejects.jsonl")
        written = write_rejects(path=path, errors=errors, out=out)
        typer.echo(f"{written} rejected rows written to {out}", err=True)
    if not summary.imported:
        rows = "row" if len(errors) == 1 else "rows"
        fail(
            f"{file} has {len(errors)} invalid {rows}; nothing was imported "
            "(use --skip-invalid to import the valid rows)"
        )
    typer.echo(
        f"imported {summary.rows_imported} of {summary.rows} rows from {path.name} "
        f"into project {project_label}"
    )
    for key, value in summary.counts().items():
        if key not in ("rows", "rows_imported"):
            typer.echo(f"  {key.replace('_', ' '):<26} {value}")
