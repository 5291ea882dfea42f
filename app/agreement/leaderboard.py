"""The model leaderboard (design §14): did the new policy beat the old one with people?

Each answer has an origin (``Completion.origin``: ``model:<version id>`` or
``import:<name>``). Every ordered pair of answers in different groups of a human ranking is a
win for the better answer's origin (:func:`app.labeling.ranking.ordered_pairs`, the
enumeration exports and the reward model use); ties give no pair, and neither do two answers
of the same origin. So that a ranking counts once whatever its K, each of a ranking's pairs
weighs 1 / (the number of its pairs).

Ratings are Bradley-Terry strengths fitted by weighted maximum likelihood (``scipy.optimize``)
on Elo's scale: ``P(a beats b) = 1 / (1 + 10 ** ((rating_b - rating_a) / 400))``, anchored so
that the origins' mean rating is 1000 (the likelihood only sees differences; the prior
centres them, see :func:`fit_ratings`). Confidence intervals come from a bootstrap over
prompts (a prompt's rankings stay together, since they share its answers), and win rates are
weighted shares of pairs won.

The math (:func:`pair_table`, :func:`build_leaderboard`) takes plain data; the loader at the
end reads a project's rankings through the agreement figures' loader, so both count the same
rankings."""

from __future__ import annotations

import math
import threading
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit, log_expit
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.agreement.metrics import Floats, Ints
from app.agreement.service import (
    AgreementFilters,
    RankTable,
    data_version,
    groups_from_scores,
    load_rank_table,
)
from app.labeling.models import Completion, Prompt
from app.labeling.ranking import ordered_pairs
from app.models_registry.models import ModelVersion
from app.projects.models import Project

SCALE = 400 / math.log(10)  # rating points per unit of log-odds (Elo's scale)
MEAN_RATING = 1000.0
# The prior: ratings ~ Normal(1000, PRIOR_SD). Without it an origin that never loses (or a
# group of origins never compared with the rest) has no finite maximum-likelihood rating;
# 600 points (a 97% win rate at one standard deviation) is weak beside even a few dozen
# rankings, so with real data the fit is the likelihood's.
PRIOR_SD = 600.0
RESAMPLES = 200
SEED = 0
CONFIDENCE = 0.95

Ranking = Sequence[Sequence[int]]


@dataclass(frozen=True)
class PairTable:
    """The counted pairs of some rankings, as arrays: one entry per (ranking, pair)."""

    origins: list[str]  # sorted; winner and loser index into it
    prompt: Ints  # (n,) index of the pair's prompt, 0..n_prompts-1
    winner: Ints  # (n,)
    loser: Ints  # (n,)
    weight: Floats  # (n,) 1 / (pairs of its ranking): each ranking weighs 1 in all
    n_prompts: int
    n_rankings: int  # rankings that gave a pair

    @property
    def n_pairs(self) -> int:
        return len(self.weight)


def origin_pairs(ranking: Ranking, origin_of: Mapping[int, str]) -> list[tuple[str, str]]:
    """The (winner's origin, loser's origin) of each pair the ranking orders, answers of the
    same origin left out."""
    return [
        (origin_of[better], origin_of[worse])
        for better, worse, _ in ordered_pairs(ranking)
        if origin_of[better] != origin_of[worse]
    ]


def pair_table(
    rankings: Iterable[tuple[Hashable, Ranking]], origin_of: Mapping[int, str]
) -> PairTable:
    """The pairs of ``rankings``, each given as (its prompt, groups of answer ids best first);
    ``origin_of`` maps every answer id to its origin."""
    per_ranking = [(prompt, origin_pairs(ranking, origin_of)) for prompt, ranking in rankings]
    per_ranking = [(prompt, pairs) for prompt, pairs in per_ranking if pairs]
    origins = sorted({origin for _, pairs in per_ranking for pair in pairs for origin in pair})
    index = {origin: i for i, origin in enumerate(origins)}
    prompts: dict[Hashable, int] = {}
    prompt, winner, loser, weight = [], [], [], []
    for key, pairs in per_ranking:
        p = prompts.setdefault(key, len(prompts))
        for better, worse in pairs:
            prompt.append(p)
            winner.append(index[better])
            loser.append(index[worse])
            weight.append(1 / len(pairs))
    return PairTable(
        origins=origins,
        prompt=np.array(prompt, dtype=np.int64),
        winner=np.array(winner, dtype=np.int64),
        loser=np.array(loser, dtype=np.int64),
        weight=np.array(weight, dtype=np.float64),
        n_prompts=len(prompts),
        n_rankings=len(per_ranking),
    )


def win_matrix(table: PairTable, prompt_counts: Ints | None = None) -> Floats:
    """(M, M) weighted wins of each origin (row) over each other (column); ``prompt_counts``
    (how often each prompt is drawn, for the bootstrap) multiplies its pairs' weights."""
    m = len(table.origins)
    weight = table.weight if prompt_counts is None else table.weight * prompt_counts[table.prompt]
    flat = np.bincount(table.winner * m + table.loser, weights=weight, minlength=m * m)
    return np.asarray(flat, dtype=np.float64).reshape(m, m)


def fit_ratings(wins: Floats, *, prior_sd: float = PRIOR_SD, start: Floats | None = None) -> Floats:
    """Bradley-Terry ratings (Elo scale) from weighted wins, by maximum a posteriori with a
    Normal prior of ``prior_sd`` rating points around the mean. The likelihood does not change
    when every strength moves together, so at the optimum the prior's gradient sums to zero:
    the strengths sum to 0 and the mean rating is exactly ``MEAN_RATING``."""
    m = len(wins)
    strength = 1 / (prior_sd / SCALE) ** 2  # the prior's precision, in log-odds units

    def objective(s: Floats) -> tuple[float, Floats]:
        diff = s[:, None] - s[None, :]
        value = -float(np.sum(wins * log_expit(diff))) + strength / 2 * float(s @ s)
        lost = wins * expit(-diff)  # each win's 1 - P(win)
        return value, lost.sum(axis=0) - lost.sum(axis=1) + strength * s

    x0 = np.zeros(m) if start is None else (start - MEAN_RATING) / SCALE
    result = minimize(objective, x0, jac=True, method="L-BFGS-B", options={"gtol": 1e-9})
    return np.asarray(MEAN_RATING + SCALE * result.x, dtype=np.float64)


@dataclass(frozen=True)
class Standing:
    """One origin on the leaderboard."""

    origin: str
    name: str  # as people read it (the model version's name, the import's model name)
    rating: float
    ci: tuple[float | None, float | None]  # None where no resample had its pairs
    win_rate: float  # weighted share of its pairs won
    n_pairs: int
    against: dict[str, tuple[float, int]] = field(default_factory=dict)  # origin -> (rate, n)

    def as_dict(self) -> dict[str, Any]:
        return {
            "origin": self.origin,
            "name": self.name,
            "rating": round(self.rating, 1),
            "ci": [None if v is None else round(v, 1) for v in self.ci],
            "win_rate": round(self.win_rate, 4),
            "n_pairs": self.n_pairs,
            "against": {
                other: {"win_rate": round(rate, 4), "n_pairs": n}
                for other, (rate, n) in self.against.items()
            },
        }


@dataclass(frozen=True)
class Leaderboard:
    models: list[Standing]  # best first
    n_rankings: int
    n_pairs: int
    resamples: int
    confidence: float = CONFIDENCE

    def as_dict(self) -> dict[str, Any]:
        return {
            "models": [s.as_dict() for s in self.models],
            "rankings": self.n_rankings,
            "pairs": self.n_pairs,
            "resamples": self.resamples,
            "confidence": self.confidence,
        }


def bootstrap_ratings(
    table: PairTable, *, resamples: int = RESAMPLES, seed: int = SEED, start: Floats | None = None
) -> Floats:
    """(resamples, M) ratings refitted on prompts drawn with replacement; NaN for an origin
    that has no pair in a resample (its rating there would be the prior's alone)."""
    rng = np.random.default_rng(seed)
    out = np.full((resamples, len(table.origins)), np.nan)
    for b in range(resamples):
        drawn = rng.integers(0, table.n_prompts, table.n_prompts)
        wins = win_matrix(table, np.bincount(drawn, minlength=table.n_prompts))
        present = (wins + wins.T).sum(axis=1) > 0
        out[b] = np.where(present, fit_ratings(wins, start=start), np.nan)
    return out


def build_leaderboard(
    table: PairTable,
    *,
    names: Mapping[str, str] | None = None,
    resamples: int = RESAMPLES,
    seed: int = SEED,
    confidence: float = CONFIDENCE,
) -> Leaderboard:
    """Ratings, ``confidence`` percentile intervals over ``resamples`` bootstrap resamples of
    the prompts (seeded: the same data gives the same intervals), and win rates."""
    if not table.n_pairs:
        return Leaderboard(models=[], n_rankings=0, n_pairs=0, resamples=resamples)
    wins = win_matrix(table)
    counts = win_matrix(replace(table, weight=np.ones(table.n_pairs)))
    ratings = fit_ratings(wins)
    tail = (1 - confidence) / 2 * 100
    boot = bootstrap_ratings(table, resamples=resamples, seed=seed, start=ratings)
    seen = ~np.all(np.isnan(boot), axis=0)
    lows, highs = np.full(len(ratings), np.nan), np.full(len(ratings), np.nan)
    if seen.any():
        lows[seen], highs[seen] = np.nanpercentile(boot[:, seen], [tail, 100 - tail], axis=0)
    played, n_played = wins + wins.T, counts + counts.T
    standings = []
    for i, origin in enumerate(table.origins):
        against = {
            other: (float(wins[i, j] / played[i, j]), int(n_played[i, j]))
            for j, other in enumerate(table.origins)
            if n_played[i, j]
        }
        standings.append(
            Standing(
                origin=origin,
                name=(names or {}).get(origin, origin),
                rating=float(ratings[i]),
                ci=(_number(lows[i]), _number(highs[i])),
                win_rate=float(wins[i].sum() / played[i].sum()),
                n_pairs=int(n_played[i].sum()),
                against=against,
            )
        )
    standings.sort(key=lambda s: (-s.rating, s.origin))
    return Leaderboard(
        models=standings,
        n_rankings=table.n_rankings,
        n_pairs=table.n_pairs,
        resamples=resamples,
        confidence=confidence,
    )


def _number(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


# --- A project's leaderboard ---------------------------------------------------------------


def counted_rankings(*, session: Session, project: Project) -> RankTable:
    """The rankings the leaderboard counts: people's current rankings, as the agreement
    figures load them (latest revisions; "not rankable" out; imported preferences and AI
    judges' rankings out, they are not people), without gold prompts (every labeler is served those, so they would
    outweigh the rest, and their answers are often chosen to test labelers), and without the
    rankings an admin rejected (design §13: the loader leaves them out)."""
    table = load_rank_table(
        session=session, project=project, filters=AgreementFilters(gold="non-gold")
    )
    return table.people_only()


def origin_names(*, session: Session, origins: Sequence[str]) -> dict[str, str]:
    """Readable names: the model version's name for ``model:<id>``, the name after
    ``import:``; any other origin (or a deleted version) as it is stored."""
    ids = {o: int(o.removeprefix("model:")) for o in origins if o.startswith("model:")}
    ids = {o: i for o, i in ids.items() if str(i) == o.removeprefix("model:")}
    versions = dict(
        session.execute(
            select(ModelVersion.id, ModelVersion.name).where(ModelVersion.id.in_(ids.values()))
        ).all()
        if ids
        else []
    )
    names = {}
    for origin in origins:
        if origin in ids and ids[origin] in versions:
            names[origin] = str(versions[ids[origin]])
        elif origin.startswith("import:") and origin != "import:":
            names[origin] = origin.removeprefix("import:")
        else:
            names[origin] = origin
    return names


def build_project_leaderboard(
    *, session: Session, project: Project, resamples: int = RESAMPLES
) -> Leaderboard:
    """Load and compute (no cache)."""
    table = counted_rankings(session=session, project=project)
    origin_of: dict[int, str] = {}
    if len(table.prompt):
        origin_of = {
            int(cid): origin
            for cid, origin in session.execute(
                select(Completion.id, Completion.origin)
                .join(Prompt, Prompt.id == Completion.prompt_id)
                .where(Prompt.project_id == project.id)
            )
        }
    rankings = (
        (int(p), groups_from_scores(table.answer_ids[p], table.ranks[row]))
        for row, p in enumerate(table.prompt)
    )
    pairs = pair_table(rankings, origin_of)
    names = origin_names(session=session, origins=pairs.origins)
    return build_leaderboard(pairs, names=names, resamples=resamples)


class LeaderboardCache:
    """Each project's latest leaderboard, kept while ``data_version`` is unchanged (the
    bootstrap refits the model a few hundred times: the project page should not wait for it
    on every view). One per process; threads share it."""

    def __init__(self, size: int = 64) -> None:
        self.size = size
        self._boards: dict[int, tuple[tuple[Any, ...], Leaderboard]] = {}
        self._lock = threading.Lock()

    def clear(self) -> None:
        with self._lock:
            self._boards.clear()

    def get(self, *, session: Session, project: Project) -> Leaderboard:
        version = data_version(session=session)
        with self._lock:
            hit = self._boards.get(project.id)
        if hit is not None and hit[0] == version:
            return hit[1]
        board = build_project_leaderboard(session=session, project=project)
        with self._lock:
            self._boards.pop(project.id, None)
            self._boards[project.id] = (version, board)
            while len(self._boards) > self.size:  # dicts keep insertion order: oldest first
                del self._boards[next(iter(self._boards))]
        return board


leaderboard_cache = LeaderboardCache()


def project_leaderboard(*, session: Session, project: Project) -> Leaderboard:
    """The project's leaderboard, from the cache when no ranking has changed since."""
    return leaderboard_cache.get(session=session, project=project)
