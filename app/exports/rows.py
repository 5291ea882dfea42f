"""Export rows, streamed: the database is read with a server-side cursor in batches of
prompts, and rows come out one by one in a stable order (prompt id, then comparison id, then
the ranking's own order), so the same data and options give the same files.

Each row comes with its split. Splits go by prompt submitter (InstructGPT): a submitter's
prompts are all in train or all in validation, decided by a hash of (seed, submitter), so the
split is stable as the data grows. A prompt with no known submitter is its own group.

Rows are in TRL's standard format (texts) or its conversational one (design §11: prompts as
lists of messages, answers as one assistant message; K-wise completions stay texts), the same
for every row of an export: :func:`row_format` decides which before the first row.
"""

from __future__ import annotations

import hashlib
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Select, Text, and_, cast, select
from sqlalchemy.orm import Session

from app.agreement.service import consensus_of, labeler_key, not_ai_rated
from app.db import day_bounds, within_days
from app.dialogue import Message, as_messages
from app.exports.options import ExportOptions
from app.exports.writers import EncodedRow, json_value
from app.labeling.models import (
    Comparison,
    Completion,
    Demonstration,
    GoldRanking,
    Prompt,
    is_ai_rater,
)
from app.labeling.ranking import ordered_pairs
from app.projects.models import Project
from app.review.models import not_rejected_comparison, not_rejected_demonstration

BATCH_PROMPTS = 2000
TRAIN, VALIDATION = "train", "validation"
SPLITS = (TRAIN, VALIDATION)

Row = dict[str, Any]
#: A kind's rows with their splits (a generator: :func:`row_format` stops one early).
Rows = Generator[tuple[str, Row], None, None]
#: A prompt or an answer as a row holds it: a text, or messages (conversational rows).
RowText = str | list[Message]

#: A dialogue prompt: its messages are a JSON array. A string prompt's are SQL NULL, or JSON
#: null where an insert passed None (the JSON type writes Python None as JSON null).
IS_DIALOGUE = and_(Prompt.messages.is_not(None), cast(Prompt.messages, Text) != "null")


@dataclass(frozen=True)
class RowShape:
    """How a kind's rows are made: prompts and answers as messages (``conversational``) or
    texts; ``dialogues_only`` reads dialogue prompts only (:func:`row_format` looks ahead)."""

    conversational: bool = False
    dialogues_only: bool = False


STANDARD = RowShape()


def prompt_value(text: str, messages: list[Any] | None, *, conversational: bool) -> RowText:
    """A prompt as a row holds it: its turns in a conversational export (a string prompt is
    one user message), else its text (a dialogue's plain rendering)."""
    if not conversational:
        return text
    return as_messages(messages if messages is not None else text)


def answer_value(text: str, *, conversational: bool) -> RowText:
    """An answer (a chosen, rejected or SFT completion) as a row holds it."""
    return [{"role": "assistant", "content": text}] if conversational else text


def split_of(key: str, *, seed: int, ratio: float) -> str:
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return VALIDATION if int.from_bytes(digest[:8], "big") / 2**64 < ratio else TRAIN


def submitter_group(prompt_id: int, submitter_id: int | None, external: str | None) -> str:
    if submitter_id is not None:
        return f"user:{submitter_id}"
    if external:
        return f"external:{external}"
    return f"prompt:{prompt_id}"


def prompt_agreement(rankings: Sequence[Sequence[Sequence[int]]]) -> float | None:
    """Pairwise agreement among a prompt's rankings (pairs tied by either left out), or None
    with fewer than two rankings or no pair ordered by two of them."""
    places = [{a: i for i, group in enumerate(r) for a in group} for r in rankings]
    agreed = counted = 0
    for x in range(len(places)):
        for y in range(x + 1, len(places)):
            first, second = places[x], places[y]
            common = sorted(first.keys() & second.keys())
            for i, a in enumerate(common):
                for b in common[i + 1 :]:
                    d1, d2 = first[a] - first[b], second[a] - second[b]
                    if d1 and d2:
                        counted += 1
                        agreed += (d1 > 0) == (d2 > 0)
    return agreed / counted if counted else None


#: Where a pairwise row comes from (design §13): a ranking made here, a rewrite (preferred
#: over the answer it rewrites), an imported preference (an external labeler's) or an AI
#: judge's ranking (``ai:<name>``, design §14; exported only when asked).
SOURCE_RANKING, SOURCE_REWRITE, SOURCE_IMPORT, SOURCE_AI = "ranking", "rewrite", "import", "ai"


@dataclass(frozen=True)
class RewriteOf:
    """A labeler's rewrite of an answer they ranked first, sent with their ranking."""

    completion_id: int
    text: str


@dataclass
class Ranked:
    comparison_id: int
    labeler: str
    displayed: list[int]
    ranking: list[list[int]]
    is_surplus: bool
    created_at: datetime
    source: str = SOURCE_RANKING
    assignment_id: int | None = None
    rewrite: RewriteOf | None = None


@dataclass
class PromptData:
    id: int
    prompt: RowText
    split: str
    answers: dict[int, str] = field(default_factory=dict)
    rankings: list[Ranked] = field(default_factory=list)


def human_agreement(rankings: Sequence[Ranked]) -> float | None:
    """A prompt's agreement among its rankings by people and imports: an AI judge's are no
    labeler's, whether they are exported or not (design §14)."""
    return prompt_agreement([r.ranking for r in rankings if r.source != SOURCE_AI])


SelectT = TypeVar("SelectT", bound="Select[*tuple[Any, ...]]")


def _prompt_filter(stmt: SelectT, options: ExportOptions, shape: RowShape) -> SelectT:
    """The prompts the options select (gold), dialogues only if the shape says so."""
    if shape.dialogues_only:
        stmt = stmt.where(IS_DIALOGUE)
    gold = select(GoldRanking.prompt_id)
    if options.gold == "exclude":
        return stmt.where(Prompt.id.not_in(gold))
    if options.gold == "only":
        return stmt.where(Prompt.id.in_(gold))
    return stmt


class _Splitter:
    def __init__(self, options: ExportOptions) -> None:
        self.options = options
        self._seen: dict[str, str] = {}

    def __call__(self, prompt_id: int, submitter_id: int | None, external: str | None) -> str:
        key = submitter_group(prompt_id, submitter_id, external)
        split = self._seen.get(key)
        if split is None:
            split = split_of(key, seed=self.options.seed, ratio=self.options.validation_ratio)
            if submitter_id is not None or external:  # a prompt's own group is not reused
                self._seen[key] = split
        return split


def _ranked_prompts(
    session: Session, project: Project, options: ExportOptions, shape: RowShape
) -> Iterator[PromptData]:
    """The project's prompts with their current rankings, in prompt id order, a batch of
    prompts at a time (their texts and answers fetched per batch)."""
    stmt = (
        select(
            Comparison.prompt_id,
            Comparison.id,
            Comparison.labeler_id,
            Comparison.labeler_external,
            Comparison.displayed_completion_ids,
            Comparison.ranking,
            Comparison.is_surplus,
            Comparison.created_at,
            Comparison.assignment_id,
        )
        .join(Prompt, Prompt.id == Comparison.prompt_id)
        .where(
            Prompt.project_id == project.id,
            Comparison.is_latest.is_(True),
            Comparison.not_rankable.is_(False),
            not_rejected_comparison(Comparison.id),  # kept, but never exported (design §13)
        )
        .order_by(Comparison.prompt_id, Comparison.id)
    )
    if options.ai == "exclude":  # not even read (the rows' agreement never counts them)
        stmt = stmt.where(not_ai_rated())
    stmt = _prompt_filter(stmt, options, shape)
    splitter = _Splitter(options)
    pending: dict[int, list[Ranked]] = {}

    def flush() -> Iterator[PromptData]:
        ids = list(pending)
        prompts = {
            pid: PromptData(
                id=pid, prompt=prompt_value(text, messages, conversational=shape.conversational),
                split=splitter(pid, sid, ext),
            )
            for pid, text, messages, sid, ext in session.execute(
                select(Prompt.id, Prompt.text, Prompt.messages, Prompt.submitter_id,
                       Prompt.submitter_external)
                .where(Prompt.id.in_(ids))
            )
        }  # fmt: skip
        for cid, pid, text in session.execute(
            select(Completion.id, Completion.prompt_id, Completion.text).where(
                Completion.prompt_id.in_(ids)
            )
        ):
            prompts[pid].answers[cid] = text
        rewrites = {
            assignment_id: RewriteOf(completion_id=original, text=text)
            for assignment_id, original, text in session.execute(
                select(Demonstration.assignment_id, Demonstration.rewrite_of_id, Demonstration.text)
                .where(Demonstration.prompt_id.in_(ids), Demonstration.rewrite_of_id.is_not(None),
                       not_rejected_demonstration(Demonstration.id))  # a rejected rewrite too
            )
            if original is not None  # for the type checker: the query asks for it
        }  # fmt: skip
        for pid in ids:
            prompts[pid].rankings = pending[pid]
            for ranked in pending[pid]:
                ranked.rewrite = rewrites.get(ranked.assignment_id)
            yield prompts[pid]
        pending.clear()

    result = session.execute(stmt.execution_options(yield_per=BATCH_PROMPTS * 4))
    for pid, cid, labeler_id, external, displayed, ranking, surplus, created, aid in result:
        if pid not in pending and len(pending) >= BATCH_PROMPTS:
            yield from flush()
        pending.setdefault(pid, []).append(
            Ranked(
                comparison_id=cid,
                labeler=labeler_key(labeler_id, external),
                displayed=list(displayed),
                ranking=[list(g) for g in ranking],
                is_surplus=surplus,
                created_at=created,
                source=(
                    SOURCE_RANKING
                    if labeler_id is not None
                    else SOURCE_AI
                    if is_ai_rater(external)
                    else SOURCE_IMPORT
                ),
                assignment_id=aid,
            )
        )
    if pending:
        yield from flush()


def _wanted(ranked: Ranked, options: ExportOptions) -> bool:
    by_ai = ranked.source == SOURCE_AI
    if (options.ai == "exclude" and by_ai) or (options.ai == "only" and not by_ai):
        return False
    if not options.include_surplus and ranked.is_surplus:
        return False
    start, end = day_bounds(options.since, options.until)
    if (start and ranked.created_at < start) or (end and ranked.created_at >= end):
        return False
    return not options.labelers or ranked.labeler in options.labelers


def _rankings_to_export(prompt: PromptData, options: ExportOptions) -> list[Ranked]:
    wanted = [r for r in prompt.rankings if _wanted(r, options)]
    if options.consensus_only and wanted:
        consensus = consensus_of([r.ranking for r in wanted])
        shown = sorted({a for r in wanted for a in r.displayed})
        by_ai = all(r.source == SOURCE_AI for r in wanted)  # ai=only: the judges' consensus
        return [
            Ranked(
                comparison_id=0, labeler="consensus", displayed=shown, ranking=consensus,
                is_surplus=False, created_at=max(r.created_at for r in wanted),
                source=SOURCE_AI if by_ai else SOURCE_RANKING,
            )
        ]  # fmt: skip
    return wanted


def pairwise_rows(
    session: Session, project: Project, options: ExportOptions, shape: RowShape = STANDARD
) -> Rows:
    """One row per (ranking, ordered pair of answers in different groups): ties give none.
    Then one row per rewrite sent with an exported ranking: the rewrite (``chosen_id`` null)
    preferred over the answer it rewrites. ``agreement`` is the prompt's pairwise agreement
    over all its current rankings but AI judges'; ``source`` says where the pair comes from."""
    for prompt in _ranked_prompts(session, project, options, shape):
        agreement = human_agreement(prompt.rankings)
        if options.min_agreement is not None and (
            agreement is None or agreement < options.min_agreement
        ):
            continue
        # The texts are JSON-encoded once per prompt, not once per pair (see EncodedRow).
        pair = _PairMaker(prompt, agreement, shape)
        for ranked in _rankings_to_export(prompt, options):
            for winner, loser, margin in ordered_pairs(ranked.ranking):
                yield prompt.split, pair(ranked, winner, loser, margin)
        # A consensus export keeps its rankings' rewrites: each is a pair of its own.
        for ranked in prompt.rankings:
            if ranked.rewrite is not None and _wanted(ranked, options):
                yield prompt.split, pair(ranked, None, ranked.rewrite.completion_id, 1)


class _PairMaker:
    """A prompt's pairwise rows, its texts JSON-encoded once (a prompt and its answers
    repeat over many pairs)."""

    def __init__(self, prompt: PromptData, agreement: float | None, shape: RowShape) -> None:
        self.prompt = prompt
        self.agreement = agreement
        self.conversational = shape.conversational
        self.text = json_value(prompt.prompt)
        self.answers = {
            a: answer_value(t, conversational=shape.conversational)
            for a, t in prompt.answers.items()
        }
        self.answer_json = {a: json_value(value) for a, value in self.answers.items()}
        self.shown_agreement = "null" if agreement is None else repr(agreement)
        self.labeler_json: dict[str, str] = {}

    def __call__(self, ranked: Ranked, winner: int | None, loser: int, margin: int) -> EncodedRow:
        """``winner`` None: the ranking's rewrite is the chosen answer."""
        if winner is None:
            assert ranked.rewrite is not None
            chosen = answer_value(ranked.rewrite.text, conversational=self.conversational)
            chosen_json, source = json_value(chosen), SOURCE_REWRITE
        else:
            chosen, chosen_json = self.answers[winner], self.answer_json[winner]
            source = ranked.source
        comparison_id = ranked.comparison_id or None
        labeler = self.labeler_json.get(ranked.labeler)
        if labeler is None:
            labeler = self.labeler_json[ranked.labeler] = json_value(ranked.labeler)
        row = EncodedRow(
            prompt=self.prompt.prompt,
            chosen=chosen,
            rejected=self.answers[loser],
            prompt_id=self.prompt.id,
            chosen_id=winner,
            rejected_id=loser,
            labeler=ranked.labeler,
            margin=margin,
            agreement=self.agreement,
            comparison_id=comparison_id,
            source=source,
        )
        row.line = (
            f'{{"prompt":{self.text},"chosen":{chosen_json},'
            f'"rejected":{self.answer_json[loser]},"prompt_id":{self.prompt.id},'
            f'"chosen_id":{"null" if winner is None else winner},"rejected_id":{loser},'
            f'"labeler":{labeler},"margin":{margin},'
            f'"agreement":{self.shown_agreement},'
            f'"comparison_id":{"null" if comparison_id is None else comparison_id},'
            f'"source":"{source}"}}\n'
        )
        return row


def kwise_rows(
    session: Session, project: Project, options: ExportOptions, shape: RowShape = STANDARD
) -> Rows:
    """One row per ranking: the answers as shown to the labeler, and the ranking as groups of
    indices into that list, best first (a group of two or more is a tie). The completions are
    texts in either format (the RM reads them as answers to the prompt)."""
    for prompt in _ranked_prompts(session, project, options, shape):
        agreement = human_agreement(prompt.rankings)
        if options.min_agreement is not None and (
            agreement is None or agreement < options.min_agreement
        ):
            continue
        for ranked in _rankings_to_export(prompt, options):
            index = {answer: i for i, answer in enumerate(ranked.displayed)}
            yield (
                prompt.split,
                {
                    "prompt": prompt.prompt,
                    "completions": [prompt.answers[a] for a in ranked.displayed],
                    "completion_ids": list(ranked.displayed),
                    "ranking": [sorted(index[a] for a in group) for group in ranked.ranking],
                    "prompt_id": prompt.id,
                    "labeler": ranked.labeler,
                    "agreement": agreement,
                    "comparison_id": ranked.comparison_id or None,
                },
            )


def sft_rows(
    session: Session, project: Project, options: ExportOptions, shape: RowShape = STANDARD
) -> Rows:
    """Demonstrations in TRL's prompt-completion format."""
    stmt = (
        select(
            Prompt.id,
            Prompt.text,
            Prompt.messages,
            Prompt.submitter_id,
            Prompt.submitter_external,
            Demonstration.id,
            Demonstration.text,
            Demonstration.author_id,
            Demonstration.author_external,
        )
        .join(Demonstration, Demonstration.prompt_id == Prompt.id)
        .where(Prompt.project_id == project.id, not_rejected_demonstration(Demonstration.id))
        .order_by(Prompt.id, Demonstration.id)
    )
    stmt = _prompt_filter(stmt, options, shape)
    stmt = stmt.where(*within_days(Demonstration.created_at, options.since, options.until))
    splitter = _Splitter(options)
    result = session.execute(stmt.execution_options(yield_per=BATCH_PROMPTS))
    for pid, text, messages, sid, ext, did, completion, author_id, author_external in result:
        author = labeler_key(author_id, author_external)
        if options.labelers and author not in options.labelers:
            continue
        yield (
            splitter(pid, sid, ext),
            {
                "prompt": prompt_value(text, messages, conversational=shape.conversational),
                "completion": answer_value(completion, conversational=shape.conversational),
                "prompt_id": pid,
                "demonstration_id": did,
                "author": author,
            },
        )


def prompt_rows(
    session: Session, project: Project, options: ExportOptions, shape: RowShape = STANDARD
) -> Rows:
    """Every prompt of the project (for PPO rollouts)."""
    stmt = _prompt_filter(
        select(
            Prompt.id, Prompt.text, Prompt.messages, Prompt.submitter_id, Prompt.submitter_external
        )
        .where(Prompt.project_id == project.id)
        .order_by(Prompt.id),
        options,
        shape,
    )
    splitter = _Splitter(options)
    result = session.execute(stmt.execution_options(yield_per=BATCH_PROMPTS))
    for pid, text, messages, sid, ext in result:
        prompt = prompt_value(text, messages, conversational=shape.conversational)
        yield splitter(pid, sid, ext), {"prompt": prompt, "prompt_id": pid}


ROWS = {"pairwise": pairwise_rows, "kwise": kwise_rows, "sft": sft_rows, "prompts": prompt_rows}


@dataclass(frozen=True)
class RowFormat:
    """Whether an export's rows are in TRL's conversational format, and why (the manifest
    and the dataset card say both)."""

    conversational: bool
    why: str

    @property
    def name(self) -> str:
        return "conversational" if self.conversational else "standard"


def row_format(session: Session, project: Project, options: ExportOptions) -> RowFormat:
    """The format of the export's rows. Under auto, conversational when a dialogue prompt
    gives a row with the export's own filters: the first such row decides, so a project of
    string prompts costs one query that finds none."""
    if options.conversational == "always":
        return RowFormat(True, "always was asked for: a string prompt is one user message")
    if options.conversational == "never":
        return RowFormat(
            False, "never was asked for: a dialogue prompt is its plain text, turn by turn"
        )
    rows = ROWS[options.kind](session, project, options, RowShape(dialogues_only=True))
    try:
        first = next(rows, None)
    finally:
        rows.close()  # its cursor too
    if first is None:
        return RowFormat(False, "auto: no prompt of the export is a dialogue")
    return RowFormat(
        True,
        f"auto: the export has dialogue prompts (prompt {first[1]['prompt_id']} is one), so a "
        "string prompt is one user message",
    )


def export_rows(
    session: Session, project: Project, options: ExportOptions, conversational: bool
) -> Iterator[tuple[str, Row]]:
    return ROWS[options.kind](session, project, options, RowShape(conversational=conversational))
