"""Agreement metrics: plain functions over plain arrays (numpy), no database.

A project's current comparisons become a ``RankTable``: one row per comparison, one column
per answer of its prompt (the prompt's answers in id order), holding the answer's place in
that ranking (0 = best group; equal numbers tie) or NaN where the labeler was not shown it.
Rows are sorted by prompt, so a prompt's rankings are neighbours. Every metric is built
from per-prompt sums, which makes the 95% interval a bootstrap over prompts: prompts are
resampled with replacement and the same sums are re-added (the labels of one prompt are not
independent of each other; prompts are).

Tie handling, pairwise agreement: a pair of answers tied by either labeler is left out, and
the number of such pairs is reported. Kendall's tau-b keeps ties, as its formula does.

Each result says what it rests on (``n``) and, when there is not enough data, carries
``value=None`` and a ``reason``: never NaN, never a made-up 1.0.

The runtime code is numpy only (per-prompt sums are what the bootstrap needs); the tests
check it against ``krippendorff``, ``scipy`` and ``statsmodels`` and the published vectors.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from numpy.typing import NDArray

Floats = NDArray[np.float64]
Ints = NDArray[np.int64]
Bools = NDArray[np.bool_]
Weights = NDArray[np.float32]

CONFIDENCE = 0.95
BOOTSTRAP_SEED = 20221  # fixed, so the page, the CLI and the API show the same interval
MAX_BOOTSTRAP = 1000
MIN_BOOTSTRAP = 200
BOOTSTRAP_WORK = 20_000_000  # resamples x prompts; fewer resamples for very large projects


@dataclass(frozen=True)
class Metric:
    """One figure, what it rests on, and its 95% interval (None where not computed)."""

    value: float | None
    n: int = 0  # the items it rests on (pairs, prompts, answers: said by ``unit``)
    unit: str = ""
    low: float | None = None
    high: float | None = None
    reason: str | None = None  # why there is no value
    extra: Mapping[str, float | int | None] = field(default_factory=dict)

    @classmethod
    def missing(cls, reason: str, *, n: int = 0, unit: str = "", **extra: float | int) -> Metric:
        return cls(value=None, n=n, unit=unit, reason=reason, extra=dict(extra))

    def as_dict(self) -> dict[str, object]:
        return {
            "value": self.value,
            "n": self.n,
            "unit": self.unit,
            "ci95": None if self.low is None else [self.low, self.high],
            "reason": self.reason,
            **self.extra,
        }


# --- The bootstrap -------------------------------------------------------------------------


def bootstrap_weights(n_prompts: int, *, seed: int = BOOTSTRAP_SEED) -> Weights:
    """How many times each prompt is drawn in each resample: (resamples x prompts), as
    float32 (exact for these counts) so every interval is one float32 matrix product."""
    if n_prompts == 0:
        return np.zeros((0, 0), dtype=np.float32)
    n_boot = int(np.clip(BOOTSTRAP_WORK // n_prompts, MIN_BOOTSTRAP, MAX_BOOTSTRAP))
    rng = np.random.default_rng(seed)
    weights = np.empty((n_boot, n_prompts), dtype=np.float32)
    for resample in weights:  # a loop over resamples (at most 1000), not over prompts
        resample[:] = np.bincount(rng.integers(0, n_prompts, n_prompts), minlength=n_prompts)
    return weights


def interval(
    per_prompt: Floats, statistic: Callable[[Floats], Floats], weights: Weights | None
) -> tuple[float | None, float | None]:
    """The percentile interval of ``statistic`` (sums, one row per resample -> values) over
    resamples of the prompts' rows of ``per_prompt`` (prompts x sums)."""
    if weights is None or weights.size == 0 or per_prompt.shape[0] < 2:
        return None, None
    with np.errstate(invalid="ignore", divide="ignore"):
        sums = weights @ per_prompt.reshape(per_prompt.shape[0], -1).astype(np.float32)
        values = statistic(sums.astype(np.float64))
    values = values[np.isfinite(values)]
    if values.size == 0:
        return None, None
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


# --- Rankings as pairs ---------------------------------------------------------------------


def column_pairs(width: int) -> tuple[Ints, Ints]:
    """Every (i, j) column pair with i < j."""
    i, j = np.triu_indices(width, k=1)
    return i.astype(np.int64), j.astype(np.int64)


def pair_signs(ranks: Floats) -> Floats:
    """For each row and each answer pair (i < j): +1 when i is placed below j, -1 above,
    0 tied, NaN when either was not ranked. (rows x pairs)"""
    i, j = column_pairs(ranks.shape[1])
    return np.sign(ranks[:, i] - ranks[:, j])


def same_prompt_pairs(prompt: Ints) -> tuple[Ints, Ints]:
    """Every pair of rows (a < b) on the same prompt; ``prompt`` must be sorted."""
    firsts: list[Ints] = []
    seconds: list[Ints] = []
    n = prompt.shape[0]
    offset = 1
    while offset < n:
        same = prompt[offset:] == prompt[:-offset]
        if not same.any():
            break  # sorted: no pair this far apart means none further apart either
        a = np.flatnonzero(same)
        firsts.append(a)
        seconds.append(a + offset)
        offset += 1
    if not firsts:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    return np.concatenate(firsts), np.concatenate(seconds)


def midranks(ranks: Floats) -> tuple[Floats, Floats]:
    """Each answer's rank from 1 (best), ties sharing the mean of their places, NaN where not
    ranked; and per row the tie term sum(t^3 - t) over its tie groups."""
    present = ~np.isnan(ranks)
    filled = np.where(present, ranks, np.inf)
    above = (filled[:, None, :] < filled[:, :, None]) & present[:, None, :]
    level = (filled[:, None, :] == filled[:, :, None]) & present[:, None, :]
    n_above = above.sum(axis=2)
    n_level = level.sum(axis=2)
    mid = np.where(present, n_above + (n_level + 1) / 2, np.nan)
    tie_term = np.where(present, n_level.astype(np.float64) ** 2 - 1, 0).sum(axis=1)
    return mid, tie_term


# --- Pairwise preference agreement ---------------------------------------------------------


@dataclass(frozen=True)
class PairCounts:
    """Per row pair (two labelers on one prompt): answer pairs both ordered and agreed on."""

    counted: Floats  # pairs ordered (not tied) by both
    agreed: Floats
    tied: Floats  # pairs tied by either, left out
    concordant: Floats  # for tau-b: same order (ties excluded)
    discordant: Floats
    both_ranked: Floats  # pairs both ranked (tau-b's n0)
    tied_first: Floats  # tau-b's n1, n2
    tied_second: Floats


def pair_counts(signs_a: Floats, signs_b: Floats) -> PairCounts:
    valid = ~np.isnan(signs_a) & ~np.isnan(signs_b)
    tie_a = valid & (signs_a == 0)
    tie_b = valid & (signs_b == 0)
    tied = tie_a | tie_b
    counted = valid & ~tied
    product = np.where(valid, signs_a * signs_b, 0)
    return PairCounts(
        counted=counted.sum(axis=1).astype(np.float64),
        agreed=(counted & (product > 0)).sum(axis=1).astype(np.float64),
        tied=tied.sum(axis=1).astype(np.float64),
        concordant=(product > 0).sum(axis=1).astype(np.float64),
        discordant=(product < 0).sum(axis=1).astype(np.float64),
        both_ranked=valid.sum(axis=1).astype(np.float64),
        tied_first=tie_a.sum(axis=1).astype(np.float64),
        tied_second=tie_b.sum(axis=1).astype(np.float64),
    )


def per_prompt_sums(index: Ints, n_prompts: int, *columns: Floats) -> Floats:
    """Sums of each column per prompt: (prompts x columns)."""
    sums = [np.bincount(index, weights=c, minlength=n_prompts) for c in columns]
    return np.stack(sums, axis=1).astype(np.float64)


def columns_per_prompt(table: Floats | Bools, prompt: Ints, n_prompts: int) -> Floats:
    """Each column of a (rows x answers) table summed over each prompt's rows."""
    return per_prompt_sums(prompt, n_prompts, *table.T.astype(np.float64))


def ratio(sums: Floats) -> Floats:
    return sums[:, 0] / sums[:, 1]


def _micro_macro(agreed: Floats, counted: Floats, weights: Weights | None) -> tuple[Metric, Metric]:
    """Micro (all pairs pooled) and macro (the mean of each prompt's rate) from per-prompt
    sums of agreed and counted pairs."""
    total = float(counted.sum())
    has = counted > 0
    n_prompts = int(has.sum())
    if total == 0:
        reason = "no answer pair was ordered by two labelers (no overlap yet, or all ties)"
        return Metric.missing(reason, unit="pairs"), Metric.missing(reason, unit="prompts")
    micro_low, micro_high = interval(np.stack([agreed, counted], 1), ratio, weights)
    rate = np.divide(agreed, counted, out=np.zeros_like(agreed), where=has)
    macro_low, macro_high = interval(np.stack([rate, has.astype(np.float64)], 1), ratio, weights)
    micro = Metric(float(agreed.sum()) / total, int(total), "pairs", micro_low, micro_high)
    macro = Metric(float(rate[has].mean()), n_prompts, "prompts", macro_low, macro_high)
    return micro, macro


def pairwise_agreement_of(
    signs: Floats, a: Ints, b: Ints, prompt: Ints, n_prompts: int, weights: Weights | None
) -> dict[str, object]:
    """How often two labelers order an answer pair the same way, over every pair of labelers
    of every prompt (rows ``a[k]`` and ``b[k]``)."""
    counts = pair_counts(signs[a], signs[b])
    sums = per_prompt_sums(prompt[a], n_prompts, counts.agreed, counts.counted, counts.tied)
    micro, macro = _micro_macro(sums[:, 0], sums[:, 1], weights)
    return {
        "micro": micro,
        "macro": macro,
        "n_pairs": micro.n,
        "n_tied_pairs_left_out": int(sums[:, 2].sum()),
        "per_prompt": sums,
    }


def pairwise_agreement(rankings: dict[str, dict[str, float]]) -> Metric:
    """Pairwise agreement of labelers' rankings of one prompt's answers
    ({labeler: {answer: rank, 1 = best}}); ties by either are left out."""
    answers = sorted({answer for ranks in rankings.values() for answer in ranks})
    table = np.array(
        [[ranks.get(answer, np.nan) for answer in answers] for ranks in rankings.values()],
        dtype=np.float64,
    )
    prompt = np.zeros(len(table), dtype=np.int64)
    a, b = same_prompt_pairs(prompt)
    result = pairwise_agreement_of(pair_signs(table), a, b, prompt, 1, None)
    micro = result["micro"]
    assert isinstance(micro, Metric)
    return micro


# --- Kendall's tau-b -----------------------------------------------------------------------


def tau_b_of(counts: PairCounts) -> tuple[Floats, Bools]:
    """Tau-b per row pair, and where it is defined (neither labeler tied everything)."""
    n0 = counts.both_ranked
    denominator = np.sqrt((n0 - counts.tied_first) * (n0 - counts.tied_second))
    defined = denominator > 0
    tau = np.divide(
        counts.concordant - counts.discordant,
        denominator,
        out=np.zeros_like(denominator),
        where=defined,
    )
    return tau, defined


def mean_tau_b(
    signs: Floats, a: Ints, b: Ints, prompt: Ints, n_prompts: int, weights: Weights | None
) -> Metric:
    """The mean of Kendall's tau-b over every pair of labelers of every prompt."""
    tau, defined = tau_b_of(pair_counts(signs[a], signs[b]))
    if not defined.any():
        return Metric.missing(
            "no two labelers ranked the same answers with an order (no overlap, or all ties)",
            unit="labeler pairs",
        )
    sums = per_prompt_sums(prompt[a], n_prompts, np.where(defined, tau, 0), defined.astype(float))
    low, high = interval(sums, ratio, weights)
    return Metric(float(tau[defined].mean()), int(defined.sum()), "labeler pairs", low, high)


def kendall_tau_b(x: list[float], y: list[float]) -> float | None:
    """Kendall's tau-b between two rankings (or any scores) of the same items."""
    signs = pair_signs(np.array([x, y], dtype=np.float64))
    tau, defined = tau_b_of(pair_counts(signs[:1], signs[1:]))
    return float(tau[0]) if defined[0] else None


# --- Kendall's W ---------------------------------------------------------------------------


def kendall_wper_prompt_sums(
    ranks: Floats, prompt: Ints, n_prompts: int
) -> tuple[Floats, Bools, int]:
    """Kendall's W (tie-corrected) per prompt, where it is defined (2+ labelers who ranked
    the same 2+ answers, not all tied), and the number of prompts left out because their
    labelers were shown different answers."""
    mid, tie_term = midranks(ranks)
    present = ~np.isnan(ranks)
    m = np.bincount(prompt, minlength=n_prompts).astype(np.float64)
    col_count = columns_per_prompt(present, prompt, n_prompts)
    same_answers = ((col_count == 0) | (col_count == m[:, None])).all(axis=1)
    n = (col_count > 0).sum(axis=1).astype(np.float64)
    rank_sums = columns_per_prompt(np.nan_to_num(mid), prompt, n_prompts)
    mean_sum = m * (n + 1) / 2
    s = (np.where(col_count > 0, rank_sums - mean_sum[:, None], 0) ** 2).sum(axis=1)
    ties = np.bincount(prompt, weights=tie_term, minlength=n_prompts)
    denominator = m**2 * (n**3 - n) - m * ties
    defined = same_answers & (m >= 2) & (n >= 2) & (denominator > 0)
    w = np.divide(12 * s, denominator, out=np.zeros_like(s), where=defined)
    mixed = int((~same_answers & (m >= 2)).sum())
    return w, defined, mixed


def mean_kendall_w(ranks: Floats, prompt: Ints, n_prompts: int, weights: Weights | None) -> Metric:
    w, defined, mixed = kendall_wper_prompt_sums(ranks, prompt, n_prompts)
    extra = {"n_prompts_mixed_answers_left_out": mixed}
    if not defined.any():
        return Metric.missing(
            "no prompt has two or more labelers whose rankings are not all ties",
            unit="prompts",
            **extra,
        )
    low, high = interval(
        np.stack([np.where(defined, w, 0), defined.astype(float)], 1), ratio, weights
    )
    return Metric(float(w[defined].mean()), int(defined.sum()), "prompts", low, high, extra=extra)


def kendall_w(ranks_by_judge: list[list[float]]) -> float | None:
    """Kendall's W (tie-corrected) of several judges' ranks of the same objects
    (judges x objects)."""
    ranks = np.array(ranks_by_judge, dtype=np.float64)
    w, defined, _ = kendall_wper_prompt_sums(ranks, np.zeros(len(ranks), dtype=np.int64), 1)
    return float(w[0]) if defined[0] else None


# --- Krippendorff's alpha ------------------------------------------------------------------

Level = Literal["nominal", "ordinal", "interval"]


def coincidences(value_counts: Floats) -> Floats:
    """Coincidence matrices from value counts (... x units x values): summed over units,
    only units with 2+ values count. Returns (... x values x values)."""
    m = value_counts.sum(axis=-1)
    scale = np.divide(1.0, m - 1, out=np.zeros_like(m), where=m >= 2)
    outer = np.einsum("...uc,...uk->...ck", value_counts * scale[..., None], value_counts)
    diagonal = (value_counts * scale[..., None]).sum(axis=-2)
    idx = np.arange(value_counts.shape[-1])
    outer[..., idx, idx] -= diagonal
    return outer


def _distances(marginals: Floats, values: Floats, level: Level) -> Floats:
    """delta^2 between values (... x V x V); ordinal uses the marginals (Krippendorff 2011)."""
    v = values.shape[0]
    if level == "nominal":
        return np.broadcast_to(1 - np.eye(v), (*marginals.shape[:-1], v, v))
    if level == "interval":
        return np.broadcast_to(
            (values[:, None] - values[None, :]) ** 2, (*marginals.shape[:-1], v, v)
        )
    cumulative = np.cumsum(marginals, axis=-1)
    # sum_{g=c..k} n_g - (n_c + n_k) / 2, for c <= k (symmetric)
    lo = np.minimum.outer(np.arange(v), np.arange(v))
    hi = np.maximum.outer(np.arange(v), np.arange(v))
    before = np.where(lo > 0, np.take(cumulative, lo - 1, axis=-1), 0)
    between = np.take(cumulative, hi, axis=-1) - before
    n_c = marginals[..., :, None]
    n_k = marginals[..., None, :]
    return (between - (n_c + n_k) / 2) ** 2


def alpha_from_coincidences(o: Floats, values: Floats, level: Level) -> Floats:
    """Krippendorff's alpha from coincidence matrices (... x V x V)."""
    marginals = o.sum(axis=-1)
    n = marginals.sum(axis=-1)
    delta = _distances(marginals, values, level)
    observed = (o * delta).sum(axis=(-2, -1))
    expected = (marginals[..., :, None] * marginals[..., None, :] * delta).sum(axis=(-2, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return 1 - (n - 1) * observed / expected


def krippendorff_alpha_of(
    value_counts: Floats, values: Floats, level: Level, weights: Weights | None
) -> Metric:
    """Alpha over units grouped by prompt: ``value_counts`` is (prompts x units x values)."""
    per_prompt = coincidences(value_counts)
    o = per_prompt.sum(axis=0)
    pairable = int((value_counts.sum(axis=-1) >= 2).sum())
    if pairable == 0:
        return Metric.missing("no answer was labeled by two or more labelers", unit="answers")
    used = o.sum(axis=-1) > 0
    if used.sum() < 2:
        return Metric.missing(
            "every label has the same value, so agreement cannot be told from chance",
            n=pairable,
            unit="answers",
        )
    alpha = float(alpha_from_coincidences(o, values, level))
    v = values.shape[0]

    def statistic(sums: Floats) -> Floats:
        return alpha_from_coincidences(sums.reshape(-1, v, v), values, level)

    low, high = interval(per_prompt, statistic, weights)
    return Metric(alpha, pairable, "answers", low, high)


def value_counts_of(data: list[list[float | None]]) -> tuple[Floats, Floats]:
    """(units x values) counts and the sorted values, from coders x units data (None = missing)."""
    table = np.array([[np.nan if x is None else x for x in row] for row in data], dtype=float)
    values = np.unique(table[~np.isnan(table)])
    counts = np.stack([(table == value).sum(axis=0) for value in values], axis=1)
    return counts.astype(np.float64), values


def krippendorff_alpha(data: list[list[float | None]], level: Level) -> float | None:
    """Krippendorff's alpha of coders x units data, None = missing."""
    counts, values = value_counts_of(data)
    metric = krippendorff_alpha_of(counts[None], values, level, None)
    return metric.value


# --- Fleiss' and Cohen's kappa -------------------------------------------------------------


def _fleiss(sums: Floats) -> Floats:
    """From summed (sum of P_i, items, raters per item x items, category counts...)."""
    p_i_sum, items, ratings = sums[:, 0], sums[:, 1], sums[:, 2]
    p_j = sums[:, 3:] / ratings[:, None]
    p_bar = p_i_sum / items
    p_e = (p_j**2).sum(axis=1)
    return (p_bar - p_e) / (1 - p_e)


def fleiss_kappa_of(table: Floats, prompt: Ints, n_prompts: int, weights: Weights | None) -> Metric:
    """Fleiss' kappa of an items x categories count table; only items with the most common
    number of raters count (kappa needs the same number for each item)."""
    raters = table.sum(axis=1)
    rated = raters >= 2
    if not rated.any():
        return Metric.missing("no answer was labeled by two or more labelers", unit="answers")
    values, counts = np.unique(raters[rated], return_counts=True)
    n = values[np.argmax(counts)]
    keep = raters == n
    left_out = int(rated.sum() - keep.sum())
    t = table[keep]
    if (t.sum(axis=0) > 0).sum() < 2:
        return Metric.missing(
            "every label has the same value, so agreement cannot be told from chance",
            n=int(keep.sum()),
            unit="answers",
            n_answers_left_out=left_out,
        )
    p_i = ((t**2).sum(axis=1) - n) / (n * (n - 1))
    columns = [p_i, np.ones(len(t)), np.full(len(t), n)] + [t[:, c] for c in range(t.shape[1])]
    per_prompt = per_prompt_sums(prompt[keep], n_prompts, *columns)
    kappa = float(_fleiss(per_prompt.sum(axis=0, keepdims=True))[0])
    low, high = interval(per_prompt, _fleiss, weights)
    extra = {"raters_per_answer": int(n), "n_answers_left_out": left_out}
    return Metric(kappa, int(keep.sum()), "answers", low, high, extra=extra)


def fleiss_kappa(table: list[list[float]]) -> float | None:
    """Fleiss' kappa of a subjects x categories count table (every row the same total)."""
    counts = np.array(table, dtype=np.float64)
    return fleiss_kappa_of(counts, np.zeros(len(counts), dtype=np.int64), 1, None).value


def cohen_kappa(table: list[list[float]]) -> float | None:
    """Cohen's kappa of a two-rater contingency table (rows: rater A, columns: rater B)."""
    t = np.array(table, dtype=np.float64)
    total = t.sum()
    if total == 0:
        return None
    p_o = np.trace(t) / total
    p_e = float((t.sum(axis=1) * t.sum(axis=0)).sum()) / total**2
    return None if p_e == 1 else float((p_o - p_e) / (1 - p_e))


# --- Consensus and each labeler against the rest -------------------------------------------


def normalised_midranks(ranks: Floats) -> Floats:
    """Midranks scaled to 0 (best) .. 1 (worst), so rankings of different numbers of answers
    average fairly; NaN where not ranked. A single answer sits at 0.5."""
    mid, _ = midranks(ranks)
    n = (~np.isnan(ranks)).sum(axis=1, keepdims=True).astype(np.float64)
    return np.divide(mid - 1, n - 1, out=np.full_like(mid, 0.5), where=(n > 1) & ~np.isnan(mid))


def borda_scores(ranks: Floats, prompt: Ints, n_prompts: int) -> Floats:
    """The consensus of each prompt (Borda count): each answer's mean normalised place over
    the labelers who ranked it (prompts x answers; lower is better, NaN = nobody ranked it)."""
    place = normalised_midranks(ranks)
    sums = columns_per_prompt(np.nan_to_num(place), prompt, n_prompts)
    counts = columns_per_prompt(~np.isnan(place), prompt, n_prompts)
    with np.errstate(invalid="ignore"):
        return sums / counts


def leave_one_out_agreement(ranks: Floats, prompt: Ints, n_prompts: int) -> tuple[Floats, Floats]:
    """Per row: answer pairs it orders the same way as the Borda consensus of the *other*
    labelers of its prompt, and pairs counted (ordered by both, so not tied by either)."""
    place = normalised_midranks(ranks)
    present = ~np.isnan(place)
    sums = columns_per_prompt(np.nan_to_num(place), prompt, n_prompts)[prompt]
    counts = columns_per_prompt(present, prompt, n_prompts)[prompt]
    others = counts - present
    with np.errstate(invalid="ignore", divide="ignore"):
        rest = np.where(present & (others > 0), (sums - np.nan_to_num(place)) / others, np.nan)
    own = pair_signs(ranks)
    rest_signs = pair_signs(
        np.asarray(np.round(rest, 12), dtype=np.float64)
    )  # equal means (to rounding) are ties
    counts_ = pair_counts(own, rest_signs)
    return counts_.agreed, counts_.counted


def agreement_with_reference(ranks: Floats, reference: Floats) -> tuple[Floats, Floats]:
    """Per row: answer pairs ordered as in ``reference`` (a row per row, e.g. the gold
    ranking of its prompt; NaN rows have none), and pairs counted."""
    counts = pair_counts(pair_signs(ranks), pair_signs(reference))
    return counts.agreed, counts.counted


def position_bias(ranks: Floats, first_shown: Ints) -> tuple[Bools, Floats]:
    """Per row: whether the answer shown first was placed best (alone or tied), and the
    chance of that for a labeler who ignores position (size of the best group / answers)."""
    rows = np.arange(len(ranks))
    best = np.nanmin(np.where(np.isnan(ranks), np.inf, ranks), axis=1)
    first_best = ranks[rows, first_shown] == best
    n = (~np.isnan(ranks)).sum(axis=1)
    best_size = (ranks == best[:, None]).sum(axis=1)
    chance = np.divide(best_size, n, out=np.zeros(len(ranks)), where=n > 0)
    return first_best, chance


def length_bias(ranks: Floats, lengths: Floats) -> tuple[Floats, Floats]:
    """Per row: pairs of answers of different lengths, ordered (not tied), where the longer
    one was preferred; and such pairs counted."""
    signs = pair_signs(ranks)
    longer = pair_signs(lengths)  # +1: the first of the pair is longer
    counted = ~np.isnan(signs) & ~np.isnan(longer) & (signs != 0) & (longer != 0)
    longer_won = counted & (signs * longer < 0)  # the longer one has the smaller (better) place
    return longer_won.sum(axis=1).astype(np.float64), counted.sum(axis=1).astype(np.float64)
