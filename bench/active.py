"""Active learning: held-out reward-model accuracy against labels spent, per queue order.

Simulated labelers rank real answers (``../shared/data/alpaca_eval_k4_dev.jsonl``: 481
AlpacaEval instructions, each answered by claude-2.1, Llama-3-8B-Instruct,
Mistral-7B-Instruct-v0.2 and alpaca-7b; the 2 prompts with a repeated answer are left out)
by a hidden preference, and a fast reward model is refitted on what they ranked so far.
Everything goes through the app's own paths, on a fresh SQLite database per run (a copy of
one built by Alembic at the start, with the labelers in it): the import service brings the
pool's prompts and answers, the labelers are users, the queue is ``lease_next_task`` under
the project's ``queue_order``, rankings are ``submit_ranking``, and each refit is a
``model_versions`` row (kind rm) whose score of every answer of the project is stored with
``store_scores``; ``refresh_score_gaps`` then sets the gaps the ``uncertain`` order reads.

The set-up, per seed (the three orders of a seed share it, so they differ only by order):

- Prompts: 30% held out (never imported, never labeled), the rest form the labeling pool.
- Latent preference ``u`` of an answer (hidden from the RM), a sum of z-scored terms:
  ``u = 1.0 len + 0.5 list + 0.6 clean_end - 0.8 refusal - 0.3 hedges + 0.3 code
  + 1.0 words + e``, where ``len = log(1 + min(words, 250))`` (longer is better, up to about
  250 words: the RM sees only the unbounded log length), ``list`` is log(1 + list lines),
  ``clean_end`` whether the text ends with punctuation (not cut off), ``refusal`` an apology
  or refusal in its first 300 characters, ``hedges`` log(1 + hedging phrases), ``code``
  log(1 + code blocks), ``words`` what the answer says: fixed hidden N(0, 1) weights (seed
  21, the same in every run) on the hashed bag of words below, and ``e ~ N(0, 0.5^2)`` a
  per-answer quality that no feature shows (so no RM here reaches 100%).
- Labelers: each ranking orders the served answers by ``u + Gumbel(0, beta)``, the noise
  drawn per (seed, prompt, labeler), so a labeler ranks a prompt alike under every order
  (Plackett-Luce: every pairwise choice is Bradley-Terry, P(a > b) = sigmoid((u_a - u_b) /
  beta)); ``beta`` is set so that two labelers agree on 73% of answer pairs, the
  inter-labeler agreement InstructGPT reports (72.6 +- 1.5%).
- Project: K = 4, overlap 2 for every order (``disagreement`` needs two rankings to see
  disagreement; it adds rankings up to max_overlap = overlap + 2 where they disagree on more
  than 30% of pairs), 5 labelers taking turns, no gold.
- RM: Bradley-Terry logistic regression (L2 1.0, no intercept, L-BFGS) on 12 z-scored text
  features (log words, log lines, list lines, headings, code blocks, bold spans, refusal,
  hedges, question marks, clean end, digit share, log words per sentence) and a 256-bucket
  hashed bag of words (crc32 of lower-case words, log counts, unit length, z-scored and
  scaled by 1/16 so the buckets together weigh in the prior as one feature), fitted on every
  pair of the stored rankings (6 per ranking). Refitted every ``--retrain-every`` rankings;
  before the first fit no prompt has a score (``uncertain`` then serves oldest first).
- Held-out accuracy: the share of the held-out prompts' answer pairs (6 per prompt) the RM
  orders as the noise-free latent ``u`` does (a tie in RM score counts half).

A label is one ranking of the K answers. Reports the mean and standard deviation over seeds
at each refit, and the labels ``uncertain`` (and ``disagreement``) needed for their mean to
reach ``oldest``'s mean final accuracy, as a share of the budget (aim: at most 70%), read at
the refits (so in steps of ``--retrain-every``).

Usage: python -m bench.active [--seeds 5] [--budget 300] [--retrain-every 25]
       [--overlap 2] [--labelers 5] [--orders oldest,uncertain,disagreement] [--data FILE]
Exits 0 with "skipped: ..." when the data file is absent (it is not part of a clone).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
import shutil
import statistics
import sys
import tempfile
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from itertools import combinations
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import minimize
from sqlalchemy import select
from sqlalchemy.orm import Session
from threadpoolctl import threadpool_limits

from app.auth.models import User
from app.auth.service import create_user
from app.cli.db import alembic_config
from app.db import make_engine, make_session_factory
from app.imports.service import import_file
from app.labeling.models import Comparison, Completion, Prompt, TaskKind
from app.labeling.queue import lease_next_task
from app.labeling.scores import refresh_score_gaps, store_scores
from app.labeling.service import submit_ranking
from app.models_registry.models import ModelKind, ModelVersion
from app.projects.models import QUEUE_ORDERS, Project
from app.projects.service import create_project

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "alpaca_eval_k4_dev.jsonl"
K = 4
HELD_OUT = 0.3
TARGET_AGREEMENT = 0.73  # InstructGPT's inter-labeler agreement on answer pairs
IDIOSYNCRATIC_SD = 0.5
L2 = 1.0
HASH_BUCKETS = 256
AIM = 0.70

Matrix = NDArray[np.float64]


@dataclass(frozen=True)
class Item:
    """A prompt with its K answers, as (model, text)."""

    key: str
    prompt: str
    answers: tuple[tuple[str, str], ...]


def load_items(path: Path) -> list[Item]:
    """The file's prompts whose K answers are all different (a repeated answer is stored
    once by the import, which leaves the prompt unrankable at K)."""
    items = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            answers = tuple((a["model"], a["text"]) for a in row["completions"])
            if len({text for _, text in answers}) == K:
                items.append(Item(key=row["id"], prompt=row["prompt"], answers=answers))
    return items


# --- answer features -------------------------------------------------------------------

LIST_LINE = re.compile(r"^\s*(?:[-*\u2022]|\d+[.)])\s+")
HEADING = re.compile(r"^\s*(?:#{1,6}\s|\*\*[^*]+\*\*:?\s*$)")
WORD = re.compile(r"[a-z0-9']+")
SENTENCE_END = re.compile(r"[.!?](?:\s|$)")
REFUSALS = ("i cannot", "i can't", "i'm sorry", "i am sorry", "i apologize", "as an ai",
            "i'm not able", "i am not able", "i don't have")  # fmt: skip
HEDGES = ("however", "may ", "might", "generally", "typically", "it's important",
          "it is important", "consult", "not a doctor", "i'm not", "depends")  # fmt: skip
STYLE = ("log_words", "log_lines", "list_lines", "headings", "code_blocks", "bold",
         "refusal", "hedges", "questions", "clean_end", "digits", "words_per_sentence")  # fmt: skip


def style_values(text: str) -> dict[str, float]:
    """The named text features of an answer (what both the RM and the latent draw on)."""
    lower = text.lower()
    stripped = text.strip()
    lines = [line for line in text.splitlines() if line.strip()]
    words = len(text.split())
    sentences = max(1, len(SENTENCE_END.findall(text)))
    return {
        "len": math.log1p(min(words, 250)),  # the latent's saturating length; not the RM's
        "log_words": math.log1p(words),
        "log_lines": math.log1p(len(lines)),
        "list_lines": math.log1p(sum(bool(LIST_LINE.match(line)) for line in lines)),
        "headings": math.log1p(sum(bool(HEADING.match(line)) for line in lines)),
        "code_blocks": math.log1p(text.count("```") // 2),
        "bold": math.log1p(text.count("**") // 2),
        "refusal": float(any(r in lower[:300] for r in REFUSALS)),
        "hedges": math.log1p(sum(lower.count(h) for h in HEDGES)),
        "questions": math.log1p(text.count("?")),
        "clean_end": float(stripped[-1:] in tuple(".!?)\"'`*:")),
        "digits": sum(c.isdigit() for c in text) / max(1, len(text)),
        "words_per_sentence": math.log1p(words / sentences),
    }


def zscore(x: Matrix) -> Matrix:
    sd = x.std(axis=0)
    return (x - x.mean(axis=0)) / np.where(sd > 0, sd, 1.0)


def hashed_words(text: str) -> Matrix:
    """A bag of words in ``HASH_BUCKETS`` buckets (crc32: the same in every process), log
    counts, scaled to unit length."""
    v = np.zeros(HASH_BUCKETS)
    for word in WORD.findall(text.lower()):
        v[zlib.crc32(word.encode()) % HASH_BUCKETS] += 1.0
    v = np.log1p(v)
    norm = float(np.linalg.norm(v))
    return v / norm if norm > 0 else v


LATENT_WEIGHTS = {"len": 1.0, "list_lines": 0.5, "clean_end": 0.6, "refusal": -0.8,
                  "hedges": -0.3, "code_blocks": 0.3}  # fmt: skip
WORDS_WEIGHT = 1.0  # of the latent's word part: what an answer says, not only its form
WORDS_SEED = 21  # the word part's hidden bucket weights, the same in every run


@dataclass(frozen=True)
class Answers:
    """Every answer of the items (items in order, answers in order): the RM's features and
    the latent's part that the text decides (the same for every seed)."""

    features: Matrix
    latent: NDArray[np.float64]

    @classmethod
    def of(cls, items: Sequence[Item]) -> Answers:
        texts = [text for item in items for _, text in item.answers]
        values = [style_values(t) for t in texts]
        style = zscore(np.array([[v[name] for name in STYLE] for v in values]))
        # Scaled so that the 256 buckets together weigh in the L2 prior as one style feature
        # does (z-scored alone they would outweigh the style 20 to 1, and overfit).
        words = zscore(np.array([hashed_words(t) for t in texts])) / math.sqrt(HASH_BUCKETS)
        hidden = {
            name: zscore(np.array([[v[name]] for v in values]))[:, 0] for name in LATENT_WEIGHTS
        }
        bucket_weights = np.random.default_rng(WORDS_SEED).normal(0.0, 1.0, HASH_BUCKETS)
        latent = sum(
            (w * hidden[name] for name, w in LATENT_WEIGHTS.items()), start=np.zeros(len(texts))
        )
        latent = latent + WORDS_WEIGHT * zscore((words @ bucket_weights)[:, None])[:, 0]
        return cls(features=np.hstack([style, words]), latent=latent)


@dataclass
class World:
    """A seed's answers: the RM's features, the hidden latent score, the split, the noise."""

    items: list[Item]
    pool: list[Item]
    held_out: list[Item]
    features: Matrix  # one row per answer, items in order, answers in order
    latent: NDArray[np.float64]
    index: dict[tuple[str, str], int]  # (item key, answer text) -> row
    beta: float  # the Gumbel scale of a labeler's noise
    seed: int

    @classmethod
    def build(
        cls,
        items: Sequence[Item],
        *,
        seed: int,
        answers: Answers | None = None,
        held_out: float = HELD_OUT,
    ) -> World:
        answers = answers or Answers.of(items)
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(items))
        cut = round(len(items) * held_out)
        rows = [(item.key, text) for item in items for _, text in item.answers]
        world = cls(
            items=list(items),
            pool=[items[i] for i in sorted(int(i) for i in order[cut:])],
            held_out=[items[i] for i in sorted(int(i) for i in order[:cut])],
            features=answers.features,
            latent=answers.latent + rng.normal(0.0, IDIOSYNCRATIC_SD, len(rows)),
            index={row: n for n, row in enumerate(rows)},
            beta=1.0,
            seed=seed,
        )
        world.beta = calibrate_noise(world.pair_differences(world.pool), TARGET_AGREEMENT)
        return world

    def labeler_noise(self, item_key: str, labeler: int, size: int) -> NDArray[np.float64]:
        """The noise of a labeler's ranking of a prompt: the same draw under every order (common
        random numbers), so orders differ by what they serve, not by luck."""
        rng = np.random.default_rng([self.seed, zlib.crc32(item_key.encode()), labeler])
        return rng.gumbel(0.0, self.beta, size)

    def rows(self, item: Item) -> list[int]:
        return [self.index[(item.key, text)] for _, text in item.answers]

    def pair_differences(self, items: Sequence[Item]) -> NDArray[np.float64]:
        return np.array(
            [self.latent[a] - self.latent[b] for it in items for a, b in combinations(self.rows(it), 2)]
        )  # fmt: skip

    def held_out_accuracy(self, theta: NDArray[np.float64]) -> float:
        """The share of held-out answer pairs the RM orders as the latent does (ties half)."""
        scores = self.features @ theta
        a, b = np.array(
            [pair for item in self.held_out for pair in combinations(self.rows(item), 2)]
        ).T
        truth, guess = np.sign(self.latent[a] - self.latent[b]), np.sign(scores[a] - scores[b])
        return float(np.mean(np.where(guess == 0, 0.5, guess == truth)))


def agreement(differences: NDArray[np.float64], beta: float) -> float:
    """How often two independent labelers order a pair alike, on average over the pairs."""
    p = 1.0 / (1.0 + np.exp(-differences / beta))
    return float(np.mean(p * p + (1 - p) * (1 - p)))


def calibrate_noise(differences: NDArray[np.float64], target: float) -> float:
    """The noise scale at which labelers agree on ``target`` of the pairs (agreement falls
    as the noise grows, so bisect on a log scale)."""
    lo, hi = 1e-3, 1e3
    for _ in range(60):
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if agreement(differences, mid) > target else (lo, mid)
    return math.sqrt(lo * hi)


def fit_bradley_terry(differences: Matrix, l2: float = L2) -> NDArray[np.float64]:
    """Weights w maximising sum log sigmoid(w . (x_winner - x_loser)) - l2/2 |w|^2."""
    dims = differences.shape[1]
    if len(differences) == 0:
        return np.zeros(dims)

    def loss(w: NDArray[np.float64]) -> tuple[float, NDArray[np.float64]]:
        margin = differences @ w
        value = float(np.logaddexp(0.0, -margin).sum() + 0.5 * l2 * w @ w)
        grad = -differences.T @ (1.0 / (1.0 + np.exp(margin))) + l2 * w
        return value, grad

    done = minimize(loss, np.zeros(dims), jac=True, method="L-BFGS-B")
    return np.asarray(done.x, dtype=np.float64)


# --- one run: an order on a fresh database ------------------------------------------------


@dataclass
class Run:
    order: str
    seed: int
    curve: list[tuple[int, float]] = field(default_factory=list)  # (labels, accuracy)
    prompts_ranked: int = 0
    exhausted: bool = False  # the queue ran dry before the budget


def _import(session: Session, project: Project, items: Sequence[Item], folder: Path) -> None:
    path = folder / "pool.jsonl"
    with path.open("w", encoding="utf-8") as f:
        for item in items:
            answers = [{"model": m, "text": t} for m, t in item.answers]
            f.write(json.dumps({"id": item.key, "prompt": item.prompt, "completions": answers}) + "\n")  # fmt: skip
    summary = import_file(session=session, project=project, path=path, source_name=path.name)
    if not summary.imported or summary.completions_added != K * len(items):
        raise RuntimeError(f"the import did not store the pool: {summary.counts()}")


def template_database(folder: Path, *, labelers: int) -> Path:
    """A database built by Alembic holding the labelers, for each run to start from a copy:
    their passwords' argon2 hashes took longer than a whole run's leases."""
    from alembic import command

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "template.db"
    url = f"sqlite:///{path}"
    command.upgrade(alembic_config(url), "head")
    engine = make_engine(url)
    with make_session_factory(engine, writes=True)() as s:
        for n in range(labelers):
            create_user(session=s, email=f"labeler{n}@bench.test", password="bench-password-1")
        s.commit()
    engine.dispose()
    return path


def simulate(
    world: World,
    *,
    order: str,
    folder: Path,
    budget: int,
    retrain_every: int,
    overlap: int = 2,
    labelers: int = 5,
    template: Path | None = None,
) -> Run:
    """Label ``budget`` rankings of ``world``'s pool in ``order`` on a new SQLite database
    in ``folder`` (a copy of ``template``, else built here), refitting and rescoring every
    ``retrain_every``; the accuracy curve."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "active.db"
    shutil.copyfile(template or template_database(folder / "template", labelers=labelers), path)
    engine = make_engine(f"sqlite:///{path}")
    lease_rng = random.Random(world.seed)
    run = Run(order=order, seed=world.seed)
    try:
        # Small matrices: BLAS threads only contend (on a busy 2-core machine a fit took 50
        # times as long with them).
        with threadpool_limits(limits=1), make_session_factory(engine, writes=True)() as s:
            project = create_project(
                session=s, name=f"Active {order}", k=K, overlap=overlap, likert=False, flags=[]
            )
            project.queue_order = order
            _import(s, project, world.pool, folder)
            people = [
                s.scalars(select(User).where(User.email == f"labeler{n}@bench.test")).one()
                for n in range(labelers)
            ]
            s.commit()
            row_of = {
                cid: world.index[(key or "", text)]
                for cid, key, text in s.execute(
                    select(Completion.id, Prompt.external_id, Completion.text)
                    .join(Prompt, Prompt.id == Completion.prompt_id)
                    .where(Prompt.project_id == project.id)
                )
            }
            spent, turn, idle = 0, 0, 0
            while spent < budget:
                n, turn = turn % labelers, turn + 1
                task = lease_next_task(
                    session=s, project=project, labeler=people[n], kind=TaskKind.rank,
                    lease_for=timedelta(minutes=30), rng=lease_rng,
                )  # fmt: skip
                if task is None:
                    s.commit()
                    idle += 1
                    if idle >= labelers:  # nobody has anything left
                        run.exhausted = True
                        break
                    continue
                idle = 0
                # The noise follows the answer (by its row), not where it is shown.
                rows = sorted(row_of[c.id] for c in task.completions)
                noise = world.labeler_noise(task.prompt.external_id or "", n, len(rows))
                seen = dict(zip(rows, world.latent[rows] + noise, strict=True))
                best_first = sorted(task.completions, key=lambda c: -seen[row_of[c.id]])
                ranking = [[c.id] for c in best_first]
                submit_ranking(session=s, assignment_id=task.id, labeler=people[n], ranking=ranking)
                s.commit()
                spent += 1
                if spent % retrain_every == 0 or spent == budget:
                    theta = _refit(s, project, world, row_of, spent)
                    run.curve.append((spent, world.held_out_accuracy(theta)))
            if run.exhausted and (not run.curve or run.curve[-1][0] != spent):
                theta = _refit(s, project, world, row_of, spent)
                run.curve.append((spent, world.held_out_accuracy(theta)))
            run.prompts_ranked = len(
                set(s.scalars(select(Comparison.prompt_id).where(Comparison.is_latest.is_(True))))
            )
    finally:
        engine.dispose()
    return run


def _refit(
    s: Session, project: Project, world: World, row_of: dict[int, int], spent: int
) -> NDArray[np.float64]:
    """Fit the RM on every pair of the rankings stored so far, register it, store its
    score of each of the project's answers and refresh the prompts' gaps; its weights."""
    rankings = s.scalars(
        select(Comparison.ranking)
        .join(Prompt, Prompt.id == Comparison.prompt_id)
        .where(Prompt.project_id == project.id, Comparison.is_latest.is_(True))
    ).all()
    pairs = [
        world.features[row_of[win]] - world.features[row_of[lose]]
        for groups in rankings
        for i, better in enumerate(groups)
        for worse in groups[i + 1 :]
        for win in better
        for lose in worse
    ]
    theta = fit_bradley_terry(np.array(pairs).reshape(-1, world.features.shape[1]))
    version = ModelVersion(
        name=f"bench-active-{project.queue_order}-seed{world.seed}-{spent}",
        kind=ModelKind.rm,
        path="bench:bradley-terry-on-text-features",
        metrics={"labels": spent, "pairs": len(pairs)},
    )
    s.add(version)
    s.flush()
    scores = world.features @ theta
    store_scores(
        session=s,
        model_version_id=version.id,
        scores={cid: float(scores[row]) for cid, row in row_of.items()},
    )
    refresh_score_gaps(session=s, project=project, model_version_id=version.id)
    s.commit()
    return theta


# --- the report -----------------------------------------------------------------------


def spread(values: Sequence[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} +- {sd:.3f}"


def mean_curve(runs: Sequence[Run]) -> dict[int, list[float]]:
    by_labels: dict[int, list[float]] = {}
    for run in runs:
        for labels, accuracy in run.curve:
            by_labels.setdefault(labels, []).append(accuracy)
    return by_labels


def labels_to_reach(runs: Sequence[Run], target: float, seeds: int) -> int | None:
    """The first refit at which the mean accuracy over the seeds reaches ``target``."""
    for labels, values in sorted(mean_curve(runs).items()):
        if len(values) == seeds and statistics.mean(values) >= target:
            return labels
    return None


def report(runs: dict[str, list[Run]], *, budget: int, seeds: int) -> list[str]:
    orders = list(runs)
    curves = {order: mean_curve(runs[order]) for order in orders}
    checkpoints = sorted({labels for c in curves.values() for labels in c})
    lines = [f"{'labels':>7}  " + "  ".join(f"{order:>17}" for order in orders)]
    for labels in checkpoints:
        cells = [spread(curves[o][labels]) if labels in curves[o] else "-" for o in orders]
        lines.append(f"{labels:>7}  " + "  ".join(f"{cell:>17}" for cell in cells))
    lines.append(
        "prompts ranked (mean): "
        + ", ".join(f"{o} {statistics.mean(r.prompts_ranked for r in runs[o]):.0f}" for o in orders)
    )
    dry = [
        f"{o} ({sum(r.exhausted for r in runs[o])})"
        for o in orders
        if any(r.exhausted for r in runs[o])
    ]
    if dry:
        lines.append("queue ran dry before the budget in: " + ", ".join(dry))
    if "oldest" not in runs or budget not in curves["oldest"]:
        return lines
    final = statistics.mean(curves["oldest"][budget])
    for other in (o for o in orders if o != "oldest"):
        reached = labels_to_reach(runs[other], final, seeds)
        verdict = (
            f"{reached} labels, {reached / budget:.0%} of the budget"
            if reached is not None
            else "not within the budget"
        )
        aim = "" if other != "uncertain" else (
            f" (aim <= {AIM:.0%}: {'met' if reached is not None and reached <= AIM * budget else 'not met'})"
        )  # fmt: skip
        paired = [
            b[-1][1] - a[-1][1]
            for a, b in zip((r.curve for r in runs["oldest"]), (r.curve for r in runs[other]), strict=True)
        ]  # fmt: skip
        lines.append(
            f"{other} reaches oldest's final accuracy ({final:.3f} at {budget} labels): "
            f"{verdict}{aim}; at the budget {other} - oldest = {spread(paired)} (paired by seed)"
        )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1")
    parser.add_argument("--budget", type=int, default=300, help="rankings per run")
    parser.add_argument("--retrain-every", type=int, default=25, help="rankings between refits")
    parser.add_argument("--overlap", type=int, default=2, help="rankings per prompt (every order)")
    parser.add_argument("--labelers", type=int, default=5)
    parser.add_argument("--orders", default=",".join(QUEUE_ORDERS))
    parser.add_argument("--data", type=Path, default=DATA)
    args = parser.parse_args(argv)
    orders = [o.strip() for o in args.orders.split(",") if o.strip()]
    unknown = [o for o in orders if o not in QUEUE_ORDERS]
    if unknown:
        parser.error(
            f"unknown queue order {unknown[0]!r}; the orders are {', '.join(QUEUE_ORDERS)}"
        )
    if args.seeds < 1 or args.budget < 1 or args.retrain_every < 1 or args.overlap < 1:
        parser.error("--seeds, --budget, --retrain-every and --overlap must be at least 1")
    if args.labelers < args.overlap + 2:
        parser.error("--labelers must be at least overlap + 2 (disagreement's max_overlap)")
    if not args.data.is_file():
        print(f"skipped: {args.data} is absent (the shared data folder is not part of a clone)")
        return 0

    started = time.perf_counter()
    items = load_items(args.data)
    answers = Answers.of(items)
    worlds = [World.build(items, seed=seed, answers=answers) for seed in range(args.seeds)]
    w = worlds[0]
    print(f"{len(items)} prompts x {K} real answers ({args.data.name}), {len(w.pool)} to label, "
          f"{len(w.held_out)} held out ({len(w.held_out) * 6} pairs); overlap {args.overlap} for "
          f"every order, {args.labelers} labelers, budget {args.budget} rankings, refit every "
          f"{args.retrain_every}, seeds 0..{args.seeds - 1}")  # fmt: skip
    print("latent u = " + " ".join(f"{v:+.1f} {n}" for n, v in LATENT_WEIGHTS.items())
          + f" {WORDS_WEIGHT:+.1f} words + N(0, {IDIOSYNCRATIC_SD}^2) per answer (each term z-scored; "
          f"len = log(1 + min(words, 250)); words = hidden N(0, 1) weights on the hashed words)")  # fmt: skip
    print(f"labelers rank by u + Gumbel(0, beta), beta {statistics.mean(x.beta for x in worlds):.2f} "
          f"(pairwise agreement {TARGET_AGREEMENT:.0%}); RM: Bradley-Terry logistic, L2 {L2}, on "
          f"{len(STYLE)} text features + {HASH_BUCKETS} hashed words; held-out accuracy against "
          f"the noise-free u, mean +- sd over seeds")  # fmt: skip
    runs: dict[str, list[Run]] = {order: [] for order in orders}
    with tempfile.TemporaryDirectory() as tmp:
        template = template_database(Path(tmp), labelers=args.labelers)
        for world in worlds:
            for order in orders:
                runs[order].append(
                    simulate(
                        world, order=order, folder=Path(tmp) / f"{order}-{world.seed}",
                        budget=args.budget, retrain_every=args.retrain_every,
                        overlap=args.overlap, labelers=args.labelers, template=template,
                    )
                )  # fmt: skip
    for line in report(runs, budget=args.budget, seeds=args.seeds):
        print(line)
    print(f"wall time {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
