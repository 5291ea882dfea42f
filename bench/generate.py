"""Generation throughput: batched `num_return_sequences` sampling against the naive loop that
calls `generate` once per answer, side by side on the same tiny GPT-2 (K=4, CPU).

Usage: python -m bench.generate [--prompts 32] [--k 4] [--max-new-tokens 32] [--layers 2]
       [--embd 64] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from workers.ml.sampling import SamplingParams, naive_sample, sample_answers
from workers.ml.tiny import build_tiny_causal_lm

TEXTS = [
    "Write a short note to a neighbour about a parcel.",
    "Explain why the sky is blue to a child.",
    "List three ideas for a rainy afternoon at home.",
    "Summarise the plot of a story about a lost cat.",
] * 50


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--embd", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument(
        "--device", default="cpu", help="cpu or cuda (124M GPT-2: --layers 12 --embd 768)"
    )
    args = parser.parse_args()
    if args.device == "cpu":
        torch.set_num_threads(2)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        folder = build_tiny_causal_lm(
            Path(tmp) / "m", texts=TEXTS, n_layer=args.layers, n_embd=args.embd
        )
        model = AutoModelForCausalLM.from_pretrained(folder).to(args.device)
        tokenizer = AutoTokenizer.from_pretrained(folder, padding_side="left")
    prompts = [f"{TEXTS[i % 4]} (variant {i})" for i in range(args.prompts)]
    params = SamplingParams(max_new_tokens=args.max_new_tokens, seed=0)
    batched = sample_answers(
        model, tokenizer, prompts, k=args.k, params=params, batch_size=args.batch_size
    )
    naive = naive_sample(model, tokenizer, prompts, k=args.k, params=params)
    print(f"{args.prompts} prompts x K={args.k}, max_new_tokens={args.max_new_tokens}, "
          f"GPT-2 {args.layers} layers x {args.embd}")  # fmt: skip
    for name, result in (("batched", batched), ("naive", naive)):
        print(
            f"{name:>8}: {result.tokens_per_second:8.0f} tokens/s  "
            f"{args.prompts / result.seconds:6.1f} prompts/s  ({result.seconds:.2f} s)"
        )
    print(f"speed-up: {naive.seconds / batched.seconds:.1f}x")


if __name__ == "__main__":
    main()
