"""A reward model from a base checkpoint: ``AutoModelForSequenceClassification(num_labels=1)``
on a causal LM (GPT-2, Llama, ...) or an encoder (BERT, MiniLM).

- The tokenizer gets a PAD token distinct from EOS when it has none (or shares EOS): padding
  then can never be mistaken for the end of an answer.
- For a causal LM the score is read at the **last real token, found by the attention mask**
  (never by searching for the pad id, which breaks when pad and EOS coincide or on left
  padding). An encoder keeps its own pooling (BERT's [CLS] pooler).
- The saved folder is a plain ``save_pretrained`` checkpoint: ``from_pretrained`` loads it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

PAD_TOKEN = "<|pad|>"  # noqa: S105 - a token, not a password


class RewardModelError(ValueError):
    """The base model cannot become a reward model; the message says why."""


def ensure_distinct_pad(tokenizer: Any) -> bool:
    """Give ``tokenizer`` a PAD token that is not EOS; True when one was added (the model's
    embeddings must then grow by one)."""
    if tokenizer.pad_token_id is not None and tokenizer.pad_token_id != tokenizer.eos_token_id:
        return False
    tokenizer.add_special_tokens({"pad_token": PAD_TOKEN})
    return True


def is_causal(config: Any) -> bool:
    """A decoder-only LM (its score is read at the last real token). Encoders that also have
    a causal-LM variant (BERT) are told apart by having a masked-LM one."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    kind = config.model_type
    return (
        not getattr(config, "is_encoder_decoder", False)
        and kind in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
        and kind not in MODEL_FOR_MASKED_LM_MAPPING_NAMES
    )


def load_reward_model(path: str | Path) -> tuple[Any, Any]:
    """Model (one output) and tokenizer from a base checkpoint folder."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise RewardModelError(f"No model config at {str(path)!r}: {exc}") from exc
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES,
    )

    if config.model_type not in MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES:
        raise RewardModelError(
            f"{config.model_type!r} cannot score text (it has no sequence-classification head): "
            "start a reward model from a language model or a text encoder"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise RewardModelError(f"No usable tokenizer at {str(path)!r}: {exc}") from exc
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1)
    if ensure_distinct_pad(tokenizer):
        model.resize_token_embeddings(len(tokenizer))
    model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def last_real_token(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of each row's last position with attention 1 (right or left padding alike)."""
    length = attention_mask.shape[1]
    return length - 1 - attention_mask.flip(-1).to(torch.long).argmax(-1)


def position_scores(
    model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """(B, T) the head of a causal sequence classifier applied at every position (PPO's
    critic reads its values this way)."""
    base = getattr(model, model.base_model_prefix)
    # Positions count real tokens only, so a left-padded row reads as it would unpadded.
    positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    hidden = base(
        input_ids=input_ids, attention_mask=attention_mask, position_ids=positions
    ).last_hidden_state
    head = model.score if hasattr(model, "score") else model.classifier
    return head(hidden).squeeze(-1)


def reward_scores(
    model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """One score per row (B,)."""
    if not is_causal(model.config):
        out = model(input_ids=input_ids, attention_mask=attention_mask)
        return out.logits.squeeze(-1)
    logits = position_scores(model, input_ids, attention_mask)  # (B, T)
    rows = torch.arange(logits.shape[0], device=logits.device)
    return logits[rows, last_real_token(attention_mask)]
