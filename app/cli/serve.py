"""`rlhf serve` (the web app, optionally with a worker) and `rlhf worker`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any

import typer

from app.cli.common import fail, settings

if TYPE_CHECKING:
    from app.config import Settings

serve_app = typer.Typer()  # no name: its commands are the root's own (app/cli/__init__.py)


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


def uvicorn_options(cfg: Settings, *, host: str, port: int, workers: int) -> dict[str, Any]:
    """What `rlhf serve` passes to uvicorn.run (the keyword arguments of uvicorn.Config)."""
    return {
        "app": "app.main:create_app", "factory": True, "host": host, "port": port,
        "workers": workers, "proxy_headers": True,
        "forwarded_allow_ips": cfg.forwarded_allow_ips,
        "timeout_keep_alive": cfg.keep_alive_seconds, "log_level": "info",
    }  # fmt: skip


@serve_app.command()
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
        uvicorn.run(**uvicorn_options(cfg, host=host, port=port, workers=workers))
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


@serve_app.command()
def worker(
    queues: Annotated[str, typer.Option(help="Comma-separated queues")] = "default,train",
    concurrency: Annotated[int, typer.Option(help="Jobs run at once", min=1)] = 1,
    pool: Annotated[Pool, typer.Option(help="Celery pool")] = Pool.prefork,
    loglevel: Annotated[str, typer.Option(help="Log level")] = "info",
    gpus: Annotated[
        str | None,
        typer.Option(
            help="The GPUs this worker's jobs use, e.g. 0,1 (sets CUDA_VISIBLE_DEVICES; "
            "default: every GPU the machine has)"
        ),
    ] = None,
) -> None:
    """Start a Celery worker that runs jobs (generation, export, training)."""
    from app.jobs.kinds import QUEUES, TRAIN_QUEUE_PREFIX, is_queue
    from workers.celery_app import create_celery_app

    wanted = [q.strip() for q in queues.split(",") if q.strip()]
    unknown = [q for q in wanted if not is_queue(q)]
    if not wanted or unknown:
        fail(
            f"unknown queue(s) {', '.join(unknown) or '(none given)'}; known: "
            f"{', '.join(QUEUES)}, or a training machine's own {TRAIN_QUEUE_PREFIX}NAME"
        )
    if gpus is not None:
        ids = [g.strip() for g in gpus.split(",") if g.strip()]
        if not ids or not all(g.isdigit() for g in ids):
            fail(f"--gpus takes GPU numbers separated by commas (e.g. 0,1), not {gpus!r}")
        # before anything imports torch: the worker's jobs and their trainer processes see
        # these GPUs only, numbered from 0
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(ids)
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
