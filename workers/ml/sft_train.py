"""Supervised fine-tuning on demonstrations, on ``transformers.Trainer``.

Each example is the prompt's ids exactly as generation builds them (``encode_prompt``), then
the answer's ids and EOS. The loss is the causal-LM loss on the answer tokens only: the prompt
and the padding get the label -100, which the model's loss ignores. Long prompts lose their
start (left truncation), so the answer, the part the model learns, is never cut.

Decision: the ``transformers`` Trainer with this collator rather than TRL's ``SFTTrainer``. The
prompt must be laid out by our ``format_prompt``, the one function generation, RM and PPO use;
``SFTTrainer`` renders prompts its own way (its chat template handling), which could drift from
what the policy is later sampled with, and it would make TRL a runtime dependency.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from app.dialogue import PromptInput
from workers.ml.loading import ModelLoadError, load_causal_lm
from workers.ml.long_inputs import (
    DROP,
    DataSink,
    LeftOut,
    check_policy,
    prepare_splits,
    too_long,
)
from workers.ml.lora import apply_lora
from workers.ml.sampling import encode_prompt
from workers.ml.training import (
    StepSink,
    TrainConfig,
    context_length,
    fit_max_length,
    run_trainer,
)

IGNORE = -100


class SftDataError(ValueError):
    """Demonstrations SFT cannot train on; the message says which and why."""


@dataclass(frozen=True)
class Example:
    prompt: PromptInput
    completion: str


@dataclass(frozen=True)
class SftEval:
    loss: float  # mean cross-entropy per answer token on validation (nan without validation)
    tokens: int  # answer tokens it was computed on
    train_seconds: float = 0.0
    left_out: LeftOut = field(default_factory=LeftOut)  # train and validation
    truncated: int = 0  # demonstrations cut to fit (--long-answers truncate)
    train_examples: int = 0  # after what was left out
    validation_examples: int = 0

    @property
    def perplexity(self) -> float:
        return math.exp(self.loss) if math.isfinite(self.loss) and self.loss < 50 else math.nan


class CompletionCollator:
    """Right-padded batches whose labels are the answer tokens (prompt and padding: -100)."""

    def __init__(self, tokenizer: Any, *, max_length: int) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length
        if tokenizer.eos_token_id is None:
            raise SftDataError("the tokenizer has no EOS token: the model could not learn to stop")
        self.pad_id = (
            tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        )

    def answer_ids(self, example: Example) -> list[int]:
        ids = self.tokenizer(example.completion, add_special_tokens=False, verbose=False)[
            "input_ids"
        ]
        return [*ids, self.tokenizer.eos_token_id]

    def answer_too_long(self, example: Example) -> bool:
        return len(self.answer_ids(example)) >= self.max_length  # at least 1 prompt token

    def encode(self, example: Example) -> tuple[list[int], list[int]]:
        """Prompt ids cut from the left, then the answer and EOS. An answer that does not fit
        (``--long-answers truncate``) is cut from the right, losing its EOS: the model is not
        taught to stop where the cut fell."""
        answer = self.answer_ids(example)[: self.max_length - 1]
        prompt = encode_prompt(self.tokenizer, example.prompt)
        prompt = prompt[-(self.max_length - len(answer)) :]
        return [*prompt, *answer], [IGNORE] * len(prompt) + answer

    def __call__(self, batch: Sequence[Example]) -> dict[str, torch.Tensor]:
        return pad_rows([self.encode(example) for example in batch], self.pad_id)


def pad_rows(rows: Sequence[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Encoded rows (ids, labels) right-padded: ``input_ids``, ``attention_mask`` and
    ``labels`` (IGNORE in the padding)."""
    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (ids, target) in enumerate(rows):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        labels[i, : len(ids)] = torch.tensor(target)
        mask[i, : len(ids)] = 1
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}


def prepare_examples(
    examples: Sequence[Example], collator: CompletionCollator, *, long_answers: str = DROP
) -> tuple[list[Example], LeftOut, int]:
    """The demonstrations that fit ``collator.max_length`` (at least one prompt token beside
    the answer and EOS), what was left out and how many were cut: a longer one is left out
    (``drop``) or kept and cut from the right by the collator (``truncate``)."""
    check_policy(long_answers, SftDataError)
    left_out, kept, cut = LeftOut(), [], 0
    for example in examples:
        if collator.answer_too_long(example):
            if long_answers == DROP:
                left_out.add(too_long("demonstrations", collator.max_length))
                continue
            cut += 1
        kept.append(example)
    return kept, left_out, cut


def check_examples(examples: Sequence[Example]) -> None:
    if not examples:
        raise SftDataError(
            "there are no demonstrations to train on: write some (the labeler's "
            "'Write an answer' task) or import prompt/completion rows"
        )


def evaluate_sft(model: Any, collator: CompletionCollator, examples: Sequence[Example]) -> SftEval:
    """Token-weighted cross-entropy on the answers of ``examples``."""
    model.eval()
    device = next(model.parameters()).device
    total, tokens = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(examples), 16):
            batch = collator(examples[start : start + 16])
            batch = {k: v.to(device) for k, v in batch.items()}
            logits = model(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
            ).logits
            target = batch["labels"][:, 1:]
            loss = torch.nn.functional.cross_entropy(
                logits[:, :-1].float().transpose(1, 2), target, ignore_index=IGNORE,
                reduction="sum",
            )  # fmt: skip
            total += float(loss)
            tokens += int((target != IGNORE).sum())
    return SftEval(loss=total / tokens if tokens else math.nan, tokens=tokens)


def train_sft(
    base: str | Path,
    train: Sequence[Example],
    validation: Sequence[Example],
    out_dir: Path,
    config: TrainConfig,
    *,
    callbacks: Sequence[Any] = (),
    on_step: StepSink | None = None,
    resume: Path | None = None,
    on_data: DataSink | None = None,
) -> tuple[Any, Any, SftEval]:
    """Fine-tune ``base`` on ``train``; validation loss after each epoch goes to ``on_step``
    (phase "eval"). Returns the model, its tokenizer and the final validation figures."""
    from transformers import set_seed

    check_examples(train)
    set_seed(config.seed)
    try:
        model, tokenizer = load_causal_lm(base)
    except ModelLoadError as exc:
        raise SftDataError(str(exc)) from exc
    if config.lora is not None:
        model = apply_lora(model, config.lora, task="causal")
    max_length = fit_max_length(config.max_length, model)
    collator = CompletionCollator(tokenizer, max_length=max_length)
    train, validation, data = prepare_splits(
        functools.partial(prepare_examples, collator=collator, long_answers=config.long_answers),
        train, validation, what="training demonstrations", max_length=max_length,
        context=context_length(model.config), error=SftDataError, on_data=on_data,
    )  # fmt: skip

    def epoch_figures() -> dict[str, float]:
        if not validation:
            return {}
        figures = evaluate_sft(model, collator, validation)
        return {"loss": figures.loss, "perplexity": figures.perplexity}

    seconds = run_trainer(
        model, collator, train, lengths=[len(collator.encode(e)[0]) for e in train],
        config=config, out_dir=out_dir, evaluate=epoch_figures, on_step=on_step,
        callbacks=callbacks, resume=resume,
    )  # fmt: skip
    result = evaluate_sft(model, collator, validation)
    return model, tokenizer, SftEval(
        loss=result.loss, tokens=result.tokens, train_seconds=seconds, left_out=data.left_out,
        truncated=data.truncated, train_examples=len(train), validation_examples=len(validation),
    )  # fmt: skip
