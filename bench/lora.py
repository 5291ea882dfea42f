"""LoRA versus full fine-tuning of the same base (design §12): memory, step time, quality.

The base is a GPT-2 config of 6 layers x 512 width (random weights, a tokenizer trained on the
synthetic words; ``workers.ml.tiny``), on CPU. The reward model and DPO are each trained on
the same synthetic rankings (``workers.ml.synthetic``, strict K = 4: the answer that says
"please" more often is better) for the same number of steps, once with every weight and once
with a LoRA adapter (``--r``, alpha 2 x r, all-linear: c_attn, c_proj, c_fc of every block;
the RM's score head in full), through the trainers the jobs use (``train_reward_model``,
``train_dpo``). Each run is a fresh process, so that peaks do not mix. Per run:

- **peak RSS**: the process's peak resident memory while it trains (VmHWM, reset when
  training starts), and how much of it the run added to what the process had before the
  model was loaded (the model, gradients, the optimizer's state, activations); at
  ``--batch`` rankings a step, and again at 1 (6 steps), where the activations weigh less
  beside the weights' state;
- **weights + state**: the bytes every step keeps whatever the batch, in fp32: the weights,
  the trainable ones' gradients and AdamW's two moments (what decides what fits on a GPU);
- **step time**: the median seconds of an optimizer step (the first one left out);
- **trainable**: the parameters the optimizer updates, and their share of the model's;
- **quality**: held-out accuracy after the same steps: the RM's share of validation pairs
  ranked right, DPO's implicit-reward accuracy (mean +- sd over ``--seeds``).

Learning rates: each mode's best of a sweep (48 steps, 2-3 seeds, accuracy): RM full 3e-5
0.68, 1e-4 0.84, **3e-4 0.90**; RM LoRA 3e-4 0.59, 1e-3 0.71, **3e-3 0.91**, 1e-2 0.88; DPO
full 3e-6 0.935, **1e-5 0.938**, 3e-5 0.936; DPO LoRA **3e-5 0.966**, 1e-4 0.89, 3e-4 0.92,
1e-3 0.94. The RM's adapter wants ten times full fine-tuning's rate (it starts at zero and has
far fewer weights to move); DPO on this rule reaches the same accuracy over a wide range.
``--lr-scale`` multiplies every rate (to sweep again).

Usage: python -m bench.lora [--layers 6] [--embd 512] [--steps 48] [--batch 4] [--seeds 3]
       [--r 8] [--lr-scale 1] [--only rm|dpo]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

LEARNING_RATES = {("rm", "full"): 3e-4, ("rm", "lora"): 3e-3,
                  ("dpo", "full"): 1e-5, ("dpo", "lora"): 3e-5}  # fmt: skip
VALIDATION = 64


def _reset_peak() -> None:
    """Linux: start the process's peak RSS (VmHWM) again from its RSS now."""
    with contextlib.suppress(OSError):  # else the peak also counts loading
        Path("/proc/self/clear_refs").write_text("5")


def _peak_rss() -> int:
    """The process's peak resident memory in bytes (since ``_reset_peak``, where it worked)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def one_run(args: argparse.Namespace) -> dict[str, Any]:
    """One training run in this process; its figures as a dict."""
    import psutil
    from transformers import TrainerCallback

    from workers.ml.dpo_train import DPOConfig, train_dpo
    from workers.ml.lora import LoraSettings
    from workers.ml.rm_train import RewardConfig, train_reward_model
    from workers.ml.synthetic import please_rankings

    kind, mode, seed = args.one
    seed = int(seed)
    train = please_rankings(args.steps * args.batch, seed=seed, k=4, strict=True)
    validation = please_rankings(VALIDATION, seed=10_000 + seed, k=4, strict=True)
    lora = LoraSettings(r=args.r, alpha=2 * args.r, dropout=0.0) if mode == "lora" else None
    lr = LEARNING_RATES[kind, mode] * args.lr_scale
    figures: dict[str, Any] = {"steps": []}

    class Measure(TrainerCallback):
        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            _reset_peak()  # the peak of training itself, not of loading or DPO's reference
            model = kw["model"]
            figures["trainable"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
            figures["total"] = sum(p.numel() for p in model.parameters())

        def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            figures["began"] = time.perf_counter()

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            figures["steps"].append(time.perf_counter() - figures.pop("began"))

        def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            figures["peak"] = _peak_rss()  # before the final evaluation

    before = psutil.Process().memory_info().rss  # the libraries and data, no model yet
    common = dict(epochs=1, batch_size=args.batch, learning_rate=lr, max_length=64, seed=seed,
                  logging_steps=10**6, lora=lora)  # fmt: skip
    out = Path(args.work) / f"{kind}-{mode}-{seed}"
    if kind == "rm":
        _, _, rm = train_reward_model(
            args.base, train, validation, out, RewardConfig(**common), callbacks=[Measure()]
        )
        accuracy = rm.accuracy
    else:
        _, _, dpo = train_dpo(
            args.base, train, validation, out, DPOConfig(**common, beta=0.1),
            callbacks=[Measure()],
        )  # fmt: skip
        accuracy = dpo.accuracy
    peak = figures["peak"]
    steps = figures["steps"][1:] or figures["steps"]
    return {
        "accuracy": accuracy, "peak_rss": peak, "added_rss": peak - before,
        "step_s": statistics.median(steps), "trainable": figures["trainable"],
        "total": figures["total"], "lr": lr, "steps": len(figures["steps"]),
    }  # fmt: skip


def _child(
    args: argparse.Namespace, kind: str, mode: str, seed: int, *, steps: int, batch: int
) -> dict[str, Any]:
    command = [
        sys.executable, "-m", "bench.lora", "--one", kind, mode, str(seed), "--base", args.base,
        "--work", args.work, "--steps", str(steps), "--batch", str(batch), "--r", str(args.r),
        "--lr-scale", str(args.lr_scale),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{kind} {mode} seed {seed} failed:\n{done.stderr[-3000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def _mib(n: float) -> str:
    return f"{n / 2**20:5.0f} MiB"


def _state(run: dict[str, Any]) -> float:
    """Bytes of what every step keeps, in fp32: the weights, and the trainable ones'
    gradients and AdamW's two moments."""
    return 4.0 * (run["total"] + 3 * run["trainable"])


MODES = ("full", "lora")


def compare(args: argparse.Namespace, kind: str) -> None:
    """Quality, speed and memory at ``--batch``; memory again at one ranking per step, where
    activations weigh less beside the weights' state."""
    runs = {
        mode: [_child(args, kind, mode, s, steps=args.steps, batch=args.batch)
               for s in range(args.seeds)]
        for mode in MODES
    }  # fmt: skip
    small = {mode: _child(args, kind, mode, 0, steps=6, batch=1) for mode in MODES}
    what = "validation pairs ranked right" if kind == "rm" else "implicit-reward accuracy"
    print(f"{kind.upper()}: {args.steps} steps of {args.batch} rankings (K=4); {what} on "
          f"{VALIDATION} held-out rankings, mean +- sd over {args.seeds} seed(s)")  # fmt: skip
    for mode in MODES:
        rows, one = runs[mode], small[mode]
        acc = [r["accuracy"] for r in rows]
        sd = statistics.stdev(acc) if len(acc) > 1 else 0.0
        label = "full" if mode == "full" else f"LoRA r={args.r}"
        print(
            f"  {label:9} lr {rows[0]['lr']:.0e}  trainable {rows[0]['trainable']:>10,} "
            f"({rows[0]['trainable'] / rows[0]['total']:6.2%})  step "
            f"{statistics.fmean(r['step_s'] for r in rows):5.3f} s  accuracy "
            f"{statistics.fmean(acc):.3f} +- {sd:.3f}\n"
            f"  {'':9} peak RSS {_mib(statistics.fmean(r['peak_rss'] for r in rows))} (the run "
            f"added {_mib(statistics.fmean(r['added_rss'] for r in rows))}); at 1 ranking a "
            f"step {_mib(one['peak_rss'])} (added {_mib(one['added_rss'])}); weights + "
            f"gradients + AdamW state {_mib(_state(rows[0]))}"
        )

    def mean(mode: str, key: str) -> float:
        return statistics.fmean(r[key] for r in runs[mode])

    print(
        f"  LoRA / full: step time {mean('lora', 'step_s') / mean('full', 'step_s'):.2f}x; "
        f"added by the run {mean('lora', 'added_rss') / mean('full', 'added_rss'):.2f}x at "
        f"{args.batch} rankings a step, "
        f"{small['lora']['added_rss'] / small['full']['added_rss']:.2f}x at 1; weights + "
        f"state {_state(runs['lora'][0]) / _state(runs['full'][0]):.2f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--embd", type=int, default=512)
    parser.add_argument("--steps", type=int, default=48)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--r", type=int, default=8)
    parser.add_argument("--lr-scale", type=float, default=1.0)
    parser.add_argument("--only", choices=("rm", "dpo"))
    parser.add_argument("--one", nargs=3, help=argparse.SUPPRESS)  # kind mode seed: a child
    parser.add_argument("--base", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_run(args)))
        return

    from workers.ml.synthetic import corpus
    from workers.ml.tiny import build_tiny_causal_lm

    with tempfile.TemporaryDirectory() as tmp:
        args.work = tmp
        args.base = str(
            build_tiny_causal_lm(
                Path(tmp) / "base", texts=corpus(), n_layer=args.layers, n_embd=args.embd,
                n_head=8, n_positions=128,
            )
        )  # fmt: skip
        print(f"base: GPT-2, {args.layers} layers x {args.embd} wide, on CPU")
        for kind in ("rm", "dpo"):
            if args.only in (None, kind):
                compare(args, kind)


if __name__ == "__main__":
    main()
