"""The PPO job in-process on tiny models: it snapshots the prompts, logs the figures of each
step with sample answers, registers a policy whose parent is the starting policy, and the
promoted policy samples the next round; wrong models are refused; a lost worker resumes."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.db import utcnow
from app.exports.models import Export
from app.jobs import kinds
from app.jobs.models import Job, JobStatus, JobStep
from app.jobs.service import create_job
from app.jobs.training import PPOOptions, TrainError
from app.labeling.models import Completion
from app.models_registry.models import ModelKind, ModelVersion
from app.models_registry.service import promote_model
from app.projects.models import Project
from tests.helpers import login, make_admin, make_project, make_prompt, make_user, rank
from tests.lost_worker import WorkerKilled, killed_at_step
from workers.runner import run_job

pytestmark = pytest.mark.slow
TEXTS = ["Question: say please and thank you to the old red dog. Answer: please"] * 40
FIGURES = {"score", "kl", "kl_k3", "entropy", "clip_fraction", "approx_kl", "value_loss",
           "response_length", "eos_rate", "policy_loss"}  # fmt: skip


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from workers.ml.tiny import build_tiny_causal_lm

    return build_tiny_causal_lm(tmp_path_factory.mktemp("ppo-job") / "base", texts=TEXTS, n_embd=32)


def _models(session: Session, session_factory: sessionmaker[Session], settings: Settings,
            tiny: Path) -> tuple[Project, ModelVersion, ModelVersion]:  # fmt: skip
    """A project with ranked prompts, its base policy and a reward model trained on them."""
    project = make_project(session, k=2)
    labeler = make_user(session)
    for i in range(8):
        prompt = make_prompt(session, project, text=f"Question {i}: say please?", answers=2)
        prompt.submitter_id = make_user(session).id
        rank(session, prompt, labeler, [0, 1])
    base = ModelVersion(name=f"base-{project.id}", kind=ModelKind.base, path=str(tiny))
    session.add(base)
    session.flush()
    job = _job(session, kinds.TRAIN_RM, project, base=str(base.id), epochs=1, batch_size=4,
               learning_rate=1e-3, validation_ratio=0.3)  # fmt: skip
    assert _run(session_factory, settings, job) == JobStatus.succeeded, job.error
    reward = session.scalars(select(ModelVersion).where(ModelVersion.job_id == job.id)).one()
    return project, base, reward


def _job(session: Session, kind: str, project: Project, **params: object) -> Job:
    job = create_job(session=session, kind=kind, project_id=project.id, params=params)
    session.commit()
    return job


def _run(session_factory: sessionmaker[Session], settings: Settings, job: Job) -> JobStatus:
    return run_job(job_id=job.id, session_factory=session_factory, settings=settings)


PARAMS: dict[str, Any] = dict(steps=4, batch_size=4, mini_batch_size=2, ppo_epochs=2,
                              max_new_tokens=8, learning_rate=1e-3, sample_every=2,
                              eval_every=2, save_steps=2, validation_ratio=0.3)  # fmt: skip


def test_ppo_job_registers_a_policy_that_is_promoted_and_samples_the_next_round(
    session: Session, session_factory: sessionmaker[Session], settings: Settings, tiny: Path
) -> None:
    project, base, reward = _models(session, session_factory, settings, tiny)
    job = _job(session, kinds.TRAIN_PPO, project, policy=str(base.id), reward=reward.name,
               **PARAMS)  # fmt: skip
    assert _run(session_factory, settings, job) == JobStatus.succeeded, job.error
    session.refresh(job)
    assert "critic from the reward model" in job.log
    policy = session.scalars(select(ModelVersion).where(ModelVersion.job_id == job.id)).one()
    assert (policy.kind, policy.parent_id) == (ModelKind.policy, base.id)
    assert policy.metrics["reward_model_id"] == reward.id and policy.metrics["steps"] == 4
    export = session.get_one(Export, policy.export_id)
    assert export.kind == "prompts"  # the prompts snapshot the rollouts came from

    steps = session.scalars(select(JobStep).where(JobStep.job_id == job.id)).all()
    train = [s for s in steps if s.phase == "train"]
    assert [s.step for s in train] == [1, 2, 3, 4]
    assert all(s.values.keys() >= FIGURES for s in train)
    assert [s.step for s in steps if s.phase == "eval"] == [0, 2, 4]  # start, every 2, end
    samples = [s for s in steps if s.phase == "samples"]
    assert [s.step for s in samples] == [1, 3]
    row = samples[0].values["samples"][0]
    assert {"prompt", "response", "score"} <= row.keys() and row["prompt"].startswith("Question")

    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(policy.path).config.model_type == "gpt2"
    promote_model(session=session, model=policy, project=project, actor_id=None)
    fresh = make_prompt(session, project, text="Question 99: a new prompt?", answers=0)
    session.commit()
    generate = _job(session, kinds.GENERATE, project, max_new_tokens=6)
    assert _run(session_factory, settings, generate) == JobStatus.succeeded, generate.error
    origins = session.scalars(select(Completion.origin).where(Completion.prompt_id == fresh.id))
    assert set(origins) == {f"model:{policy.id}"}


@pytest.mark.one_database
def test_wrong_models_and_settings_are_refused(
    session: Session, session_factory: sessionmaker[Session], settings: Settings, tiny: Path
) -> None:
    project, base, reward = _models(session, session_factory, settings, tiny)
    job = _job(session, kinds.TRAIN_PPO, project, policy=str(reward.id), reward=str(reward.id))
    assert _run(session_factory, settings, job) == JobStatus.failed
    session.refresh(job)
    assert "cannot be the policy" in (job.error or "")
    job = _job(session, kinds.TRAIN_PPO, project, policy=str(base.id), reward=str(base.id))
    assert _run(session_factory, settings, job) == JobStatus.failed
    session.refresh(job)
    assert "cannot be the reward model" in (job.error or "")
    with pytest.raises(TrainError) as error:
        PPOOptions.from_dict({"policy": "1", "steps": 0, "batch_size": 6, "mini_batch_size": 4})
    assert "reward is required" in str(error.value) and "steps must be between" in str(error.value)
    assert "multiple of mini_batch_size" in str(error.value)


@pytest.mark.one_database
def test_a_lost_ppo_worker_resumes_from_its_last_checkpoint(
    session: Session, session_factory: sessionmaker[Session], settings: Settings, tiny: Path
) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    from workers.ppo_job import ppo_impl

    project, base, reward = _models(session, session_factory, settings, tiny)
    params = dict(policy=str(base.id), reward=str(reward.id), **PARAMS)
    # the uninterrupted run saves no checkpoints (saving changes nothing it computes)
    whole = _job(session, kinds.TRAIN_PPO, project, **{**params, "save_steps": 0})
    assert _run(session_factory, settings, whole) == JobStatus.succeeded, whole.error
    job = _job(session, kinds.TRAIN_PPO, project, **params)

    with pytest.raises(WorkerKilled):
        run_job(job_id=job.id, session_factory=session_factory, settings=settings,
                impls={kinds.TRAIN_PPO: killed_at_step(ppo_impl, 3)})  # fmt: skip
    session.refresh(job)
    job.heartbeat_at = utcnow() - 2 * settings.job_stale_after - timedelta(seconds=1)
    session.commit()
    assert _run(session_factory, settings, job) == JobStatus.succeeded, job.error
    session.refresh(job)
    assert "resuming from step-2" in job.log
    steps = session.scalars(
        select(JobStep.step).where(JobStep.job_id == job.id, JobStep.phase == "train")
    ).all()
    assert sorted(steps) == [1, 2, 3, 4]

    def weights(job_id: int) -> dict[str, torch.Tensor]:
        version = session.scalars(select(ModelVersion).where(ModelVersion.job_id == job_id)).one()
        return AutoModelForCausalLM.from_pretrained(version.path).state_dict()

    resumed, uninterrupted = weights(job.id), weights(whole.id)
    for name, tensor in uninterrupted.items():
        torch.testing.assert_close(resumed[name], tensor, rtol=1e-5, atol=1e-6, msg=name)


async def test_the_ppo_job_page_charts_its_figures_and_shows_sample_answers(
    client: httpx.AsyncClient, session: Session
) -> None:
    project = make_project(session)
    job = _job(session, kinds.TRAIN_PPO, project, policy="1", reward="2")
    for step in (1, 2):
        values = {"score": 0.5 * step, "kl": 0.1 * step, "minibatches": 8.0, "time_update": 1.0}
        session.add(JobStep(job_id=job.id, step=step, values=values))
    rows = [{"prompt": "Say <b>hi</b>", "response": "", "score": 1.25}]
    session.add(JobStep(job_id=job.id, step=1, phase="samples", values={"samples": rows}))
    session.commit()
    await login(client, make_admin(session))
    page = (await client.get(f"/admin/jobs/{job.id}")).text
    assert page.count('class="metric-chart"') == 2  # score and kl; bookkeeping is not charted
    assert page.index('aria-label="Reward model score') < page.index('aria-label="KL')
    assert "Sample answers" in page and "Say &lt;b&gt;hi&lt;/b&gt;" in page
    assert "(empty)" in page and "1.25" in page


@pytest.mark.one_database
def test_a_short_context_policy_fits_its_prompts_and_long_prompts_are_left_out(
    session: Session, session_factory: sessionmaker[Session], settings: Settings, tiny: Path,
    tmp_path: Path,
) -> None:  # fmt: skip
    """A policy reading 64 tokens: max_prompt_length (256 by default) is lowered to leave room
    for the answer, and prompts longer than that are left out and counted (drop), or kept and
    cut from the left (truncate)."""
    from workers.ml.tiny import build_tiny_causal_lm

    project, _base, reward = _models(session, session_factory, settings, tiny)
    for i in range(2):
        long = make_prompt(session, project, text=f"Question {i}: " + "say please " * 60, answers=0)
        long.submitter_id = make_user(session).id
    session.flush()
    short = build_tiny_causal_lm(tmp_path / "short", texts=TEXTS, n_embd=32, n_positions=64)
    params = {**PARAMS, "steps": 2, "save_steps": 0, "eval_every": 0}
    job = _job(session, kinds.TRAIN_PPO, project, policy=str(short), reward=reward.name, **params)
    assert _run(session_factory, settings, job) == JobStatus.succeeded, job.error
    session.refresh(job)
    assert job.metrics["max_prompt_length"] == 64 - 8
    assert job.metrics["left_out_reasons"] == {
        "prompts longer than max_prompt_length (56 tokens)": 2
    }
    assert "max_prompt_length lowered from 256 to 56" in job.log

    cut = _job(session, kinds.TRAIN_PPO, project, policy=str(short), reward=reward.name,
               long_answers="truncate", **params)  # fmt: skip
    assert _run(session_factory, settings, cut) == JobStatus.succeeded, cut.error
    session.refresh(cut)
    assert cut.metrics["left_out"] == 0 and cut.metrics["truncated"] == 2
    assert "cut 2 prompts from the left to fit max_prompt_length" in cut.log

    # PPO-ptx whose every demonstration is too long: said, with the options, before training
    from app.labeling.models import Demonstration

    session.add(Demonstration(prompt_id=long.id, author_id=long.submitter_id,
                              text="please " * 200))  # fmt: skip
    session.flush()
    ptx = _job(session, kinds.TRAIN_PPO, project, policy=str(short), reward=reward.name,
               ptx_coef=0.5, **params)  # fmt: skip
    assert _run(session_factory, settings, ptx) == JobStatus.failed
    session.refresh(ptx)
    assert ptx.error is not None and ptx.error.startswith(
        "PPO-ptx (--ptx-coef) has no demonstration to learn from: all 1 are longer than "
        "max_prompt_length + max_new_tokens (64 tokens). Use --long-answers truncate"
    )
