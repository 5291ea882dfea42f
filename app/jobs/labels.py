"""Words for what a job records, as its page shows them: its kind, its metrics and its
outputs. The keys the jobs write have labels here; any other key reads as words
("val_loss" -> "Validation loss"), its acronyms kept uppercase (KL, EOS, RM, SFT, LR)."""

from __future__ import annotations

import re
from typing import Final

from app.jobs import kinds

KIND_LABELS: Final = {
    kinds.SELFCHECK: "Worker self-check",
    kinds.GENERATE: "Answer generation",
    kinds.EXPORT: "Export",
    kinds.TRAIN_SFT: "SFT training",
    kinds.TRAIN_RM: "Reward model training",
    kinds.TRAIN_DPO: "DPO training",
    kinds.TRAIN_PPO: "PPO training",
    kinds.SCORE: "Reward model scores",
    kinds.JUDGE: "AI judge rankings",
}

METRIC_LABELS: Final = {
    # logged steps (workers/ml/training.py, rm_train.py, sft_train.py and ppo.py)
    "loss": "Loss",
    "accuracy": "Accuracy",
    "margin": "Margin",
    "perplexity": "Perplexity",
    "epoch": "Epoch",
    "learning_rate": "Learning rate",
    "grad_norm": "Gradient norm",
    "score": "Reward model score",
    "score_normalised": "Normalised score",
    "reward": "Reward (score minus KL penalty)",
    "kl": "KL",
    "kl_k3": "KL (k3)",
    "kl_coef": "KL coefficient",
    "entropy": "Entropy",
    "clip_fraction": "Clip fraction",
    "value_clip_fraction": "Value clip fraction",
    "approx_kl": "Approximate KL",
    "policy_loss": "Policy loss",
    "value_loss": "Value loss",
    "ptx_loss": "Pretraining (ptx) loss",
    "ratio": "Probability ratio",
    "response_length": "Answer length (tokens)",
    "eos_rate": "EOS rate",
    # a generation job's figures (workers/generate.py)
    "prompts_total": "Prompts to answer",
    "prompts_done": "Prompts answered",
    "tokens": "New tokens",
    "tokens_per_second": "Tokens per second",
    # SFT and RM results (workers/train.py)
    "validation_loss": "Validation loss",
    "validation_perplexity": "Validation perplexity",
    "validation_tokens": "Validation tokens",
    "validation_accuracy": "Validation accuracy",
    "validation_margin": "Validation margin",
    "validation_pairs": "Validation pairs",
    # DPO (workers/ml/dpo_train.py): implicit rewards beta * log(policy / reference)
    "chosen_logps": "Log-probability of the better answer",
    "rejected_logps": "Log-probability of the worse answer",
    "validation_chosen_logps": "Validation log-probability of the better answer",
    "validation_rejected_logps": "Validation log-probability of the worse answer",
    "train_examples": "Training demonstrations",
    "validation_examples": "Validation demonstrations",
    "train_rankings": "Training rankings",
    "validation_rankings": "Validation rankings",
    "rankings_by_k": "Rankings by K",
    "k": "K (answers per ranking)",
    "reward_mean": "Reward mean",
    "reward_std": "Reward standard deviation",
    "train_seconds": "Training time (s)",
    # PPO results (workers/ppo_job.py)
    "heldout_score": "Held-out score",
    "heldout_kl": "Held-out KL",
    "heldout_response_length": "Held-out answer length (tokens)",
    "steps": "Steps",
    "reward_model_id": "Reward model",
    "critic": "Critic started from",
    "train_prompts": "Training prompts",
    "heldout_prompts": "Held-out prompts",
    "max_prompt_length": "Max prompt length (tokens)",
    "world_size": "Processes",
    # the score and judge jobs (workers/score.py, workers/judge.py)
    "answers_to_score": "Answers to score",
    "answers_scored": "Answers scored",
    "answers_skipped": "Answers already scored (skipped)",
    "score_gaps": "Prompts given a score gap",
    "judge": "Judge",
    "prompts_to_judge": "Prompts to judge",
    "prompts_judged": "Prompts judged",
    "prompts_skipped": "Prompts already judged (skipped)",
    "scores_reused": "Stored scores reused",
    "requests": "Requests to the endpoint",
    "retries": "Requests retried with a reminder",
    "tie_tolerance": "Tie tolerance",
    # the worker self-check (workers/selfcheck.py)
    "users": "Users",
    "projects": "Projects",
    "torch": "PyTorch",
}

ARTIFACT_LABELS: Final = {
    "export_id": "Dataset snapshot",
    "dataset": "Dataset folder",
    "ptx_export_id": "PPO-ptx demonstrations",
    "ptx_dataset": "PPO-ptx demonstrations folder",
    "model_version_id": "Model",
    "model": "Model folder",
    "report": "Report",
    "directory": "Folder",
}

ACRONYMS: Final = {
    "kl": "KL", "eos": "EOS", "rm": "RM", "sft": "SFT", "lr": "LR", "ppo": "PPO", "dpo": "DPO",
    "id": "ID", "k": "K", "lora": "LoRA", "gpu": "GPU", "cpu": "CPU",
}  # fmt: skip
ABBREVIATIONS: Final = {
    "val": "validation", "eval": "validation", "heldout": "held-out", "num": "number of",
    "avg": "mean", "std": "standard deviation", "len": "length", "pct": "percent",
}  # fmt: skip


def words(key: str) -> str:
    """A key written as words: "val_loss" -> "Validation loss", "eos_rate" -> "EOS rate"."""
    parts = [p for p in re.split(r"[_\s]+", key.strip()) if p]
    if not parts:
        return key
    out = [ACRONYMS.get(p.lower()) or ABBREVIATIONS.get(p.lower(), p.lower()) for p in parts]
    out[0] = out[0][:1].upper() + out[0][1:]
    return " ".join(out)


def metric_label(key: str) -> str:
    return METRIC_LABELS.get(key) or words(key)


def kind_label(kind: str) -> str:
    return KIND_LABELS.get(kind) or words(kind)


def artifact_label(key: str) -> str:
    return ARTIFACT_LABELS.get(key) or words(key)
