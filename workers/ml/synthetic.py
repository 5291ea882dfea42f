"""Synthetic data with a known rule, for tests and benchmarks: an answer that says "please"
(more often) is better. A tiny model can learn the rule in seconds, so a test can tell a
reward model or a PPO run that learns from one that does not."""

from __future__ import annotations

import random

from workers.ml.rm_train import Ranking

WORDS = [
    "the",
    "cat",
    "sat",
    "on",
    "a",
    "mat",
    "and",
    "then",
    "it",
    "ran",
    "to",
    "see",
    "some",
    "dog",
    "by",
    "old",
    "red",
    "tree",
]
TARGET = "please"


def corpus() -> list[str]:
    """Text to train a tiny tokenizer on: every word the generators use."""
    return [" ".join([*WORDS, TARGET, "Question", "User:", "Assistant:"])] * 40


def prompts(n: int, *, seed: int) -> list[str]:
    rng = random.Random(seed)  # noqa: S311 - test data, not secrets
    return [f"Question {i}: " + " ".join(rng.choices(WORDS, k=5)) for i in range(n)]


def answer(rng: random.Random, count: int, *, words: tuple[int, int] = (4, 9)) -> str:
    """Random words with ``count`` times "please" among them."""
    out = rng.choices(WORDS, k=rng.randint(*words))
    for _ in range(count):
        out.insert(rng.randrange(len(out) + 1), TARGET)
    return " ".join(out)


def please_rankings(n: int, *, seed: int, k: int = 4, strict: bool = False) -> list[Ranking]:
    """``strict``: answer j says "please" j times (a distinct count each, more is better, all
    C(K,2) pairs count). Otherwise half the answers say it once and tie for best."""
    rng = random.Random(seed)  # noqa: S311 - test data, not secrets
    out = []
    for question in prompts(n, seed=seed + 7919):
        if strict:
            counts = list(range(k))
            rng.shuffle(counts)
            answers = [answer(rng, c, words=(6, 12)) for c in counts]
            out.append(Ranking(question, answers, [k - 1 - c for c in counts]))
        else:
            polite = [i < k // 2 for i in range(k)]
            rng.shuffle(polite)
            answers = [answer(rng, int(p)) for p in polite]
            out.append(Ranking(question, answers, [0 if p else 1 for p in polite]))
    return out
