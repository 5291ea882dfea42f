"""Reward-model training with InstructGPT's K-wise batching, on ``transformers.Trainer``.

A dataset item is one ranking: a prompt, its K answers and their places; K may differ from
ranking to ranking. The collator turns a batch of rankings into the flat list of their answers
(prompt formatted by ``format_prompt``, the same as generation and PPO, then the answer and
EOS), truncated **from the left** so the answer is never cut; the trainer scores each answer
once (``reward_scores``), lays the scores out per ranking (padded to the batch's largest K,
masked) and takes ``kwise_loss`` over every pair of each prompt. An answer too long to fit
even then is left out or cut (``long_inputs``).

Decision, mixed K: padding only the (B, K) score grid, not the encoder's input, costs nothing
(no padded answer is ever scored), so batches simply mix sizes; grouping batches by K would
add a constraint on the shuffle for no saving.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from app.dialogue import PromptInput
from workers.ml.formatting import format_prompt
from workers.ml.long_inputs import (
    DROP,
    DataSink,
    LeftOut,
    check_policy,
    cut_text,
    prepare_splits,
    too_long,
)
from workers.ml.lora import apply_lora
from workers.ml.reward_model import is_causal, load_reward_model, reward_scores
from workers.ml.rm_loss import kwise_loss
from workers.ml.training import (
    StepSink,
    TrainConfig,
    context_length,
    disable_dropout,
    fit_max_length,
    forward_through,
    mean_across_processes,
    run_trainer,
)


class RewardDataError(ValueError):
    """Rankings the reward model cannot train on; the message says which and why."""


@dataclass(frozen=True)
class Ranking:
    prompt: PromptInput
    answers: list[str]
    places: list[int]  # 0 = best; equal places tie


def check_rankings(rankings: Sequence[Ranking]) -> dict[int, int]:
    """How many rankings there are of each size (K -> count); raises ``RewardDataError`` when
    there are none. Sizes may differ: a batch pads to its largest K and masks the rest
    (InstructGPT trained on K = 4..9 together); a ranking with fewer than two places is left
    out by ``prepare_rankings``, never a reason to refuse the others."""
    if not rankings:
        raise RewardDataError("there are no rankings to train on: rank some answers first")
    return dict(sorted(Counter(len(r.answers) for r in rankings).items()))


def by_ranking(scores: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """The flat scores of a batch's answers (ranking after ranking) laid out as (B, K max),
    zero in the padding slots that ``valid`` marks False; gradients flow to each score."""
    return scores.new_zeros(valid.shape).masked_scatter(valid, scores)


class KwiseCollator:
    """A batch of rankings (of any sizes) as the flat list of their answers, each formatted
    after its prompt and cut from the left to ``max_length``, plus ``places`` and ``valid``
    (B, K max) for the loss. Padding slots are never scored: only real answers are encoded."""

    def __init__(self, tokenizer: Any, *, max_length: int, causal: bool) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.causal = causal

    @property
    def answer_budget(self) -> int:
        """The most tokens an answer may have: room is kept for the special tokens, EOS (causal
        models) and at least one prompt token."""
        special = self.tokenizer.num_special_tokens_to_add()
        return self.max_length - special - (1 if self.causal else 0) - 1

    def texts(self, ranking: Ranking) -> list[str]:
        head = format_prompt(self.tokenizer, ranking.prompt)
        tail = (self.tokenizer.eos_token or "") if self.causal else ""
        return [head + answer + tail for answer in ranking.answers]

    def lengths(self, rankings: Sequence[Ranking]) -> list[int]:
        """Each ranking's longest answer with its prompt, in tokens (capped at max_length):
        the width its batch pads to."""
        texts = [text for ranking in rankings for text in self.texts(ranking)]
        ids = (
            self.tokenizer(texts, add_special_tokens=True, verbose=False)["input_ids"]
            if texts
            else []
        )
        out, at = [], 0
        for ranking in rankings:
            k = len(ranking.answers)
            out.append(min(max(len(x) for x in ids[at : at + k]), self.max_length))
            at += k
        return out

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
        width = max(len(r.answers) for r in batch)
        places = torch.zeros((len(batch), width), dtype=torch.long)
        valid = torch.zeros((len(batch), width), dtype=torch.bool)
        for i, ranking in enumerate(batch):
            places[i, : len(ranking.places)] = torch.tensor(ranking.places, dtype=torch.long)
            valid[i, : len(ranking.places)] = True
        return {
            "input_ids": encoded["input_ids"],
            "attention_mask": encoded["attention_mask"],
            "places": places,
            "valid": valid,
        }


class AnswerBudget(Protocol):
    """What ``prepare_rankings`` needs of a collator: the RM's and DPO's both have it."""

    tokenizer: Any
    max_length: int

    @property
    def answer_budget(self) -> int: ...


def prepare_rankings(
    rankings: Sequence[Ranking], collator: AnswerBudget, *, long_answers: str = DROP
) -> tuple[list[Ranking], LeftOut, int]:
    """The rankings the reward model can learn from, what was left out (``LeftOut``) and how
    many answers were cut. An answer longer than ``collator.answer_budget`` tokens is left out
    of its ranking (``drop``) or cut from the right (``truncate``); a ranking left with fewer
    than two places (nothing to compare) is left out whole."""
    check_policy(long_answers, RewardDataError)
    tokenizer, budget = collator.tokenizer, collator.answer_budget
    answers = [answer for ranking in rankings for answer in ranking.answers]
    sizes = (
        tokenizer(answers, add_special_tokens=False, verbose=False)["input_ids"] if answers else []
    )
    answers_too_long = too_long("answers", collator.max_length)
    left_out, cut, at = LeftOut(), 0, 0
    kept: list[Ranking] = []
    for ranking in rankings:
        lengths = [len(ids) for ids in sizes[at : at + len(ranking.answers)]]
        at += len(ranking.answers)
        texts, places, dropped = [], [], 0
        for answer, place, length in zip(ranking.answers, ranking.places, lengths, strict=True):
            if length > budget and long_answers == DROP:
                dropped += 1
                continue
            if length > budget:
                answer, cut = cut_text(tokenizer, answer, budget), cut + 1
            texts.append(answer)
            places.append(place)
        if len(set(places)) < 2:
            left_out.add(
                f"rankings left with fewer than 2 ranked places once {answers_too_long} were "
                "left out" if dropped else "rankings with fewer than 2 ranked places (no pair)"
            )  # fmt: skip
            continue
        left_out.add(f"{answers_too_long} left out of their rankings", dropped)
        kept.append(Ranking(prompt=ranking.prompt, answers=texts, places=places))
    return kept, left_out, cut


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
    left_out: LeftOut = dataclasses.field(default_factory=LeftOut)  # train and validation
    truncated: int = 0  # answers cut to fit (--long-answers truncate)
    train_rankings: int = 0  # after what was left out
    validation_rankings: int = 0
    sizes: dict[int, int] = dataclasses.field(default_factory=dict)  # K -> rankings trained on


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
            flat = reward_scores(
                model, batch["input_ids"].to(device), batch["attention_mask"].to(device)
            ).float().cpu()  # fmt: skip
            r = by_ranking(flat, batch["valid"])
            stats = kwise_loss(r, batch["places"], valid=batch["valid"])
            scores.append(flat)
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
    on_data: DataSink | None = None,
) -> tuple[Any, Any, RewardEval]:
    """Train on ``train`` (whole rankings per batch, of any sizes), evaluating on
    ``validation`` after each epoch (reported to ``on_step`` as phase "eval"); checkpoints go
    to ``out_dir`` when ``config.save_steps`` is set, and ``resume`` continues from one.
    Answers too long for ``config.max_length`` are handled by ``config.long_answers``
    (``prepare_rankings``); the job fails only when no ranking is left to train on. Returns the
    model, its tokenizer and the final validation figures. The model is not saved here."""
    from transformers import Trainer, set_seed

    check_rankings(train)
    set_seed(config.seed)
    model, tokenizer = load_reward_model(base)
    disable_dropout(model)
    if config.lora is not None:  # after: an adapter dropout asked for is kept
        model = apply_lora(model, config.lora, task="score")
    max_length = fit_max_length(config.max_length, model)
    collator = KwiseCollator(tokenizer, max_length=max_length, causal=is_causal(model.config))
    train, validation, data = prepare_splits(
        functools.partial(prepare_rankings, collator=collator, long_answers=config.long_answers),
        train, validation, what="training rankings", max_length=max_length,
        context=context_length(model.config), error=RewardDataError, on_data=on_data,
    )  # fmt: skip

    class KwiseTrainer(Trainer):
        accuracy_sum, accuracy_n = 0.0, 0

        def compute_loss(
            self, model: Any, inputs: dict[str, torch.Tensor], return_outputs: bool = False,
            num_items_in_batch: Any = None,
        ) -> Any:  # fmt: skip
            places, valid = inputs["places"], inputs["valid"]
            r = forward_through(
                model, lambda m: reward_scores(m, inputs["input_ids"], inputs["attention_mask"])
            )
            stats = kwise_loss(
                by_ranking(r, valid), places, valid=valid,
                margin_coef=config.margin_coef, center_coef=config.center_coef,
            )  # fmt: skip
            if stats.pairs:
                self.accuracy_sum += float(stats.accuracy)
                self.accuracy_n += 1
            return (stats.loss, {"accuracy": stats.accuracy}) if return_outputs else stats.loss

        def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
            if "loss" in logs:  # the batches since the last log, of every process
                logs.update(
                    mean_across_processes(self, {"accuracy": self.accuracy_sum}, self.accuracy_n)
                )
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
    return model, tokenizer, dataclasses.replace(
        result, train_seconds=seconds, left_out=data.left_out, truncated=data.truncated,
        train_rankings=len(train), validation_rankings=len(validation),
        sizes=check_rankings(train),
    )  # fmt: skip
