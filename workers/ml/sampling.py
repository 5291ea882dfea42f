"""Sampling K answers per prompt with Hugging Face ``generate`` (the generation step).

Design (see design.md §5): one batched ``generate`` call per batch of prompts with
``num_return_sequences=K``, so the prompt is encoded once for its K answers; left padding with an
explicit attention mask, because a decoder continues from the last position and pad tokens must
never be attended to; pure sampling by default (temperature 1, top_k 0, top_p 1) so the K answers
cover the model's real distribution, which is what labelers rank and what the RM learns from.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch

from app.dialogue import PromptInput
from workers.ml.formatting import format_prompt

MAX_NEW_TOKENS_LIMIT = 4096

_T = TypeVar("_T")


@dataclass
class SamplingParams:
    """Decoding settings, stored with each completion so a result can be reproduced.

    ``temperature=0`` means greedy decoding; ``top_k=0`` and ``top_p=1`` turn those filters off.
    """

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 64
    seed: int | None = None

    def __post_init__(self) -> None:
        if not self.temperature >= 0:  # also rejects NaN
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 = off), got {self.top_k}")
        if not 1 <= self.max_new_tokens <= MAX_NEW_TOKENS_LIMIT:
            raise ValueError(
                f"max_new_tokens must be in 1..{MAX_NEW_TOKENS_LIMIT}, got {self.max_new_tokens}"
            )

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


@dataclass
class SampleResult:
    """Answers per prompt (same order as the input), with what the caller needs for throughput.

    ``answers[i]`` holds the K answers of ``prompts[i]``; ``token_counts[i][j]`` the number of new
    tokens generated for ``answers[i][j]`` (up to and including EOS, never padding).
    ``truncated_prompts`` counts prompts whose beginning was cut to fit the context.
    """

    answers: list[list[str]]
    token_counts: list[list[int]]
    truncated_prompts: int = 0
    seconds: float = 0.0
    params: SamplingParams = field(default_factory=SamplingParams)

    @property
    def new_tokens(self) -> int:
        return sum(sum(row) for row in self.token_counts)

    @property
    def tokens_per_second(self) -> float:
        return self.new_tokens / self.seconds if self.seconds > 0 else 0.0


def _context_length(model: Any) -> int | None:
    config = model.config
    for name in ("n_positions", "max_position_embeddings"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _prompt_budget(model: Any, params: SamplingParams, max_prompt_tokens: int | None) -> int | None:
    """Most prompt tokens that still leave room for ``max_new_tokens`` in the context."""
    budget = max_prompt_tokens
    context = _context_length(model)
    if context is not None:
        room = context - params.max_new_tokens
        budget = room if budget is None else min(budget, room)
    if budget is not None and budget < 1:
        raise ValueError(
            f"no room for a prompt: context {context}, max_new_tokens {params.max_new_tokens}"
        )
    return budget


def encode_prompt(tokenizer: Any, prompt: PromptInput) -> list[int]:
    """The token ids a model continues to answer ``prompt``: generation samples after them and
    SFT trains on the answer after them, so both see the same ids."""
    # A rendered chat template already holds its special tokens (e.g. BOS); adding them again
    # would give the model an input it never saw in training.
    add_special = not getattr(tokenizer, "chat_template", None)
    text = format_prompt(tokenizer, prompt)
    return list(tokenizer(text, add_special_tokens=add_special, verbose=False)["input_ids"])


def _encode_prompts(
    tokenizer: Any, prompts: Sequence[PromptInput], budget: int | None
) -> tuple[list[list[int]], int]:
    """Format and tokenize each prompt, keeping its *last* ``budget`` tokens.

    Left truncation keeps the end of the prompt (the question and the assistant marker the model
    must continue from); cutting the end instead would make the model continue mid-prompt.
    """
    encoded: list[list[int]] = []
    truncated = 0
    for prompt in prompts:
        ids = encode_prompt(tokenizer, prompt)
        if budget is not None and len(ids) > budget:
            ids = ids[-budget:]
            truncated += 1
        encoded.append(ids)
    return encoded, truncated


def _left_pad(rows: Sequence[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad to a rectangle; the attention mask marks real tokens (never inferred from ids)."""
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            input_ids[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
            mask[i, width - len(row) :] = 1
    return input_ids, mask


def _eos_ids(model: Any, tokenizer: Any) -> list[int]:
    eos = getattr(model.generation_config, "eos_token_id", None)
    if eos is None:
        eos = tokenizer.eos_token_id
    if eos is None:
        return []
    return [int(e) for e in eos] if isinstance(eos, Iterable) else [int(eos)]


def _pad_id(tokenizer: Any, eos_ids: list[int]) -> int:
    if tokenizer.pad_token_id is not None:
        return int(tokenizer.pad_token_id)
    if eos_ids:
        return eos_ids[0]
    raise ValueError("tokenizer has neither a pad nor an eos token")


def _generated_length(row: list[int], eos_ids: list[int]) -> int:
    """New tokens up to and including the first EOS (what follows is padding)."""
    for i, token in enumerate(row):
        if token in eos_ids:
            return i + 1
    return len(row)


def _generate_kwargs(
    params: SamplingParams, k: int, pad_id: int, eos_ids: list[int]
) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        # Greedy decoding gives k identical answers, and transformers 5 rejects
        # num_return_sequences > 1 without sampling: decode once, copy (see _repeat_greedy).
        "num_return_sequences": 1 if params.greedy else k,
        "max_new_tokens": params.max_new_tokens,
        "do_sample": not params.greedy,
        "pad_token_id": pad_id,
        "eos_token_id": eos_ids or None,
    }
    if not params.greedy:
        # Passed explicitly even at their "off" values: transformers 5 fills unset ones with its
        # own defaults (top_k=50), and a checkpoint's generation_config may set others.
        kwargs.update(temperature=params.temperature, top_p=params.top_p, top_k=params.top_k)
    return kwargs


def _run_generate(
    model: Any,
    tokenizer: Any,
    rows: Sequence[list[int]],
    kwargs: dict[str, Any],
    eos_ids: list[int],
) -> tuple[list[str], list[int]]:
    """One ``generate`` call; returns decoded new text and new-token counts, row-major."""
    input_ids, mask = _left_pad(rows, kwargs["pad_token_id"])
    device = model.device
    out = model.generate(input_ids=input_ids.to(device), attention_mask=mask.to(device), **kwargs)
    new = out[:, input_ids.shape[1] :].tolist()
    lengths = [_generated_length(row, eos_ids) for row in new]
    texts = [
        tokenizer.decode(row[:n], skip_special_tokens=True).strip()
        for row, n in zip(new, lengths, strict=True)
    ]
    return texts, lengths


def _repeat_greedy(items: list[_T], k: int) -> list[_T]:
    """Copy each greedy answer k times, laid out as ``num_return_sequences=k`` would lay it out."""
    return [item for item in items for _ in range(k)]


class _EvalMode:
    """Switch off dropout while sampling and restore the caller's mode (PPO's actor trains)."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.was_training = bool(model.training)

    def __enter__(self) -> None:
        self.model.eval()

    def __exit__(self, *exc: object) -> None:
        self.model.train(self.was_training)


def sample_answers(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[PromptInput],
    *,
    k: int,
    params: SamplingParams,
    batch_size: int = 8,
    max_prompt_tokens: int | None = None,
) -> SampleResult:
    """Sample ``k`` answers for each prompt, ``batch_size`` prompts per ``generate`` call.

    Prompts are formatted with :func:`format_prompt` (the layout SFT/RM/PPO also use),
    left-truncated to leave room for ``max_new_tokens`` in the context (and to
    ``max_prompt_tokens`` when given), and left-padded with an explicit attention mask. Answers are
    the decoded new tokens only, special tokens skipped, stripped; empty or duplicate answers are
    kept here (see :func:`dedupe_answers`) so the counts match what was generated.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if params.seed is not None:
        torch.manual_seed(params.seed)
    eos_ids = _eos_ids(model, tokenizer)
    kwargs = _generate_kwargs(params, k, _pad_id(tokenizer, eos_ids), eos_ids)
    encoded, truncated = _encode_prompts(
        tokenizer, prompts, _prompt_budget(model, params, max_prompt_tokens)
    )

    answers: list[list[str]] = []
    counts: list[list[int]] = []
    start = time.perf_counter()
    with _EvalMode(model), torch.inference_mode():
        for b in range(0, len(encoded), batch_size):
            texts, lengths = _run_generate(
                model, tokenizer, encoded[b : b + batch_size], kwargs, eos_ids
            )
            if params.greedy:
                texts, lengths = _repeat_greedy(texts, k), _repeat_greedy(lengths, k)
            # generate returns the k sequences of each prompt next to each other.
            for i in range(0, len(texts), k):
                answers.append(texts[i : i + k])
                counts.append(lengths[i : i + k])
    seconds = time.perf_counter() - start
    return SampleResult(answers, counts, truncated, seconds, params)


def naive_sample(
    model: Any, tokenizer: Any, prompts: Sequence[PromptInput], *, k: int, params: SamplingParams
) -> SampleResult:
    """The obvious loop: one ``generate`` call per answer. Baseline for the benchmark only."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if params.seed is not None:
        torch.manual_seed(params.seed)
    eos_ids = _eos_ids(model, tokenizer)
    kwargs = _generate_kwargs(params, 1, _pad_id(tokenizer, eos_ids), eos_ids)
    encoded, truncated = _encode_prompts(tokenizer, prompts, _prompt_budget(model, params, None))

    answers: list[list[str]] = []
    counts: list[list[int]] = []
    start = time.perf_counter()
    with _EvalMode(model), torch.inference_mode():
        for ids in encoded:
            row_texts: list[str] = []
            row_counts: list[int] = []
            for _ in range(k):
                texts, lengths = _run_generate(model, tokenizer, [ids], kwargs, eos_ids)
                row_texts.append(texts[0])
                row_counts.append(lengths[0])
            answers.append(row_texts)
            counts.append(row_counts)
    seconds = time.perf_counter() - start
    return SampleResult(answers, counts, truncated, seconds, params)


def dedupe_answers(answers: list[str], existing: set[str]) -> list[str]:
    """Drop empty answers and duplicates (of each other or of ``existing``), keeping order.

    Labelers cannot rank two identical answers against each other, and an identical pair teaches
    the RM nothing, so duplicates are removed before completions are stored. NUL characters
    (which byte-level tokenizers can decode to, and which Postgres cannot store) are removed
    first: they are never text a labeler could read.
    """
    seen = set(existing)
    kept: list[str] = []
    for answer in answers:
        answer = answer.replace("\x00", "")
        if not answer.strip() or answer in seen:
            continue
        seen.add(answer)
        kept.append(answer)
    return kept
