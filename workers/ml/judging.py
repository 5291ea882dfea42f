"""An AI judge's ranking of a prompt's answers (``rlhf judge``, design §14), no database.

- **Endpoint judge**: an LLM behind an OpenAI-compatible server (the client generation
  uses, ``openai_backend``) reads the question and the answers labelled [A], [B], ... in the
  order shown, and ends its reply with one line ``Ranking: B > A = C > D``. Parsing is
  strict: that line must be the reply's last, name every label exactly once with only
  ``>`` (better) and ``=`` (as good) between them. An unparsable reply is asked again once,
  with the reply and a short reminder as the next turns; a second miss leaves the prompt out.
- **Reward-model judge**: the answers ranked by score, adjacent scores within a tolerance
  tied (so a chain of close scores is one group).

Rankings are groups best first, of indices into the answers as shown (the job maps them to
completion ids); the order shown is random, seeded by prompt and judge, and recorded.
"""

from __future__ import annotations

import random
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from app.dialogue import Message, PromptInput
from workers.ml.openai_backend import BackendError, OpenAIBackend, sample_openai
from workers.ml.sampling import SamplingParams

LABELS: Final = string.ascii_uppercase
#: the reply's last line: "Ranking:" (any case), then labels between > and =; markdown
#: emphasis or code marks around the line or its prefix are not part of the ranking
_RANKING_LINE: Final = re.compile(r"^[*`_\s]*ranking[*`_\s]*:[*`_\s]*(?P<body>.*?)[*`_\s.]*$", re.I)
_LABEL: Final = re.compile(r"^(?:\[(?P<bracketed>[A-Z])\]|(?P<bare>[A-Z]))$")


def answer_labels(k: int) -> list[str]:
    if not 1 <= k <= len(LABELS):
        raise ValueError(f"a judge ranks 1 to {len(LABELS)} answers, not {k}")
    return list(LABELS[:k])


def display_order(ids: Sequence[int], *, prompt_id: int, judge: str) -> list[int]:
    """The answers in the order the judge sees them: shuffled with a seed of the prompt and
    the judge (so a rerun shows the same order, and two judges different ones), as
    labelers get a per-labeler random order (design §4): a judge's bias for the first
    answer it reads is spread over the answers instead of always favouring one."""
    shown = sorted(ids)
    random.Random(f"{judge}#{prompt_id}").shuffle(shown)  # noqa: S311 - not a secret
    return shown


def _example(labels: Sequence[str]) -> str:
    """A ranking line of these labels, to show the form (not a suggested order)."""
    if len(labels) == 1:
        return f"Ranking: {labels[0]}"
    order = [labels[1], labels[0], *labels[2:]]
    ops = [" > " if i % 2 == 0 else " = " for i in range(len(order) - 1)]
    return "Ranking: " + "".join(label + op for label, op in zip(order, [*ops, ""], strict=True))


def judge_prompt(question: str, answers: Sequence[str]) -> str:
    """What the judge reads: the question, the answers labelled in the order shown, and how
    to reply."""
    labels = answer_labels(len(answers))
    shown = "\n\n".join(f"[{label}]\n{text}" for label, text in zip(labels, answers, strict=True))
    listed = ", ".join(labels)
    return (
        f"You are rating answers to a question. Read the question and the {len(answers)} "
        "answers, then rank the answers from best to worst: helpful, truthful and harmless "
        "answers first.\n\n"
        f"Question:\n{question}\n\n"
        f"Answers:\n\n{shown}\n\n"
        f"Rank all {len(answers)} answers. You may explain briefly first. Then end your reply "
        f"with one line that names each of {listed} exactly once, best first, with > between "
        "an answer and a worse one and = between answers that are equally good, for example "
        f"(the form only, not the order):\n{_example(labels)}"
    )


def reminder(labels: Sequence[str]) -> str:
    """The second ask, after a reply the parser could not read."""
    return (
        "Your reply did not end with a ranking line I can read. Reply with one line only: "
        f"'Ranking:' then each of {', '.join(labels)} exactly once, with only > or = between "
        f"them, for example:\n{_example(labels)}"
    )


def parse_ranking(reply: str, labels: Sequence[str]) -> list[list[int]] | None:
    """The ranking in the reply's last line as groups of answer indices, best first; None
    when that line is not a ranking of exactly these labels."""
    lines = [line for line in reply.splitlines() if line.strip()]
    if not lines:
        return None
    match = _RANKING_LINE.match(lines[-1])
    if match is None:
        return None
    tokens = re.split(r"\s*([>=])\s*", match.group("body").strip())
    names, ops = tokens[0::2], tokens[1::2]
    found = [_LABEL.match(name) for name in names]
    picked = [m.group("bracketed") or m.group("bare") for m in found if m is not None]
    if len(picked) != len(names) or sorted(picked) != sorted(labels):
        return None  # a label missing, repeated or unknown, or something that is not one
    index = {label: i for i, label in enumerate(labels)}
    groups = [[index[picked[0]]]]
    for op, label in zip(ops, picked[1:], strict=True):
        if op == ">":
            groups.append([])
        groups[-1].append(index[label])
    return groups


def rank_by_score(scores: Sequence[tuple[int, float]], tolerance: float) -> list[list[int]]:
    """(key, score) pairs as groups best first: sorted by score, and an answer within
    ``tolerance`` of the next better one tied with it."""
    ordered = sorted(scores, key=lambda item: (-item[1], item[0]))
    groups: list[list[int]] = []
    previous = None
    for key, score in ordered:
        if previous is None or previous - score > tolerance:
            groups.append([])
        groups[-1].append(key)
        previous = score
    return groups


@dataclass
class Verdict:
    """A judge's answer for one prompt: the ranking (None when unparsable after the retry)
    and the replies it read."""

    ranking: list[list[int]] | None
    replies: list[str] = field(default_factory=list)


class EndpointJudge:
    """Asks an OpenAI-compatible endpoint to rank answers; ``requests`` counts what was
    sent, ``answered`` what came back (0 after a failure: the endpoint was never reached),
    ``retries`` the prompts asked a second time."""

    def __init__(self, backend: OpenAIBackend, *, max_tokens: int, temperature: float) -> None:
        self.backend = backend
        self.params = SamplingParams(temperature=temperature, max_new_tokens=max_tokens)
        self.requests = 0
        self.answered = 0
        self.retries = 0

    def _ask(self, prompt: PromptInput) -> str:
        self.requests += 1
        try:
            result = sample_openai(self.backend, [prompt], k=1, params=self.params)
        except (ValueError, AttributeError, TypeError) as exc:  # not JSON, not the OpenAI form
            raise BackendError(
                f"{self.backend.base_url} answered something that is not an OpenAI-style "
                f"reply ({type(exc).__name__}: {exc})"
            ) from exc
        self.answered += 1
        replies = result.answers[0] if result.answers else []
        return replies[0] if replies else ""

    def rank(self, question: str, answers: Sequence[str]) -> Verdict:
        """Raises ``BackendError`` when a request fails (refused, timed out, an HTTP error)."""
        labels = answer_labels(len(answers))
        first = judge_prompt(question, answers)
        reply = self._ask(first)
        ranking = parse_ranking(reply, labels)
        if ranking is not None:
            return Verdict(ranking, [reply])
        turns: list[Message] = [
            {"role": "user", "content": first},
            {"role": "assistant", "content": reply},
            {"role": "user", "content": reminder(labels)},
        ]
        self.retries += 1
        again = self._ask(turns)
        return Verdict(parse_ranking(again, labels), [reply, again])
