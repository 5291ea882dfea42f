"""The DPO training job (design §12): from a project's rankings to a registered policy whose
parent is the starting policy and whose reference is recorded; validation figures charted per
epoch; the reference's log-probabilities computed once and cached; bad input refused with a
clear message and nothing registered. In-process on a tiny model, SQLite and Postgres."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.jobs import kinds
from app.jobs.models import Job, JobStatus, JobStep
from app.jobs.service import create_job
from app.jobs.training import DPO_LEARNING_RATE, TrainError, TrainOptions
from app.models_registry.models import ModelKind, ModelVersion
from app.projects.models import Project
from tests.helpers import make_project, make_prompt, make_user, rank
from tests.processes import rlhf, rlhf_env
from workers.runner import run_job

TEXTS = ["User: Question 1?\nAssistant: Answer 0 to the question, please."] * 40


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from workers.ml.tiny import build_tiny_causal_lm

    return build_tiny_causal_lm(tmp_path_factory.mktemp("tiny") / "sft", texts=TEXTS, n_embd=32)


def _version(session: Session, path: Path, kind: ModelKind) -> ModelVersion:
    version = ModelVersion(name=f"{kind.value}-{make_user(session).id}", kind=kind, path=str(path))
    session.add(version)
    session.flush()
    return version


def _ranked(session: Session, n: int = 10) -> Project:
    project = make_project(session, k=4)
    labeler = make_user(session)
    for i in range(n):
        prompt = make_prompt(session, project, text=f"Question {i}?", answers=4)
        prompt.submitter_id = make_user(session).id
        rank(session, prompt, labeler, [0, 1, 2, 3])
    session.flush()
    return project


def _job(
    session: Session, session_factory: sessionmaker[Session], settings: Settings,
    project: Project, **params: object,
) -> Job:  # fmt: skip
    job = create_job(session=session, kind=kinds.TRAIN_DPO, project_id=project.id, params=params)
    session.commit()
    run_job(job_id=job.id, session_factory=session_factory, settings=settings)
    session.refresh(job)
    return job


@pytest.mark.one_database
def test_a_dpo_job_registers_a_policy_with_its_parent_and_reference(
    session: Session, session_factory: sessionmaker[Session], settings: Settings, tiny: Path
) -> None:
    from transformers import AutoModelForCausalLM

    policy = _version(session, tiny, ModelKind.sft)
    project = _ranked(session)
    job = _job(
        session, session_factory, settings, project, policy=str(policy.id), epochs=2,
        batch_size=2, learning_rate=1e-3, validation_ratio=0.3, beta=0.2, logging_steps=1,
    )  # fmt: skip
    assert job.status == JobStatus.succeeded, job.error
    version = session.scalars(select(ModelVersion).where(ModelVersion.job_id == job.id)).one()
    assert (version.kind, version.parent_id) == (ModelKind.policy, policy.id)
    metrics = version.metrics
    assert metrics["k"] == 4 and metrics["validation_pairs"] == 6 * metrics["validation_rankings"]
    assert 0 <= metrics["validation_accuracy"] <= 1
    assert metrics["train_rankings"] + metrics["validation_rankings"] == 10
    meta = json.loads(Path(version.path, "rlhf.json").read_text())
    assert meta["kind"] == "policy" and meta["parent"] == policy.id
    assert meta["reference"] == policy.id  # the starting policy, by default
    assert meta["dpo"] == {"beta": 0.2, "loss": "sigmoid", "label_smoothing": 0.0}
    AutoModelForCausalLM.from_pretrained(version.path)  # a plain checkpoint
    # the reference ran over every ranking (train and validation) and is cached (that it runs
    # once per run is test_the_reference_is_cached_for_a_resumed_attempt's)
    cache = settings.data_dir / "training" / f"job-{job.id}" / "reference_logps.json"
    assert len(json.loads(cache.read_text())["logps"]) == 10
    evals = session.scalars(
        select(JobStep).where(JobStep.job_id == job.id, JobStep.phase == "eval")
    ).all()
    assert len(evals) == 2  # one per epoch, charted on the job page
    assert {"accuracy", "margin", "chosen_logps", "rejected_logps"} <= set(evals[0].values)


def test_the_reference_cache_is_read_again_and_a_changed_key_recomputes(tmp_path: Path) -> None:
    from workers.ml.dpo_train import cached_reference_logps

    cache = tmp_path / "reference_logps.json"
    assert cached_reference_logps(cache, "a", lambda: [(1.0, 2.0)]) == [(1.0, 2.0)]

    def fail() -> list[tuple[float, ...]]:
        raise AssertionError("computed again")

    assert cached_reference_logps(cache, "a", fail) == [(1.0, 2.0)]  # a resumed attempt
    assert cached_reference_logps(cache, "b", lambda: [(3.0,)]) == [(3.0,)]


@pytest.mark.one_database
def test_an_explicit_reference_is_used_and_recorded(
    session: Session, session_factory: sessionmaker[Session], settings: Settings, tiny: Path
) -> None:
    policy = _version(session, tiny, ModelKind.sft)
    reference = _version(session, tiny, ModelKind.base)
    job = _job(
        session, session_factory, settings, _ranked(session), policy=str(policy.id),
        reference=str(reference.id), batch_size=4, validation_ratio=0.3,
    )  # fmt: skip
    assert job.status == JobStatus.succeeded, job.error
    version = session.scalars(select(ModelVersion).where(ModelVersion.job_id == job.id)).one()
    assert json.loads(Path(version.path, "rlhf.json").read_text())["reference"] == reference.id


def test_a_reward_model_as_policy_and_a_project_without_rankings_are_refused(
    session: Session, session_factory: sessionmaker[Session], settings: Settings, tiny: Path
) -> None:
    reward = _version(session, tiny, ModelKind.rm)
    job = _job(session, session_factory, settings, _ranked(session), policy=str(reward.id))
    assert job.status == JobStatus.failed
    assert job.error is not None and "is a rm model and cannot be the policy" in job.error
    policy = _version(session, tiny, ModelKind.sft)
    empty = make_project(session)
    job = _job(session, session_factory, settings, empty, policy=str(policy.id))
    assert job.status == JobStatus.failed
    assert job.error is not None and "no rankings to train a policy on with DPO" in job.error
    assert session.scalar(select(ModelVersion).where(ModelVersion.kind == ModelKind.policy)) is None


def test_dpo_settings_are_checked_with_every_field_named() -> None:
    options = TrainOptions.from_dict({"kind": "dpo", "policy": "7"})
    assert options.base == "7" and options.learning_rate == DPO_LEARNING_RATE
    assert options.trainer_config()["beta"] == 0.1
    with pytest.raises(TrainError) as refused:
        TrainOptions.from_dict({"kind": "dpo", "beta": 0, "loss": "hinge", "label_smoothing": 0.7})
    for said in ("policy is required", "beta must be between", "loss must be one of sigmoid, ipo",
                 "label_smoothing must be between"):  # fmt: skip
        assert said in str(refused.value)
    with pytest.raises(TrainError, match="label_smoothing applies to the sigmoid loss"):
        TrainOptions.from_dict(
            {"kind": "dpo", "policy": "7", "loss": "ipo", "label_smoothing": 0.1}
        )
    with pytest.raises(TrainError, match="reference applies to dpo"):
        TrainOptions.from_dict({"kind": "rm", "base": "7", "reference": "8"})


def test_rlhf_train_dpo_refuses_bad_options_before_queueing(tmp_path: Path) -> None:
    env = rlhf_env(f"sqlite:///{tmp_path / 'cli.db'}", tmp_path / "data")
    assert rlhf(env, "db", "upgrade").returncode == 0
    assert rlhf(env, "projects", "create", "p").returncode == 0
    model = tmp_path / "m"
    model.mkdir()
    done = rlhf(env, "train", "dpo", "p", "--policy", str(model), "--loss", "hinge")
    assert done.returncode == 2 and "loss must be one of sigmoid, ipo" in done.stderr
    done = rlhf(env, "train", "dpo", "p", "--policy", str(tmp_path / "nowhere"))
    assert done.returncode == 2 and "no registered model and no model folder" in done.stderr
    listed = rlhf(env, "jobs", "list", "--json")
    assert json.loads(listed.stdout) == []  # nothing was queued
