"""DPO over whole rankings (design §12): the loss on plain tensors against the pairwise formula
one pair at a time (sigmoid, IPO, label smoothing; ties give nothing; each answer's gradient
is the sum over its pairs), and a learning test on synthetic rankings with a known rule."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from workers.ml.dpo_loss import IPO, SIGMOID, dpo_loss


def pair_loss(
    h_w: float, h_l: float, *, beta: float, loss_type: str, eps: float, n_w: int, n_l: int
) -> float:
    """One pair, written as the papers write it (IPO's log-ratios per token, as TRL's)."""
    z = beta * (h_w - h_l)
    if loss_type == IPO:
        return (h_w / n_w - h_l / n_l - 1 / (2 * beta)) ** 2
    return -(1 - eps) * math.log(1 / (1 + math.exp(-z))) - eps * math.log(1 / (1 + math.exp(z)))


@pytest.mark.parametrize(
    ("loss_type", "eps", "beta"), [(SIGMOID, 0.0, 0.1), (SIGMOID, 0.2, 0.5), (IPO, 0.0, 0.3)]
)
def test_the_loss_is_the_mean_over_prompts_of_each_prompts_pair_losses(
    loss_type: str, eps: float, beta: float
) -> None:
    torch.manual_seed(0)
    policy = torch.randn(3, 4, dtype=torch.float64) * 3
    reference = torch.randn(3, 4, dtype=torch.float64) * 3
    # prompt 0: a strict order; prompt 1: a tie (answers 1 and 2); prompt 2: K = 3 (padding)
    places = torch.tensor([[0, 1, 2, 3], [2, 0, 0, 1], [1, 0, 2, 0]])
    valid = torch.tensor([[True] * 4, [True] * 4, [True, True, True, False]])
    lengths = torch.tensor([[3, 5, 2, 7], [1, 4, 4, 2], [6, 3, 2, 1]])
    stats = dpo_loss(policy, reference, places, beta=beta, loss_type=loss_type,
                     label_smoothing=eps, valid=valid, lengths=lengths)  # fmt: skip
    h = (policy - reference).tolist()
    per_prompt, all_pairs = [], []
    for b in range(3):
        k = int(valid[b].sum())
        n = lengths[b].tolist()
        pairs = [(w, lo) for w in range(k) for lo in range(k) if places[b, w] < places[b, lo]]
        losses = [
            pair_loss(
                h[b][w], h[b][lo], beta=beta, loss_type=loss_type, eps=eps, n_w=n[w], n_l=n[lo]
            )
            for w, lo in pairs
        ]
        all_pairs += [
            (h[b][w] - h[b][lo]) * beta for w in range(k) for lo in range(k)
            if places[b, w] < places[b, lo]
        ]  # fmt: skip
        per_prompt.append(sum(losses) / len(losses))
    assert stats.pairs == 6 + 5 + 3 == len(all_pairs)
    assert float(stats.loss) == pytest.approx(sum(per_prompt) / 3, abs=1e-10)
    assert float(stats.margin) == pytest.approx(sum(all_pairs) / len(all_pairs), abs=1e-10)
    assert float(stats.accuracy) == pytest.approx(sum(d > 0 for d in all_pairs) / len(all_pairs))


def test_ties_give_nothing_and_gradients_reach_each_answer_once_per_pair() -> None:
    policy = torch.tensor([[0.5, -1.0, 2.0, 0.0]], dtype=torch.float64, requires_grad=True)
    reference = torch.zeros(1, 4, dtype=torch.float64)
    all_tied = dpo_loss(policy, reference, torch.zeros(1, 4, dtype=torch.long))
    assert all_tied.pairs == 0 and float(all_tied.loss) == 0.0
    all_tied.loss.backward()  # still a graph
    assert policy.grad is not None and not policy.grad.any()

    policy.grad = None
    places = torch.tensor([[0, 1, 1, 2]])  # answers 1 and 2 tie: no pair between them
    dpo_loss(policy, reference, places, beta=0.5).loss.backward()
    # by hand: the mean of the 5 pairs' -log sigmoid(beta (h_w - h_l)), differentiated
    expected = torch.zeros(4, dtype=torch.float64)
    h = policy.detach()[0]
    pairs = [(0, 1), (0, 2), (0, 3), (1, 3), (2, 3)]
    for w, lo in pairs:
        g = -0.5 * torch.sigmoid(-0.5 * (h[w] - h[lo])) / len(pairs)
        expected[w] += g
        expected[lo] -= g
    assert torch.allclose(policy.grad[0], expected, atol=1e-12)


def test_a_pair_at_k2_is_trls_sigmoid_loss() -> None:
    """K = 2 is one pair: the same number as TRL's DPO (sigmoid) formula on that pair."""
    pw, pl, rw, rl = -12.0, -15.0, -13.0, -14.0
    stats = dpo_loss(torch.tensor([[pw, pl]]), torch.tensor([[rw, rl]]), torch.tensor([[0, 1]]))
    logits = torch.tensor((pw - pl) - (rw - rl))
    assert float(stats.loss) == pytest.approx(float(-F.logsigmoid(0.1 * logits)), abs=1e-7)
    assert float(stats.chosen_logps) == pw and float(stats.rejected_logps) == pl


def test_bad_arguments_are_refused() -> None:
    one = torch.zeros(1, 2)
    with pytest.raises(ValueError, match="must all be"):
        dpo_loss(one, torch.zeros(1, 3), torch.zeros(1, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="loss_type"):
        dpo_loss(one, one, torch.zeros(1, 2, dtype=torch.long), loss_type="hinge-ish")
    with pytest.raises(ValueError, match="beta"):
        dpo_loss(one, one, torch.zeros(1, 2, dtype=torch.long), beta=0)


@pytest.mark.slow
def test_dpo_learns_the_rule_and_its_samples_follow_it(tmp_path: Path) -> None:
    """Rankings where more "please" is better: the held-out implicit-reward accuracy rises
    above 0.9, and the trained policy's samples say "please" more often than the start's."""
    from transformers import AutoModelForCausalLM

    from workers.ml.dpo_train import DPOConfig, train_dpo
    from workers.ml.loading import load_causal_lm
    from workers.ml.sampling import SamplingParams, sample_answers
    from workers.ml.synthetic import TARGET, corpus, please_rankings, prompts
    from workers.ml.tiny import build_tiny_causal_lm

    base = build_tiny_causal_lm(tmp_path / "base", texts=corpus(), n_embd=64)
    train = please_rankings(96, seed=1, k=4, strict=True)
    validation = please_rankings(32, seed=2, k=4, strict=True)
    config = DPOConfig(epochs=3, batch_size=8, learning_rate=2e-3, max_length=64, beta=0.1,
                       logging_steps=4)  # fmt: skip
    model, _, result = train_dpo(base, train, validation, tmp_path / "out", config)
    assert result.validation_rankings == 32 and result.pairs == 32 * 6
    assert result.accuracy > 0.9, result
    assert result.chosen_logps > result.rejected_logps

    def please_rate(m: object) -> float:
        _, tok = load_causal_lm(base, padding_side="left")
        params = SamplingParams(max_new_tokens=12, seed=0)
        out = sample_answers(m, tok, prompts(24, seed=9), k=4, params=params)
        words = [w for row in out.answers for a in row for w in a.split()]
        return words.count(TARGET) / max(len(words), 1)

    random.seed(0)
    before = please_rate(AutoModelForCausalLM.from_pretrained(base))
    after = please_rate(model)
    assert after > before + 0.05, (before, after)
