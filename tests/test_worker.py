"""Jobs through a real Celery worker process and a real broker (slow: run in CI).

Locally the broker is the embedded filesystem one; CI adds Redis and RabbitMQ through
``RLHF_TEST_BROKER_URL``. The database is each of the session's databases.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, delete
from sqlalchemy.orm import Session

from app.config import Settings
from app.jobs import kinds
from app.jobs.models import Job, JobStatus
from app.jobs.service import commit_and_enqueue, create_job
from tests.conftest import TEST_SECRET, make_settings
from workers.celery_app import create_celery_app

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def _env(database_url: str, broker_url: str, data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RLHF_")}
    env.update(
        RLHF_DATABASE_URL=database_url,
        RLHF_BROKER_URL=broker_url,
        RLHF_DATA_DIR=str(data_dir),
        RLHF_SECRET_KEY=TEST_SECRET,
    )
    return env


def _wait_for(engine: Engine, job_id: int, timeout: float = 90) -> Job:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with Session(engine) as s:
            job = s.get_one(Job, job_id)
            if job.status.is_finished:
                return job
        time.sleep(0.25)
    raise AssertionError(f"job {job_id} did not finish in {timeout}s")


@pytest.fixture
def worker_settings(database_url: str, broker_url: str, tmp_path: Path) -> Settings:
    settings = make_settings(database_url=database_url, broker_url=broker_url, data_dir=tmp_path)
    if not settings.broker_is_embedded:
        create_celery_app(settings).control.purge()  # leftovers of an earlier, killed run
    return settings


@pytest.fixture
def worker(worker_settings: Settings) -> Iterator[subprocess.Popen[bytes]]:
    env = _env(worker_settings.database_url, worker_settings.broker_url, worker_settings.data_dir)
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "worker", "--pool", "solo", "--loglevel", "warning"],
        env=env, cwd=ROOT / "tests",
    )  # fmt: skip
    yield proc
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise


def test_selfcheck_through_a_real_worker(
    engine: Engine, worker_settings: Settings, worker: subprocess.Popen[bytes]
) -> None:
    celery = create_celery_app(worker_settings)
    with Session(engine, expire_on_commit=False) as session:
        job = create_job(session=session, kind=kinds.SELFCHECK, params={"delay": 0.05})
        commit_and_enqueue(session=session, celery=celery, job=job)
    try:
        assert job.celery_task_id
        done = _wait_for(engine, job.id)
        assert done.status == JobStatus.succeeded, (done.error, done.log)
        assert done.attempts == 1
        report = json.loads(Path(done.artifacts["report"]).read_text())
        assert report["job_id"] == job.id
        assert worker.poll() is None  # the worker is still serving
    finally:
        with Session(engine) as session:
            session.execute(delete(Job).where(Job.id == job.id))
            session.commit()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_with_worker_runs_jobs_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    """What `make run` does: web + worker on SQLite and the embedded broker; Ctrl-C stops both."""
    env = _env(f"sqlite:///{tmp_path / 'run.db'}", "filesystem://", tmp_path / "var")
    cli = [sys.executable, "-m", "app.cli"]
    subprocess.run(
        [*cli, "db", "upgrade"], env=env, check=True, capture_output=True, cwd=ROOT / "tests"
    )
    port = _free_port()
    serve = subprocess.Popen(
        [*cli, "serve", "--with-worker", "--port", str(port)],
        env=env, cwd=ROOT / "tests", start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                    assert json.load(r) == {"status": "ok"}
                    break
            except OSError:
                assert time.monotonic() < deadline, "the web app did not come up"
                assert serve.poll() is None, "rlhf serve exited early"
                time.sleep(0.5)
        waited = subprocess.run(
            [*cli, "jobs", "selfcheck", "--wait", "--delay", "0"],
            env=env, cwd=ROOT / "tests", capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert waited.returncode == 0, waited.stdout + waited.stderr
        assert "succeeded" in waited.stdout
    finally:
        os.killpg(serve.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends
        output, _ = serve.communicate(timeout=60)
    assert serve.returncode == 0, output
    assert "worker stopped" in output
