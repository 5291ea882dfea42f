"""One policy for inputs longer than a model reads (design §10), shared by every trainer.

Prompts are cut from the left (their end, the question and the assistant marker, is what the
model continues). An answer that does not fit even then is either left out (``drop``, the
default, as TRL filters long rows) or cut from the right (``truncate``). What is left out is
counted by reason, in the unit the reason names (answers, rankings, demonstrations, prompts),
so a job can say in its log and metrics what it did not train on and why.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

T = TypeVar("T")

DROP: Final = "drop"
TRUNCATE: Final = "truncate"
LONG_ANSWERS: Final = (DROP, TRUNCATE)


class LeftOut:
    """What a job left out, reason -> count (each reason names its unit)."""

    def __init__(self, reasons: Mapping[str, int] | None = None) -> None:
        self.reasons: Counter[str] = Counter(reasons or {})

    def add(self, reason: str, count: int = 1) -> None:
        if count:
            self.reasons[reason] += count

    def update(self, other: LeftOut | Mapping[str, int]) -> None:
        for reason, count in (other.reasons if isinstance(other, LeftOut) else other).items():
            self.add(reason, count)

    @property
    def total(self) -> int:
        return sum(self.reasons.values())

    def __bool__(self) -> bool:
        return self.total > 0

    def metrics(self) -> dict[str, Any]:
        """``left_out`` and ``left_out_reasons`` for a job's metrics (design §10)."""
        return {"left_out": self.total, "left_out_reasons": dict(self.reasons.most_common())}

    def describe(self) -> str:
        return "; ".join(f"{count:,} {reason}" for reason, count in self.reasons.most_common())


@dataclass(frozen=True)
class DataReport:
    """What a trainer will train on, told before training starts (``on_data``)."""

    train: int  # usable training rows (rankings, demonstrations, prompts)
    validation: int
    left_out: LeftOut = field(default_factory=LeftOut)
    truncated: int = 0  # answers cut from the right to fit


#: called once the data is prepared, before training
DataSink = Callable[[DataReport], None]


def too_long(what: str, max_length: int, *, limit: str = "max_length") -> str:
    """The reason text for rows too long to fit, e.g. "prompts longer than max_prompt_length
    (256 tokens)": every such reason says "longer than", which the advice looks for."""
    return f"{what} longer than {limit} ({max_length:,} tokens)"


def check_policy(long_answers: str, error: type[Exception]) -> None:
    if long_answers not in LONG_ANSWERS:
        raise error(f"long_answers must be one of {', '.join(LONG_ANSWERS)}, not {long_answers!r}")


def cut_text(tokenizer: Any, text: str, tokens: int) -> str:
    """``text`` cut from the right to its first ``tokens`` tokens (as the tokenizer reads it
    alone), at a character boundary of the original, so nothing is re-spelled."""
    if tokens <= 0:
        return ""
    if getattr(tokenizer, "is_fast", False):
        encoded = tokenizer(
            text, add_special_tokens=False, return_offsets_mapping=True, verbose=False
        )
        offsets = encoded["offset_mapping"]
        if len(offsets) <= tokens:
            return text
        return text[: offsets[tokens - 1][1]]
    ids = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
    if len(ids) <= tokens:
        return text
    return str(tokenizer.decode(ids[:tokens]))


def nothing_left_message(
    *, what: str, total: int, max_length: int, context: int | None, left_out: LeftOut,
    option: str = "--max-length",
) -> str:  # fmt: skip
    """The error of a job left with nothing to train on: what was left out of the training
    rows, and what to change (the long-input options when rows were too long)."""
    said = f"None of the {total:,} {what} can be used: {left_out.describe()}."
    if not any("longer than" in reason for reason in left_out.reasons):
        return f"{said} Nothing is left to learn from: add data."
    reads = f"the model reads up to {context:,} tokens" if context else "the model's context"
    return (
        f"{said} Use --long-answers truncate to cut what is too long instead, or raise "
        f"{option} (now {max_length:,}; {reads})."
    )


#: a trainer's long-input step: rows -> (rows kept, what was left out, how many were cut)
Prepare = Callable[[Sequence[T]], tuple[list[T], LeftOut, int]]


def prepare_splits(
    prepare: Prepare[T], train: Sequence[T], validation: Sequence[T], *, what: str,
    max_length: int, context: int | None, error: type[Exception],
    on_data: DataSink | None = None, option: str = "--max-length",
) -> tuple[list[T], list[T], DataReport]:  # fmt: skip
    """Both splits through ``prepare``; raises ``error`` (naming the options to change) when no
    training row is left, else tells ``on_data`` what will be trained on before training."""
    kept, left_out, cut = prepare(train)
    if not kept:
        raise error(
            nothing_left_message(
                what=what,
                total=len(train),
                max_length=max_length,
                context=context,
                left_out=left_out,
                option=option,
            )
        )
    held, held_left_out, held_cut = prepare(validation)
    left_out.update(held_left_out)
    report = DataReport(len(kept), len(held), left_out, cut + held_cut)
    if on_data is not None:
        on_data(report)
    return kept, held, report
