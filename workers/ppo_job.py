"""The PPO job: improve a policy (an SFT model) against a reward model on the project's prompts.

1. The prompts are snapshotted with the export code (a prompts export, split by submitter):
   train prompts feed the rollouts, held-out ones measure the mean score every ``eval_every``
   steps. With PPO-ptx the demonstrations are snapshotted too (an SFT export).
2. The policy, its frozen copy (the reference), the critic and the reward model are loaded;
   the RM's stored reward mean and std normalise its scores (design §5). With LoRA the policy
   and the critic train adapters and the reference is the policy with its adapter off.
3. Each step's figures go to the job (the page charts them), sample answers every
   ``sample_every`` steps; checkpoints every ``save_steps``, from which a lost worker's retry
   resumes; a cancel stops at the next step.
4. The policy is saved (``save_pretrained`` + ``rlhf.json``) and registered as a ``policy``
   whose parent is the starting policy, with the reward model and the prompts snapshot named.
"""

from __future__ import annotations

import functools
import json
import math
import shutil
from pathlib import Path
from typing import Any

from app.db import session_scope
from app.dialogue import PromptInput, answer_text
from app.jobs.training import PPO, PPOOptions
from app.models_registry.models import ModelKind, ModelVersion
from workers.runner import JobContext
from workers.train import (
    TrainingError,
    data_warnings,
    destination,
    finite,
    job_folder,
    project_unless_registered,
    register_trained,
    report_data,
    resolve_model,
    snapshot,
    splits,
)

POLICY_KINDS = frozenset({ModelKind.base, ModelKind.sft, ModelKind.policy})


def _reward_stats(ctx: JobContext, path: str, version_id: int | None) -> tuple[float, float]:
    """The reward mean and std stored with the RM (rlhf.json, else its registered metrics)."""
    try:
        meta = json.loads(Path(path, "rlhf.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        meta = {}
    if version_id is not None and "reward_mean" not in meta:
        with session_scope(ctx.session_factory) as session:
            meta = session.get_one(ModelVersion, version_id).metrics or {}
    mean, std = meta.get("reward_mean"), meta.get("reward_std")
    if isinstance(mean, int | float) and isinstance(std, int | float) and std > 0:
        return float(mean), float(std)
    ctx.log("the reward model stores no reward mean/std: scores are used as they are")
    return 0.0, 1.0


def ppo_impl(ctx: JobContext) -> None:
    import torch

    from workers.ml.loading import ModelLoadError, load_causal_lm
    from workers.ml.lora import LoraError, describe_lora, lora_summary
    from workers.ml.ppo import (
        PPOConfig,
        PPOError,
        PPOTrainer,
        RewardModelScorer,
        build_critic,
        last_ppo_checkpoint,
    )
    from workers.ml.reward_model import RewardModelError
    from workers.ml.training import save_model

    options = PPOOptions.from_dict(ctx.params)  # TrainError: the job fails with the message
    project = project_unless_registered(ctx)
    if project is None:
        return
    folder = job_folder(ctx.settings.data_dir, ctx.job_id)
    policy_path, policy_id = resolve_model(ctx, options.policy, allowed=POLICY_KINDS, role="policy")
    reward_path, reward_id = resolve_model(
        ctx, options.reward, allowed=frozenset({ModelKind.rm}), role="reward model"
    )
    name, out = destination(ctx, project, kind=PPO, name=options.name, out_dir=options.out)

    ctx.progress(0.0, "snapshotting the prompts")
    export_id, dataset = snapshot(
        ctx, "prompts", folder / "prompts", validation_ratio=options.validation_ratio,
        seed=options.seed,
    )  # fmt: skip
    train_rows, held_rows = splits(
        ctx, dataset, validation_ratio=options.validation_ratio, seed=options.seed
    )
    prompts = [row["prompt"] for row in train_rows]
    held_out = [row["prompt"] for row in held_rows]
    if not prompts:
        raise TrainingError("The project has no prompts to train on: import or write some first.")
    demo_rows: list[dict[str, Any]] = []
    if options.ptx_coef > 0:
        _, demo_folder = snapshot(
            ctx, "sft", folder / "demonstrations", validation_ratio=0.0, seed=options.seed,
            key="ptx_export_id",
        )  # fmt: skip
        demo_rows, _ = splits(ctx, demo_folder, validation_ratio=0.0, seed=options.seed)

    reward_mean, reward_std = _reward_stats(ctx, reward_path, reward_id)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    ctx.progress(0.01, "loading the models")
    try:
        policy, tokenizer = load_causal_lm(policy_path, padding_side="left")
        config = PPOConfig(**fit_lengths(ctx, options.trainer_config(), policy))
        prompts, held_out, demonstrations, data = _usable_data(
            ctx, tokenizer, options, config, prompts, held_out, demo_rows
        )
        # LoRA: the reference is the policy with its adapter off, not a copy (design §12)
        reference = None if config.lora is not None else load_causal_lm(policy_path)[0]
        critic, critic_source = build_critic(
            policy_path, tokenizer, reward_path, reward_mean=reward_mean, reward_std=reward_std
        )
        scorer = RewardModelScorer(
            reward_path, max_length=config.max_prompt_length + config.max_new_tokens + 16
        ).to(device)
        trainer = PPOTrainer(
            policy.to(device), reference.to(device) if reference is not None else None,
            critic.to(device), tokenizer, scorer, config, prompts=prompts,
            reward_mean=reward_mean, reward_std=reward_std, demonstrations=demonstrations,
        )  # fmt: skip
    except (ModelLoadError, RewardModelError, PPOError, LoraError) as exc:
        raise TrainingError(str(exc)) from exc
    lora = lora_summary(trainer.policy, config.lora) if config.lora is not None else None
    if lora is not None:
        ctx.log(describe_lora(lora, "the policy") + "; the reference is the policy with it off")
    ctx.log(
        f"PPO: policy {policy_path}, reward model {reward_path} (mean {reward_mean:.4g}, "
        f"std {reward_std:.4g}), critic from the {critic_source}; {len(prompts):,} train and "
        f"{len(held_out):,} held-out prompts; {config.steps} steps of {config.batch_size}"
    )

    checkpoints = folder / "checkpoints"
    if ctx.attempt == 1:
        shutil.rmtree(checkpoints, ignore_errors=True)
    resume = last_ppo_checkpoint(checkpoints)
    if resume is not None:
        trainer.load_checkpoint(resume)
        ctx.forget_steps_after(trainer.step_index)
        ctx.log(f"resuming from {resume.name} (a previous attempt was lost)")

    held = held_out[: config.eval_prompts]

    def evaluate() -> dict[str, float]:
        figures = finite(trainer.evaluate(held)) if held else {}
        if figures:
            ctx.record_step(trainer.step_index, figures, phase="eval")
        return figures

    if trainer.step_index == 0 and config.eval_every:
        evaluate()
    try:
        while trainer.step_index < config.steps:
            stats = trainer.step()
            step = trainer.step_index
            ctx.record_step(step, finite(stats.values), phase="train")
            if stats.samples:
                ctx.record_step(step, {"samples": stats.samples}, phase="samples")
            if config.eval_every and step % config.eval_every == 0 and step < config.steps:
                evaluate()
            if config.save_steps and step % config.save_steps == 0 and step < config.steps:
                trainer.save_checkpoint(checkpoints)
            ctx.progress(
                0.02 + 0.93 * step / config.steps,
                f"step {step:,} / {config.steps:,}: score {stats.values.get('score', math.nan):.3g}",
            )
    except PPOError as exc:
        raise TrainingError(str(exc)) from exc
    final = evaluate() if config.eval_every else {}
    metrics: dict[str, Any] = {
        **{f"heldout_{k}": v for k, v in final.items()},
        "steps": trainer.step_index, "kl_coef": round(trainer.kl.value, 6),
        "reward_model_id": reward_id, "critic": critic_source,
        "train_prompts": len(prompts), "heldout_prompts": len(held),
        "max_prompt_length": config.max_prompt_length, **data,
    }  # fmt: skip
    if lora is not None:
        metrics["lora"] = lora
    ctx.progress(0.96, "saving the policy", **{k: v for k, v in metrics.items() if v is not None})
    save_model(
        trainer.policy, tokenizer, out, kind="policy",
        parent=policy_id if policy_id is not None else policy_path,
        extra={
            "reward_model": reward_id if reward_id is not None else reward_path,
            "export_id": export_id, "job_id": ctx.job_id, "metrics": metrics,
            **({"lora": lora} if lora is not None else {}),
        },
    )  # fmt: skip
    register_trained(
        ctx, out, kind=ModelKind.policy, name=name, parent_id=policy_id, metrics=metrics,
        export_id=export_id, checkpoints=checkpoints,
    )  # fmt: skip


def fit_lengths(ctx: JobContext, config: dict[str, Any], policy: Any) -> dict[str, Any]:
    """The PPO settings with ``max_prompt_length`` lowered so that a prompt and its answer
    fit the policy's context (a longer input has no position to sample at)."""
    from workers.ml.training import context_length

    context = context_length(policy.config)
    new_tokens = config["max_new_tokens"]
    if context is None or config["max_prompt_length"] + new_tokens <= context:
        return config
    if context - new_tokens < 8:
        raise TrainingError(
            f"max_new_tokens ({new_tokens:,}) leaves no room for a prompt in the policy's "
            f"context of {context:,} tokens: lower --max-new-tokens."
        )
    ctx.log(
        f"max_prompt_length lowered from {config['max_prompt_length']:,} to "
        f"{context - new_tokens:,}: the policy reads {context:,} tokens, answers included"
    )
    return {**config, "max_prompt_length": context - new_tokens}


def _usable_data(
    ctx: JobContext, tokenizer: Any, options: Any, config: Any, prompts: list[PromptInput],
    held_out: list[PromptInput], demo_rows: list[dict[str, Any]],
) -> tuple[list[PromptInput], list[PromptInput], list[Any], dict[str, Any]]:  # fmt: skip
    """The prompts (train and held out) and PPO-ptx demonstrations that fit, under the job's
    long-input policy; what was left out and too small is logged and returned as metrics."""
    from workers.ml.long_inputs import prepare_splits
    from workers.ml.ppo import fit_prompts
    from workers.ml.sft_train import CompletionCollator, Example, prepare_examples

    length, policy = config.max_prompt_length, options.long_answers
    prompts, held_out, report = prepare_splits(
        functools.partial(fit_prompts, tokenizer, max_prompt_length=length, long_answers=policy),
        prompts, held_out, what="training prompts", max_length=length, context=None,
        error=TrainingError,
        option="--max-prompt-length (or lower --max-new-tokens: the policy's context holds both)",
    )  # fmt: skip
    left_out, cut = report.left_out, report.truncated
    demonstrations: list[Any] = []
    if demo_rows:
        collator = CompletionCollator(tokenizer, max_length=length + config.max_new_tokens)
        demonstrations, demo_left_out, demo_cut = prepare_examples(
            [Example(r["prompt"], answer_text(r["completion"])) for r in demo_rows], collator,
            long_answers=policy,
        )  # fmt: skip
        left_out.update(demo_left_out)
        cut += demo_cut
        if not demonstrations:
            raise TrainingError(
                f"PPO-ptx (--ptx-coef) has no demonstration to learn from: all "
                f"{len(demo_rows):,} are longer than max_prompt_length + max_new_tokens "
                f"({collator.max_length:,} tokens). Use --long-answers truncate, or turn PPO-ptx "
                "off (--ptx-coef 0)."
            )
        ctx.log(f"PPO-ptx: {len(demonstrations):,} demonstrations, ptx_coef {options.ptx_coef:g}")
    warnings = data_warnings(
        what="prompts", train=len(prompts), validation=len(held_out),
        validation_ratio=options.validation_ratio,
    )  # fmt: skip
    data = report_data(
        ctx, left_out, warnings, truncated=cut,
        cut="prompts from the left to fit max_prompt_length (PPO-ptx demonstrations from the right)",
    )  # fmt: skip
    if data:
        ctx.progress(0.01, "loading the models", **data)
    return prompts, held_out, demonstrations, data
