"""The K-wise reward-model loss on plain tensors (workers/ml/rm_loss.py)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from workers.ml.rm_loss import kwise_loss


def _one_pair_at_a_time(
    rewards: torch.Tensor, places: torch.Tensor, margin_coef: float = 0.0
) -> torch.Tensor:
    """The loss the slow way: every pair of every prompt on its own, then per-prompt means."""
    per_prompt = []
    for r, p in zip(rewards, places, strict=True):
        losses = []
        for i in range(len(r)):
            for j in range(len(r)):
                if p[i] < p[j]:
                    gap = float(p[j] - p[i])
                    losses.append(-F.logsigmoid(r[i] - r[j] - margin_coef * gap))
        if losses:
            per_prompt.append(torch.stack(losses).mean())
    return torch.stack(per_prompt).mean()


def test_equals_the_average_of_the_pairwise_losses() -> None:
    torch.manual_seed(0)
    rewards = torch.randn(5, 4)
    places = torch.stack([torch.randperm(4) for _ in range(5)])
    expected = _one_pair_at_a_time(rewards, places)
    assert kwise_loss(rewards, places).loss.item() == pytest.approx(expected.item(), rel=1e-6)
    with_margin = _one_pair_at_a_time(rewards, places, margin_coef=0.5)
    got = kwise_loss(rewards, places, margin_coef=0.5).loss.item()
    assert got == pytest.approx(with_margin.item(), rel=1e-6)


def test_by_hand() -> None:
    # One prompt, a above b: -log sigmoid(2 - 0) = log(1 + e^-2).
    stats = kwise_loss(torch.tensor([[2.0, 0.0]]), torch.tensor([[0, 1]]))
    assert stats.loss.item() == pytest.approx(math.log1p(math.exp(-2.0)))
    assert (stats.accuracy.item(), stats.margin.item(), stats.pairs) == (1.0, 2.0, 1)


def test_invariant_to_the_order_of_answers_inside_a_prompt() -> None:
    torch.manual_seed(1)
    rewards = torch.randn(3, 5)
    places = torch.tensor([[0, 1, 2, 3, 4], [2, 0, 1, 1, 3], [4, 3, 2, 1, 0]])
    base = kwise_loss(rewards, places).loss
    for _ in range(5):
        perm = torch.randperm(5)
        assert kwise_loss(rewards[:, perm], places[:, perm]).loss.item() == pytest.approx(
            base.item(), rel=1e-6
        )


def test_ties_contribute_nothing() -> None:
    rewards = torch.tensor([[1.0, -3.0, 0.5]])
    tied = kwise_loss(rewards, torch.tensor([[0, 1, 1]]))  # b = c: pairs ab, ac only
    only_ab_ac = (-F.logsigmoid(torch.tensor(4.0)) - F.logsigmoid(torch.tensor(0.5))) / 2
    assert tied.loss.item() == pytest.approx(only_ab_ac.item(), rel=1e-6)
    assert tied.pairs == 2
    all_tied = kwise_loss(torch.tensor([[1.0, 2.0]], requires_grad=True), torch.tensor([[0, 0]]))
    assert all_tied.loss.item() == 0.0 and all_tied.pairs == 0
    all_tied.loss.backward()  # still a graph: a batch of ties does not break training


def test_gradient_reaches_every_answer_once() -> None:
    rewards = torch.zeros(2, 4, requires_grad=True)
    places = torch.tensor([[0, 1, 2, 3], [3, 2, 1, 0]])
    kwise_loss(rewards, places).loss.backward()
    assert rewards.grad is not None
    assert (rewards.grad != 0).all()  # every answer is in some pair
    # At r = 0 every pair pulls with 1/2: the best answer gets -(K-1)/(2 C(K,2) B) ...
    best = -(3 * 0.5) / 6 / 2
    assert rewards.grad[0, 0].item() == pytest.approx(best)
    assert rewards.grad[1, 3].item() == pytest.approx(best)
    assert rewards.grad.sum().item() == pytest.approx(0.0, abs=1e-7)  # pairs pull both ways


def test_centering_pulls_rewards_to_zero() -> None:
    rewards = torch.tensor([[3.0, 1.0]])
    plain = kwise_loss(rewards, torch.tensor([[0, 1]])).loss
    centered = kwise_loss(rewards, torch.tensor([[0, 1]]), center_coef=0.01).loss
    assert centered.item() == pytest.approx(plain.item() + 0.01 * (9 + 1) / 2)


def test_accuracy_counts_ties_in_reward_as_wrong() -> None:
    stats = kwise_loss(torch.tensor([[1.0, 1.0, 0.0]]), torch.tensor([[0, 1, 2]]))
    assert stats.accuracy.item() == pytest.approx(2 / 3)  # ab is a reward tie: wrong


def test_shapes_must_match() -> None:
    with pytest.raises(ValueError, match="must both be"):
        kwise_loss(torch.zeros(2, 4), torch.zeros(2, 3))


def test_mixed_sizes_padded_and_masked_equal_each_ranking_on_its_own() -> None:
    """Rankings of K = 2, 3 and 4 in one batch: the padding slots take part in no pair (even
    with a garbage reward and a better place there), and the loss is the mean of the
    per-prompt losses, as if each ranking were alone."""
    torch.manual_seed(1)
    sizes = [2, 4, 3]
    rankings = [(torch.randn(k), torch.randperm(k)) for k in sizes]
    rewards = torch.full((3, 4), 100.0)  # padding: a huge reward...
    places = torch.full((3, 4), -1)  # ...and the best place, which must not count
    valid = torch.zeros((3, 4), dtype=torch.bool)
    for i, (r, p) in enumerate(rankings):
        rewards[i, : len(r)], places[i, : len(p)], valid[i, : len(r)] = r, p, True
    rewards.requires_grad_(True)
    stats = kwise_loss(rewards, places, valid=valid, center_coef=0.1)
    alone = torch.stack([_one_pair_at_a_time(r[None], p[None]) for r, p in rankings]).mean()
    center = 0.1 * torch.cat([r for r, _ in rankings]).pow(2).mean()
    assert stats.loss.item() == pytest.approx((alone + center).item(), rel=1e-6)
    assert stats.pairs == sum(k * (k - 1) // 2 for k in sizes)
    stats.loss.backward()
    assert rewards.grad is not None
    assert (rewards.grad[~valid] == 0).all()
    assert (rewards.grad[valid] != 0).all()
