"""Jobs through a real Celery worker process and a real broker (slow: run in CI).

Locally the broker is the embedded filesystem one; CI adds Redis and RabbitMQ through
``RLHF_TEST_BROKER_URL``. The database is each of the session's databases.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from amqp.exceptions import ChannelError
from sqlalchemy import Engine, delete, select
from sqlalchemy.orm import Session

from app.config import Settings
from app.demo.content import DEMO_DIALOGUES, DEMO_PROMPTS
from app.jobs import kinds
from app.jobs.models import Job, JobStatus, JobStep
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
    # two trainer processes (gloo on the CPU) for SFT, RM and DPO, 2 prompts each a step
    common = [
        "--epochs", "2", "--batch-size", "2", "--processes", "2", "--save-steps", "2",
        "--max-length", "1024", "--wait",
    ]  # fmt: skip
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
    assert [models[n]["metrics"]["world_size"] for n in ("demo-sft", "demo-rm", "demo-dpo")] == [
        2, 2, 2
    ]  # fmt: skip
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
        (
            ["train", "rm", "1", "--base", "demo-sft", "--processes", "0"],
            "error: Invalid value for '--processes': Input should be greater than or equal to 1",
        ),
        (
            ["train", "dpo", "1", "--policy", "demo-sft", "--accelerate-config", "nope.yaml"],
            "error: no accelerate config 'nope.yaml' here (--accelerate-config)",
        ),
        (
            ["train", "sft", "1", "--base", "demo-sft", "--queue", "gpu"],
            "error: a train_sft job runs on the 'train' queue or a training machine's own "
            "(train-NAME), not 'gpu'",
        ),
    ):
        result = rlhf(env, *args)
        assert result.returncode == 2 and result.stderr.startswith(message), result.stderr


def test_a_worker_killed_mid_training_leaves_no_trainer_behind_and_its_job_resumes(
    tmp_path: Path,
) -> None:
    """SIGKILL to a worker whose job trains in 2 processes: the trainer processes leave by
    themselves (they watch the worker), and the next worker resumes the job from its last
    complete checkpoint with 2 processes again."""
    from sqlalchemy import create_engine

    from workers.ml.launch import rank_pids

    env = rlhf_env(
        f"sqlite:///{tmp_path / 'kill.db'}", tmp_path / "var", RLHF_DEMO_MODE="1",
        RLHF_JOB_HEARTBEAT_SECONDS="1",  # stale after 3 s: the next worker takes the job over
    )  # fmt: skip
    assert rlhf(env, "db", "upgrade").returncode == 0
    assert rlhf(env, "demo", "--feedback").returncode == 0
    started = rlhf(env, "train", "rm", "1", "--base", "demo-tiny-gpt2", "--epochs", "20",
                   "--batch-size", "2", "--processes", "2", "--save-steps", "4")  # fmt: skip
    assert started.returncode == 0, started.stderr
    job_id = int(started.stdout.split()[1])
    launch_dir = tmp_path / "var" / "training" / f"job-{job_id}" / "launch"
    engine = create_engine(f"sqlite:///{tmp_path / 'kill.db'}")

    def worker() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [*CLI, "worker", "--queues", "train", "--pool", "solo", "--loglevel", "warning"],
            env=env, cwd=CWD, start_new_session=True,
        )  # fmt: skip

    first = worker()
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:  # its first logged step: past checkpoint 4
            with Session(engine) as s:
                if s.scalars(select(JobStep.step).where(JobStep.job_id == job_id)).first():
                    break
            time.sleep(0.2)
        else:
            raise AssertionError(f"job {job_id} logged no step in 180 s")
        trainers = rank_pids(launch_dir)
        assert len(trainers) == 2
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # the worker and nothing else: no clean-up runs
        first.wait(timeout=30)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(_alive(pid) for pid in trainers):
        time.sleep(0.2)
    assert not any(_alive(pid) for pid in trainers), "a trainer process outlived its worker"

    second = worker()
    try:
        done = _wait_for(engine, job_id, timeout=240)
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=60)
    assert done.status == JobStatus.succeeded, (done.error, done.log, done.error_detail)
    assert "resuming from checkpoint-" in done.log and done.attempts == 2
    assert done.metrics["world_size"] == 2
    with Session(engine) as s:
        steps = s.scalars(
            select(JobStep.step).where(JobStep.job_id == job_id, JobStep.phase == "train")
        ).all()
    logged = sorted(steps)  # every 10th step (the run is long enough), each charted once
    assert len(logged) > 3 and {b - a for a, b in itertools.pairwise(logged)} == {10}
    engine.dispose()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
