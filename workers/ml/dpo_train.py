"""DPO from K-wise rankings (design §12), on ``transformers.Trainer``.

A dataset item is one ranking (prompt, K answers, places) with the reference model's
log-probability of each answer. The collator lays every answer out after its prompt exactly
as SFT does (``CompletionCollator``: the prompt through ``format_prompt``, cut from the left;
the answer, then EOS; labels on the answer only), so a batch is the flat list of its
rankings' answers. The trainer computes each answer's sequence log-probability under the
policy **once per step**, lays them out per ranking and takes ``dpo_loss`` over every ordered
pair of different groups. The reference log-probabilities are computed **once per run**,
before training, by the starting policy itself (the default reference: no second copy of the
model) or by ``reference``, and cached in a file so a resumed job does not compute them again.
With LoRA (``config.lora``) the starting policy is the same model with its adapter off.

TRL's ``DPOTrainer`` takes pairs: with K answers ranked, each answer is in K-1 pairs and its
log-probability (policy and reference) is computed K-1 times. Here it is computed once.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from workers.ml.dpo_loss import SIGMOID, DPOStats, dpo_loss
from workers.ml.loading import ModelLoadError, load_causal_lm
from workers.ml.long_inputs import DataSink, LeftOut, prepare_splits
from workers.ml.lora import adapter_off, apply_lora
from workers.ml.rm_train import Ranking, by_ranking, check_rankings, prepare_rankings
from workers.ml.sft_train import IGNORE, CompletionCollator, Example, pad_rows
from workers.ml.training import (
    StepSink,
    TrainConfig,
    context_length,
    disable_dropout,
    fit_max_length,
    mean_across_processes,
    run_trainer,
)


class DPODataError(ValueError):
    """Rankings or models DPO cannot train with; the message says which and why."""


@dataclass(frozen=True)
class DPOItem:
    ranking: Ranking
    reference_logps: tuple[float, ...]  # one per answer, in the ranking's order


@dataclass
class DPOConfig(TrainConfig):
    """``batch_size`` counts whole prompts (rankings): a step scores ``batch_size * K``
    answers."""

    beta: float = 0.1
    loss_type: str = SIGMOID
    label_smoothing: float = 0.0


@dataclass(frozen=True)
class DPOEval:
    accuracy: float  # pairs whose implicit reward ranks them as the labelers did
    margin: float  # mean implicit-reward gap beta * (h_w - h_l)
    loss: float
    chosen_logps: float  # mean policy log-probability of the better answer of each pair
    rejected_logps: float
    pairs: int
    train_seconds: float = 0.0
    left_out: LeftOut = dataclasses.field(default_factory=LeftOut)
    truncated: int = 0
    train_rankings: int = 0
    validation_rankings: int = 0
    sizes: dict[int, int] = dataclasses.field(default_factory=dict)

    def figures(self) -> dict[str, float]:
        return {
            "accuracy": self.accuracy, "margin": self.margin, "loss": self.loss,
            "chosen_logps": self.chosen_logps, "rejected_logps": self.rejected_logps,
        }  # fmt: skip


class RankingCollator:
    """A batch of rankings as the flat list of their answers laid out as SFT lays out a
    demonstration, plus ``places``, ``valid`` and, for ``DPOItem``s, ``reference_logps``
    (all (B, K max))."""

    def __init__(self, tokenizer: Any, *, max_length: int) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.answers = CompletionCollator(tokenizer, max_length=max_length)
        # each answer is laid out and tokenized once per run, not once per step
        self._encoded: dict[tuple[str, str], tuple[list[int], list[int]]] = {}

    def encode(self, prompt: Any, answer: str) -> tuple[list[int], list[int]]:
        """The answer's ids after its prompt's, and its labels (the prompt's are IGNORE)."""
        key = (prompt if isinstance(prompt, str) else json.dumps(prompt), answer)
        if key not in self._encoded:
            self._encoded[key] = self.answers.encode(Example(prompt=prompt, completion=answer))
        return self._encoded[key]

    @property
    def answer_budget(self) -> int:
        """The most tokens an answer may have: EOS and at least one prompt token beside it
        (what ``prepare_rankings`` checks answers against)."""
        return self.max_length - 2

    def examples(self, ranking: Ranking) -> list[Example]:
        return [Example(prompt=ranking.prompt, completion=a) for a in ranking.answers]

    def length(self, ranking: Ranking) -> int:
        return max(len(self.encode(ranking.prompt, a)[0]) for a in ranking.answers)

    def __call__(self, batch: Sequence[DPOItem | Ranking]) -> dict[str, torch.Tensor]:
        rankings = [item.ranking if isinstance(item, DPOItem) else item for item in batch]
        rows = [self.encode(r.prompt, answer) for r in rankings for answer in r.answers]
        flat = pad_rows(rows, self.answers.pad_id)
        width = max(len(r.answers) for r in rankings)
        places = torch.zeros((len(rankings), width), dtype=torch.long)
        valid = torch.zeros((len(rankings), width), dtype=torch.bool)
        reference = torch.zeros((len(rankings), width), dtype=torch.float32)
        for i, item in enumerate(batch):
            ranking = rankings[i]
            places[i, : len(ranking.places)] = torch.tensor(ranking.places, dtype=torch.long)
            valid[i, : len(ranking.places)] = True
            if isinstance(item, DPOItem):
                reference[i, : len(ranking.places)] = torch.tensor(item.reference_logps)
        return {**flat, "places": places, "valid": valid, "reference_logps": reference}


def sequence_logps(
    model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """Each row's summed log-probability of its labelled tokens (the answer and EOS)."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1]
    target = labels[:, 1:]
    keep = target != IGNORE
    per_token = torch.gather(
        logits.float().log_softmax(-1), 2, target.clamp(min=0).unsqueeze(-1)
    ).squeeze(-1)
    return (per_token * keep).sum(-1)


def answer_tokens(labels: torch.Tensor) -> torch.Tensor:
    """Each row's labelled tokens (the answer and EOS): IPO averages over them."""
    return (labels[:, 1:] != IGNORE).sum(-1)


def batch_loss(logps: torch.Tensor, batch: dict[str, torch.Tensor], config: DPOConfig) -> DPOStats:
    """``dpo_loss`` of a collated batch, given its answers' flat policy log-probabilities."""
    valid = batch["valid"]
    return dpo_loss(
        by_ranking(logps, valid), batch["reference_logps"], batch["places"], valid=valid,
        beta=config.beta, loss_type=config.loss_type, label_smoothing=config.label_smoothing,
        lengths=by_ranking(answer_tokens(batch["labels"]).float(), valid),
    )  # fmt: skip


def compute_reference_logps(
    model: Any, collator: RankingCollator, rankings: Sequence[Ranking], *, batch_prompts: int = 8
) -> list[tuple[float, ...]]:
    """Each ranking's answers' log-probabilities under ``model`` (eval mode, no gradients)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out: list[tuple[float, ...]] = []
    with torch.no_grad():
        for start in range(0, len(rankings), batch_prompts):
            chunk = list(rankings[start : start + batch_prompts])
            batch = collator(chunk)
            logps = sequence_logps(
                model, batch["input_ids"].to(device), batch["attention_mask"].to(device),
                batch["labels"].to(device),
            ).cpu()  # fmt: skip
            at = 0
            for ranking in chunk:
                out.append(tuple(float(x) for x in logps[at : at + len(ranking.answers)]))
                at += len(ranking.answers)
    model.train(was_training)
    return out


def _fingerprint(reference: str, max_length: int, rankings: Sequence[Ranking]) -> str:
    digest = hashlib.sha256(f"{reference}\x00{max_length}".encode())
    for ranking in rankings:
        digest.update(json.dumps([ranking.prompt, ranking.answers], ensure_ascii=False).encode())
    return digest.hexdigest()


def cached_reference_logps(cache: Path | None, key: str, compute: Any) -> list[tuple[float, ...]]:
    """``compute()``'s result, kept in ``cache`` (a JSON file) under ``key``: a resumed job
    with the same reference and rankings reads it instead of running the reference again."""
    if cache is not None and cache.is_file():
        stored = json.loads(cache.read_text())
        if stored.get("key") == key:
            return [tuple(row) for row in stored["logps"]]
    logps = compute()
    if cache is not None:
        # each process of a job computes the same figures; its own partial file keeps two
        # from writing one file at once
        partial = cache.with_name(f"{cache.name}.{os.getpid()}.partial")
        partial.write_text(json.dumps({"key": key, "logps": logps}))
        partial.replace(cache)
    return list(logps)


def evaluate_dpo(
    model: Any, collator: RankingCollator, items: Sequence[DPOItem], config: DPOConfig
) -> DPOEval:
    model.eval()
    device = next(model.parameters()).device
    sums = {"accuracy": 0.0, "margin": 0.0, "chosen_logps": 0.0, "rejected_logps": 0.0}
    pairs, loss_sum, batches = 0, 0.0, 0
    with torch.no_grad():
        for start in range(0, len(items), 8):
            batch = collator(list(items[start : start + 8]))
            batch = {k: v.to(device) for k, v in batch.items()}
            logps = sequence_logps(
                model, batch["input_ids"], batch["attention_mask"], batch["labels"]
            )
            stats = batch_loss(logps, batch, config)
            if stats.pairs:
                for name in sums:
                    sums[name] += float(getattr(stats, name)) * stats.pairs
                pairs += stats.pairs
                loss_sum += float(stats.loss)
                batches += 1
    mean = {name: value / pairs if pairs else math.nan for name, value in sums.items()}
    return DPOEval(
        accuracy=mean["accuracy"], margin=mean["margin"], chosen_logps=mean["chosen_logps"],
        rejected_logps=mean["rejected_logps"], loss=loss_sum / batches if batches else math.nan,
        pairs=pairs,
    )  # fmt: skip


def train_dpo(
    policy: str | Path,
    train: Sequence[Ranking],
    validation: Sequence[Ranking],
    out_dir: Path,
    config: DPOConfig,
    *,
    reference: str | Path | None = None,
    reference_cache: Path | None = None,
    callbacks: Sequence[Any] = (),
    on_step: StepSink | None = None,
    resume: Path | None = None,
    on_data: DataSink | None = None,
) -> tuple[Any, Any, DPOEval]:
    """Train ``policy`` with DPO on ``train`` (whole rankings per batch), against
    ``reference`` (default: the starting policy), validating after each epoch (phase "eval"
    to ``on_step``). Returns the model, its tokenizer and the final validation figures."""
    from transformers import Trainer, set_seed

    check_rankings(train)
    set_seed(config.seed)
    try:
        model, tokenizer = load_causal_lm(policy)
    except ModelLoadError as exc:
        raise DPODataError(str(exc)) from exc
    disable_dropout(model)
    if config.lora is not None:  # after: an adapter dropout asked for is kept
        model = apply_lora(model, config.lora, task="causal")
    max_length = fit_max_length(config.max_length, model)
    collator = RankingCollator(tokenizer, max_length=max_length)
    train, validation, data = prepare_splits(
        functools.partial(prepare_rankings, collator=collator, long_answers=config.long_answers),
        train, validation, what="training rankings", max_length=max_length,
        context=context_length(model.config), error=DPODataError, on_data=on_data,
    )  # fmt: skip

    every = [*train, *validation]
    reference_name = str(reference or policy)

    def run_reference() -> list[tuple[float, ...]]:
        if reference is None or str(reference) == str(policy):
            with adapter_off(model):  # LoRA: the starting policy is the base, adapter off
                return compute_reference_logps(model, collator, every)
        try:
            ref_model, _ = load_causal_lm(reference)
        except ModelLoadError as exc:
            raise DPODataError(f"the reference: {exc}") from exc
        if ref_model.config.vocab_size != model.config.vocab_size:
            raise DPODataError(
                "the reference and the policy have different vocabularies "
                f"({ref_model.config.vocab_size} and {model.config.vocab_size} tokens): the "
                "reference must be the policy's own base or another version of it"
            )
        disable_dropout(ref_model)
        logps = compute_reference_logps(ref_model, collator, every)
        del ref_model
        return logps

    key = _fingerprint(reference_name, max_length, every)
    logps = cached_reference_logps(reference_cache, key, run_reference)
    train_items = [DPOItem(r, lp) for r, lp in zip(train, logps[: len(train)], strict=True)]
    validation_items = [
        DPOItem(r, lp) for r, lp in zip(validation, logps[len(train) :], strict=True)
    ]

    class KwiseDPOTrainer(Trainer):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.sums: dict[str, float] = {}  # the batches' figures since the last log
            self.logged = 0

        def compute_loss(
            self, model: Any, inputs: dict[str, torch.Tensor], return_outputs: bool = False,
            num_items_in_batch: Any = None,
        ) -> Any:  # fmt: skip
            logps = sequence_logps(
                model, inputs["input_ids"], inputs["attention_mask"], inputs["labels"]
            )
            stats = batch_loss(logps, inputs, config)
            if stats.pairs:
                for name in ("accuracy", "margin"):
                    self.sums[name] = self.sums.get(name, 0.0) + float(getattr(stats, name))
                self.logged += 1
            return (stats.loss, {}) if return_outputs else stats.loss

        def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
            if "loss" in logs:  # the batches since the last log, of every process
                sums = {"accuracy": 0.0, "margin": 0.0, **self.sums}
                logs.update(mean_across_processes(self, sums, self.logged))
                self.sums, self.logged = {}, 0
            super().log(logs, *args, **kwargs)

    def epoch_figures() -> dict[str, float]:
        if not validation_items:
            return {}
        return evaluate_dpo(model, collator, validation_items, config).figures()

    seconds = run_trainer(
        model, collator, train_items, lengths=[collator.length(r) for r in train],
        config=config, out_dir=out_dir, evaluate=epoch_figures, on_step=on_step,
        callbacks=callbacks, resume=resume, trainer_class=KwiseDPOTrainer,
    )  # fmt: skip
    result = evaluate_dpo(model, collator, validation_items, config)
    return model, tokenizer, dataclasses.replace(
        result, train_seconds=seconds, left_out=data.left_out, truncated=data.truncated,
        train_rankings=len(train), validation_rankings=len(validation),
        sizes=check_rankings(train),
    )  # fmt: skip
