"""A project's agreement figures: load its current comparisons into arrays (``RankTable``),
compute every metric of ``metrics`` once, and keep the result until new comparisons, skips or
gold rankings arrive (``project_agreement``).

Imported preferences are ranked by pseudo-labelers (``import:<file>``), not people (design
§10): by default the figures, the labelers and the prompts to review are people's alone, and
each pseudo-labeler gets a row of its own apart (``AgreementReport.imported``), measured
against the consensus of every other rater of the same prompts (people, other files, and the
same file's ``#2``). ``include_imported`` counts them as raters in
the project's figures too. Their answers were never shown to anyone, so position bias leaves
them out either way."""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from typing import Any, Literal

import numpy as np
from sqlalchemy import ColumnElement, Float, Select, Text, cast, func, or_, select
from sqlalchemy.orm import Session

from app.agreement import metrics
from app.agreement.metrics import Bools, Floats, Ints, Metric
from app.auth.models import User
from app.db import within_days
from app.imports.service import is_import_labeler
from app.labeling.models import (
    AI_RATER_PREFIX,
    Assignment,
    AssignmentState,
    Comparison,
    Completion,
    Demonstration,
    GoldRanking,
    Prompt,
    TaskKind,
    is_ai_rater,
)
from app.projects.models import Project
from app.review.models import Review, not_rejected_comparison

GoldFilter = Literal["all", "gold", "non-gold"]
LIKERT_VALUES = np.arange(1, 8, dtype=np.float64)
LOWEST_PROMPTS = 10


GOLD_CHOICES: tuple[GoldFilter, ...] = ("all", "gold", "non-gold")
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("", "0", "false", "no", "off")


class FilterError(ValueError):
    """A filter that cannot be read; the message says which and how to write it."""


@dataclass(frozen=True)
class AgreementFilters:
    since: date | None = None
    until: date | None = None  # inclusive
    labeler: str | None = None  # a labeler key ("user:3", "external:import:file.jsonl")
    gold: GoldFilter = "all"
    include_imported: bool = False  # imported preferences count as raters in the figures

    @classmethod
    def parse(
        cls,
        *,
        since: str | None = None,
        until: str | None = None,
        labeler: str | None = None,
        gold: str | None = None,
        include_imported: str | bool | None = None,
    ) -> AgreementFilters:
        """From text (query string, form or command line); empty means "no filter"."""

        def day(text: str | None, name: str) -> date | None:
            if not text or not text.strip():
                return None
            try:
                return date.fromisoformat(text.strip())
            except ValueError:
                raise FilterError(f"{name} must be a date like 2026-11-21, not {text!r}") from None

        first, last = day(since, "since"), day(until, "until")
        if first and last and first > last:
            raise FilterError(f"since ({first}) is after until ({last})")
        gold = (gold or "all").strip() or "all"
        if gold not in GOLD_CHOICES:
            raise FilterError(f"gold must be one of {', '.join(GOLD_CHOICES)}, not {gold!r}")
        labeler = (labeler or "").strip() or None
        if labeler and not labeler.startswith(("user:", "external:")):
            raise FilterError(f"labeler must be user:ID or external:NAME, not {labeler!r}")
        if isinstance(include_imported, str):
            flag = include_imported.strip().lower()
            if flag not in TRUE_WORDS + FALSE_WORDS:
                raise FilterError(
                    f"include_imported must be 1 or 0 (true or false), not {include_imported!r}"
                )
            include_imported = flag in TRUE_WORDS
        return cls(
            since=first,
            until=last,
            labeler=labeler,
            gold=gold,
            include_imported=bool(include_imported),
        )

    @property
    def active(self) -> bool:
        return self != AgreementFilters()


def labeler_key(labeler_id: int | None, external: str | None) -> str:
    return f"user:{labeler_id}" if labeler_id is not None else f"external:{external}"


def is_imported_key(key: str) -> bool:
    """Whether a labeler key names an import's pseudo-labeler ("external:import:<file>")."""
    return key.startswith("external:") and is_import_labeler(key.removeprefix("external:"))


def is_ai_key(key: str) -> bool:
    """Whether a labeler key names an AI judge ("external:ai:<name>")."""
    return key.startswith("external:") and is_ai_rater(key.removeprefix("external:"))


def is_person_key(key: str) -> bool:
    return not is_imported_key(key) and not is_ai_key(key)


def not_ai_rated() -> ColumnElement[bool]:
    """The comparisons no AI judge made (SQL): people's and imports'."""
    return or_(
        Comparison.labeler_external.is_(None),
        ~Comparison.labeler_external.startswith(AI_RATER_PREFIX, autoescape=True),
    )


@dataclass
class RankTable:
    """A project's current comparisons as arrays, rows sorted by prompt (see ``metrics``)."""

    prompt_ids: Ints  # (P,) the database ids of the prompts
    answer_ids: Ints  # (P, W) completion id per column, -1 where the prompt has fewer
    lengths: Floats  # (P, W) answer length in characters, NaN where none
    gold: Floats  # (P, W) gold place of each answer, NaN where no gold ranking
    prompt: Ints  # (n,) row -> prompt index
    labeler: Ints  # (n,) row -> index into labeler_keys
    labeler_keys: list[str]
    comparison_ids: Ints
    ranks: Floats  # (n, W)
    first_shown: Ints  # (n,) column of the answer shown first
    ratings: Floats  # (n, W) Likert 1..7, NaN where not rated
    flags: dict[str, Floats]  # name -> (n, W) 1 flagged, 0 not, NaN not shown
    seconds: Floats  # (n,)
    created: Floats  # (n,) seconds since the epoch
    not_rankable: dict[str, int] = field(default_factory=dict)  # labeler key -> count

    @property
    def n_prompts(self) -> int:
        return len(self.prompt_ids)

    def _rows_of(self, is_key: Callable[[str], bool]) -> Bools:
        """(n,) whether each row's labeler key passes ``is_key``."""
        of_key = np.array([is_key(k) for k in self.labeler_keys], dtype=bool)
        return of_key[self.labeler] if len(self.labeler) else np.zeros(0, dtype=bool)

    def imported_rows(self) -> Bools:
        """(n,) whether each row is an import pseudo-labeler's ranking."""
        return self._rows_of(is_imported_key)

    def ai_rows(self) -> Bools:
        """(n,) whether each row is an AI judge's ranking."""
        return self._rows_of(is_ai_key)

    def people_only(self) -> RankTable:
        """The same table without the imported and the AI rankings, and without the prompts
        only they ranked (so those count nowhere: not in the figures, not among prompts)."""
        return self._keep(~(self.imported_rows() | self.ai_rows()), is_person_key)

    def without_ai(self) -> RankTable:
        """The same table without the AI judges' rankings (people's and imports' kept), and
        without the prompts only AI judges ranked."""
        return self._keep(~self.ai_rows(), lambda key: not is_ai_key(key))

    def _keep(self, kept: Bools, keep_key: Callable[[str], bool]) -> RankTable:
        if kept.all():
            return self
        rows = np.flatnonzero(kept)
        used, prompt = np.unique(self.prompt[rows], return_inverse=True)
        labelers = np.unique(self.labeler[rows])
        new_labeler = np.full(len(self.labeler_keys), -1, dtype=np.int64)
        new_labeler[labelers] = np.arange(len(labelers))
        return RankTable(
            prompt_ids=self.prompt_ids[used],
            answer_ids=self.answer_ids[used],
            lengths=self.lengths[used],
            gold=self.gold[used],
            prompt=prompt.astype(np.int64).reshape(-1),
            labeler=new_labeler[self.labeler[rows]],
            labeler_keys=[self.labeler_keys[i] for i in labelers],
            comparison_ids=self.comparison_ids[rows],
            ranks=self.ranks[rows],
            first_shown=self.first_shown[rows],
            ratings=self.ratings[rows],
            flags={name: flagged[rows] for name, flagged in self.flags.items()},
            seconds=self.seconds[rows],
            created=self.created[rows],
            not_rankable={k: n for k, n in self.not_rankable.items() if keep_key(k)},
        )


def _comparison_filter(project: Project, filters: AgreementFilters) -> list[ColumnElement[bool]]:
    """The WHERE clauses picking the project's current comparisons that match ``filters``."""
    where: list[ColumnElement[bool]] = [
        Comparison.prompt_id.in_(select(Prompt.id).where(Prompt.project_id == project.id)),
        Comparison.is_latest.is_(True),
        # Rejected rankings are kept but count nowhere (design §13): not in the figures, the
        # consensus exports use, or the leaderboard, which all load through here.
        not_rejected_comparison(Comparison.id),
    ]
    where += within_days(Comparison.created_at, filters.since, filters.until)
    gold_prompts = select(GoldRanking.prompt_id)
    if filters.gold == "gold":
        where.append(Comparison.prompt_id.in_(gold_prompts))
    elif filters.gold == "non-gold":
        where.append(Comparison.prompt_id.not_in(gold_prompts))
    if filters.labeler:
        own = select(Comparison.prompt_id).where(
            Comparison.is_latest.is_(True), _whose(filters.labeler)
        )
        where.append(Comparison.prompt_id.in_(own))
    return where


def _whose(key: str) -> ColumnElement[bool]:
    """The comparisons of one labeler, by key ("user:3" or "external:NAME")."""
    kind, _, value = key.partition(":")
    if kind == "user" and value.isdigit():
        return Comparison.labeler_id == int(value)
    return Comparison.labeler_external == value


def _epoch_seconds(dialect: str, column: Any) -> ColumnElement[float]:
    if dialect == "postgresql":
        return cast(func.extract("epoch", column), Float)
    return (func.julianday(column) - 2440587.5) * 86400.0  # SQLite stores ISO text


def _text_length(dialect: str, column: Any) -> ColumnElement[int]:
    """An answer's length: UTF-8 bytes on Postgres (read from the value's header, so the
    texts themselves are not read), characters on SQLite; either tells which answer of a
    pair is longer."""
    if dialect == "postgresql":
        return func.octet_length(column)
    return func.length(column)


def _plain_rows(session: Session, stmt: Select[*tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """The rows as the driver gives them (plain tuples): for large results of numbers, where
    building a Row per row would cost more than the query (result types are not processed)."""
    result = session.connection().execute(stmt)
    return list(result.cursor.fetchall())


def json_integers(texts: Sequence[str | None]) -> tuple[Ints, Ints, Ints]:
    """Every non-negative integer in each JSON text, parsed for all texts at once with numpy:
    (text index, value, how many "]" come before it in its text). For a ranking
    ``[[12], [10, 11], [13]]`` that last count is the group: 12 -> 0, 10 and 11 -> 1, 13 -> 2.
    Our JSON holds only ids, places, ratings and quoted ids, so every digit run is a number."""
    empty = np.zeros(0, dtype=np.int64)
    if not texts:
        return empty, empty, empty
    buf = np.frombuffer("\n".join(t or "" for t in texts).encode(), dtype=np.uint8)
    digit = (buf >= ord("0")) & (buf <= ord("9"))
    before, after = np.zeros_like(digit), np.zeros_like(digit)
    before[1:], after[:-1] = digit[:-1], digit[1:]
    starts, ends = np.flatnonzero(digit & ~before), np.flatnonzero(digit & ~after) + 1
    if not len(starts):
        return empty, empty, empty
    values = np.zeros(len(starts), dtype=np.int64)
    lengths = ends - starts
    for k in range(int(lengths.max())):  # the k-th digit from the right of each number
        has = lengths > k
        values[has] += (buf[ends[has] - 1 - k].astype(np.int64) - ord("0")) * 10**k
    newlines = np.flatnonzero(buf == ord("\n"))
    closes = np.flatnonzero(buf == ord("]"))
    text_of = np.searchsorted(newlines, starts)  # newlines before the number
    line_starts = np.concatenate(([0], newlines + 1))
    closed = np.searchsorted(closes, starts) - np.searchsorted(closes, line_starts)[text_of]
    return text_of.astype(np.int64), values, closed.astype(np.int64)


def _int_array(rows: Sequence[Sequence[Any]], width: int) -> Ints:
    if not rows:
        return np.zeros((0, width), dtype=np.int64)
    return np.array(rows, dtype=np.int64).reshape(-1, width)


def load_rank_table(
    *, session: Session, project: Project, filters: AgreementFilters = AgreementFilters()
) -> RankTable:
    """The project's current comparisons (latest revision each) that match ``filters``.

    The rankings, ratings and flags are flattened by the database into (comparison, answer,
    value) rows of plain numbers, which become arrays in one go: no JSON is parsed and no
    object is built per comparison in Python (100,000 prompts x 3 labelers load in seconds).
    """
    dialect = session.get_bind().dialect.name
    where = _comparison_filter(project, filters)
    rows = _plain_rows(
        session,
        select(
            Comparison.id,
            Comparison.prompt_id,
            Comparison.labeler_id,
            Comparison.labeler_external,
            Comparison.not_rankable,
            Comparison.seconds_spent,
            _epoch_seconds(dialect, Comparison.created_at),
            cast(Comparison.displayed_completion_ids, Text),
            cast(Comparison.ranking, Text),
            cast(Comparison.ratings, Text),
            cast(Comparison.flags, Text),
        )
        .where(*where)
        .order_by(Comparison.prompt_id, Comparison.id),
    )
    flag_names = list((project.label_schema or {}).get("flags", []))
    # Rankings: each number is an answer id; the "]" before it in its row give its group.
    rank_row, rank_answer, closed = json_integers([r[8] for r in rows])
    ranked = np.bincount(rank_row, minlength=len(rows)) > 0
    not_rankable_flag = np.array([bool(r[4]) for r in rows], dtype=bool)
    keep = ranked & ~not_rankable_flag
    keys: dict[str, int] = {}
    not_rankable: dict[str, int] = {}
    labeler_of_row = np.zeros(len(rows), dtype=np.int64)
    for i, (row, kept_row) in enumerate(zip(rows, keep, strict=True)):
        key = labeler_key(row[2], row[3])
        if kept_row:
            labeler_of_row[i] = keys.setdefault(key, len(keys))
        else:
            not_rankable[key] = not_rankable.get(key, 0) + 1
    new_index = np.cumsum(keep) - 1  # row of ``rows`` -> row of the table
    n = int(keep.sum())
    numbers = np.array([(r[0], r[1], r[5], r[6]) for r in rows], dtype=np.float64).reshape(-1, 4)
    table = numbers[keep]
    comparison_ids = table[:, 0].astype(np.int64)
    prompt_ids, prompt = np.unique(table[:, 1].astype(np.int64), return_inverse=True)
    prompt = prompt.astype(np.int64)

    in_table = keep[rank_row]
    cell_row = new_index[rank_row[in_table]]
    cell_answer = rank_answer[in_table]
    cell_place = closed[in_table]
    # Columns: each prompt's ranked answers in id order (one sort of (prompt, answer) keys).
    stride = int(cell_answer.max()) + 1 if len(cell_answer) else 1
    pair_keys = np.unique(prompt[cell_row] * stride + cell_answer)
    pairs = np.stack([pair_keys // stride, pair_keys % stride], axis=1)
    starts = np.searchsorted(pairs[:, 0], np.arange(len(prompt_ids)))
    column_of_pair = np.arange(len(pairs)) - starts[pairs[:, 0]]
    # At least two columns, so an empty project still has well-formed (empty) arrays.
    width = max(int(column_of_pair.max()) + 1 if len(pairs) else 0, 2)
    answer_ids = np.full((len(prompt_ids), width), -1, dtype=np.int64)
    answer_ids[pairs[:, 0], column_of_pair] = pairs[:, 1]
    pair_order = np.argsort(pairs[:, 1])  # answer ids are unique across prompts
    sorted_answers = pairs[pair_order, 1]

    def column_of(answers: Ints) -> Ints:
        """The column of each answer id (-1 for an answer no kept ranking shows)."""
        if not len(sorted_answers):
            return np.full(len(answers), -1, dtype=np.int64)
        at = np.clip(np.searchsorted(sorted_answers, answers), 0, len(sorted_answers) - 1)
        found = sorted_answers[at] == answers
        return np.where(found, column_of_pair[pair_order[at]], -1)

    ranks = np.full((n, width), np.nan)
    ranks[cell_row, column_of(cell_answer)] = cell_place
    shown_row, shown_answer, _ = json_integers([r[7] for r in rows])
    first_of_row = np.full(len(rows), -1, dtype=np.int64)
    _, first_at = np.unique(shown_row, return_index=True)  # each row's first number
    first_of_row[shown_row[first_at]] = shown_answer[first_at]
    first_cols = column_of(first_of_row[keep])

    # Ratings {"answer id": 1..7}: the numbers of a row come as key, value, key, value...
    ratings = np.full((n, width), np.nan)
    rated_row, rated_numbers, _ = json_integers([r[9] for r in rows])
    if len(rated_numbers):
        r_row, r_answer, r_value = rated_row[::2], rated_numbers[::2], rated_numbers[1::2]
        r_col = column_of(r_answer)
        ok = keep[r_row] & (r_col >= 0)
        ratings[new_index[r_row[ok]], r_col[ok]] = r_value[ok]

    flags: dict[str, Floats] = {}
    flag_index = {name: i for i, name in enumerate(flag_names)}
    flagged = np.zeros((len(flag_names), n, width), dtype=bool)
    # Flags are rare ({"answer id": ["name", ...]} or null): parsed only where present.
    f_cells = [
        (new_index[i], int(answer), flag_index[name])
        for i, row in enumerate(rows)
        if keep[i] and row[10] and row[10] != "null"
        for answer, names in json.loads(row[10]).items()
        for name in names
        if name in flag_index
    ]
    if f_cells:
        f = np.array(f_cells, dtype=np.int64)
        f_col = column_of(f[:, 1])
        ok = f_col >= 0
        flagged[f[ok, 2], f[ok, 0], f_col[ok]] = True
    for i, name in enumerate(flag_names):
        flags[name] = np.where(np.isnan(ranks), np.nan, flagged[i].astype(np.float64))

    lengths = np.full((len(prompt_ids), width), np.nan)
    gold = np.full((len(prompt_ids), width), np.nan)
    if n:
        answer_lengths = _int_array(
            _plain_rows(
                session,
                select(Completion.id, _text_length(dialect, Completion.text)).where(
                    Completion.prompt_id.in_(
                        select(Prompt.id).where(Prompt.project_id == project.id)
                    )
                ),
            ),
            2,
        )
        l_col = column_of(answer_lengths[:, 0])
        # Each answer's prompt: through the (prompt, answer) pairs found above.
        l_pair = pair_order[np.clip(np.searchsorted(sorted_answers, answer_lengths[:, 0]), 0,
                                    len(sorted_answers) - 1)]  # fmt: skip
        ok = l_col >= 0
        lengths[pairs[l_pair[ok], 0], l_col[ok]] = answer_lengths[ok, 1]
        prompt_index = {int(p): i for i, p in enumerate(prompt_ids)}
        for prompt_id, gold_ranking in session.execute(
            select(GoldRanking.prompt_id, GoldRanking.ranking)
            .join(Prompt, Prompt.id == GoldRanking.prompt_id)
            .where(Prompt.project_id == project.id)
        ):
            p = prompt_index.get(prompt_id)
            if p is None:
                continue
            for place, group in enumerate(gold_ranking):
                cols = column_of(np.array(group, dtype=np.int64))
                for answer, col in zip(group, cols, strict=True):
                    if col >= 0 and answer_ids[p, col] == answer:
                        gold[p, col] = place

    return RankTable(
        prompt_ids=prompt_ids.astype(np.int64),
        answer_ids=answer_ids,
        lengths=lengths,
        gold=gold,
        prompt=prompt,
        labeler=labeler_of_row[keep],
        labeler_keys=list(keys),
        comparison_ids=comparison_ids,
        ranks=ranks,
        first_shown=np.maximum(first_cols, 0),
        ratings=ratings,
        flags=flags,
        seconds=table[:, 2],
        created=table[:, 3],
        not_rankable=not_rankable,
    )


# --- The report ----------------------------------------------------------------------------

CONSENSUS_METHOD = (
    "Borda count: each answer's mean place among the labelers who ranked it (places scaled "
    "0..1, ties sharing the mean); equal means tie"
)
WEEK = 7 * 24 * 3600
FIRST_MONDAY = 4 * 24 * 3600  # 1970-01-05, the first Monday after the epoch


@dataclass(frozen=True)
class LabelerRow:
    key: str
    name: str
    user_id: int | None
    n_comparisons: int  # ranked + "not rankable"
    agreement: Metric  # with the consensus of the other labelers (leave-one-out)
    gold_agreement: Metric
    median_seconds: float | None
    skip_rate: float | None
    not_rankable_share: float | None
    first_shown_best: float | None  # position bias: the first-shown answer placed best
    first_shown_chance: float | None  # ... what a labeler ignoring position would give
    longer_wins: float | None  # length bias: the longer answer preferred
    n_length_pairs: int
    last_active: datetime | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "labeler": self.name,
            "labeler_key": self.key,
            "n_comparisons": self.n_comparisons,
            "pairwise_agreement": self.agreement.value,
            "n_pairs": self.agreement.n,
            "reason": self.agreement.reason,
            "gold_agreement": self.gold_agreement.value,
            "n_gold_pairs": self.gold_agreement.n,
            "median_seconds": self.median_seconds,
            "skip_rate": self.skip_rate,
            "not_rankable_share": self.not_rankable_share,
            "position_bias": {
                "first_shown_ranked_best": self.first_shown_best,
                "chance": self.first_shown_chance,
            },
            "length_bias": {"longer_preferred": self.longer_wins, "n_pairs": self.n_length_pairs},
            "last_active": self.last_active.isoformat() if self.last_active else None,
        }


@dataclass(frozen=True)
class WeekPoint:
    week: date  # its Monday
    agreement: float
    n_pairs: int


@dataclass(frozen=True)
class PromptAgreement:
    prompt_id: int
    text: str
    agreement: float
    n_pairs: int
    n_labelers: int


@dataclass(frozen=True)
class LabelSetAgreement:
    """Agreement on one kind of label given to each answer (the Likert rating, or a flag)."""

    name: str
    alpha: Metric
    fleiss: Metric
    level: str


@dataclass(frozen=True)
class AiJudgeRow:
    """An AI judge (``ai:<name>``) beside the people: never one of them (design §14)."""

    key: str
    name: str  # "ai:<name>"
    n_comparisons: int
    agreement: Metric  # with each person's ranking of the same prompt, pooled over pairs
    n_prompts: int  # prompts shared with a person with a pair ordered by both
    n_tied_pairs_left_out: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "labeler": self.name,
            "labeler_key": self.key,
            "n_comparisons": self.n_comparisons,
            "agreement_with_humans": self.agreement.value,
            "agreement_ci95": _ci(self.agreement),
            "n_pairs": self.agreement.n,
            "n_tied_pairs_left_out": self.n_tied_pairs_left_out,
            "n_prompts": self.n_prompts,
            "reason": self.agreement.reason,
        }


@dataclass(frozen=True)
class AgreementReport:
    project_id: int
    filters: AgreementFilters
    computed_at: datetime
    n_comparisons: int
    n_prompts: int
    n_prompts_with_overlap: int
    n_labelers: int
    micro: Metric
    macro: Metric
    n_tied_pairs_left_out: int
    tau_b: Metric
    kendall_w: Metric
    gold: Metric
    labels: list[LabelSetAgreement]
    weekly: list[WeekPoint]
    lowest: list[PromptAgreement]
    labelers: list[LabelerRow]
    first_shown_best: float | None
    first_shown_chance: float | None
    longer_wins: float | None
    consensus_method: str = CONSENSUS_METHOD
    # The import pseudo-labelers, apart from the people (in the figures only when included).
    imported: list[LabelerRow] = field(default_factory=list)
    # The AI judges, apart from every figure above (never counted in them).
    ai: list[AiJudgeRow] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The JSON of ``rlhf agreement --json`` and ``GET /api/v1/projects/{id}/agreement``."""
        f = self.filters
        return {
            "project_id": self.project_id,
            "computed_at": self.computed_at.isoformat(),
            "filters": {
                "since": f.since.isoformat() if f.since else None,
                "until": f.until.isoformat() if f.until else None,
                "labeler": f.labeler,
                "gold": f.gold,
                "include_imported": f.include_imported,
            },
            "n_comparisons": self.n_comparisons,
            "n_prompts": self.n_prompts,
            "n_prompts_with_overlap": self.n_prompts_with_overlap,
            "n_labelers": self.n_labelers,
            "pairwise_agreement": {
                "micro": self.micro.value,
                "micro_ci95": _ci(self.micro),
                "macro": self.macro.value,
                "macro_ci95": _ci(self.macro),
                "n_pairs": self.micro.n,
                "n_prompts": self.macro.n,
                "n_tied_pairs_left_out": self.n_tied_pairs_left_out,
                "tie_rule": "a pair tied by either labeler is left out",
                "reason": self.micro.reason,
            },
            "kendall_tau_b": {
                "mean": self.tau_b.value,
                "ci95": _ci(self.tau_b),
                "n_labeler_pairs": self.tau_b.n,
                "reason": self.tau_b.reason,
            },
            "kendall_w": {
                "mean": self.kendall_w.value,
                "ci95": _ci(self.kendall_w),
                "n_prompts": self.kendall_w.n,
                "n_prompts_mixed_answers_left_out": self.kendall_w.extra.get(
                    "n_prompts_mixed_answers_left_out", 0
                ),
                "reason": self.kendall_w.reason,
            },
            "gold_agreement": self.gold.as_dict(),
            "labels": [
                {
                    "name": labels.name,
                    "level": labels.level,
                    "krippendorff_alpha": labels.alpha.as_dict(),
                    "fleiss_kappa": labels.fleiss.as_dict(),
                }
                for labels in self.labels
            ],
            "position_bias": {
                "first_shown_ranked_best": self.first_shown_best,
                "chance": self.first_shown_chance,
            },
            "length_bias": {"longer_preferred": self.longer_wins},
            "consensus": self.consensus_method,
            "weekly": [
                {"week": w.week.isoformat(), "agreement": w.agreement, "n_pairs": w.n_pairs}
                for w in self.weekly
            ],
            "lowest_agreement_prompts": [
                {
                    "prompt_id": p.prompt_id,
                    "agreement": p.agreement,
                    "n_pairs": p.n_pairs,
                    "n_labelers": p.n_labelers,
                }
                for p in self.lowest
            ],
            "labelers": [row.as_dict() for row in self.labelers],
            "imported": [row.as_dict() for row in self.imported],
            "ai": [row.as_dict() for row in self.ai],
        }


def _ci(metric: Metric) -> list[float] | None:
    return None if metric.low is None or metric.high is None else [metric.low, metric.high]


def _rate(hits: float, total: float) -> float | None:
    return hits / total if total > 0 else None


def _label_sets(
    table: RankTable, project: Project, weights: metrics.Weights | None
) -> list[LabelSetAgreement]:
    """Krippendorff's alpha (ordinal for the 1-7 rating, nominal for each flag) and Fleiss'
    kappa, with each answer a unit and each labeler's label a value."""
    p, w = table.n_prompts, table.ranks.shape[1]
    unit_prompt = np.repeat(np.arange(p, dtype=np.int64), w)
    sets: list[tuple[str, Floats, Floats, metrics.Level]] = []
    if (project.label_schema or {}).get("likert"):
        sets.append(("Likert rating (1-7)", table.ratings, LIKERT_VALUES, "ordinal"))
    for name, flagged in table.flags.items():
        sets.append((f"Flag: {name}", flagged, np.array([0.0, 1.0]), "nominal"))
    out = []
    for name, labels, values, level in sets:
        rows, cols = np.nonzero(~np.isnan(labels))
        value_index = np.searchsorted(values, labels[rows, cols])
        cell = (table.prompt[rows] * w + cols) * len(values) + value_index
        counts = np.bincount(cell, minlength=p * w * len(values)).astype(np.float64)
        counts = counts.reshape(p, w, len(values))
        alpha = metrics.krippendorff_alpha_of(counts, values, level, weights)
        fleiss = metrics.fleiss_kappa_of(
            counts.reshape(p * w, len(values)), unit_prompt, p, weights
        )
        out.append(LabelSetAgreement(name=name, alpha=alpha, fleiss=fleiss, level=level))
    return out


def compute_report(
    table: RankTable,
    *,
    project: Project,
    filters: AgreementFilters,
    names: dict[str, tuple[str, int | None]],
    skips: dict[str, tuple[int, int]],
    prompt_texts: dict[int, str] | None = None,
    now: datetime | None = None,
) -> AgreementReport:
    """Every figure of the dashboard from the arrays. ``names``: labeler key -> (name, user
    id); ``skips``: labeler key -> (skipped, submitted) rank tasks.

    The project's figures rest on people's rankings unless ``filters.include_imported``;
    the import pseudo-labelers' own rows are measured on the table of every rater but the AI
    judges either way. AI judges count in none of them: only in their own rows (``ai``)."""
    everyone = table
    raters = table.without_ai()  # people and imports: what the imports are measured against
    table = raters if filters.include_imported else raters.people_only()
    imported_rows = table.imported_rows()
    n_prompts = table.n_prompts
    weights = metrics.bootstrap_weights(n_prompts)
    signs = metrics.pair_signs(table.ranks)
    a, b = metrics.same_prompt_pairs(table.prompt)
    if filters.labeler and filters.labeler in table.labeler_keys:
        who = table.labeler_keys.index(filters.labeler)
        involved = (table.labeler[a] == who) | (table.labeler[b] == who)
        a, b = a[involved], b[involved]
    pairwise = metrics.pairwise_agreement_of(signs, a, b, table.prompt, n_prompts, weights)
    micro, macro = pairwise["micro"], pairwise["macro"]
    per_prompt = pairwise["per_prompt"]
    assert isinstance(micro, Metric) and isinstance(macro, Metric)
    assert isinstance(per_prompt, np.ndarray)
    tau_b = metrics.mean_tau_b(signs, a, b, table.prompt, n_prompts, weights)
    kendall_w = metrics.mean_kendall_w(table.ranks, table.prompt, n_prompts, weights)

    gold_agreed, gold_counted = metrics.agreement_with_reference(
        table.ranks, table.gold[table.prompt]
    )
    gold_sums = metrics.per_prompt_sums(table.prompt, n_prompts, gold_agreed, gold_counted)
    if gold_counted.sum() > 0:
        low, high = metrics.interval(gold_sums, metrics.ratio, weights)
        gold = Metric(
            float(gold_agreed.sum() / gold_counted.sum()), int(gold_counted.sum()), "pairs",
            low, high,
        )  # fmt: skip
    else:
        gold = Metric.missing("no ranking of a prompt with a gold ranking yet", unit="pairs")
    # Imported answers were never shown to anyone: no position to be biased by.
    shown = ~imported_rows
    first_best, chance = metrics.position_bias(table.ranks[shown], table.first_shown[shown])
    longer_won, length_pairs = metrics.length_bias(table.ranks, table.lengths[table.prompt])

    rows = _labeler_rows(table, filters=filters, names=names, skips=skips)
    labelers = [row for row in rows if is_person_key(row.key)]
    if raters is not table:  # the pseudo-labelers beside the people and each other
        rows = _labeler_rows(raters, filters=filters, names=names, skips=skips)
    imported = [row for row in rows if is_imported_key(row.key)]
    ai = _ai_judge_rows(everyone, filters=filters)

    # Agreement week by week: a pair of rankings counts in the week of the later one.
    weekly: list[WeekPoint] = []
    if len(a):
        counts = metrics.pair_counts(signs[a], signs[b])
        when = np.maximum(table.created[a], table.created[b])
        week = np.floor((when - FIRST_MONDAY) / WEEK).astype(np.int64)
        first = int(week.min())
        agreed_w = np.bincount(week - first, weights=counts.agreed)
        counted_w = np.bincount(week - first, weights=counts.counted)
        for offset in np.flatnonzero(counted_w):
            start = datetime.fromtimestamp(FIRST_MONDAY + (first + int(offset)) * WEEK, UTC)
            weekly.append(
                WeekPoint(
                    week=start.date(),
                    agreement=float(agreed_w[offset] / counted_w[offset]),
                    n_pairs=int(counted_w[offset]),
                )
            )

    lowest: list[PromptAgreement] = []
    counted_p = per_prompt[:, 1]
    candidates = np.flatnonzero(counted_p > 0)
    if candidates.size:
        rate_p = per_prompt[candidates, 0] / counted_p[candidates]
        # The lowest rate first; among equals, the one resting on the most pairs.
        pick = candidates[np.lexsort((-counted_p[candidates], rate_p))[:LOWEST_PROMPTS]]
        labelers_per_prompt = np.bincount(table.prompt, minlength=n_prompts)
        texts = prompt_texts or {}
        for p in pick:
            prompt_id = int(table.prompt_ids[p])
            lowest.append(
                PromptAgreement(
                    prompt_id=prompt_id,
                    text=texts.get(prompt_id, ""),
                    agreement=float(per_prompt[p, 0] / counted_p[p]),
                    n_pairs=int(counted_p[p]),
                    n_labelers=int(labelers_per_prompt[p]),
                )
            )

    n_rows = len(table.prompt)
    total_pairs = float(length_pairs.sum())
    people = {k for k in [*table.labeler_keys, *table.not_rankable] if is_person_key(k)}
    return AgreementReport(
        project_id=project.id,
        filters=filters,
        computed_at=now or datetime.now(UTC),
        n_comparisons=n_rows + sum(table.not_rankable.values()),
        n_prompts=n_prompts,
        n_prompts_with_overlap=int((np.bincount(table.prompt, minlength=n_prompts) >= 2).sum()),
        n_labelers=len(people),
        micro=micro,
        macro=macro,
        n_tied_pairs_left_out=int(pairwise["n_tied_pairs_left_out"]),  # type: ignore[call-overload]
        tau_b=tau_b,
        kendall_w=kendall_w,
        gold=gold,
        labels=_label_sets(table, project, weights),
        weekly=weekly,
        lowest=lowest,
        labelers=labelers,
        first_shown_best=_rate(float(first_best.sum()), len(first_best)),
        first_shown_chance=_rate(float(chance.sum()), len(chance)),
        longer_wins=_rate(float(longer_won.sum()), total_pairs),
        imported=imported,
        ai=ai,
    )


AI_NO_PERSON = "no person has ranked a prompt it ranked yet"
AI_NO_PAIR = "no answer pair was ordered by both it and a person (ties, or other answers)"


def _ai_judge_rows(table: RankTable, *, filters: AgreementFilters) -> list[AiJudgeRow]:
    """Each AI judge of the table (only ``filters.labeler`` when set): the answer pairs it
    orders as a person who ranked the same prompt does, over every (judge, person) pair of
    rankings of a prompt (pairs tied by either left out), pooled; the interval a bootstrap
    over the prompts it shares with people. (A judge stores rankings only: an unparsable
    reply is left out, never "not rankable", so every judge has rows here.)"""
    ai = table.ai_rows()
    if not ai.any():
        return []
    person = ~ai & ~table.imported_rows()
    a, b = metrics.same_prompt_pairs(table.prompt)
    # Each (judge, person) pair of rows with the judge first; judges beside judges, and
    # imports, are no reference.
    judge = np.concatenate([a[ai[a] & person[b]], b[ai[b] & person[a]]])
    human = np.concatenate([b[ai[a] & person[b]], a[ai[b] & person[a]]])
    counts = metrics.pair_counts(
        metrics.pair_signs(table.ranks[judge]), metrics.pair_signs(table.ranks[human])
    )
    out = []
    for index, key in enumerate(table.labeler_keys):
        if not is_ai_key(key) or (filters.labeler and key != filters.labeler):
            continue
        mine = table.labeler[judge] == index
        # The judge's prompts shared with people, numbered 0.. for the bootstrap.
        shared, prompt = np.unique(table.prompt[judge[mine]], return_inverse=True)
        sums = metrics.per_prompt_sums(
            prompt.reshape(-1).astype(np.int64), len(shared),
            counts.agreed[mine], counts.counted[mine], counts.tied[mine],
        )  # fmt: skip
        agreed, counted, tied = sums.sum(axis=0)
        if counted:
            weights = metrics.bootstrap_weights(len(shared))
            low, high = metrics.interval(sums[:, :2], metrics.ratio, weights)
            agreement = Metric(float(agreed / counted), int(counted), "pairs", low, high)
        else:
            agreement = Metric.missing(AI_NO_PAIR if len(shared) else AI_NO_PERSON, unit="pairs")
        ranked = int((table.labeler == index).sum())
        out.append(
            AiJudgeRow(
                key=key, name=key.removeprefix("external:"),
                n_comparisons=ranked + table.not_rankable.get(key, 0), agreement=agreement,
                n_prompts=int((sums[:, 1] > 0).sum()), n_tied_pairs_left_out=int(tied),
            )
        )  # fmt: skip
    return sorted(out, key=lambda row: row.name.casefold())


def _labeler_rows(
    table: RankTable,
    *,
    filters: AgreementFilters,
    names: dict[str, tuple[str, int | None]],
    skips: dict[str, tuple[int, int]],
) -> list[LabelerRow]:
    """Each labeler of the table (only ``filters.labeler`` when set): agreement with the
    others of the same prompts (leave-one-out), with gold, time, skips and biases."""
    n_prompts = table.n_prompts
    loo_agreed, loo_counted = metrics.leave_one_out_agreement(table.ranks, table.prompt, n_prompts)
    gold_agreed, gold_counted = metrics.agreement_with_reference(
        table.ranks, table.gold[table.prompt]
    )
    first_best, chance = metrics.position_bias(table.ranks, table.first_shown)
    longer_won, length_pairs = metrics.length_bias(table.ranks, table.lengths[table.prompt])
    n_labelers = len(table.labeler_keys)

    def by_labeler(values: Floats) -> Floats:
        return metrics.per_prompt_sums(table.labeler, n_labelers, values)[:, 0]

    rows_per = by_labeler(np.ones(len(table.prompt)))
    loo = np.stack([by_labeler(loo_agreed), by_labeler(loo_counted)], axis=1)
    gold_by = np.stack([by_labeler(gold_agreed), by_labeler(gold_counted)], axis=1)
    first_by = by_labeler(first_best.astype(np.float64))
    chance_by = by_labeler(chance)
    longer_by = np.stack([by_labeler(longer_won), by_labeler(length_pairs)], axis=1)
    order = np.argsort(table.labeler, kind="stable")
    bounds = np.searchsorted(table.labeler[order], np.arange(n_labelers + 1))
    seconds_sorted = table.seconds[order]
    created_sorted = table.created[order]

    keys = list(table.labeler_keys) + [k for k in table.not_rankable if k not in table.labeler_keys]
    labelers = []
    for i, key in enumerate(keys):
        ranked = int(rows_per[i]) if i < n_labelers else 0
        nr = table.not_rankable.get(key, 0)
        if filters.labeler and key != filters.labeler:
            continue
        name, user_id = names.get(key, (key.removeprefix("external:"), None))
        if i < n_labelers:
            secs = seconds_sorted[bounds[i] : bounds[i + 1]]
            secs = secs[~np.isnan(secs)]
            last = created_sorted[bounds[i] : bounds[i + 1]].max()
            agreed, counted = loo[i]
            agreement = (
                Metric(float(agreed / counted), int(counted), "pairs")
                if counted
                else Metric.missing("no prompt shared with another labeler yet", unit="pairs")
            )
            g_agreed, g_counted = gold_by[i]
            gold_metric = (
                Metric(float(g_agreed / g_counted), int(g_counted), "pairs")
                if g_counted
                else Metric.missing("no gold prompt ranked yet", unit="pairs")
            )
            skipped, submitted = skips.get(key, (0, 0))
            # An import's answers were never shown: it has no position bias to measure.
            shown_to_them = not is_imported_key(key)
            labelers.append(
                LabelerRow(
                    key=key, name=name, user_id=user_id, n_comparisons=ranked + nr,
                    agreement=agreement, gold_agreement=gold_metric,
                    median_seconds=float(np.median(secs)) if secs.size else None,
                    skip_rate=_rate(skipped, skipped + submitted),
                    not_rankable_share=_rate(nr, ranked + nr),
                    first_shown_best=_rate(first_by[i], ranked) if shown_to_them else None,
                    first_shown_chance=_rate(chance_by[i], ranked) if shown_to_them else None,
                    longer_wins=_rate(*longer_by[i]), n_length_pairs=int(longer_by[i][1]),
                    last_active=datetime.fromtimestamp(float(last), UTC),
                )
            )  # fmt: skip
        else:
            skipped, submitted = skips.get(key, (0, 0))
            labelers.append(
                LabelerRow(
                    key=key, name=name, user_id=user_id, n_comparisons=nr,
                    agreement=Metric.missing("only 'not rankable' answers so far", unit="pairs"),
                    gold_agreement=Metric.missing("no gold prompt ranked yet", unit="pairs"),
                    median_seconds=None, skip_rate=_rate(skipped, skipped + submitted),
                    not_rankable_share=1.0, first_shown_best=None, first_shown_chance=None,
                    longer_wins=None, n_length_pairs=0, last_active=None,
                )
            )  # fmt: skip
    return labelers


# --- Loading, and the cache ----------------------------------------------------------------


def _labeler_names(*, session: Session, keys: Sequence[str]) -> dict[str, tuple[str, int | None]]:
    ids = [int(k.removeprefix("user:")) for k in keys if k.startswith("user:")]
    names: dict[str, tuple[str, int | None]] = {}
    if ids:
        for user in session.scalars(select(User).where(User.id.in_(ids))):
            names[f"user:{user.id}"] = (user.label, user.id)
    return names


def labeler_choices(
    *, session: Session, project: Project, authors: bool = False, ai_judges: bool = True
) -> list[tuple[str, str]]:
    """(key, name), by name, of everyone who ranked in the project (and, with ``authors``,
    wrote demonstrations there; without ``ai_judges``, AI judges left out): one DISTINCT
    query each, not a report."""
    sources: list[tuple[Any, Any, Any]] = [
        (Comparison, Comparison.labeler_id, Comparison.labeler_external)
    ]
    if authors:
        sources.append((Demonstration, Demonstration.author_id, Demonstration.author_external))
    keys: set[tuple[int | None, str | None]] = set()
    for model, who, external in sources:
        keys |= {
            (user_id, name)
            for user_id, name in session.execute(
                select(who, external)
                .distinct()
                .join(Prompt, Prompt.id == model.prompt_id)
                .where(Prompt.project_id == project.id)
            )
        }
    found = [labeler_key(user_id, name) for user_id, name in keys if user_id is not None or name]
    if not ai_judges:
        found = [key for key in found if not is_ai_key(key)]
    names = _labeler_names(session=session, keys=found)

    def name(key: str) -> str:
        if key in names:
            return names[key][0]
        external = key.removeprefix("external:")
        return f"{external} (AI judge)" if is_ai_key(key) else f"{external} (imported)"

    choices = [(key, name(key)) for key in found]
    return sorted(choices, key=lambda choice: choice[1].casefold())


def _skips(
    *, session: Session, project: Project, filters: AgreementFilters
) -> dict[str, tuple[int, int]]:
    """Per labeler: rank tasks skipped, and rank tasks submitted."""
    stmt = (
        select(Assignment.labeler_id, Assignment.state, func.count())
        .join(Prompt, Prompt.id == Assignment.prompt_id)
        .where(
            Prompt.project_id == project.id,
            Assignment.kind == TaskKind.rank,
            Assignment.state.in_([AssignmentState.skipped, AssignmentState.submitted]),
        )
        .group_by(Assignment.labeler_id, Assignment.state)
    )
    stmt = stmt.where(*within_days(Assignment.finished_at, filters.since, filters.until))
    out: dict[str, list[int]] = {}
    for labeler_id, state, count in session.execute(stmt):
        counts = out.setdefault(f"user:{labeler_id}", [0, 0])
        counts[0 if state == AssignmentState.skipped else 1] += count
    return {key: (skipped, submitted) for key, (skipped, submitted) in out.items()}


def build_report(
    *, session: Session, project: Project, filters: AgreementFilters = AgreementFilters()
) -> AgreementReport:
    """Load and compute (no cache): what the CLI and the cache call."""
    table = load_rank_table(session=session, project=project, filters=filters)
    keys = list(table.labeler_keys) + list(table.not_rankable)
    report = compute_report(
        table,
        project=project,
        filters=filters,
        names=_labeler_names(session=session, keys=keys),
        skips=_skips(session=session, project=project, filters=filters),
    )
    if report.lowest:  # the texts of the few prompts listed, not of all of them
        ids = [p.prompt_id for p in report.lowest]
        texts = dict(
            session.execute(select(Prompt.id, Prompt.text).where(Prompt.id.in_(ids))).all()
        )
        lowest = [
            PromptAgreement(
                prompt_id=p.prompt_id, text=texts.get(p.prompt_id, ""), agreement=p.agreement,
                n_pairs=p.n_pairs, n_labelers=p.n_labelers,
            )
            for p in report.lowest
        ]  # fmt: skip
        report = replace(report, lowest=lowest)
    return report


def data_version(*, session: Session) -> tuple[Any, ...]:
    """Changes whenever a ranking, a skip, a gold ranking or a review is added or changed: new
    comparisons (and revisions) get new ids, skips add to the count of skipped tasks, and a
    gold ranking's time is set when it changes. Cheap: index lookups, no scan of rankings."""
    return tuple(
        session.execute(
            select(
                select(func.max(Comparison.id)).scalar_subquery(),
                select(func.count())
                .select_from(Assignment)
                .where(Assignment.state == AssignmentState.skipped)
                .scalar_subquery(),
                select(func.max(GoldRanking.created_at)).scalar_subquery(),
                select(func.count()).select_from(GoldRanking).scalar_subquery(),
                # A review (or a re-review, which moves its time) changes what is counted.
                select(func.max(Review.reviewed_at)).scalar_subquery(),
            )
        ).one()
    )


class ReportCache:
    """Recently computed reports per (project, filters, settings that change the figures),
    kept while ``data_version`` is unchanged. One per process; threads share it."""

    def __init__(self, size: int = 64) -> None:
        self.size = size
        self._reports: OrderedDict[tuple[Any, ...], tuple[tuple[Any, ...], AgreementReport]]
        self._reports = OrderedDict()
        self._lock = threading.Lock()

    def clear(self) -> None:
        with self._lock:
            self._reports.clear()

    def get(
        self, *, session: Session, project: Project, filters: AgreementFilters
    ) -> AgreementReport:
        schema = project.label_schema or {}
        key = (project.id, filters, bool(schema.get("likert")), tuple(schema.get("flags", [])))
        version = data_version(session=session)
        with self._lock:
            hit = self._reports.get(key)
            if hit is not None and hit[0] == version:
                self._reports.move_to_end(key)
                return hit[1]
        report = build_report(session=session, project=project, filters=filters)
        with self._lock:
            self._reports[key] = (version, report)
            self._reports.move_to_end(key)
            while len(self._reports) > self.size:
                self._reports.popitem(last=False)
        return report


report_cache = ReportCache()


def project_agreement(
    *, session: Session, project: Project, filters: AgreementFilters = AgreementFilters()
) -> AgreementReport:
    """The project's figures, from the cache when nothing has changed since."""
    return report_cache.get(session=session, project=project, filters=filters)


# --- Consensus -----------------------------------------------------------------------------


def groups_from_scores(answer_ids: Ints, scores: Floats) -> list[list[int]]:
    """Answers grouped by equal score, best (lowest) first; answers nobody ranked left out."""
    keep = ~np.isnan(scores) & (answer_ids >= 0)
    rounded = np.round(scores[keep], 12)
    ids = answer_ids[keep]
    return [sorted(int(a) for a in ids[rounded == value]) for value in np.unique(rounded)]


def consensus_rankings(
    *, session: Session, project: Project, filters: AgreementFilters = AgreementFilters()
) -> dict[int, list[list[int]]]:
    """The consensus ranking (Borda count, see ``CONSENSUS_METHOD``) of every prompt with a
    ranking: {prompt id: groups of completion ids, best first}; AI judges' rankings left
    out."""
    table = load_rank_table(session=session, project=project, filters=filters).without_ai()
    scores = metrics.borda_scores(table.ranks, table.prompt, table.n_prompts)
    return {
        int(prompt_id): groups_from_scores(table.answer_ids[p], scores[p])
        for p, prompt_id in enumerate(table.prompt_ids)
    }


def consensus_of(rankings: Sequence[Sequence[Sequence[int]]]) -> list[list[int]]:
    """The consensus of a few rankings of one prompt (groups of completion ids, best first)."""
    answers = sorted({a for ranking in rankings for group in ranking for a in group})
    if not answers:
        return []
    ranks = np.vstack([_ranking_row(ranking, answers) for ranking in rankings])
    scores = metrics.borda_scores(ranks, np.zeros(len(rankings), dtype=np.int64), 1)[0]
    return groups_from_scores(np.array(answers, dtype=np.int64), scores)


# --- One labeler beside the others ---------------------------------------------------------


@dataclass(frozen=True)
class RankingColumn:
    title: str
    places: dict[int, int]  # completion id -> place, 1 = best (ties share it)
    is_subject: bool = False  # the labeler the page is about
    kind: str = "labeler"  # labeler, gold or consensus


@dataclass(frozen=True)
class PromptSideBySide:
    prompt_id: int
    prompt_text: str
    ranked_at: datetime
    answers: list[tuple[int, str]]  # (completion id, text) in id order
    columns: list[RankingColumn]
    agreement_with_rest: float | None  # the subject's pairs ordered as the others' consensus


def _places(ranking: Sequence[Sequence[int]]) -> dict[int, int]:
    return {a: place + 1 for place, group in enumerate(ranking) for a in group}


def side_by_side(
    *,
    session: Session,
    project: Project,
    key: str,
    limit: int = 20,
    only: Sequence[int] | None = None,
) -> list[PromptSideBySide]:
    """The labeler's most recent rankings in the project (``only``: those comparison ids),
    each beside the other labelers' rankings of the same prompt (rejected ones and AI judges'
    left out), the gold ranking and the consensus of the others."""
    whose = _whose(key)
    stmt = (
        select(Comparison)
        .join(Prompt, Prompt.id == Comparison.prompt_id)
        .where(Prompt.project_id == project.id, Comparison.is_latest.is_(True), whose)
        .where(Comparison.not_rankable.is_(False))
    )
    if only is not None:
        stmt = stmt.where(Comparison.id.in_(only))
    theirs = session.scalars(
        stmt.order_by(Comparison.created_at.desc(), Comparison.id.desc()).limit(limit)
    ).all()
    prompt_ids = [c.prompt_id for c in theirs]
    others: dict[int, list[Comparison]] = {}
    for c in session.scalars(
        select(Comparison)
        .where(Comparison.prompt_id.in_(prompt_ids), Comparison.is_latest.is_(True))
        .where(Comparison.not_rankable.is_(False), not_rejected_comparison(Comparison.id))
        .where(not_ai_rated())
        .order_by(Comparison.created_at)
    ):
        if labeler_key(c.labeler_id, c.labeler_external) != key:
            others.setdefault(c.prompt_id, []).append(c)
    names = _labeler_names(
        session=session,
        keys=[labeler_key(c.labeler_id, c.labeler_external) for cs in others.values() for c in cs],
    )
    texts = dict(
        session.execute(select(Prompt.id, Prompt.text).where(Prompt.id.in_(prompt_ids))).all()
    )
    gold: dict[int, list[list[int]]] = dict(
        session.execute(
            select(GoldRanking.prompt_id, GoldRanking.ranking).where(
                GoldRanking.prompt_id.in_(prompt_ids)
            )
        ).all()
    )
    answers: dict[int, dict[int, str]] = {}
    for completion_id, prompt_id, text in session.execute(
        select(Completion.id, Completion.prompt_id, Completion.text)
        .where(Completion.prompt_id.in_(prompt_ids))
        .order_by(Completion.id)
    ):
        answers.setdefault(prompt_id, {})[completion_id] = text

    out = []
    for mine in theirs:
        shown = set(mine.displayed_completion_ids)
        columns = [RankingColumn("This labeler", _places(mine.ranking), is_subject=True)]
        rest = others.get(mine.prompt_id, [])
        for c in rest:
            key_c = labeler_key(c.labeler_id, c.labeler_external)
            name = names.get(key_c, (key_c.removeprefix("external:"), None))[0]
            columns.append(RankingColumn(name, _places(c.ranking)))
        agreement = None
        if rest:
            consensus = consensus_of([c.ranking for c in rest])
            columns.append(
                RankingColumn("Consensus of the others", _places(consensus), kind="consensus")
            )
            signs_mine = _ranking_row(mine.ranking, sorted(shown))
            signs_rest = _ranking_row(consensus, sorted(shown))
            agreed, counted = metrics.agreement_with_reference(signs_mine, signs_rest)
            agreement = float(agreed[0] / counted[0]) if counted[0] else None
        if mine.prompt_id in gold:
            gold_shown = [[a for a in g if a in shown] for g in gold[mine.prompt_id]]
            columns.append(
                RankingColumn("Gold", _places([g for g in gold_shown if g]), kind="gold")
            )
        prompt_answers = answers.get(mine.prompt_id, {})
        out.append(
            PromptSideBySide(
                prompt_id=mine.prompt_id,
                prompt_text=texts.get(mine.prompt_id, ""),
                ranked_at=mine.created_at,
                answers=[(a, prompt_answers.get(a, "")) for a in sorted(shown)],
                columns=columns,
                agreement_with_rest=agreement,
            )
        )
    return out


def _ranking_row(ranking: Sequence[Sequence[int]], answers: Sequence[int]) -> Floats:
    """One ranking as a (1 x answers) row of places, NaN for answers it does not place."""
    places = {a: place for place, group in enumerate(ranking) for a in group}
    return np.array([[places.get(a, np.nan) for a in answers]], dtype=np.float64)
