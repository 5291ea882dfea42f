"""The ``rlhf`` command line (design §8). Exit codes: 0 ok, 1 job failed, 2 bad usage or input.

One module per concern, each with its typer app: `rlhf train sft` is in `app/cli/train.py`,
`rlhf users create` in `app/cli/users.py`. Commands import what they need when they run, so
that `rlhf --help` (and every other command) starts quickly."""

from __future__ import annotations

import os
import sys

import typer

from app.cli import (
    agreement,
    db,
    demo,
    exports,
    generate,
    imports,
    jobs,
    judge,
    models,
    projects,
    serve,
    train,
    users,
)
from app.cli.db import alembic_config

__all__ = ["alembic_config", "app", "main"]

app = typer.Typer(
    help="RLHF Studio: collect human feedback and train models with it.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
# Added without a name, a typer's commands are the root's own. `rlhf --help` lists them in
# this order, then the groups.
app.add_typer(serve.serve_app)
app.add_typer(imports.import_app)
app.add_typer(demo.demo_app)
app.add_typer(generate.generate_app)
app.add_typer(exports.export_app)
app.add_typer(agreement.agreement_app)
app.add_typer(judge.judge_app)
app.add_typer(db.db_app, name="db")
app.add_typer(users.users_app, name="users")
app.add_typer(projects.projects_app, name="projects")
app.add_typer(jobs.jobs_app, name="jobs")
app.add_typer(models.models_app, name="models")
app.add_typer(train.train_app, name="train")

# The errors services raise for bad input: one line on stderr and exit code 2. Named rather
# than imported, as importing them all would cost every command a quarter of a second; a
# module that was never imported cannot have raised its error.
INPUT_ERRORS = (
    ("app.auth.service", "UserError"),
    ("app.projects.service", "ProjectError"),
    ("app.jobs.service", "JobError"),
    ("app.models_registry.service", "ModelError"),
    ("app.errors", "NotFoundError"),
    ("app.agreement.service", "FilterError"),
)


def _is_input_error(exc: Exception) -> bool:
    for module_name, class_name in INPUT_ERRORS:
        module = sys.modules.get(module_name)
        if module is not None and isinstance(exc, getattr(module, class_name)):
            return True
    return False


def _error_message(exc: Exception) -> str | None:
    """The one line to show for EXC, or None for a bug (its traceback is shown)."""
    if _is_input_error(exc):
        return str(exc)
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        return "bad settings: " + "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors()
        )
    return None


def main() -> None:
    """Entry point: domain errors become one line on stderr and exit code 2, no traceback."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        code = app(standalone_mode=False, prog_name="rlhf")
        sys.exit(code if isinstance(code, int) else 0)
    except typer.Abort:
        typer.echo("aborted", err=True)
        sys.exit(1)
    except typer.TyperException as exc:  # usage errors: bad option, missing argument
        context = getattr(exc, "ctx", None)
        hint = f" (see '{context.command_path} --help')" if context is not None else ""
        typer.echo(f"error: {exc.format_message()}{hint}", err=True)
        sys.exit(exc.exit_code)
    except Exception as exc:
        message = _error_message(exc)
        if message is None:
            raise
    typer.echo(f"error: {message}", err=True)
    sys.exit(2)
