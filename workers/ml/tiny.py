"""Tiny causal LMs built locally, so tests and benchmarks never download weights.

The weights are random (answers are noise); what matters is that the folder has the same shape
as a real checkpoint: ``save_pretrained`` weights, a fast tokenizer with a PAD distinct from EOS,
generation defaults and ``rlhf.json``, so the code under test cannot tell the difference.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from workers.ml.formatting import dialogue_layout, template_for

EOS_SYMBOL = "<|endoftext|>"
PAD_SYMBOL = "<|pad|>"


def _train_tokenizer(texts: list[str], vocab_size: int) -> Any:
    """Train a byte-level BPE (GPT-2 style): any text encodes, nothing maps to an unknown id."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_SYMBOL, PAD_SYMBOL],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=EOS_SYMBOL,
        eos_token=EOS_SYMBOL,
        pad_token=PAD_SYMBOL,
        # Decoder-only models continue the last token, so batches are padded on the left.
        padding_side="left",
    )


def build_tiny_causal_lm(
    out_dir: Path,
    *,
    texts: list[str],
    vocab_size: int = 512,
    n_layer: int = 2,
    n_embd: int = 64,
    n_head: int = 2,
    n_positions: int = 256,
    seed: int = 0,
) -> Path:
    """Build a random GPT-2 and its tokenizer trained on ``texts``; save them in ``out_dir``.

    The same ``texts`` and ``seed`` give the same folder, so tests are reproducible. The global
    torch RNG is left untouched (weights are drawn inside :func:`torch.random.fork_rng`).
    Returns ``out_dir``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = _train_tokenizer(texts, vocab_size)
    eos_id = tokenizer.eos_token_id
    pad_id = tokenizer.pad_token_id
    assert pad_id != eos_id, "PAD must differ from EOS (RM reads the last real token)"

    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=n_positions,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=n_head,
        # GPT-2's 0.02 makes a tiny random model repeat the prompt's last token whatever the
        # prompt; larger weights make its (still meaningless) answers depend on the prompt, so
        # tests can tell prompts, padding and answer slots apart.
        initializer_range=0.1,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GPT2LMHeadModel(config)
    model.eval()
    gen = model.generation_config
    gen.bos_token_id = tokenizer.bos_token_id
    gen.eos_token_id = eos_id
    gen.pad_token_id = pad_id

    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    meta = {
        "kind": "base",
        "parent": None,
        "template": template_for(tokenizer),
        "dialogue": dialogue_layout(tokenizer),
    }
    (out_dir / "rlhf.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return out_dir
