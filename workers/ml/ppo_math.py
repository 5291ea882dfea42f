"""The arithmetic of PPO for language models, on plain tensors (design §5).

Shapes: ``(B, T)`` over the response tokens of B rollouts; ``mask`` is 1 on a response's real
tokens (up to and including its first EOS) and 0 on padding and on anything after EOS. Every
reduction here is masked, so padding never moves a mean, a variance or a gradient.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    if dim is None:
        return (values * mask).sum() / mask.sum().clamp(min=1)
    return (values * mask).sum(dim) / mask.sum(dim).clamp(min=1)


def masked_var(values: torch.Tensor, mask: torch.Tensor, *, unbiased: bool = True) -> torch.Tensor:
    mean = masked_mean(values, mask)
    variance = masked_mean((values - mean) ** 2, mask)
    n = mask.sum()
    if unbiased and n > 1:
        variance = variance * n / (n - 1)  # Bessel's correction
    return variance


def masked_whiten(
    values: torch.Tensor, mask: torch.Tensor, *, shift_mean: bool = True
) -> torch.Tensor:
    """``(values - mean) / std`` over the masked entries (mean kept when ``shift_mean`` is
    False); masked-out entries come back as 0."""
    mean, var = masked_mean(values, mask), masked_var(values, mask)
    whitened = (values - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        whitened = whitened + mean
    return whitened * mask


def _is_eos(responses: torch.Tensor, eos_ids: Sequence[int]) -> torch.Tensor:
    return torch.isin(responses, torch.tensor(list(eos_ids), device=responses.device))


def response_mask(responses: torch.Tensor, eos_ids: Sequence[int]) -> torch.Tensor:
    """1 on each response's tokens up to and including the first EOS, 0 after it (padding,
    or whatever ``generate`` put there). A response without EOS keeps every token."""
    is_eos = _is_eos(responses, eos_ids)
    # Tokens strictly after the first EOS: an EOS appeared at an earlier position.
    after = (is_eos.long().cumsum(1) - is_eos.long()) > 0
    return (~after).to(torch.float32)


def has_eos(responses: torch.Tensor, mask: torch.Tensor, eos_ids: Sequence[int]) -> torch.Tensor:
    """(B,) True where the response ended with EOS within its length limit."""
    return (_is_eos(responses, eos_ids) & mask.bool()).any(1)


def last_index(mask: torch.Tensor) -> torch.Tensor:
    """(B,) the position of each row's last real token (0 for an all-zero row)."""
    return (mask.sum(1).long() - 1).clamp(min=0)


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log p(token) under ``logits`` (B, T, V) for ``tokens`` (B, T), in float32."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """(B, T) entropy of each position's distribution."""
    logits = logits.float()
    p = torch.softmax(logits, dim=-1)
    return torch.logsumexp(logits, dim=-1) - (p * logits).sum(-1)


def kl_penalties(
    logprobs: torch.Tensor, ref_logprobs: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token estimators of KL(policy || reference) from samples of the policy (Schulman,
    "Approximating KL divergence"): k1 = logp - logp_ref (unbiased, can be negative) and
    k3 = (r - 1) - log r with r = p_ref / p (unbiased, never negative)."""
    k1 = logprobs - ref_logprobs
    log_ratio = ref_logprobs - logprobs
    k3 = torch.expm1(log_ratio) - log_ratio
    return k1, k3


def token_rewards(
    scores: torch.Tensor,
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    mask: torch.Tensor,
    kl_coef: float,
) -> torch.Tensor:
    """``r_t = -kl_coef * (logp_t - logp_ref_t)`` on every real token, plus the sequence's score
    on its last real token (the EOS when there is one); 0 on padding."""
    k1, _ = kl_penalties(logprobs, ref_logprobs)
    rewards = -kl_coef * k1 * mask
    rows = torch.arange(rewards.shape[0], device=rewards.device)
    rewards[rows, last_index(mask)] += scores.to(rewards.dtype) * (mask.sum(1) > 0)
    return rewards


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, *, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation, masked: ``delta_t = r_t + gamma V_{t+1} - V_t`` with
    ``V`` = 0 past a response's last token, ``A_t = delta_t + gamma lam A_{t+1}``. Returns the
    advantages and the returns ``A + V`` (both 0 on padding)."""
    rewards, values = rewards * mask, values * mask
    steps = rewards.shape[1]
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(steps)):
        next_value = values[:, t + 1] if t + 1 < steps else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = delta + gamma * lam * running * (mask[:, t + 1] if t + 1 < steps else 0.0)
        advantages[:, t] = running
    advantages = advantages * mask
    return advantages, (advantages + values) * mask


@dataclass(frozen=True)
class PolicyLoss:
    loss: torch.Tensor
    clip_fraction: torch.Tensor  # share of tokens where the clipped term was the larger loss
    approx_kl: torch.Tensor  # 0.5 * E[(logp - logp_old)^2], how far the update moved
    ratio: torch.Tensor  # (B, T) pi / pi_old


def policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    cliprange: float,
) -> PolicyLoss:
    """The clipped surrogate: ``max(-A r, -A clip(r, 1 - eps, 1 + eps))``, masked mean."""
    log_ratio = (logprobs - old_logprobs) * mask
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    loss = masked_mean(torch.max(unclipped, clipped), mask)
    with torch.no_grad():
        clip_fraction = masked_mean((clipped > unclipped).float(), mask)
        approx_kl = 0.5 * masked_mean(log_ratio**2, mask)
    return PolicyLoss(loss, clip_fraction, approx_kl, ratio)


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    *,
    cliprange_value: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``0.5 * max((V - R)^2, (clip(V, V_old +- eps) - R)^2)``, masked mean; and the share of
    tokens where the clipped term was the larger."""
    clipped = old_values + torch.clamp(values - old_values, -cliprange_value, cliprange_value)
    loss1 = (values - returns) ** 2
    loss2 = (clipped - returns) ** 2
    loss = 0.5 * masked_mean(torch.max(loss1, loss2), mask)
    with torch.no_grad():
        clip_fraction = masked_mean((loss2 > loss1).float(), mask)
    return loss, clip_fraction


class KLController:
    """The KL coefficient beta: fixed, or adaptive (Ziegler et al. 2019): after each batch,
    ``beta *= 1 + clip(KL / target - 1, -0.2, 0.2) * n / horizon`` with n the batch's
    rollouts, which steers the measured KL towards ``target``."""

    def __init__(self, value: float, *, target: float | None = None, horizon: int = 10000) -> None:
        self.value = value
        self.target = target
        self.horizon = horizon

    def update(self, kl: float, n: int) -> None:
        if self.target is None or self.target <= 0:
            return
        error = min(max(kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n / self.horizon
