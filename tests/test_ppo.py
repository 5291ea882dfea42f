"""PPO end to end on tiny models: it learns (the mean RM score on held-out prompts rises while
the KL to the reference stays bounded), the first ratio is exactly 1, a resumed run equals an
unbroken one, and the faults of the issue (other tokenizers, empty answers, NaN) are handled."""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import pytest
import torch

from workers.ml.loading import load_causal_lm
from workers.ml.ppo import (
    PPOConfig,
    PPOError,
    PPOTrainer,
    RewardModelScorer,
    build_critic,
    last_ppo_checkpoint,
    token_values,
)
from workers.ml.reward_model import last_real_token
from workers.ml.rm_train import Ranking
from workers.ml.synthetic import TARGET, answer, corpus, please_rankings, prompts

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The loop in small: a tiny GPT-2 fine-tuned (SFT) on answers of random words, one in
    five saying "please", and a reward model trained from the same base (so they share a
    tokenizer) to prefer answers that say "please"."""
    from workers.ml.rm_train import RewardConfig, train_reward_model
    from workers.ml.sft_train import Example, train_sft
    from workers.ml.tiny import build_tiny_causal_lm
    from workers.ml.training import TrainConfig, save_model

    root = tmp_path_factory.mktemp("ppo")
    base = build_tiny_causal_lm(root / "base", texts=corpus(), n_layer=2, n_embd=64)
    rng = random.Random(0)
    demos = [Example(p, answer(rng, int(rng.random() < 0.2))) for p in prompts(300, seed=21)]
    sft, sft_tokenizer, _ = train_sft(
        base, demos, [], root / "sft-ckpt",
        TrainConfig(epochs=3, batch_size=16, learning_rate=3e-3, max_length=64),
    )  # fmt: skip
    policy = save_model(sft, sft_tokenizer, root / "sft", kind="sft", parent=None)
    model, tokenizer, result = train_reward_model(
        base, please_rankings(240, seed=1), please_rankings(60, seed=2), root / "rm-ckpt",
        RewardConfig(epochs=4, batch_size=8, learning_rate=2e-3, max_length=64),
    )  # fmt: skip
    assert result.accuracy > 0.9
    extra = {"reward_mean": result.reward_mean, "reward_std": result.reward_std}
    reward = save_model(model, tokenizer, root / "rm", kind="rm", parent=None, extra=extra)
    return {"policy": policy, "reward": reward, "demos": demos, **extra}


def _trainer(models: dict[str, Any], config: PPOConfig, **kwargs: Any) -> PPOTrainer:
    policy, tokenizer = load_causal_lm(models["policy"], padding_side="left")
    reference, _ = load_causal_lm(models["policy"])
    reward = kwargs.pop("reward", models["reward"])
    critic, _source = build_critic(
        models["policy"], tokenizer, reward,
        reward_mean=models["reward_mean"], reward_std=models["reward_std"],
    )  # fmt: skip
    scorer = kwargs.pop("scorer", None) or RewardModelScorer(reward, max_length=96)
    return PPOTrainer(
        policy, reference, critic, tokenizer, scorer, config,
        prompts=kwargs.pop("prompts", prompts(64, seed=3)),
        reward_mean=models["reward_mean"], reward_std=models["reward_std"], **kwargs,
    )  # fmt: skip


def test_ppo_raises_the_held_out_score_and_keeps_kl_bounded(models: dict[str, Any]) -> None:
    config = PPOConfig(
        steps=12, batch_size=16, mini_batch_size=4, learning_rate=1e-3, max_new_tokens=12,
        kl_coef=0.1, seed=0,
    )  # fmt: skip
    trainer = _trainer(models, config)
    held_out = prompts(32, seed=4)  # never trained on
    before = trainer.evaluate(held_out)
    for _ in range(config.steps):
        stats = trainer.step()
        assert stats.values["first_ratio_max_error"] == 0.0  # exactly 1 before any update
    after = trainer.evaluate(held_out)
    # The RM's scores spread with std models["reward_std"] over answers; seeds 0-3 of this run
    # rose by 1.4 to 1.9 of it with a KL of 6.3 to 7.1 nats per answer of up to 12 tokens.
    assert after["score"] - before["score"] > 0.75 * models["reward_std"], (before, after)
    assert after["kl"] < 10.0, after
    assert before["kl"] == pytest.approx(0.0, abs=1e-4)


def test_the_critic_comes_from_the_reward_model_when_the_vocabularies_agree(
    models: dict[str, Any], tmp_path: Path
) -> None:
    from workers.ml.tiny import build_tiny_causal_lm

    _, tokenizer = load_causal_lm(models["policy"])
    critic, source = build_critic(
        models["policy"], tokenizer, models["reward"],
        reward_mean=models["reward_mean"], reward_std=models["reward_std"],
    )  # fmt: skip
    assert source == "reward model"
    # Its first values are the normalised scores of the RM.
    scorer = RewardModelScorer(models["reward"], max_length=96)
    batch = scorer.collator([Ranking("Question", ["a please", "the cat"], [0, 1])])
    raw = scorer(["Question", "Question"], ["a please", "the cat"])
    values = token_values(critic, batch["input_ids"], batch["attention_mask"])
    last = values[torch.arange(2), last_real_token(batch["attention_mask"])]
    expected = (raw - models["reward_mean"]) / models["reward_std"]
    torch.testing.assert_close(last, expected, atol=1e-4, rtol=1e-4)

    other = build_tiny_causal_lm(tmp_path / "other", texts=["zebra yak " * 20] * 10, vocab_size=300)
    _, source = build_critic(models["policy"], tokenizer, other)
    assert source == "policy"


def test_a_reward_model_with_another_tokenizer_scores_the_decoded_text(
    models: dict[str, Any], tmp_path: Path
) -> None:
    """The RM re-tokenises the policy's decoded answers: an RM built on another tokenizer."""
    from workers.ml.rm_train import RewardConfig, train_reward_model
    from workers.ml.tiny import build_tiny_causal_lm
    from workers.ml.training import save_model

    other = build_tiny_causal_lm(
        tmp_path / "other",
        texts=[t + " extra words here" for t in corpus()],
        vocab_size=400,
        seed=5,
    )
    model, tokenizer, _ = train_reward_model(
        other, please_rankings(40, seed=1), [], tmp_path / "ck",
        RewardConfig(epochs=1, batch_size=8, learning_rate=1e-3, max_length=64),
    )  # fmt: skip
    reward = save_model(model, tokenizer, tmp_path / "rm-other", kind="rm", parent=None)
    config = PPOConfig(steps=1, batch_size=4, mini_batch_size=2, max_new_tokens=8)
    trainer = _trainer(models, config, reward=reward)
    stats = trainer.step()
    assert math.isfinite(stats.values["policy_loss"]) and stats.values["minibatches"] == 8


def test_empty_answers_get_the_score_on_their_eos(models: dict[str, Any]) -> None:
    config = PPOConfig(steps=1, batch_size=4, mini_batch_size=2, max_new_tokens=6)
    trainer = _trainer(models, config)
    rollout = trainer.generate(prompts(4, seed=9), seed=1)
    eos, pad = trainer.eos_ids[0], trainer.pad_id
    rollout.response = torch.tensor([[eos] + [pad] * 5] * 4)  # four empty answers
    rollout.mask = torch.tensor([[1.0, 0, 0, 0, 0, 0]] * 4)
    rollout.responses = [""] * 4
    rollout.raw_scores = trainer.scorer(rollout.prompts, rollout.responses)
    rollout.scores = trainer.normalise(rollout.raw_scores)
    trainer.prepare(rollout, order=torch.arange(4))
    assert rollout.advantages is not None and rollout.returns is not None
    assert rollout.advantages[:, 1:].abs().sum() == 0  # only the EOS token is an action
    stats = trainer.update(rollout, seed=0)
    assert stats["skipped_minibatches"] == 0 and math.isfinite(stats["policy_loss"])


def test_nan_scores_skip_the_step_and_stop_the_run_after_a_few(models: dict[str, Any]) -> None:
    def broken(prompts: Any, responses: Any) -> torch.Tensor:
        return torch.full((len(responses),), float("nan"))

    config = PPOConfig(steps=5, batch_size=4, mini_batch_size=2, max_new_tokens=4, max_bad_steps=3)
    trainer = _trainer(models, config, scorer=broken)
    before = [p.detach().clone() for p in trainer.policy.parameters()]
    for _ in range(2):
        stats = trainer.step()
        assert stats.values["skipped_minibatches"] == stats.values["minibatches"] == 8
    for old, new in zip(before, trainer.policy.parameters(), strict=True):
        assert torch.equal(old, new)  # a skipped step changes nothing
    with pytest.raises(PPOError, match="NaN/inf in every update of 3 steps in a row"):
        trainer.step()


def test_a_resumed_run_equals_an_unbroken_one(models: dict[str, Any], tmp_path: Path) -> None:
    config = PPOConfig(
        steps=3, batch_size=4, mini_batch_size=2, max_new_tokens=6, learning_rate=1e-3
    )
    unbroken = _trainer(models, config)
    for _ in range(3):
        unbroken.step()
    first = _trainer(models, config)
    for _ in range(2):
        first.step()
    first.save_checkpoint(tmp_path)
    resumed = _trainer(models, config)
    checkpoint = last_ppo_checkpoint(tmp_path)
    assert checkpoint is not None and checkpoint.name == "step-2"
    resumed.load_checkpoint(checkpoint)
    resumed.step()
    for a, b in zip(unbroken.policy.parameters(), resumed.policy.parameters(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_ptx_adds_the_lm_loss_on_demonstrations(models: dict[str, Any]) -> None:
    from workers.ml.sft_train import Example

    demos = [Example(p, f"{TARGET} the cat sat") for p in prompts(8, seed=11)]
    config = PPOConfig(steps=1, batch_size=4, mini_batch_size=2, max_new_tokens=4, ptx_coef=0.5)
    stats = _trainer(models, config, demonstrations=demos).step()
    assert stats.values["ptx_loss"] > 0
    with pytest.raises(PPOError, match="needs demonstrations"):
        _trainer(models, config)
