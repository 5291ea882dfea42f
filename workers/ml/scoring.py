"""Scoring stored answers with a reward model (``rlhf score`` and the RM judge), no database.

The scores are the ones PPO reads (``RewardModelScorer``: the prompt through
``format_prompt``, then the answer and EOS, cut from the left so the answer is never cut).
An answer that does not fit even with its whole prompt cut away follows the long-input
policy of every trainer (``long_inputs``): left out and counted (``drop``) or cut from the
right (``truncate``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from app.dialogue import PromptInput
from workers.ml.long_inputs import DROP, LeftOut, check_policy, cut_text, too_long
from workers.ml.reward_model import RewardModelError


@dataclass(frozen=True)
class Answer:
    key: int  # the completion id
    prompt: PromptInput
    text: str


class AnswerScorer:
    """A reward model folder that scores answers to their prompts, ``batch_size`` at a time."""

    def __init__(
        self, path: str | Path, *, max_length: int, batch_size: int, long_answers: str = DROP
    ) -> None:
        from workers.ml.ppo import RewardModelScorer

        check_policy(long_answers, RewardModelError)
        try:
            self.scorer = RewardModelScorer(path, max_length=max_length, batch_size=batch_size)
        except OSError as exc:  # a folder whose weights are missing or unreadable
            raise RewardModelError(f"Cannot load the reward model at {str(path)!r}: {exc}") from exc
        self.long_answers = long_answers
        self.scorer.to(torch.device("cuda" if torch.cuda.is_available() else "cpu"))

    @property
    def max_length(self) -> int:
        """Tokens of prompt and answer, as read (capped at the model's context)."""
        return int(self.scorer.collator.max_length)

    def fit(self, answers: Sequence[Answer]) -> tuple[list[Answer], LeftOut, int]:
        """The answers that can be scored (cut from the right with ``truncate``), what was
        left out, and how many were cut."""
        tokenizer, budget = self.scorer.tokenizer, self.scorer.collator.answer_budget
        sizes = (
            tokenizer([a.text for a in answers], add_special_tokens=False, verbose=False)[
                "input_ids"
            ]
            if answers
            else []
        )
        kept, left_out, cut = [], LeftOut(), 0
        for answer, ids in zip(answers, sizes, strict=True):
            if len(ids) <= budget:
                kept.append(answer)
            elif self.long_answers == DROP:
                left_out.add(too_long("answers", self.max_length))
            else:
                kept.append(replace(answer, text=cut_text(tokenizer, answer.text, budget)))
                cut += 1
        return kept, left_out, cut

    def __call__(self, answers: Sequence[Answer]) -> dict[int, float]:
        """Completion id -> score of answers that fit (see ``fit``)."""
        if not answers:
            return {}
        scores = self.scorer([a.prompt for a in answers], [a.text for a in answers])
        return {a.key: float(s) for a, s in zip(answers, scores.tolist(), strict=True)}
