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
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from workers.ml.formatting import format_prompt
from workers.ml.reward_model import is_causal, load_reward_model, reward_scores
from workers.ml.rm_loss import kwise_loss


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
class RewardConfig:
    epochs: float = 1.0
    batch_prompts: int = 8  # rankings (prompts) per step; x K sequences
    learning_rate: float = 5e-5
    max_length: int = 256
    margin_coef: float = 0.0
    center_coef: float = 0.0
    seed: int = 0
    logging_steps: int = 10
    extra: dict[str, Any] = field(default_factory=dict)


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
) -> tuple[Any, Any, RewardEval]:
    """Train on ``train`` (whole rankings per batch), evaluate on ``validation``; returns the
    model, its tokenizer and the validation figures. Nothing is saved here."""
    from transformers import Trainer, TrainingArguments, set_seed

    check_rankings([*train, *validation])
    set_seed(config.seed)
    model, tokenizer = load_reward_model(base)
    for module in model.modules():  # dropout off, as TRL's reward training does by default
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    collator = KwiseCollator(
        tokenizer, max_length=config.max_length, causal=is_causal(model.config)
    )
    too_long = sum(collator.answer_too_long(r) for r in train)
    if too_long:
        raise RewardDataError(
            f"{too_long} rankings have an answer longer than max_length ({config.max_length} "
            "tokens): raise max_length (up to the model's context) or leave those out"
        )

    class KwiseTrainer(Trainer):
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
            return (stats.loss, {"accuracy": stats.accuracy}) if return_outputs else stats.loss

    args = TrainingArguments(
        output_dir=str(out_dir),
        num_train_epochs=config.epochs,
        per_device_train_batch_size=config.batch_prompts,
        learning_rate=config.learning_rate,
        logging_steps=config.logging_steps,
        save_strategy="no",
        report_to=[],
        seed=config.seed,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        disable_tqdm=True,
        use_cpu=not torch.cuda.is_available(),
        **config.extra,
    )
    trainer = KwiseTrainer(
        model=model, args=args, train_dataset=list(train), data_collator=collator,
        callbacks=list(callbacks),
    )  # fmt: skip
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    result = evaluate(model, collator, validation)
    return model, tokenizer, dataclasses.replace(result, train_seconds=seconds)
