"""The ``rlhf`` command line (design §8). Exit codes: 0 ok, 1 job failed, 2 bad usage or input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from pydantic import ValidationError
from sqlalchemy.orm import Session

from app.config import Settings, get_settings

app = typer.Typer(
    help="RLHF Studio: collect human feedback and train models with it.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
users_app = typer.Typer(help="User accounts.", no_args_is_help=True)
projects_app = typer.Typer(help="Labeling projects.", no_args_is_help=True)
jobs_app = typer.Typer(help="Background jobs.", no_args_is_help=True)
models_app = typer.Typer(help="Model versions (Hugging Face checkpoints).", no_args_is_help=True)
train_app = typer.Typer(help="Training jobs (SFT, reward model, PPO).", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(users_app, name="users")
app.add_typer(projects_app, name="projects")
app.add_typer(jobs_app, name="jobs")
app.add_typer(models_app, name="models")
app.add_typer(train_app, name="train")


def fail(message: str, code: int = 2) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def settings() -> Settings:
    return get_settings()


@contextmanager
def db_session() -> Iterator[Session]:
    from app.db import make_engine, make_session_factory, session_scope

    engine = make_engine(settings().database_url)
    try:
        with session_scope(make_session_factory(engine, writes=True)) as session:
            yield session
    finally:
        engine.dispose()


def print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str, ensure_ascii=False))


# --- serve / worker -------------------------------------------------------------------------


def worker_command(*, queues: str, concurrency: int, pool: str, loglevel: str) -> list[str]:
    return [
        sys.executable, "-m", "app.cli", "worker",
        "--queues", queues, "--concurrency", str(concurrency), "--pool", pool,
        "--loglevel", loglevel,
    ]  # fmt: skip


def _die_with_parent() -> None:
    """In the worker child (Linux): get SIGTERM when `rlhf serve` dies, however it dies (a
    kill -9, or a terminal closed), so no orphan worker keeps taking jobs with old code."""
    if sys.platform != "linux":
        return
    import contextlib
    import ctypes

    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on", min=1, max=65535)] = 8000,
    with_worker: Annotated[
        bool, typer.Option("--with-worker", help="Also start a Celery worker process")
    ] = False,
    workers: Annotated[int, typer.Option(help="Web worker processes", min=1)] = 1,
) -> None:
    """Start the web app (and, with --with-worker, a worker). Ctrl-C stops both."""
    import uvicorn

    cfg = settings()
    worker: subprocess.Popen[bytes] | None = None
    if with_worker:
        cmd = worker_command(queues="default,train", concurrency=1, pool="solo", loglevel="info")
        worker = subprocess.Popen(cmd, preexec_fn=_die_with_parent)  # noqa: S603
        typer.echo(f"worker started (pid {worker.pid}) on broker {cfg.broker_url.split('@')[-1]}")
    typer.echo(f"RLHF Studio on http://{host}:{port}  (Ctrl-C stops)")
    try:
        uvicorn.run(
            "app.main:create_app", factory=True, host=host, port=port, workers=workers,
            proxy_headers=True, forwarded_allow_ips=cfg.forwarded_allow_ips, log_level="info",
        )  # fmt: skip
    finally:
        if worker is not None and worker.poll() is None:
            worker.send_signal(signal.SIGTERM)  # warm shutdown: finish the current step
            try:
                worker.wait(timeout=20)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
            typer.echo("worker stopped")


class Pool(StrEnum):
    prefork = "prefork"
    solo = "solo"
    threads = "threads"


@app.command()
def worker(
    queues: Annotated[str, typer.Option(help="Comma-separated queues")] = "default,train",
    concurrency: Annotated[int, typer.Option(help="Jobs run at once", min=1)] = 1,
    pool: Annotated[Pool, typer.Option(help="Celery pool")] = Pool.prefork,
    loglevel: Annotated[str, typer.Option(help="Log level")] = "info",
) -> None:
    """Start a Celery worker that runs jobs (generation, export, training)."""
    from app.jobs.kinds import QUEUES
    from workers.celery_app import create_celery_app

    wanted = [q.strip() for q in queues.split(",") if q.strip()]
    unknown = [q for q in wanted if q not in QUEUES]
    if not wanted or unknown:
        fail(f"unknown queue(s) {', '.join(unknown) or '(none given)'}; known: {', '.join(QUEUES)}")
    cfg = settings()
    celery = create_celery_app(cfg)
    argv = [
        "worker", f"--queues={','.join(wanted)}", f"--concurrency={concurrency}",
        f"--pool={pool.value}", f"--loglevel={loglevel}", "--hostname=rlhf@%h",
    ]  # fmt: skip
    if cfg.broker_is_embedded:
        argv += ["--without-mingle", "--without-gossip", "--without-heartbeat"]
    from app.db import make_engine, make_session_factory
    from workers.runner import start_recovery_thread

    # Jobs whose worker died (killed, out of memory) are queued again from here.
    start_recovery_thread(
        session_factory=make_session_factory(make_engine(cfg.database_url), writes=True),
        settings=cfg,
        celery=celery,
    )
    celery.worker_main(argv)


# --- db ---------------------------------------------------------------------------------------


def alembic_config(database_url: str | None = None) -> Any:
    from pathlib import Path

    from alembic.config import Config

    root = Path(__file__).resolve().parents[1]
    config = Config(str(root / "alembic.ini"))
    config.set_main_option("script_location", str(root / "migrations"))
    config.attributes["database_url"] = database_url or settings().database_url
    config.attributes["configure_logger"] = False
    return config


@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision")] = "head",
) -> None:
    """Apply migrations up to REVISION (default: the newest)."""
    from alembic import command

    command.upgrade(alembic_config(), revision)
    typer.echo(f"database at {revision}")


# --- users ------------------------------------------------------------------------------------


class RoleOption(StrEnum):
    admin = "admin"
    labeler = "labeler"


def _read_password(password_stdin: bool) -> str:
    if password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if not sys.stdin.isatty():
        fail("no terminal to ask for a password; pass it with --password-stdin")
    return str(typer.prompt("Password", hide_input=True, confirmation_prompt=True))


@users_app.command("create")
def users_create(
    email: Annotated[str, typer.Argument(help="Login email")],
    role: Annotated[RoleOption, typer.Option(help="admin or labeler")] = RoleOption.labeler,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input")
    ] = False,
    token: Annotated[
        bool, typer.Option("--token", help="Also create and print an API token")
    ] = False,
    name: Annotated[str, typer.Option(help="Display name")] = "",
) -> None:
    """Create a user. Prints the new id, and with --token the API token (shown only once)."""
    from app.auth.models import Role
    from app.auth.service import create_api_token, create_user

    password = _read_password(password_stdin)
    with db_session() as session:
        user = create_user(
            session=session,
            email=email,
            password=password,
            role=Role(role.value),
            display_name=name,
        )
        secret = create_api_token(session=session, user=user, name="cli")[1] if token else None
        user_id = user.id
    typer.echo(f"created user {user_id} ({email}, {role.value})")
    if secret:
        typer.echo(secret)


@users_app.command("list")
def users_list(json_out: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List users."""
    from sqlalchemy import select

    from app.auth.models import User

    with db_session() as session:
        users = session.scalars(select(User).order_by(User.id)).all()
        rows = [
            {"id": u.id, "email": u.email, "role": u.role.value, "active": u.is_active}
            for u in users
        ]
    if json_out:
        print_json(rows)
        return
    for row in rows:
        state = "" if row["active"] else "  (deactivated)"
        typer.echo(f"{row['id']:>5}  {row['role']:<8} {row['email']}{state}")


@users_app.command("deactivate")
def users_deactivate(email: Annotated[str, typer.Argument(help="Login email")]) -> None:
    """Deactivate a user: they cannot sign in, their sessions end and their API tokens stop
    working. Their rankings and demonstrations are kept."""
    from app.audit.service import record
    from app.users.service import deactivate_user, find_user

    with db_session() as session:
        user = find_user(session=session, email=email)
        deactivate_user(session=session, user=user)
        record(
            session=session, actor_id=None, action="user.deactivate", target_type="user",
            target_id=user.id, details={"email": user.email, "via": "cli"},
        )  # fmt: skip
        user_email = user.email
    typer.echo(f"deactivated {user_email} (signed out everywhere)")


@users_app.command("reset-password")
def users_reset_password(
    email: Annotated[str, typer.Argument(help="Login email")],
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the new password from standard input")
    ] = False,
) -> None:
    """Set a new password and sign the user out everywhere. Without --password-stdin a
    password is generated and printed (shown only once)."""
    from app.audit.service import record
    from app.users.service import find_user, reset_password

    typed = sys.stdin.readline().rstrip("\r\n") if password_stdin else None
    with db_session() as session:
        user = find_user(session=session, email=email)
        generated = reset_password(session=session, user=user, password=typed)
        record(
            session=session, actor_id=None, action="user.reset_password", target_type="user",
            target_id=user.id, details={"email": user.email, "via": "cli",
                                        "generated": generated is not None},
        )  # fmt: skip
        user_email = user.email
    typer.echo(f"password reset for {user_email} (signed out everywhere)")
    if generated:
        typer.echo(generated)


# --- projects ---------------------------------------------------------------------------------


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


@app.command("import")
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
) -> None:
    """Import prompts, answers to rank, demonstrations and preferences from FILE.

    A row's fields tell its kind: "prompt" alone, or with "completions",
    "completion" (a demonstration), or "chosen" and "rejected" (a preference).
    If any row is invalid, nothing is imported (unless --skip-invalid).
    Importing the same file again adds nothing twice."""
    from pathlib import Path

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


# --- demo -------------------------------------------------------------------------------------


@app.command()
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


# --- generate -------------------------------------------------------------------------------


@app.command()
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


# --- export -----------------------------------------------------------------------------------


@app.command("export")
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
            "labelers": keys,
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


# --- train ----------------------------------------------------------------------------------

BaseOpt = Annotated[
    str, typer.Option("--base", help="The model to start from: a registered version or a folder")
]
OutOpt = Annotated[
    str | None, typer.Option(help="Folder to save the model in (default: the data dir's models/)")
]
NameOpt = Annotated[str | None, typer.Option(help="The registered model's name")]
EpochsOpt = Annotated[float, typer.Option(help="Passes over the training data")]
BatchOpt = Annotated[int | None, typer.Option(help="Examples per step (RM: whole prompts)")]
LrOpt = Annotated[float | None, typer.Option("--learning-rate", help="Peak learning rate")]
MaxLenOpt = Annotated[
    int,
    typer.Option(
        help="Tokens per sequence, at most the model's context (prompts are cut at the start)"
    ),
]
SeedOpt = Annotated[int, typer.Option(help="Seed of the data split, order and initialisation")]
SaveOpt = Annotated[
    int, typer.Option(help="A checkpoint every N steps (a lost worker resumes from it); 0: none")
]
RatioOpt = Annotated[float, typer.Option(help="Share of prompt submitters held out")]
WaitOpt = Annotated[bool, typer.Option("--wait", help="Wait for the job, with progress")]
LongOpt = Annotated[
    str,
    typer.Option(
        "--long-answers",
        help="An answer longer than --max-length: drop (leave it out, counted in the job's "
        "left_out) or truncate (cut it from the right)",
    ),
]
GroupOpt = Annotated[
    bool,
    typer.Option(
        "--group-by-length",
        help="Batch examples of similar length together: faster on mixed lengths, less random",
    ),
]


def _start_training(project: str, raw: dict[str, Any], wait: bool) -> None:
    from app.errors import NotFoundError
    from app.jobs import kinds
    from app.jobs.service import commit_and_enqueue, create_job, get_job
    from app.jobs.training import PPO, SFT, PPOOptions, TrainError, TrainOptions
    from app.models_registry.service import get_model
    from app.projects.service import get_project
    from workers.celery_app import create_celery_app

    raw = {key: value for key, value in raw.items() if value is not None}
    if raw.get("out") and Path(raw["out"]).expanduser().exists():
        fail(f"{raw['out']} already exists: give a new folder (nothing is overwritten)")
    with db_session() as session:
        target = get_project(session=session, ref=project)
        for field in ("base", "policy", "reward"):
            if field not in raw:
                continue
            try:
                raw[field] = str(get_model(session=session, ref=raw[field]).id)
            except NotFoundError:
                folder = Path(raw[field]).expanduser()
                if not folder.is_dir():
                    fail(f"no registered model and no model folder {raw[field]!r} (--{field})")
                raw[field] = str(folder.resolve())
        if raw.get("out"):
            raw["out"] = str(Path(raw["out"]).expanduser().resolve())
        try:
            if raw["kind"] == PPO:
                params = PPOOptions.from_dict(raw).as_dict()
            else:
                params = TrainOptions.from_dict(raw).as_dict()
        except TrainError as exc:
            fail(str(exc))
        kind = {SFT: kinds.TRAIN_SFT, PPO: kinds.TRAIN_PPO}.get(params["kind"], kinds.TRAIN_RM)
        job = create_job(session=session, kind=kind, project_id=target.id, params=params)
        commit_and_enqueue(session=session, celery=create_celery_app(settings()), job=job)
        job_id, status = job.id, job.status
    typer.echo(f"job {job_id} {status.value}")
    if wait:
        try:
            wait_for_job(job_id)
        finally:
            with db_session() as session:
                job = get_job(session=session, job_id=job_id)
                artifacts, metrics = job.artifacts, job.metrics
            echo_data_report(metrics)
        typer.echo(f"model version {artifacts['model_version_id']} saved in {artifacts['model']}")


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


@train_app.command("sft")
def train_sft(
    project: Annotated[str, typer.Argument(help="Project name or id")],
    base: BaseOpt,
    out: OutOpt = None,
    name: NameOpt = None,
    epochs: EpochsOpt = 3.0,
    batch_size: BatchOpt = None,
    learning_rate: LrOpt = None,
    max_length: MaxLenOpt = 1024,
    seed: SeedOpt = 0,
    save_steps: SaveOpt = 50,
    validation_ratio: RatioOpt = 0.1,
    group_by_length: GroupOpt = False,
    long_answers: LongOpt = "drop",
    wait: WaitOpt = False,
) -> None:
    """Fine-tune BASE on the project's demonstrations (loss on the answer tokens only)."""
    _start_training(
        project,
        {"kind": "sft", "base": base, "out": out, "name": name, "epochs": epochs,
         "batch_size": batch_size, "learning_rate": learning_rate, "max_length": max_length,
         "seed": seed, "save_steps": save_steps, "validation_ratio": validation_ratio,
         "group_by_length": group_by_length, "long_answers": long_answers},
        wait,
    )  # fmt: skip


@train_app.command("rm")
def train_rm(
    project: Annotated[str, typer.Argument(help="Project name or id")],
    base: BaseOpt,
    out: OutOpt = None,
    name: NameOpt = None,
    epochs: EpochsOpt = 1.0,
    batch_size: BatchOpt = None,
    learning_rate: LrOpt = None,
    max_length: MaxLenOpt = 1024,
    seed: SeedOpt = 0,
    save_steps: SaveOpt = 50,
    validation_ratio: RatioOpt = 0.1,
    k: Annotated[
        int | None, typer.Option("--k", help="Train on the rankings of K answers only")
    ] = None,
    long_answers: LongOpt = "drop",
    margin_coef: Annotated[float, typer.Option(help="Weight of the margin term")] = 0.0,
    center_coef: Annotated[float, typer.Option(help="Weight of reward centering")] = 0.0,
    group_by_length: GroupOpt = False,
    wait: WaitOpt = False,
) -> None:
    """Train a reward model from BASE on the project's rankings (all K answers of a prompt in
    one batch, every pair in the loss)."""
    _start_training(
        project,
        {"kind": "rm", "base": base, "out": out, "name": name, "epochs": epochs,
         "batch_size": batch_size, "learning_rate": learning_rate, "max_length": max_length,
         "seed": seed, "save_steps": save_steps, "validation_ratio": validation_ratio, "k": k,
         "margin_coef": margin_coef, "center_coef": center_coef,
         "group_by_length": group_by_length, "long_answers": long_answers},
        wait,
    )  # fmt: skip


@train_app.command("ppo")
def train_ppo(
    project: Annotated[str, typer.Argument(help="Project name or id")],
    policy: Annotated[
        str,
        typer.Option("--policy", help="The policy to improve (an SFT version): also the reference"),
    ],
    reward: Annotated[str, typer.Option("--reward", help="The reward model (a registered rm)")],
    out: OutOpt = None,
    name: NameOpt = None,
    steps: Annotated[int, typer.Option(help="PPO steps (rollout batches)")] = 20,
    batch_size: Annotated[int, typer.Option(help="Prompts (rollouts) per step")] = 16,
    mini_batch_size: Annotated[int, typer.Option(help="Rollouts per update")] = 4,
    ppo_epochs: Annotated[int, typer.Option(help="Passes over each batch")] = 4,
    learning_rate: Annotated[float, typer.Option("--learning-rate", help="Learning rate")] = 1e-5,
    max_new_tokens: Annotated[int, typer.Option(help="Longest answer, in tokens")] = 64,
    max_prompt_length: Annotated[
        int, typer.Option(help="Longest prompt, in tokens (lowered to fit the policy's context)")
    ] = 256,
    long_answers: Annotated[
        str,
        typer.Option(
            "--long-answers",
            help="A prompt longer than --max-prompt-length: drop (leave it out) or truncate "
            "(cut its start); PPO-ptx demonstrations likewise",
        ),
    ] = "drop",
    temperature: Annotated[float, typer.Option(help="Sampling temperature")] = 1.0,
    kl_coef: Annotated[
        float, typer.Option(help="KL penalty beta (start value if adaptive)")
    ] = 0.05,
    kl_target: Annotated[
        float, typer.Option(help="Adaptive KL towards this many nats per answer (0: fixed beta)")
    ] = 0.0,
    missing_eos_penalty: Annotated[
        float, typer.Option(help="Taken off the score of an answer cut at the length limit")
    ] = 1.0,
    ptx_coef: Annotated[
        float, typer.Option(help="PPO-ptx: weight of the LM loss on demonstrations (0: off)")
    ] = 0.0,
    seed: SeedOpt = 0,
    save_steps: SaveOpt = 10,
    wait: WaitOpt = False,
) -> None:
    """Improve POLICY with PPO against the reward model on the project's prompts (per-token
    KL penalty to the starting policy, clipped updates, GAE); registers the new policy."""
    _start_training(
        project,
        {"kind": "ppo", "policy": policy, "reward": reward, "out": out, "name": name,
         "steps": steps, "batch_size": batch_size, "mini_batch_size": mini_batch_size,
         "ppo_epochs": ppo_epochs, "learning_rate": learning_rate,
         "max_new_tokens": max_new_tokens, "max_prompt_length": max_prompt_length,
         "long_answers": long_answers, "temperature": temperature, "kl_coef": kl_coef,
         "kl_target": kl_target, "missing_eos_penalty": missing_eos_penalty,
         "ptx_coef": ptx_coef, "seed": seed, "save_steps": save_steps},
        wait,
    )  # fmt: skip


# --- jobs -------------------------------------------------------------------------------------


# --- agreement ------------------------------------------------------------------------------


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def _figure(entry: dict[str, Any], key: str = "value", ci: str = "ci95") -> str:
    """A figure with its interval, or "not enough data" and the reason."""
    value = entry.get(key)
    if value is None:
        return f"not enough data ({entry.get('reason')})"
    interval = entry.get(ci)
    shown = f"{value:.3f}"
    return f"{shown} [{interval[0]:.3f}, {interval[1]:.3f}]" if interval else shown


@app.command()
def agreement(
    project: Annotated[str, typer.Argument(help="Project name or id")],
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False,
    since: Annotated[str | None, typer.Option(help="Rankings from this day (YYYY-MM-DD)")] = None,
    until: Annotated[str | None, typer.Option(help="Rankings up to this day, inclusive")] = None,
    labeler: Annotated[
        str | None, typer.Option(help="Only prompts this labeler ranked (their email)")
    ] = None,
    gold: Annotated[str, typer.Option(help="all, gold or non-gold prompts")] = "all",
    include_imported: Annotated[
        bool,
        typer.Option(
            "--include-imported",
            help="Count imported preferences (import:<file>) as raters in the figures",
        ),
    ] = False,
) -> None:
    """Inter-annotator agreement and each labeler's figures (the admin dashboard's numbers)."""
    from app.agreement.service import AgreementFilters, build_report
    from app.projects.service import get_project
    from app.users.service import find_user

    with db_session() as session:
        found = get_project(session=session, ref=project)
        key = f"user:{find_user(session=session, email=labeler).id}" if labeler else None
        filters = AgreementFilters.parse(
            since=since, until=until, labeler=key, gold=gold, include_imported=include_imported
        )
        data = build_report(session=session, project=found, filters=filters).as_dict()
    if json_out:
        print_json(data)
        return
    pairwise = data["pairwise_agreement"]
    typer.echo(
        f"{found.name}: {data['n_comparisons']} rankings of {data['n_prompts']} prompts by "
        f"{data['n_labelers']} labelers ({data['n_prompts_with_overlap']} prompts with 2+)"
    )
    typer.echo(f"  pairwise agreement (micro) {_figure(pairwise, 'micro', 'micro_ci95')}")
    typer.echo(f"  pairwise agreement (macro) {_figure(pairwise, 'macro', 'macro_ci95')}")
    typer.echo(
        f"    {pairwise['n_pairs']} answer pairs, {pairwise['n_tied_pairs_left_out']} tied "
        "pairs left out"
    )
    typer.echo(f"  Kendall's tau-b (mean)     {_figure(data['kendall_tau_b'], 'mean')}")
    typer.echo(f"  Kendall's W (mean)         {_figure(data['kendall_w'], 'mean')}")
    typer.echo(f"  agreement with gold        {_figure(data['gold_agreement'])}")
    for labels in data["labels"]:
        typer.echo(
            f"  {labels['name']}: alpha {_figure(labels['krippendorff_alpha'])}, "
            f"Fleiss' kappa {_figure(labels['fleiss_kappa'])}"
        )
    if data["labelers"]:
        typer.echo("")
        typer.echo(f"  {'labeler':<28} {'rankings':>8} {'agreement':>9} {'gold':>7} {'skips':>6}")
        for row in data["labelers"]:
            typer.echo(
                f"  {row['labeler'][:28]:<28} {row['n_comparisons']:>8} "
                f"{_percent(row['pairwise_agreement']):>9} {_percent(row['gold_agreement']):>7} "
                f"{_percent(row['skip_rate']):>6}"
            )
    if data["imported"]:  # pseudo-labelers of imported files: not people, shown apart
        typer.echo("")
        typer.echo(f"  {'rankings':>8} {'agreement':>9} {'gold':>7}  imported (not people)")
        for row in data["imported"]:
            typer.echo(
                f"  {row['n_comparisons']:>8} {_percent(row['pairwise_agreement']):>9} "
                f"{_percent(row['gold_agreement']):>7}  {row['labeler']}"
            )


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


# --- models -----------------------------------------------------------------------------------


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


def main() -> None:
    """Entry point: domain errors become one line on stderr and exit code 2, no traceback."""
    from app.agreement.service import FilterError
    from app.auth.service import UserError
    from app.errors import NotFoundError
    from app.jobs.service import JobError
    from app.models_registry.service import ModelError
    from app.projects.service import ProjectError

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
    except (UserError, ProjectError, JobError, ModelError, NotFoundError, FilterError) as exc:
        message = str(exc)
    except ValidationError as exc:
        message = "bad settings: " + "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors()
        )
    typer.echo(f"error: {message}", err=True)
    sys.exit(2)


if __name__ == "__main__":
    main()
