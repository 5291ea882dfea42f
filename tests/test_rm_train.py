"""Reward-model training end to end on synthetic rankings with a known rule: an answer that
says "please" beats one that does not. A tiny GPT-2 built here must learn it (> 0.9
validation accuracy) in CI time; bad data is refused with a clear message."""

from __future__ import annotations

from pathlib import Path

import pytest

from workers.ml.rm_train import (
    KwiseCollator,
    Ranking,
    RewardConfig,
    RewardDataError,
    check_rankings,
    train_reward_model,
)
from workers.ml.synthetic import corpus, please_rankings

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from workers.ml.tiny import build_tiny_causal_lm

    return build_tiny_causal_lm(tmp_path_factory.mktemp("rm") / "gpt2", texts=corpus())


def test_a_tiny_reward_model_learns_the_please_rule(tiny: Path, tmp_path: Path) -> None:
    config = RewardConfig(epochs=4, batch_size=8, learning_rate=2e-3, max_length=64)
    _model, _tokenizer, result = train_reward_model(
        tiny, please_rankings(240, seed=1), please_rankings(60, seed=2), tmp_path, config
    )
    assert result.pairs == 60 * 4  # 2 polite x 2 plain per prompt; the ties give none
    assert result.accuracy > 0.9, result
    assert result.reward_std > 0


def test_the_answer_is_never_cut_the_prompt_is(tiny: Path) -> None:
    from workers.ml.reward_model import load_reward_model

    _, tokenizer = load_reward_model(tiny)
    collator = KwiseCollator(tokenizer, max_length=24, causal=True)
    ranking = Ranking(prompt="the cat " * 40, answers=["please sit", "ran"], places=[0, 1])
    batch = collator([ranking])
    assert batch["input_ids"].shape[1] <= 24
    first = tokenizer.decode(batch["input_ids"][0][batch["attention_mask"][0].bool()])
    assert first.endswith("please sit" + tokenizer.eos_token)
    assert batch["places"].tolist() == [[0, 1]]


def test_bad_rankings_are_refused_with_a_reason() -> None:
    with pytest.raises(RewardDataError, match="no rankings"):
        check_rankings([])
    mixed = [Ranking("p", ["a", "b"], [0, 1]), Ranking("q", ["a", "b", "c"], [0, 1, 2])]
    with pytest.raises(RewardDataError, match="different sizes"):
        check_rankings(mixed)


def test_answers_longer_than_max_length_are_refused(tiny: Path, tmp_path: Path) -> None:
    long = [Ranking("p", ["cat " * 200, "dog"], [0, 1])] * 4
    with pytest.raises(RewardDataError, match="longer than max_length"):
        train_reward_model(tiny, long, long, tmp_path, RewardConfig(max_length=32))
