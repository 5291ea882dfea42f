"""Loading a causal language model and its tokenizer, for sampling, SFT and PPO alike.

One loader so every step of the loop reads a model folder the same way and fails the same
way: fast, before anything is sampled or trained, with a message a user can act on.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal


class ModelLoadError(ValueError):
    """The folder holds no usable causal language model; the message says why."""


def load_causal_lm(
    path: str | Path, *, padding_side: Literal["left", "right"] = "right"
) -> tuple[Any, Any]:
    """Model and tokenizer from a ``save_pretrained`` folder (or a hub id where there is
    network). Left padding for sampling, right for training. A tokenizer without a PAD token
    pads with EOS (the attention mask, never the pad id, says which tokens are real)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    name = str(path)
    hub_id = re.fullmatch(r"[\w.-]+/[\w.-]+", name) is not None
    if not Path(name).expanduser().exists() and not hub_id:
        raise ModelLoadError(f"No model at {name!r}: the folder does not exist.")
    try:
        config = AutoConfig.from_pretrained(name)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"Cannot read a model config at {name!r}: {exc}") from exc
    try:
        model = AutoModelForCausalLM.from_pretrained(name)
    except ValueError as exc:
        raise ModelLoadError(
            f"The model at {name!r} ({config.model_type}) is not a causal language model, "
            "so it cannot write answers."
        ) from exc
    try:
        tokenizer = AutoTokenizer.from_pretrained(name, padding_side=padding_side)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"No usable tokenizer at {name!r}: {exc}") from exc
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer
