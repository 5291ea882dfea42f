"""Reward-model training with InstructGPT's K-wise batching, on ``transformers.Trainer``.

A dataset item is one ranking: a prompt, its K answers and their places. The collator turns
a batch of B rankings into B*K sequences (prompt formatted by ``format_prompt``, the same as
generation and PPO, then the answer and EOS), truncated **from the left** so the answer is
never cut; the trainer scores them once each (``reward_scores``) and takes ``kwise_loss``
over every pair of each prompt.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from workers.ml.formatting import format_prompt
from workers.ml.reward_model import is_causal, load_reward_model, reward_scores
from workers.ml.rm_loss import kwise_loss
from workers.ml.training import (
    StepSink,
    TrainConfig,
    context_length,
    disable_dropout,
    fit_max_length,
    run_trainer,
)


class RewardDataError(ValueError):
    """Rankings the reward model cannot train on; the message says which and why."""


@dataclass(frozen=True)
class Ranking:
    prompt: str
    answers: list[str]
    places: list[int]  # 0 = best; equal places tie


def check_rankings(rankings: Sequence[Ranking]) -> int:
    """K, the same for every ranking; raises ``RewardDataError`` otherwise."""
    if not rankings:
        raise RewardDataError("there are no rankings to train on: rank some answers first")
    sizes = sorted({len(r.answers) for r in rankings})
    if len(sizes) > 1:
        raise RewardDataError(
            f"rankings of different sizes ({', '.join(map(str, sizes))} answers): a reward "
            "model batch holds whole prompts with the same K; export one K at a time"
        )
    if sizes[0] < 2:
        raise RewardDataError("a ranking needs at least 2 answers")
    return sizes[0]


class KwiseCollator:
    def __init__(self, tokenizer: Any, *, max_length: int, causal: bool) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.causal = causal

    def texts(self, ranking: Ranking) -> list[str]:
        head = format_prompt(self.tokenizer, ranking.prompt)
        tail = (self.tokenizer.eos_token or "") if self.causal else ""
        return [head + answer + tail for answer in ranking.answers]

    def answer_too_long(self, ranking: Ranking) -> bool:
        ids = self.tokenizer(ranking.answers, add_special_tokens=False)["input_ids"]
        return any(len(x) + 2 > self.max_length for x in ids)

    def lengths(self, rankings: Sequence[Ranking]) -> list[int]:
        """Each ranking's longest answer with its prompt, in tokens (capped at max_length):
        the width its batch pads to."""
        texts = [text for ranking in rankings for text in self.texts(ranking)]
        ids = self.tokenizer(texts, add_special_tokens=True)["input_ids"] if texts else []
        k = len(rankings[0].answers) if rankings else 1
        return [
            min(max(len(x) for x in ids[i * k : (i + 1) * k]), self.max_length)
            for i in range(len(rankings))
        ]

    def __call__(self, batch: Sequence[Ranking]) -> dict[str, torch.Tensor]:
        texts = [text for ranking in batch for text in self.texts(ranking)]
        side = self.tokenizer.truncation_side
        self.tokenizer.truncation_side = "left"  # cut the prompt's start, never the answer
        try:
            encoded = self.tokenizer(
                texts, truncation=True, max_length=self.max_length, padding=True,
                return_tensors="pt",
            )  # fmt: skip
        finally:
            self.tokenizer.truncation_side = side
        return {
            "input_ids": encoded["input_ids"],
            "attention_mask": encoded["attention_mask"],
            "places": torch.tensor([r.places for r in batch], dtype=torch.long),
        }


@dataclass
class RewardConfig(TrainConfig):
    """``batch_size`` counts whole prompts (rankings): a step scores ``batch_size * K``
    answers."""

    margin_coef: float = 0.0
    center_coef: float = 0.0


@dataclass(frozen=True)
class RewardEval:
    accuracy: float  # pairs with r_w > r_l (a tie in reward counts as wrong)
    margin: float
    loss: float
    pairs: int
    reward_mean: float  # over every validation answer: PPO normalises scores with these
    reward_std: float
    train_seconds: float = 0.0  # the optimisation itself (not loading or evaluating)


def evaluate(
    model: Any, collator: KwiseCollator, rankings: Sequence[Ranking], *, batch_prompts: int = 16
) -> RewardEval:
    model.eval()
    device = next(model.parameters()).device
    correct = pairs = 0
    margin_sum = loss_sum = 0.0
    batches = 0
    scores: list[torch.Tensor] = []
    with torch.no_grad():
        for start in range(0, len(rankings), batch_prompts):
            chunk = list(rankings[start : start + batch_prompts])
            batch = collator(chunk)
            r = reward_scores(
                model, batch["input_ids"].to(device), batch["attention_mask"].to(device)
            ).view(len(chunk), -1)
            stats = kwise_loss(r.float().cpu(), batch["places"])
            scores.append(r.float().cpu().flatten())
            if stats.pairs:
                correct += round(float(stats.accuracy) * stats.pairs)
                margin_sum += float(stats.margin) * stats.pairs
                pairs += stats.pairs
                loss_sum += float(stats.loss)
                batches += 1
    all_scores = torch.cat(scores) if scores else torch.zeros(0)
    return RewardEval(
        accuracy=correct / pairs if pairs else math.nan,
        margin=margin_sum / pairs if pairs else math.nan,
        loss=loss_sum / batches if batches else math.nan,
        pairs=pairs,
        reward_mean=float(all_scores.mean()) if len(all_scores) else 0.0,
        reward_std=float(all_scores.std()) if len(all_scores) > 1 else 1.0,
    )


def train_reward_model(
    base: str | Path,
    train: Sequence[Ranking],
    validation: Sequence[Ranking],
    out_dir: Path,
    config: RewardConfig,
    *,
    callbacks: Sequence[Any] = (),
    on_step: StepSink | None = None,
    resume: Path | None = None,
) -> tuple[Any, Any, RewardEval]:
    """Train on ``train`` (whole rankings per batch), evaluating on ``validation`` after each
    epoch (reported to ``on_step`` as phase "eval"); checkpoints go to ``out_dir`` when
    ``config.save_steps`` is set, and ``resume`` continues from one. Returns the model, its
    tokenizer and the final validation figures. The model is not saved here."""
    from transformers import Trainer, set_seed

    check_rankings([*train, *validation])
    set_seed(config.seed)
    model, tokenizer = load_reward_model(base)
    disable_dropout(model)
    max_length = fit_max_length(config.max_length, model)
    collator = KwiseCollator(tokenizer, max_length=max_length, causal=is_causal(model.config))
    too_long = sum(collator.answer_too_long(r) for r in [*train, *validation])
    if too_long:
        raise RewardDataError(
            f"{too_long} rankings have an answer longer than max_length ({max_length} "
            f"tokens): raise max_length (the model reads up to {context_length(model.config) or '?'} "
            "tokens) or leave those out"
        )

    class KwiseTrainer(Trainer):
        accuracy_sum, accuracy_n = 0.0, 0

        def compute_loss(
            self, model: Any, inputs: dict[str, torch.Tensor], return_outputs: bool = False,
            num_items_in_batch: Any = None,
        ) -> Any:  # fmt: skip
            places = inputs["places"]
            r = reward_scores(model, inputs["input_ids"], inputs["attention_mask"])
            stats = kwise_loss(
                r.view(places.shape), places,
                margin_coef=config.margin_coef, center_coef=config.center_coef,
            )  # fmt: skip
            if stats.pairs:
                self.accuracy_sum += float(stats.accuracy)
                self.accuracy_n += 1
            return (stats.loss, {"accuracy": stats.accuracy}) if return_outputs else stats.loss

        def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
            if "loss" in logs and self.accuracy_n:  # the batches since the last log
                logs["accuracy"] = round(self.accuracy_sum / self.accuracy_n, 4)
                self.accuracy_sum, self.accuracy_n = 0.0, 0
            super().log(logs, *args, **kwargs)

    def epoch_figures() -> dict[str, float]:
        if not validation:
            return {}
        figures = evaluate(model, collator, validation)
        return {"accuracy": figures.accuracy, "margin": figures.margin, "loss": figures.loss}

    seconds = run_trainer(
        model, collator, train, lengths=collator.lengths(train), config=config,
        out_dir=out_dir, evaluate=epoch_figures, on_step=on_step, callbacks=callbacks,
        resume=resume, trainer_class=KwiseTrainer,
    )  # fmt: skip
    result = evaluate(model, collator, validation)
    return model, tokenizer, dataclasses.replace(result, train_seconds=seconds)
