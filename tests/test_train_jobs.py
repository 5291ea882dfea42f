"""SFT and reward-model training jobs, run in-process on a tiny GPT-2 built here: the dataset
snapshot, the saved and registered model (loadable with ``from_pretrained``), the per-step
metrics, bad input, cancel, and resuming after a lost worker."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.db import utcnow
from app.exports.models import Export
from app.jobs import kinds
from app.jobs.models import Job, JobStatus, JobStep
from app.jobs.service import create_job
from app.jobs.training import TrainError, TrainOptions
from app.labeling.models import Demonstration, Prompt
from app.models_registry.models import ModelKind, ModelVersion
from app.projects.models import Project
from tests.helpers import (
    login,
    make_admin,
    make_demonstrated_project,
    make_project,
    make_prompt,
    make_ranked_project,
    make_user,
    rank,
)
from tests.lost_worker import WorkerKilled, killed_at_step, last_complete_checkpoint
from workers.runner import JobContext, run_job

pytestmark = pytest.mark.slow

TEXTS = [
    "Please say thank you when someone helps.",
    "The quick brown fox jumps over the lazy dog.",
    "User: How do I boil an egg?\nAssistant: Put it in boiling water for nine minutes.",
] * 20


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from workers.ml.tiny import build_tiny_causal_lm

    return build_tiny_causal_lm(tmp_path_factory.mktemp("tiny") / "base", texts=TEXTS, n_embd=32)


def _base(session: Session, tiny: Path) -> ModelVersion:
    version = session.scalar(select(ModelVersion).where(ModelVersion.path == str(tiny)))
    if version is None:
        version = ModelVersion(name=f"tiny-{tiny.parent.name}", kind=ModelKind.base, path=str(tiny))
        session.add(version)
        session.flush()
    return version


def _job(session: Session, kind: str, project: Project, **params: object) -> Job:
    job = create_job(session=session, kind=kind, project_id=project.id, params=params)
    session.commit()
    return job


def _run(session_factory: sessionmaker[Session], settings: Settings, job: Job) -> JobStatus:
    return run_job(job_id=job.id, session_factory=session_factory, settings=settings)


def test_sft_job_snapshots_trains_saves_and_registers(
    session: Session, session_factory: sessionmaker[Session], settings: Settings, tiny: Path
) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = _base(session, tiny)
    project = make_demonstrated_project(session)
    job = _job(
        session, kinds.TRAIN_SFT, project, base=str(base.id), epochs=3, batch_size=2,
        learning_rate=5e-3, logging_steps=1, save_steps=4, validation_ratio=0.3,
    )  # fmt: skip
    assert _run(session_factory, settings, job) == JobStatus.succeeded, job.error
    session.refresh(job)

    version = session.scalars(select(ModelVersion).where(ModelVersion.job_id == job.id)).one()
    assert (version.kind, version.parent_id) == (ModelKind.sft, base.id)
    export = session.get_one(Export, version.export_id)
    assert (export.kind, export.project_id) == ("sft", project.id)
    manifest = json.loads(Path(export.directory, "manifest.json").read_text())
    assert manifest["counts"]["total"] == 8
    assert version.metrics["train_examples"] + version.metrics["validation_examples"] == 8
    assert version.metrics["validation_examples"] > 0

    folder = Path(version.path)
    meta = json.loads((folder / "rlhf.json").read_text())
    assert meta["kind"] == "sft" and meta["parent"] == base.id
    assert meta["template"] == "User: {prompt}\nAssistant: {response}"
    model = AutoModelForCausalLM.from_pretrained(folder)  # a plain HF checkpoint
    assert AutoTokenizer.from_pretrained(folder).eos_token == "<|endoftext|>"
    assert model.config.model_type == "gpt2"
    assert not (Path(settings.data_dir) / "training" / f"job-{job.id}" / "checkpoints").exists()

    steps = session.scalars(select(JobStep).where(JobStep.job_id == job.id)).all()
    train = [s for s in steps if s.phase == "train"]
    evals = [s for s in steps if s.phase == "eval"]
    per_epoch = -(-version.metrics["train_examples"] // 2)
    assert len(train) == 3 * per_epoch and all("loss" in s.values for s in train)
    assert len(evals) == 3 and all("loss" in s.values for s in evals)
    # It learnt the one answer: validation loss falls epoch after epoch.
    losses = [s.values["loss"] for s in sorted(evals, key=lambda s: s.step)]
    assert losses[-1] < losses[0]
    assert job.metrics["validation_loss"] == pytest.approx(losses[-1], rel=1e-4)


@pytest.mark.one_database
def test_rm_job_registers_a_reward_model_with_its_score_statistics(
    session: Session, session_factory: sessionmaker[Session], settings: Settings, tiny: Path
) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    base = _base(session, tiny)
    project = make_ranked_project(session, n=12)
    name = f"rm-of-{project.name.replace(' ', '-')}"
    (settings.data_dir / "models" / name).mkdir(parents=True)  # someone else's folder
    (settings.data_dir / "models" / name / "notes.txt").write_text("keep me")
    job = _job(
        session, kinds.TRAIN_RM, project, base=base.name, epochs=2, batch_size=4,
        learning_rate=1e-3, logging_steps=1, validation_ratio=0.3, name=name,
    )  # fmt: skip
    assert _run(session_factory, settings, job) == JobStatus.succeeded, job.error
    version = session.scalars(select(ModelVersion).where(ModelVersion.name == name)).one()
    assert version.path == str(settings.data_dir / "models" / f"{name}-2")  # not overwritten
    assert (settings.data_dir / "models" / name / "notes.txt").read_text() == "keep me"
    assert (version.kind, version.parent_id, version.job_id) == (ModelKind.rm, base.id, job.id)
    metrics = version.metrics
    assert metrics["k"] == 4 and metrics["validation_pairs"] == 6 * metrics["validation_rankings"]
    assert 0.0 <= metrics["validation_accuracy"] <= 1.0 and metrics["reward_std"] > 0

    folder = Path(version.path)
    meta = json.loads((folder / "rlhf.json").read_text())
    assert meta["kind"] == "rm"
    # rlhf.json keeps full precision; the registered metrics are rounded to 6 decimals
    assert meta["reward_std"] == pytest.approx(metrics["reward_std"], abs=1e-6)
    model = AutoModelForSequenceClassification.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert model.config.num_labels == 1 and tokenizer.pad_token != tokenizer.eos_token
    text = meta["template"].format(prompt="Question 1?", response="Answer 0") + tokenizer.eos_token
    with torch.no_grad():
        score = model(**tokenizer(text, return_tensors="pt")).logits
    assert score.shape == (1, 1)

    steps = session.scalars(select(JobStep).where(JobStep.job_id == job.id)).all()
    assert {"loss", "accuracy", "learning_rate"} <= set(
        next(s for s in steps if s.phase == "train").values
    )
    assert [s.phase for s in steps].count("eval") == 2  # one evaluation per epoch


def _failed(
    session: Session, session_factory: sessionmaker[Session], settings: Settings, job: Job
) -> str:
    assert _run(session_factory, settings, job) == JobStatus.failed
    session.refresh(job)
    assert session.scalar(select(func.count()).select_from(ModelVersion).where(
        ModelVersion.job_id == job.id)) == 0  # fmt: skip
    return job.error or ""


def test_a_project_without_rankings_or_demonstrations_says_so(
    session: Session, session_factory: sessionmaker[Session], settings: Settings, tiny: Path
) -> None:
    project = make_project(session)
    make_prompt(session, project)
    rm = _job(session, kinds.TRAIN_RM, project, base=str(tiny))
    assert "no rankings to train a reward model on" in _failed(
        session, session_factory, settings, rm
    )
    sft = _job(session, kinds.TRAIN_SFT, project, base=str(tiny))
    assert "no demonstrations to train on" in _failed(session, session_factory, settings, sft)


@pytest.mark.one_database
def test_rankings_of_mixed_sizes_train_in_one_run_and_k_picks_one(
    session: Session, session_factory: sessionmaker[Session], settings: Settings, tiny: Path
) -> None:
    project = make_ranked_project(session, n=6, k=4)
    labeler = make_user(session)
    for i in range(3):  # imported pairs: rankings of 2 answers
        prompt = make_prompt(session, project, text=f"Pair {i}?", answers=2)
        prompt.submitter_id = make_user(session).id
        rank(session, prompt, labeler, [0, 1])
    job = _job(session, kinds.TRAIN_RM, project, base=str(tiny), epochs=1, validation_ratio=0.3)
    assert _run(session_factory, settings, job) == JobStatus.succeeded, job.error
    session.refresh(job)
    metrics = job.metrics
    assert metrics["train_rankings"] + metrics["validation_rankings"] == 9
    assert metrics["k"] is None  # not one size: both, in one run
    sizes = metrics["rankings_by_k"]
    assert set(sizes) == {"2", "4"} and sum(sizes.values()) == metrics["train_rankings"]
    assert metrics["left_out"] == 0

    picked = _job(session, kinds.TRAIN_RM, project, base=str(tiny), k=4, epochs=1)
    assert _run(session_factory, settings, picked) == JobStatus.succeeded
    session.refresh(picked)
    assert picked.metrics["k"] == 4
    assert picked.metrics["train_rankings"] + picked.metrics["validation_rankings"] == 6
    assert picked.metrics["left_out_reasons"] == {"rankings of another size than --k 4": 3}


@pytest.mark.one_database
def test_a_base_that_cannot_be_trained_is_refused_before_training(
    session: Session, session_factory: sessionmaker[Session], settings: Settings, tmp_path: Path
) -> None:
    from transformers import ViTConfig

    ViTConfig().save_pretrained(tmp_path / "vit")
    project = make_ranked_project(session, n=4)
    rm = _job(session, kinds.TRAIN_RM, project, base=str(tmp_path / "vit"))
    assert "cannot score text" in _failed(session, session_factory, settings, rm)
    missing = _job(session, kinds.TRAIN_RM, project, base=str(tmp_path / "nowhere"))
    assert "No registered model and no model folder" in _failed(
        session, session_factory, settings, missing
    )


def _with_long_pairs(session: Session, n_long: int, n_short: int) -> Project:
    """K=2 rankings: ``n_long`` whose better answer is far longer than 32 tokens, then
    ``n_short`` short ones; each prompt from its own submitter."""
    from app.labeling.models import Completion, text_sha256

    project = make_project(session, k=2)
    labeler = make_user(session)
    for i in range(n_long + n_short):
        prompt = make_prompt(session, project, text=f"Q{i}", answers=0)
        prompt.submitter_id = make_user(session).id
        for j in range(2):
            body = f"{j} " + ("a very long answer " * 40 if i < n_long and j == 0 else "short")
            session.add(Completion(prompt_id=prompt.id, text=body, text_sha256=text_sha256(body),
                                   origin="import:test"))  # fmt: skip
        session.flush()
        session.refresh(prompt)
        rank(session, prompt, labeler, [0, 1])
    return project


@pytest.mark.one_database
def test_long_answers_are_left_out_and_counted_and_truncate_keeps_them(
    session: Session, session_factory: sessionmaker[Session], settings: Settings, tiny: Path
) -> None:
    project = _with_long_pairs(session, n_long=3, n_short=5)
    job = _job(session, kinds.TRAIN_RM, project, base=str(tiny), max_length=32, epochs=1,
               validation_ratio=0.3)  # fmt: skip
    assert _run(session_factory, settings, job) == JobStatus.succeeded, job.error
    session.refresh(job)
    reason = (
        "rankings left with fewer than 2 ranked places once answers longer than max_length "
        "(32 tokens) were left out"
    )
    assert job.metrics["left_out"] == 3
    assert job.metrics["left_out_reasons"] == {reason: 3}
    assert job.metrics["train_rankings"] + job.metrics["validation_rankings"] == 5
    assert f"left out 3: 3 {reason}" in job.log

    cut = _job(session, kinds.TRAIN_RM, project, base=str(tiny), max_length=32, epochs=1,
               validation_ratio=0.3, long_answers="truncate")  # fmt: skip
    assert _run(session_factory, settings, cut) == JobStatus.succeeded, cut.error
    session.refresh(cut)
    assert cut.metrics["left_out"] == 0 and cut.metrics["truncated"] == 3
    assert cut.metrics["train_rankings"] + cut.metrics["validation_rankings"] == 8
    assert "cut 3 answers from the right" in cut.log


@pytest.mark.one_database
def test_a_job_left_with_nothing_fails_naming_the_option(
    session: Session, session_factory: sessionmaker[Session], settings: Settings, tiny: Path
) -> None:
    project = _with_long_pairs(session, n_long=3, n_short=0)
    job = _job(session, kinds.TRAIN_RM, project, base=str(tiny), max_length=32)
    error = _failed(session, session_factory, settings, job)
    assert "can be used" in error and "--long-answers truncate" in error
    assert "--max-length" in error


@pytest.mark.one_database
def test_sft_leaves_out_long_demonstrations_and_says_when_data_is_too_small(
    session: Session, session_factory: sessionmaker[Session], settings: Settings, tiny: Path
) -> None:
    project = make_demonstrated_project(session, n=3)
    prompt = make_prompt(session, project, text="Tell me everything.", answers=0)
    prompt.submitter_id = make_user(session).id
    session.add(Demonstration(prompt_id=prompt.id, author_id=prompt.submitter_id,
                              text="Everything there is to know. " * 30))  # fmt: skip
    session.flush()
    job = _job(session, kinds.TRAIN_SFT, project, base=str(tiny), max_length=40, epochs=1,
               validation_ratio=0.0)  # fmt: skip
    assert _run(session_factory, settings, job) == JobStatus.succeeded, job.error
    session.refresh(job)
    metrics = job.metrics
    assert metrics["left_out_reasons"] == {"demonstrations longer than max_length (40 tokens)": 1}
    assert metrics["train_examples"] == 3
    warnings = metrics["data_warnings"]
    assert any("Only 3 training demonstrations" in w for w in warnings)
    assert any("No validation set" in w for w in warnings)
    assert "warning: Only 3 training demonstrations" in job.log

    one = make_demonstrated_project(session, n=1)  # 1 example, 0 validation rows
    single = _job(session, kinds.TRAIN_SFT, one, base=str(tiny), epochs=1)
    assert _run(session_factory, settings, single) == JobStatus.succeeded, single.error
    session.refresh(single)
    assert any(
        "Only 0 validation demonstrations: too few to validate on" in w
        for w in single.metrics["data_warnings"]
    )


def test_bad_settings_are_refused_with_every_field_named() -> None:
    with pytest.raises(TrainError) as caught:
        TrainOptions.from_dict(
            {"kind": "rm", "base": "", "epochs": "many", "batch_size": 1.5, "k": 40}
        )
    message = str(caught.value)
    for part in ("base is required", "epochs must be a number", "batch_size must be a whole",
                 "k must be a whole number from 2 to 16"):  # fmt: skip
        assert part in message
    options = TrainOptions.from_dict({"kind": "sft", "base": "3", "learning_rate": "1e-4"})
    assert options.learning_rate == 1e-4 and options.trainer_config()["batch_size"] == 8


def test_cancel_stops_training_and_registers_nothing(
    session: Session, session_factory: sessionmaker[Session], settings: Settings, tiny: Path
) -> None:
    from workers.train import train_impl

    project = make_ranked_project(session, n=8)
    job = _job(session, kinds.TRAIN_RM, project, base=str(tiny), epochs=50, batch_size=2,
               logging_steps=1)  # fmt: skip

    def cancelled_while_running(ctx: JobContext) -> None:
        real = ctx.record_step

        def record_step(step: int, values: dict[str, float], *, phase: str = "train") -> None:
            real(step, values, phase=phase)
            with session_factory() as other:  # an admin presses "Cancel job"
                other.get_one(Job, ctx.job_id).cancel_requested = True
                other.commit()

        ctx.record_step = record_step  # type: ignore[method-assign]
        train_impl(ctx)

    status = run_job(job_id=job.id, session_factory=session_factory, settings=settings,
                     impls={kinds.TRAIN_RM: cancelled_while_running})  # fmt: skip
    assert status == JobStatus.cancelled
    session.refresh(job)
    assert job.progress < 0.5
    assert session.scalar(select(func.count()).select_from(ModelVersion)) == 0


@pytest.mark.one_database
def test_a_lost_worker_resumes_from_its_last_checkpoint(
    session: Session, session_factory: sessionmaker[Session], settings: Settings, tiny: Path
) -> None:
    """The resumed run continues at the checkpoint's step with the same dataset snapshot and
    ends with the same weights as a run that was never interrupted. (On Postgres when there is
    one: tests/test_worker.py kills a real worker mid-training on a SQLite file and resumes.)"""
    import torch
    from transformers import AutoModelForSequenceClassification

    from workers.train import train_impl

    base = _base(session, tiny)
    project = make_ranked_project(session, n=12)
    # 8 training rankings, 4 steps an epoch: enough steps that the trainer (a child process,
    # a little ahead of the job) is still running when the job's worker is killed at step 5
    params = dict(base=str(base.id), epochs=40, batch_size=2, learning_rate=1e-3,
                  logging_steps=1, save_steps=3, validation_ratio=0.3)  # fmt: skip
    # the uninterrupted run saves no checkpoints (saving changes nothing it computes)
    whole = _job(session, kinds.TRAIN_RM, project, **{**params, "save_steps": 0})
    assert _run(session_factory, settings, whole) == JobStatus.succeeded
    job = _job(session, kinds.TRAIN_RM, project, **params)

    with pytest.raises(WorkerKilled):
        run_job(job_id=job.id, session_factory=session_factory, settings=settings,
                impls={kinds.TRAIN_RM: killed_at_step(train_impl, 5)})  # fmt: skip
    session.refresh(job)
    assert job.status == JobStatus.running and "export_id" in job.artifacts
    snapshot = job.artifacts["export_id"]
    checkpoint = last_complete_checkpoint(settings.data_dir, job.id, steps=160)
    job.heartbeat_at = utcnow() - 2 * settings.job_stale_after - timedelta(seconds=1)
    session.commit()
    assert _run(session_factory, settings, job) == JobStatus.succeeded
    session.refresh(job)
    assert f"resuming from {checkpoint}" in job.log
    assert job.artifacts["export_id"] == snapshot  # the same dataset, not a new export
    steps = session.scalars(
        select(JobStep.step).where(JobStep.job_id == job.id, JobStep.phase == "train")
    ).all()
    assert sorted(steps) == list(range(1, len(steps) + 1))  # each step once

    def weights(job_id: int) -> dict[str, torch.Tensor]:
        version = session.scalars(select(ModelVersion).where(ModelVersion.job_id == job_id)).one()
        return AutoModelForSequenceClassification.from_pretrained(version.path).state_dict()

    resumed, uninterrupted = weights(job.id), weights(whole.id)
    for name, tensor in uninterrupted.items():
        torch.testing.assert_close(resumed[name], tensor, rtol=1e-5, atol=1e-6, msg=name)
    assert (
        session.scalar(
            select(func.count()).select_from(Prompt).where(Prompt.project_id == project.id)
        )
        == 12
    )


async def test_the_job_page_charts_the_logged_steps_and_polls_while_running(
    client: httpx.AsyncClient, session: Session
) -> None:
    project = make_project(session)
    job = _job(session, kinds.TRAIN_RM, project, base="1")
    job.status = JobStatus.running
    for step in range(1, 41):
        session.add(JobStep(job_id=job.id, step=step, values={
            "loss": 0.7 - step / 100, "accuracy": 0.5 + step / 100, "epoch": step / 20}))  # fmt: skip
    session.add(JobStep(job_id=job.id, step=20, phase="eval", values={"accuracy": 0.61}))
    session.add(JobStep(job_id=job.id, step=40, phase="eval", values={"accuracy": 0.83}))
    session.commit()
    await login(client, make_admin(session))
    page = (await client.get(f"/admin/jobs/{job.id}")).text
    assert 'hx-trigger="every 2s"' in page  # live: the block is fetched again while it runs
    assert "Training curves" in page
    assert page.count('class="metric-chart"') == 2  # loss and accuracy; epoch is not charted
    assert 'aria-label="Accuracy: train 0.9 at step 40; validation 0.83 at step 40"' in page
    assert 'aria-label="Loss: train 0.3 at step 40"' in page
    # The polled fragment carries the charts too.
    fragment = (await client.get(f"/admin/jobs/{job.id}", headers={"HX-Request": "true"})).text
    assert fragment.count('class="metric-chart"') == 2 and "<html" not in fragment


def test_metric_chart_geometry_fits_the_values_and_thins_long_runs() -> None:
    from app.web.charts import metric_chart

    chart = metric_chart("loss", {"train": [(s, 1.0 / s) for s in range(1, 1001)]})
    (line,) = chart.series
    assert line.path.count("L") + 1 <= 241 and line.dots == []  # thinned, no dots
    assert line.last is not None and line.last[2] == "0.001"
    xs = [float(part[1:].split(",")[0]) for part in line.path.split()]
    ys = [float(part.split(",")[1]) for part in line.path.split()]
    assert xs == sorted(xs) and xs[0] == chart.left and xs[-1] == chart.width - chart.right
    assert chart.top <= min(ys) and max(ys) <= chart.height - chart.bottom
    assert ys[0] < ys[-1]  # a falling loss goes down the chart
    flat = metric_chart("lr", {"train": [(1, 0.5), (2, 0.5)]})
    assert flat.series[0].last is not None and flat.grid[1][1] == "0.5"
