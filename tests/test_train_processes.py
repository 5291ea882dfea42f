"""Training jobs whose trainer runs in several processes (design §12): ``accelerate launch``
starts them, on the CPU with the gloo backend (2 processes on these 2-core machines).

Two processes with half the per-process batch train on the same examples a step as one
process with the whole batch (the Trainer's distributed sampler gives each process its half),
so they must draw the same loss curve; a killed trainer process fails the job with its
message; a cancel stops every process; a lost worker's run resumes with the same processes.
"""

from __future__ import annotations

import json
import os
import signal
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.db import utcnow
from app.jobs import kinds
from app.jobs.models import Job, JobStatus, JobStep
from app.jobs.service import create_job
from app.jobs.training import TrainError, TrainOptions
from app.models_registry.models import ModelVersion
from app.projects.models import Project
from tests.helpers import make_demonstrated_project, make_ranked_project
from tests.lost_worker import WorkerKilled, killed_at_step, last_complete_checkpoint
from workers.ml import launch
from workers.runner import JobContext, run_job

pytestmark = pytest.mark.slow

TEXTS = [
    "Please say thank you when someone helps.",
    "The quick brown fox jumps over the lazy dog.",
    "Question 3? Answer 1 of Question 3. How do I boil egg number 4?",
] * 20

#: the loss of a step with 2 processes (each half the batch, gradients averaged by gloo)
#: against 1 process (the whole batch): the same sums in another order, float32
LOSS_TOLERANCE = dict(rel=1e-4, abs=1e-5)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny GPT-2 without dropout, so that SFT's steps are as deterministic as the RM's and
    DPO's (those turn dropout off themselves)."""
    from transformers import AutoConfig

    from workers.ml.tiny import build_tiny_causal_lm

    folder = build_tiny_causal_lm(tmp_path_factory.mktemp("tiny") / "base", texts=TEXTS, n_embd=32)
    config = AutoConfig.from_pretrained(folder)
    config.resid_pdrop = config.embd_pdrop = config.attn_pdrop = 0.0
    config.save_pretrained(folder)
    return folder


def _job(session: Session, kind: str, project: Project, **params: Any) -> Job:
    job = create_job(session=session, kind=kind, project_id=project.id, params=params)
    session.commit()
    return job


def _run(session_factory: sessionmaker[Session], settings: Settings, job: Job, **kw: Any) -> Job:
    run_job(job_id=job.id, session_factory=session_factory, settings=settings, **kw)
    with session_factory() as s:
        done = s.get_one(Job, job.id)
        s.expunge(done)
        return done


def _curve(session: Session, job: Job) -> dict[int, float]:
    steps = session.scalars(
        select(JobStep).where(JobStep.job_id == job.id, JobStep.phase == "train")
    ).all()
    return {step.step: step.values["loss"] for step in steps}


def _launch_dir(settings: Settings, job: Job) -> Path:
    return settings.data_dir / "training" / f"job-{job.id}" / "launch"


def _alive(pids: list[int]) -> list[int]:
    alive = []
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        alive.append(pid)
    return alive


@pytest.mark.parametrize("kind", [kinds.TRAIN_SFT, kinds.TRAIN_RM, kinds.TRAIN_DPO])
@pytest.mark.one_database
def test_two_processes_with_half_the_batch_draw_one_process_loss_curve(
    kind: str, session: Session, session_factory: sessionmaker[Session], settings: Settings,
    tiny: Path,
) -> None:  # fmt: skip
    # 16 prompts, no validation: 4 steps an epoch of 4 prompts (2 per process), 3 epochs
    if kind == kinds.TRAIN_SFT:
        project = make_demonstrated_project(session, n=16)
    else:
        project = make_ranked_project(session, n=16)
    params = dict(epochs=3, learning_rate=1e-3, logging_steps=1, validation_ratio=0,
                  save_steps=0, **({"policy": str(tiny)} if kind == kinds.TRAIN_DPO
                                   else {"base": str(tiny)}))  # fmt: skip
    one = _run(session_factory, settings, _job(session, kind, project, batch_size=4, **params))
    two = _run(
        session_factory, settings, _job(session, kind, project, batch_size=2, processes=2, **params)
    )
    assert one.status == two.status == JobStatus.succeeded, (one.error, two.error)
    assert one.metrics["world_size"] == 1 and two.metrics["world_size"] == 2
    curve_one, curve_two = _curve(session, one), _curve(session, two)
    assert sorted(curve_one) == sorted(curve_two) == list(range(1, 13))
    for step, loss in curve_one.items():
        assert curve_two[step] == pytest.approx(loss, **LOSS_TOLERANCE), step
    assert len(set(curve_one.values())) > 1  # it trained: the loss moved
    assert "2 trainer processes (accelerate launch)" in two.log
    version = session.scalars(select(ModelVersion).where(ModelVersion.job_id == two.id)).one()
    saved = json.loads(Path(version.path, "rlhf.json").read_text())
    assert saved["metrics"]["world_size"] == 2 and saved["job_id"] == two.id


def _at_first_step(action: Any) -> Any:
    """A training job's ``impl`` that calls ``action(ctx)`` once, when the job has stored its
    first logged step (the trainer processes are running)."""
    from workers.train import train_impl

    def run(ctx: JobContext) -> None:
        real, done = ctx.record_step, []

        def record_step(at: int, values: dict[str, Any], *, phase: str = "train") -> None:
            real(at, values, phase=phase)
            if not done:
                done.append(at)
                action(ctx)

        ctx.record_step = record_step  # type: ignore[method-assign]
        train_impl(ctx)

    return run


def _long_job(session: Session, tiny: Path) -> Job:
    """400 steps of 2 processes: still running when a test acts at the first."""
    project = make_ranked_project(session, n=16)
    return _job(session, kinds.TRAIN_RM, project, base=str(tiny), epochs=100, batch_size=2,
                logging_steps=1, processes=2)  # fmt: skip


@pytest.mark.one_database
def test_a_killed_trainer_process_fails_the_job_with_its_message(
    session: Session, session_factory: sessionmaker[Session], settings: Settings, tiny: Path
) -> None:
    job = _long_job(session, tiny)
    killed: list[int] = []

    def kill_the_second_process(ctx: JobContext) -> None:
        killed.append(launch.rank_pids(_launch_dir(settings, job))[1])
        os.kill(killed[0], signal.SIGKILL)  # as the kernel's out-of-memory killer does

    done = _run(
        session_factory,
        settings,
        job,
        impls={kinds.TRAIN_RM: _at_first_step(kill_the_second_process)},
    )
    assert killed, "the trainer never logged a step"
    assert done.status == JobStatus.failed
    assert done.error is not None
    assert done.error.startswith("A training process was killed (SIGKILL)")
    assert "out of memory" in done.error and "Its last lines:" in done.error
    assert done.error_detail and "Traceback" not in done.error_detail.splitlines()[0]
    assert "failed: A training process was killed" in done.log
    assert not _alive(launch.rank_pids(_launch_dir(settings, job)))  # the other one too
    assert session.scalar(select(ModelVersion).where(ModelVersion.job_id == job.id)) is None


@pytest.mark.one_database
def test_cancel_stops_both_trainer_processes(
    session: Session, session_factory: sessionmaker[Session], settings: Settings, tiny: Path
) -> None:
    job = _long_job(session, tiny)
    seen: list[int] = []

    def cancel(ctx: JobContext) -> None:  # an admin presses "Cancel job"
        seen.extend(launch.rank_pids(_launch_dir(settings, job)))
        with session_factory() as other:
            other.get_one(Job, ctx.job_id).cancel_requested = True
            other.commit()

    started = time.monotonic()
    done = _run(session_factory, settings, job, impls={kinds.TRAIN_RM: _at_first_step(cancel)})
    assert done.status == JobStatus.cancelled
    assert len(seen) == 2 and not _alive(seen)
    assert time.monotonic() - started < 120  # not the 400 steps to the end
    assert session.scalar(select(ModelVersion).where(ModelVersion.job_id == job.id)) is None


@pytest.mark.one_database
def test_a_lost_worker_resumes_with_the_same_two_processes(
    session: Session, session_factory: sessionmaker[Session], settings: Settings, tiny: Path
) -> None:
    """The trainer processes of the lost worker are stopped; the resumed run continues from
    the last complete checkpoint with two processes again, every step charted once."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from workers.train import train_impl

    project = make_ranked_project(session, n=12)
    params = dict(base=str(tiny), epochs=40, batch_size=1, learning_rate=1e-3, logging_steps=1,
                  save_steps=3, validation_ratio=0.3, processes=2)  # fmt: skip
    # the uninterrupted run saves no checkpoints (saving changes nothing it computes)
    whole = _run(
        session_factory,
        settings,
        _job(session, kinds.TRAIN_RM, project, **{**params, "save_steps": 0}),
    )
    assert whole.status == JobStatus.succeeded, whole.error
    job = _job(session, kinds.TRAIN_RM, project, **params)
    with pytest.raises(WorkerKilled):
        run_job(job_id=job.id, session_factory=session_factory, settings=settings,
                impls={kinds.TRAIN_RM: killed_at_step(train_impl, 5)})  # fmt: skip
    first = launch.rank_pids(_launch_dir(settings, job))
    assert len(first) == 2 and not _alive(first)
    checkpoint = last_complete_checkpoint(
        settings.data_dir, job.id, steps=len(_curve(session, whole))
    )
    with session_factory() as s:
        s.get_one(Job, job.id).heartbeat_at = (
            utcnow() - 2 * settings.job_stale_after - timedelta(seconds=1)
        )
        s.commit()
    done = _run(session_factory, settings, job)
    assert done.status == JobStatus.succeeded, done.error
    assert f"resuming from {checkpoint}" in done.log
    assert done.metrics["world_size"] == 2
    # each step once, no gap: the steps of the uninterrupted run (how many depends on the
    # validation split, which hashes the ids the database handed out)
    steps = sorted(_curve(session, whole))
    assert sorted(_curve(session, done)) == steps == list(range(1, len(steps) + 1))

    def weights(of: Job) -> dict[str, torch.Tensor]:
        version = session.scalars(select(ModelVersion).where(ModelVersion.job_id == of.id)).one()
        return AutoModelForSequenceClassification.from_pretrained(version.path).state_dict()

    resumed, uninterrupted = weights(done), weights(whole)
    for name, tensor in uninterrupted.items():
        torch.testing.assert_close(resumed[name], tensor, rtol=1e-5, atol=1e-6, msg=name)


def test_a_missing_or_unreadable_accelerate_config_fails_the_job_plainly(
    session: Session, session_factory: sessionmaker[Session], settings: Settings, tiny: Path,
    tmp_path: Path,
) -> None:  # fmt: skip
    project = make_ranked_project(session, n=4)
    missing = _run(session_factory, settings, _job(
        session, kinds.TRAIN_RM, project, base=str(tiny), accelerate_config=str(tmp_path / "no.yaml")
    ))  # fmt: skip
    assert missing.status == JobStatus.failed
    assert missing.error == (
        f"The accelerate config {str(tmp_path / 'no.yaml')!r} does not exist on this worker: "
        "write one with `accelerate config --config_file FILE` on the machine that trains."
    )
    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n- 2\n")
    bad = _run(session_factory, settings, _job(
        session, kinds.TRAIN_RM, project, base=str(tiny), accelerate_config=str(listed)
    ))  # fmt: skip
    assert bad.status == JobStatus.failed and "must be a mapping of settings" in (bad.error or "")


@pytest.mark.one_database
def test_a_config_written_by_accelerate_config_is_used_with_its_processes(
    session: Session, session_factory: sessionmaker[Session], settings: Settings, tiny: Path,
    tmp_path: Path,
) -> None:  # fmt: skip
    """A user's config (as ``accelerate config`` writes it for CPU processes) gives the number
    of processes when ``--processes`` is not given."""
    config = tmp_path / "cpu2.yaml"
    config.write_text(
        "compute_environment: LOCAL_MACHINE\ndistributed_type: MULTI_GPU\nmixed_precision: 'no'\n"
        "use_cpu: false\ndebug: false\nnum_machines: 1\nnum_processes: 2\nmachine_rank: 0\n"
        "rdzv_backend: static\nsame_network: true\n"
    )
    project = make_ranked_project(session, n=8)
    done = _run(session_factory, settings, _job(
        session, kinds.TRAIN_RM, project, base=str(tiny), epochs=1, batch_size=2,
        accelerate_config=str(config),
    ))  # fmt: skip
    assert done.status == JobStatus.succeeded, done.error
    assert done.metrics["world_size"] == 2


def test_the_process_settings_are_checked_before_the_job_is_queued() -> None:
    with pytest.raises(TrainError) as caught:
        TrainOptions.from_dict({"kind": "rm", "base": "1", "processes": 0})
    assert "processes must be between 1 and 1024, not 0" in str(caught.value)
    with pytest.raises(TrainError, match=r"processes must be a number, not .two."):
        TrainOptions.from_dict({"kind": "sft", "base": "1", "processes": "two"})
    options = TrainOptions.from_dict({"kind": "dpo", "policy": "1", "processes": "2"})
    assert options.processes == 2 and options.accelerate_config is None
    assert TrainOptions.from_dict({"kind": "rm", "base": "1"}).processes is None


def test_more_processes_than_gpus_is_refused_with_the_count() -> None:
    with pytest.raises(launch.LaunchError) as caught:
        launch.launch_config(4, gpus=2)
    assert "--processes 4 needs 4 GPUs but this worker sees 2" in str(caught.value)
    assert caught.value.user_error
    assert launch.launch_config(2, gpus=0)["distributed_type"] == "MULTI_GPU"  # CPU: gloo
    assert launch.launch_config(1, gpus=0)["distributed_type"] == "NO"


def test_the_event_reader_waits_for_a_whole_line(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    reader = launch.EventReader(path)
    assert reader.read() == []  # no file yet
    path.write_text('{"event": "step", "step": 1}\n{"event": "pro')
    assert reader.read() == [("step", {"step": 1})]
    with path.open("a") as f:
        f.write('gress", "fraction": 0.5}\n')
    assert reader.read() == [("progress", {"fraction": 0.5})]
    assert reader.read() == []


def test_a_death_is_said_with_its_cause_and_last_lines(tmp_path: Path) -> None:
    output = tmp_path / "output.log"
    output.write_text(
        "step 3\nwarnings.warn(noise)\n"
        "torch.distributed.elastic.multiprocessing.api: failed (exitcode: -9) local_rank: 1\n"
        "Signal 9 (SIGKILL) received by PID 123\n"
    )
    killed = launch.death_message(output, 1)
    assert str(killed).startswith("A training process was killed (SIGKILL): most often the")
    assert "Signal 9 (SIGKILL) received by PID 123" in str(killed)
    assert "warnings.warn" not in str(killed) and "warnings.warn" in killed.detail
    output.write_text("Traceback ...\nValueError: boom\n")
    assert str(launch.death_message(output, 2)) == (
        "A training process stopped with exit status 2. Its last lines:\nTraceback ...\n"
        "ValueError: boom"
    )


@pytest.mark.parametrize(
    ("config", "what"),
    [("distributed_type: FSDP\n", "FSDP"),
     ("distributed_type: DEEPSPEED\ndeepspeed_config:\n  zero_stage: 3\n", "DeepSpeed ZeRO-3")],
)  # fmt: skip
def test_configs_that_shard_the_weights_are_refused_with_the_reason(
    config: str, what: str, tmp_path: Path
) -> None:
    path = tmp_path / "sharded.yaml"
    path.write_text("compute_environment: LOCAL_MACHINE\nnum_processes: 2\n" + config)
    with pytest.raises(launch.LaunchError) as caught:
        launch.command(tmp_path, launch.Launch(config_file=str(path)))
    assert f"shards the weights ({what}), which training jobs do not support yet" in str(
        caught.value
    )
    assert caught.value.user_error
    zero2 = tmp_path / "zero2.yaml"
    zero2.write_text("distributed_type: DEEPSPEED\ndeepspeed_config:\n  zero_stage: 2\n")
    cmd, processes = launch.command(tmp_path, launch.Launch(processes=4, config_file=str(zero2)))
    assert processes == 4 and cmd[cmd.index("--num_processes") + 1] == "4"
    assert cmd[cmd.index("--config_file") + 1] == str(zero2)
