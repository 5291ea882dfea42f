"""PPO arithmetic with exact numbers: GAE closed forms, TRL's KL penalty case, masked
statistics, clipping and the masking of padding and of tokens after EOS."""

from __future__ import annotations

import math

import pytest
import torch

from workers.ml.ppo_math import (
    KLController,
    gae,
    has_eos,
    kl_penalties,
    masked_mean,
    masked_var,
    masked_whiten,
    policy_loss,
    response_mask,
    token_rewards,
    value_loss,
)

REWARDS = torch.tensor([[0.5, -1.0, 2.0, 0.25], [1.5, 0.0, -0.5, 3.0]])
VALUES = torch.tensor([[0.2, 0.4, -0.3, 1.0], [0.0, -0.7, 0.9, 0.1]])
FULL = torch.ones_like(REWARDS)


def test_gae_with_lambda_1_gamma_1_and_zero_values_is_the_reverse_cumulative_sum() -> None:
    advantages, returns = gae(REWARDS, torch.zeros_like(REWARDS), FULL, gamma=1.0, lam=1.0)
    expected = torch.tensor([[1.75, 1.25, 2.25, 0.25], [4.0, 2.5, 2.5, 3.0]])
    torch.testing.assert_close(advantages, expected)
    torch.testing.assert_close(returns, expected)


def test_gae_with_lambda_0_is_the_one_step_td_error() -> None:
    gamma = 0.9
    advantages, returns = gae(REWARDS, VALUES, FULL, gamma=gamma, lam=0.0)
    next_values = torch.cat([VALUES[:, 1:], torch.zeros(2, 1)], dim=1)
    torch.testing.assert_close(advantages, REWARDS + gamma * next_values - VALUES)
    torch.testing.assert_close(returns, advantages + VALUES)
    # By hand, first row: 0.5 + 0.9 * 0.4 - 0.2 = 0.66; last token: 0.25 - 1.0 = -0.75.
    assert advantages[0, 0].item() == pytest.approx(0.66)
    assert advantages[0, 3].item() == pytest.approx(-0.75)


def test_gae_stops_at_the_end_of_each_response() -> None:
    mask = torch.tensor([[1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    garbage = torch.tensor([[0.0, 0.0, 100.0, -100.0], [0.0, 0.0, 0.0, 0.0]])
    advantages, returns = gae(
        REWARDS + garbage, VALUES + garbage, mask, gamma=1.0, lam=0.95
    )  # what lies past a response's end must not leak into it
    clean, _ = gae(REWARDS[:1, :2], VALUES[:1, :2], FULL[:1, :2], gamma=1.0, lam=0.95)
    torch.testing.assert_close(advantages[0, :2], clean[0])
    assert advantages[0, 2:].abs().sum() == 0 and returns[0, 2:].abs().sum() == 0
    # lambda 0.95 by hand for the 2-token response: d1 = -1 - 0.4, d0 = 0.5 + 0.4 - 0.2
    assert clean[0, 1].item() == pytest.approx(-1.4)
    assert clean[0, 0].item() == pytest.approx(0.7 + 0.95 * -1.4)


def test_kl_penalty_matches_trl_0_11_test_case() -> None:
    """TRL 0.11 ``test_ppo_trainer_kl_penalty``: k1 = logp - logp_ref."""
    logp = torch.tensor([[0.5, 0.2, 0.1], [0.6, 0.2, 0.1]])
    ref = torch.tensor([[0.4, 0.3, 0.0], [0.7, 0.1, 0.3]])
    k1, k3 = kl_penalties(logp, ref)
    torch.testing.assert_close(k1, torch.tensor([[0.1, -0.1, 0.1], [-0.1, 0.1, -0.2]]))
    log_ratio = ref - logp
    torch.testing.assert_close(k3, torch.exp(log_ratio) - 1 - log_ratio)
    assert k3[1, 2].item() == pytest.approx(math.exp(0.2) - 1 - 0.2)
    assert (k3 >= 0).all()


def test_token_rewards_put_the_score_on_the_last_real_token() -> None:
    logp = torch.tensor([[0.5, 0.2, 0.1], [0.6, 0.2, 0.1]])
    ref = torch.tensor([[0.4, 0.3, 0.0], [0.7, 0.1, 0.3]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    rewards = token_rewards(torch.tensor([2.0, -1.0]), logp, ref, mask, kl_coef=0.5)
    expected = torch.tensor([[-0.05, 0.05, -0.05 + 2.0], [0.05, -0.05 - 1.0, 0.0]])
    torch.testing.assert_close(rewards, expected)


def test_masked_mean_var_and_whiten_ignore_padding() -> None:
    values = torch.tensor([[1.0, 2.0, 99.0], [3.0, 4.0, -99.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
    assert masked_mean(values, mask).item() == pytest.approx(2.5)
    torch.testing.assert_close(masked_mean(values, mask, dim=1), torch.tensor([1.5, 3.5]))
    assert masked_var(values, mask).item() == pytest.approx(5 / 3)  # unbiased, n = 4
    assert masked_var(values, mask, unbiased=False).item() == pytest.approx(1.25)
    white = masked_whiten(values, mask)
    std = math.sqrt(5 / 3)
    expected = torch.tensor([[-1.5 / std, -0.5 / std, 0.0], [0.5 / std, 1.5 / std, 0.0]])
    torch.testing.assert_close(white, expected, atol=1e-6, rtol=1e-6)
    kept = masked_whiten(values, mask, shift_mean=False)
    assert masked_mean(kept, mask).item() == pytest.approx(2.5)


def test_response_mask_stops_after_the_first_eos() -> None:
    eos, pad = 2, 0
    responses = torch.tensor([[5, 6, 2, 0, 0], [2, 7, 7, 2, 7], [5, 6, 7, 8, 9], [5, 2, 9, 9, 9]])
    mask = response_mask(responses, [eos])
    expected = torch.tensor(
        [[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 1], [1, 1, 0, 0, 0]], dtype=torch.float32
    )
    torch.testing.assert_close(mask, expected)
    assert has_eos(responses, mask, [eos]).tolist() == [True, True, False, True]
    assert pad not in [eos]


def test_ratio_is_exactly_one_before_the_policy_moves() -> None:
    logp = torch.tensor([[-1.2, -0.3, -2.0], [-0.7, -0.1, -5.0]])
    advantages = torch.tensor([[0.5, -1.0, 2.0], [1.0, 0.3, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    out = policy_loss(logp.clone(), logp, advantages, mask, cliprange=0.2)
    assert torch.equal(out.ratio, torch.ones_like(logp))
    assert out.clip_fraction.item() == 0 and out.approx_kl.item() == 0
    assert out.loss.item() == pytest.approx(-(0.5 - 1.0 + 2.0 + 1.0 + 0.3) / 5)


def test_policy_loss_clips_the_ratio_in_the_direction_of_the_advantage() -> None:
    old = torch.zeros(1, 2)
    new = torch.log(torch.tensor([[1.5, 0.5]]))  # ratios 1.5 and 0.5
    advantages = torch.tensor([[1.0, 1.0]])
    out = policy_loss(new, old, advantages, torch.ones(1, 2), cliprange=0.2)
    # token 0: max(-1.5, -1.2) = -1.2 (clipped); token 1: max(-0.5, -0.8) = -0.5 (not clipped)
    assert out.loss.item() == pytest.approx((-1.2 - 0.5) / 2)
    assert out.clip_fraction.item() == pytest.approx(0.5)
    # padding: a huge ratio on a masked token changes nothing
    padded = policy_loss(
        torch.cat([new, torch.tensor([[30.0]])], 1), torch.zeros(1, 3),
        torch.tensor([[1.0, 1.0, 1.0]]), torch.tensor([[1.0, 1.0, 0.0]]), cliprange=0.2,
    )  # fmt: skip
    assert padded.loss.item() == pytest.approx(out.loss.item())


def test_value_loss_is_clipped_around_the_old_values() -> None:
    old = torch.tensor([[0.0, 0.0]])
    new = torch.tensor([[1.0, 0.1]])
    returns = torch.tensor([[0.0, 0.5]])
    loss, clip_fraction = value_loss(new, old, returns, torch.ones(1, 2), cliprange_value=0.2)
    # token 0: max((1-0)^2, (0.2-0)^2) = 1; token 1: max((0.1-0.5)^2, (0.1-0.5)^2) = 0.16
    assert loss.item() == pytest.approx(0.5 * (1.0 + 0.16) / 2)
    assert clip_fraction.item() == 0.0
    # a value moved past the clip towards the return: the clipped (larger) loss wins
    loss, clip_fraction = value_loss(
        torch.tensor([[0.5]]), old[:, :1], torch.tensor([[1.0]]), torch.ones(1, 1),
        cliprange_value=0.2,
    )  # fmt: skip
    assert loss.item() == pytest.approx(0.5 * 0.8**2) and clip_fraction.item() == 1.0


def test_gradients_never_reach_padding_or_tokens_after_eos() -> None:
    logp = torch.tensor([[-1.0, -2.0, -3.0, -4.0]], requires_grad=True)
    responses = torch.tensor([[5, 2, 7, 7]])
    mask = response_mask(responses, [2])
    out = policy_loss(logp, logp.detach() + 0.1, torch.ones(1, 4), mask, cliprange=0.2)
    out.loss.backward()
    assert logp.grad is not None
    assert logp.grad[0, 2:].abs().sum() == 0 and logp.grad[0, :2].abs().sum() > 0


def test_adaptive_kl_moves_beta_towards_the_target_and_fixed_stays() -> None:
    fixed = KLController(0.1)
    fixed.update(50.0, 16)
    assert fixed.value == 0.1
    adaptive = KLController(0.1, target=6.0, horizon=1000)
    adaptive.update(12.0, 100)  # twice the target: error clipped to +0.2
    assert adaptive.value == pytest.approx(0.1 * (1 + 0.2 * 100 / 1000))
    adaptive.update(3.0, 100)  # half the target: -0.2
    assert adaptive.value == pytest.approx(0.1 * 1.02 * 0.98)
