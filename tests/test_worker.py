"""Jobs through a real Celery worker process and a real broker (slow: run in CI).

Locally the broker is the embedded filesystem one; CI adds Redis and RabbitMQ through
``RLHF_TEST_BROKER_URL``. The database is each of the session's databases.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from amqp.exceptions import ChannelError
from sqlalchemy import Engine, delete
from sqlalchemy.orm import Session

from app.config import Settings
from app.demo.content import DEMO_DIALOGUES, DEMO_PROMPTS
from app.jobs import kinds
from app.jobs.models import Job, JobStatus
from app.jobs.service import commit_and_enqueue, create_job
from tests.conftest import make_settings
from tests.processes import CLI, CWD, rlhf, rlhf_env, serve_with_worker
from workers.celery_app import create_celery_app

pytestmark = pytest.mark.slow


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
    env = rlhf_env(
        worker_settings.database_url,
        worker_settings.data_dir,
        RLHF_BROKER_URL=worker_settings.broker_url,
    )
    proc = subprocess.Popen(
        [*CLI, "worker", "--pool", "solo", "--loglevel", "warning"], env=env, cwd=CWD
    )
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


def test_serve_with_worker_runs_jobs_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    """What `make run` does: web + worker on SQLite and the embedded broker; Ctrl-C stops both."""
    env = rlhf_env(f"sqlite:///{tmp_path / 'run.db'}", tmp_path / "var")
    assert rlhf(env, "db", "upgrade").returncode == 0
    with serve_with_worker(env) as server:
        waited = rlhf(env, "jobs", "selfcheck", "--wait", "--delay", "0")
        assert waited.returncode == 0, waited.stdout + waited.stderr
        assert "succeeded" in waited.stdout
    assert server.process.returncode == 0, server.output
    assert "worker stopped" in server.output


def _message_count(channel: Any, queue: str) -> int:
    try:
        return int(channel.queue_declare(queue=queue, passive=True).message_count)
    except ChannelError:  # Redis keeps no trace of an empty queue
        return 0


def test_a_train_message_reaches_only_the_train_queue(worker_settings: Settings) -> None:
    """A worker started for `default` must never pick up a training job, on every broker."""
    celery = create_celery_app(worker_settings)
    with celery.connection_for_write() as conn:
        for queue in celery.amqp.queues.values():  # as a worker would, before any message
            queue.bind(conn.default_channel).declare()
    celery.send_task(kinds.TASK_RUN_JOB, args=[0], queue=kinds.QUEUE_TRAIN)
    with celery.connection_for_read() as conn:
        channel = conn.default_channel
        counts = {name: _message_count(channel, name) for name in kinds.QUEUES}
    celery.control.purge()
    assert counts == {kinds.QUEUE_DEFAULT: 0, kinds.QUEUE_TRAIN: 1}


def test_the_whole_loop_on_the_demo_sft_rm_ppo_promote_generate(tmp_path: Path) -> None:
    """`rlhf demo --feedback`, then `rlhf train sft`, `rlhf train rm` and `rlhf train ppo
    --wait` through a real worker: each registers a model that `from_pretrained` loads in a
    fresh Python process; the PPO policy is promoted and `rlhf generate --wait` samples the
    next round: every prompt gets K answers (so all become ranking tasks); a rerun adds
    nothing."""
    env = rlhf_env(f"sqlite:///{tmp_path / 'train.db'}", tmp_path / "var", RLHF_DEMO_MODE="1")
    assert rlhf(env, "db", "upgrade").returncode == 0
    demo = rlhf(env, "demo", "--feedback")
    assert demo.returncode == 0, demo.stderr
    answered = len(DEMO_PROMPTS) + len(DEMO_DIALOGUES)  # the demo prompts with 4 answers
    said = f"simulated feedback: {3 * answered} rankings and {answered} demonstrations added"
    assert said in demo.stdout
    assert "demo policy: demo-tiny-gpt2" in demo.stdout
    before = json.loads(rlhf(env, "projects", "show", "1", "--json").stdout)["counts"]
    assert before["rankable_prompts"] < before["prompts"]
    common = [
        "--epochs",
        "2",
        "--batch-size",
        "4",
        "--save-steps",
        "2",
        "--max-length",
        "1024",
        "--wait",
    ]
    with serve_with_worker(env):
        sft = rlhf(env, "train", "sft", "1", "--base", "demo-tiny-gpt2", "--name", "demo-sft",
                   *common)  # fmt: skip
        assert sft.returncode == 0, sft.stdout + sft.stderr
        # 15 demonstrations: the job runs, and says (stderr) it is too little to learn from
        assert "warning: Only" in sft.stderr and "training demonstrations" in sft.stderr
        rm = rlhf(env, "train", "rm", "1", "--base", "demo-sft", "--name", "demo-rm", *common)
        assert rm.returncode == 0, rm.stdout + rm.stderr
        assert "saved in" in rm.stdout
        dpo = rlhf(env, "train", "dpo", "1", "--policy", "demo-sft", "--name", "demo-dpo",
                   *common)  # fmt: skip
        assert dpo.returncode == 0, dpo.stdout + dpo.stderr
        # the DPO policy samples: promoted, it answers the prompts that had none
        assert rlhf(env, "models", "promote", "demo-dpo", "1").returncode == 0
        sampled = rlhf(env, "generate", "1", "--wait")
        assert sampled.returncode == 0, sampled.stdout + sampled.stderr
        assert (
            json.loads(rlhf(env, "projects", "show", "1", "--json").stdout)["counts"][
                "rankable_prompts"
            ]
            == before["prompts"]
        )
        ppo = rlhf(env, "train", "ppo", "1", "--policy", "demo-sft", "--reward", "demo-rm",
                   "--name", "demo-ppo", "--steps", "2", "--batch-size", "4",
                   "--mini-batch-size", "2", "--max-new-tokens", "8", "--wait")  # fmt: skip
        assert ppo.returncode == 0, ppo.stdout + ppo.stderr
        promote = rlhf(env, "models", "promote", "demo-ppo", "1")
        assert promote.returncode == 0, promote.stderr
        generate = rlhf(env, "generate", "1", "--wait")
        assert generate.returncode == 0, generate.stdout + generate.stderr
        after = json.loads(rlhf(env, "projects", "show", "1", "--json").stdout)["counts"]
        assert after["rankable_prompts"] == after["prompts"] == before["prompts"]
        assert after["completions"] == 4 * after["prompts"]
        again = rlhf(env, "generate", "1", "--wait")
        assert again.returncode == 0
        assert json.loads(rlhf(env, "projects", "show", "1", "--json").stdout)["counts"] == after
    models = {m["name"]: m for m in json.loads(rlhf(env, "models", "list", "--json").stdout)}
    assert models["demo-sft"]["kind"] == "sft"
    assert models["demo-sft"]["parent_id"] == models["demo-tiny-gpt2"]["id"]
    assert models["demo-rm"]["parent_id"] == models["demo-sft"]["id"]
    assert models["demo-rm"]["metrics"]["k"] == 4 and models["demo-rm"]["export_id"]
    policy = models["demo-ppo"]
    assert policy["kind"] == "policy" and policy["parent_id"] == models["demo-sft"]["id"]
    assert policy["metrics"]["reward_model_id"] == models["demo-rm"]["id"]
    dpo_policy = models["demo-dpo"]
    assert dpo_policy["kind"] == "policy" and dpo_policy["parent_id"] == models["demo-sft"]["id"]
    assert dpo_policy["metrics"]["k"] == 4
    shown = json.loads(rlhf(env, "projects", "show", "1", "--json").stdout)
    assert shown["current_policy_id"] == policy["id"]
    script = (
        "import sys\n"
        "from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification\n"
        "print(type(AutoModelForCausalLM.from_pretrained(sys.argv[1])).__name__)\n"
        "print(type(AutoModelForSequenceClassification.from_pretrained(sys.argv[2])).__name__)\n"
        "print(type(AutoModelForCausalLM.from_pretrained(sys.argv[3])).__name__)\n"
    )
    shell = subprocess.run(
        [sys.executable, "-c", script, models["demo-ppo"]["path"], models["demo-rm"]["path"],
         dpo_policy["path"]],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    assert shell.stdout.split() == [
        "GPT2LMHeadModel",
        "GPT2ForSequenceClassification",
        "GPT2LMHeadModel",
    ]
    for args, message in (
        (["generate", "nope"], "error: no project 'nope'"),
        (
            ["generate", "1", "--model", str(tmp_path / "missing")],
            "error: no registered model or model folder",
        ),
        (["train", "rm", "1", "--base", "nowhere"], "error: no registered model and no model"),
        (["train", "sft", "1", "--base", "demo-sft", "--epochs", "0"], "error: epochs must be"),
        (
            ["train", "rm", "1", "--base", "demo-sft", "--long-answers", "cut"],
            "error: long_answers must be one of drop, truncate, not 'cut'",
        ),
    ):
        result = rlhf(env, *args)
        assert result.returncode == 2 and result.stderr.startswith(message), result.stderr
