"""DPO: our K-wise DPO against TRL's DPOTrainer (the pinned TRL) on the same rankings.

One tiny GPT-2 config, synthetic rankings with a known rule (more "please" is better, strict
orders: every ordered pair counts) at each K. TRL is fed the same rankings as pairs (every
ordered pair of a ranking, the prompt laid out by our ``format_prompt``) with its reference
log-probs precomputed too (``precompute_ref_log_probs``); both train one epoch with the same
pairs per optimizer step (our ``batch`` prompts = ``batch * C(K,2)`` TRL pairs), learning rate
and beta, on the same CPU threads.

1. **Speed**: pairs trained per second, training alone and with the reference pass (ours:
   once per run over each answer; TRL: once per pair, each answer K-1 times), and the ratio.
2. **Same loss**: one frozen batch (the first ``batch`` rankings) with a reference that
   differs from the policy (another seed of the config): our loss and TRL's ``compute_loss``
   must agree to 1e-5 (every prompt has the same number of pairs, so our per-prompt mean is
   TRL's mean over pairs).
3. **Same quality**: the held-out implicit-reward accuracy reached by each (measured the same
   way, our ``evaluate_dpo``) over ``--seeds`` seeds: mean and spread.

Usage: python -m bench.dpo [--ks 4,9] [--prompts 128] [--batch 4] [--seeds 3] [--layers 4]
       [--embd 256]
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

LR = 5e-4
BETA = 0.1
MAX_LENGTH = 128


def pairs_of(rankings: list[Any], tokenizer: Any) -> list[dict[str, str]]:
    """Every ordered pair of each ranking as a TRL preference row."""
    from workers.ml.formatting import format_prompt

    rows = []
    for r in rankings:
        prompt = format_prompt(tokenizer, r.prompt)
        for w, chosen in enumerate(r.answers):
            for lo, rejected in enumerate(r.answers):
                if r.places[w] < r.places[lo]:
                    rows.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
    return rows


def trl_trainer(policy: Path, reference: Path | None, rows: list[dict[str, str]], out: Path,
                batch: int, seed: int, precompute: bool) -> Any:  # fmt: skip
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    tokenizer = AutoTokenizer.from_pretrained(policy)
    args = DPOConfig(
        output_dir=str(out), per_device_train_batch_size=batch, num_train_epochs=1,
        learning_rate=LR, beta=BETA, max_length=MAX_LENGTH, precompute_ref_log_probs=precompute,
        precompute_ref_batch_size=64, report_to=[], use_cpu=True, save_strategy="no",
        logging_steps=10**6, disable_tqdm=True, seed=seed, data_seed=seed, lr_scheduler_type="linear",
        dataloader_num_workers=0, bf16=False,  # fp32 as ours on the CPU (TRL defaults to bf16)
    )  # fmt: skip
    return DPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(policy),
        ref_model=AutoModelForCausalLM.from_pretrained(reference) if reference else None,
        args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
    )  # fmt: skip


def same_loss(policy: Path, reference: Path, rankings: list[Any], batch: int, tmp: Path) -> tuple[float, float]:  # fmt: skip
    """(ours, TRL's) DPO loss on one frozen batch, both given the same token ids (TRL's own
    tokenizer pass joins prompt and answer text, so the ids at the boundary can differ: here
    its collator gets our ids, and the comparison is of the DPO computation alone)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from workers.ml.dpo_loss import dpo_loss
    from workers.ml.dpo_train import RankingCollator, sequence_logps
    from workers.ml.rm_train import by_ranking

    chunk = rankings[:batch]
    tokenizer = AutoTokenizer.from_pretrained(policy)
    collator = RankingCollator(tokenizer, max_length=MAX_LENGTH)
    inputs = collator(chunk)
    with torch.no_grad():
        logps = [
            by_ranking(sequence_logps(AutoModelForCausalLM.from_pretrained(m), inputs["input_ids"],
                                      inputs["attention_mask"], inputs["labels"]), inputs["valid"])
            for m in (policy, reference)
        ]  # fmt: skip
        ours = float(dpo_loss(logps[0], logps[1], inputs["places"], beta=BETA).loss)
        rows = pairs_of(chunk, tokenizer)
        trainer = trl_trainer(policy, reference, rows, tmp / "frozen", len(rows), 0, False)
        examples = []
        for r in chunk:
            encoded = [collator.answers.encode(e) for e in collator.examples(r)]
            for w in range(len(r.answers)):
                for lo in range(len(r.answers)):
                    if r.places[w] < r.places[lo]:
                        (ids_w, lab_w), (ids_l, lab_l) = encoded[w], encoded[lo]
                        n = lab_w.count(-100)
                        assert lab_l.count(-100) == n and ids_w[:n] == ids_l[:n]
                        examples.append({"prompt_ids": ids_w[:n], "chosen_ids": ids_w[n:],
                                         "rejected_ids": ids_l[n:]})  # fmt: skip
        trainer.model.eval()
        theirs = float(trainer.compute_loss(trainer.model, trainer.data_collator(examples)))
    return ours, theirs


def run(k: int, args: argparse.Namespace, tmp: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from workers.ml.dpo_train import (
        DPOConfig,
        DPOItem,
        RankingCollator,
        compute_reference_logps,
        evaluate_dpo,
        train_dpo,
    )
    from workers.ml.synthetic import corpus, please_rankings
    from workers.ml.tiny import build_tiny_causal_lm

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    base = build_tiny_causal_lm(tmp / f"base{k}", texts=corpus(), n_layer=args.layers,
                                n_embd=args.embd, n_positions=MAX_LENGTH)  # fmt: skip
    other = build_tiny_causal_lm(tmp / f"other{k}", texts=corpus(), n_layer=args.layers,
                                 n_embd=args.embd, n_positions=MAX_LENGTH, seed=1)  # fmt: skip
    tokenizer = AutoTokenizer.from_pretrained(base)
    pairs_per = k * (k - 1) // 2
    print(f"\nK = {k}: {args.prompts} rankings, {pairs_per} pairs each, {args.batch} rankings "
          f"({args.batch * pairs_per} pairs) a step")  # fmt: skip

    ours_loss, trl_loss = same_loss(base, other, please_rankings(args.batch, seed=5, k=k, strict=True),
                                    args.batch, tmp)  # fmt: skip
    agree = "agree" if abs(ours_loss - trl_loss) < 1e-5 else "DIFFER"
    print(f"  frozen batch loss: ours {ours_loss:.7f}, TRL {trl_loss:.7f} ({agree} to 1e-5)")

    speed: dict[str, list[float]] = {"ours": [], "trl": [], "ours_all": [], "trl_all": []}
    accuracy: dict[str, list[float]] = {"ours": [], "trl": []}
    held = please_rankings(32, seed=999, k=k, strict=True)
    for seed in range(args.seeds):
        train = please_rankings(args.prompts, seed=seed, k=k, strict=True)
        total_pairs = args.prompts * pairs_per
        config = DPOConfig(epochs=1, batch_size=args.batch, learning_rate=LR, beta=BETA,
                           max_length=MAX_LENGTH, seed=seed, logging_steps=10**6)  # fmt: skip
        started = time.perf_counter()
        model, _, result = train_dpo(base, train, [], tmp / f"ours{k}-{seed}", config)
        whole = time.perf_counter() - started  # loading, the reference pass and training
        speed["ours"].append(total_pairs / result.train_seconds)
        speed["ours_all"].append(total_pairs / whole)

        started = time.perf_counter()
        trainer = trl_trainer(base, None, pairs_of(train, tokenizer), tmp / f"trl{k}-{seed}",
                              args.batch * pairs_per, seed, True)  # fmt: skip
        trained = time.perf_counter()
        trainer.train()
        done = time.perf_counter()
        speed["trl"].append(total_pairs / (done - trained))
        speed["trl_all"].append(total_pairs / (done - started))
        # the same held-out measure for both: our evaluation against the starting policy
        collator = RankingCollator(tokenizer, max_length=MAX_LENGTH)
        reference = compute_reference_logps(
            AutoModelForCausalLM.from_pretrained(base), collator, held
        )
        items = [DPOItem(r, lp) for r, lp in zip(held, reference, strict=True)]
        for side, trained_model in (("ours", model), ("trl", trainer.model)):
            accuracy[side].append(evaluate_dpo(trained_model, collator, items, config).accuracy)
        del model, trainer

    def mean(xs: list[float]) -> str:
        spread = statistics.stdev(xs) if len(xs) > 1 else 0.0
        return f"{statistics.mean(xs):.3f} ± {spread:.3f}"

    for what, ours, theirs in (
        ("training", "ours", "trl"),
        ("with reference", "ours_all", "trl_all"),
    ):
        a, b = statistics.mean(speed[ours]), statistics.mean(speed[theirs])
        print(f"  pairs/s {what:<15} ours {a:8.1f}   TRL {b:8.1f}   ratio {a / b:5.2f}x")
    print(f"  held-out implicit-reward accuracy over {args.seeds} seeds: ours {mean(accuracy['ours'])}, "
          f"TRL {mean(accuracy['trl'])}")  # fmt: skip
    assert math.isfinite(ours_loss)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ks", default="4,9")
    parser.add_argument("--prompts", type=int, default=128)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--embd", type=int, default=256)
    args = parser.parse_args()
    import trl

    print(f"TRL {trl.__version__}; tiny GPT-2 {args.layers} x {args.embd}; lr {LR}, beta {BETA}")
    with tempfile.TemporaryDirectory() as tmp:
        for k in (int(x) for x in args.ks.split(",")):
            run(k, args, Path(tmp))


if __name__ == "__main__":
    main()
