"""The DPO loss over whole rankings (design §12), on plain tensors.

A batch holds whole prompts with all their K answers, as for the reward model: each answer's
sequence log-probability under the policy is computed once, and every ordered pair of answers
in different groups of a ranking (ties give none) is a DPO pair. With ``h_i = (log pi(y_i) -
log ref(y_i))``, the implicit reward ``beta * h_i``, and answer ``w`` placed above ``l``:

    sigmoid: -(1 - eps) * log sigmoid(beta * (h_w - h_l)) - eps * log sigmoid(-beta * (h_w - h_l))
    ipo:     (h_w / n_w - h_l / n_l - 1 / (2 * beta)) ** 2

(Rafailov et al. 2023 with the label smoothing of conservative DPO; Azar et al. 2023 with
each log-ratio averaged over the answer's ``n`` tokens, as TRL's ``DPOTrainer`` computes IPO,
so that beta means the same whatever the answers' lengths; without ``lengths`` the IPO
log-ratios are the sequence sums.) The loss is the mean over prompts of
the mean over each prompt's pairs, like the reward model's K-wise loss, so a prompt weighs
the same whatever its number of pairs; gradients reach each answer's log-probability once,
summed over the pairs it is in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import torch
import torch.nn.functional as F

from workers.ml.rm_loss import pair_mask

SIGMOID: Final = "sigmoid"
IPO: Final = "ipo"
LOSSES: Final = (SIGMOID, IPO)


@dataclass(frozen=True)
class DPOStats:
    loss: torch.Tensor
    accuracy: torch.Tensor  # pairs whose implicit reward puts w above l (a tie is wrong)
    margin: torch.Tensor  # mean beta * (h_w - h_l) over the pairs
    chosen_logps: torch.Tensor  # mean policy log-probability of the w of each pair
    rejected_logps: torch.Tensor  # ... and of the l
    pairs: int


def dpo_loss(
    policy_logps: torch.Tensor,
    reference_logps: torch.Tensor,
    places: torch.Tensor,
    *,
    beta: float = 0.1,
    loss_type: str = SIGMOID,
    label_smoothing: float = 0.0,
    valid: torch.Tensor | None = None,
    lengths: torch.Tensor | None = None,
) -> DPOStats:
    """``policy_logps``, ``reference_logps`` and ``places`` are (B prompts, K answers); a
    smaller place is better, equal places tie; ``valid`` (B, K) marks the real answers of a
    batch that mixes ranking sizes; ``lengths`` (B, K), each answer's tokens, for IPO. See
    the module docstring."""
    if not policy_logps.shape == reference_logps.shape == places.shape or places.dim() != 2:
        raise ValueError(
            f"policy {tuple(policy_logps.shape)}, reference {tuple(reference_logps.shape)} and "
            f"places {tuple(places.shape)} must all be (prompts, K)"
        )
    if loss_type not in LOSSES:
        raise ValueError(f"loss_type must be one of {', '.join(LOSSES)}, not {loss_type!r}")
    if beta <= 0:
        raise ValueError(f"beta must be positive, not {beta}")
    mask = pair_mask(places, valid)
    ratio = policy_logps - reference_logps.to(policy_logps.dtype)
    diff = ratio[:, :, None] - ratio[:, None, :]  # h_i - h_j
    if loss_type == SIGMOID:
        per_pair = -(1 - label_smoothing) * F.logsigmoid(beta * diff) - (
            label_smoothing * F.logsigmoid(-beta * diff)
        )
    else:
        per_token = ratio if lengths is None else ratio / lengths.to(ratio.dtype).clamp(min=1)
        per_pair = (per_token[:, :, None] - per_token[:, None, :] - 1 / (2 * beta)) ** 2
    counts = mask.sum(dim=(1, 2))
    has_pairs = counts > 0
    per_prompt = (per_pair * mask).sum(dim=(1, 2)) / counts.clamp(min=1)
    # Every prompt all ties: nothing to learn, but a zero that keeps the graph.
    loss = per_prompt[has_pairs].mean() if has_pairs.any() else policy_logps.sum() * 0.0
    pairs = int(mask.sum())
    with torch.no_grad():
        nan = torch.tensor(float("nan"))
        rewards = beta * diff[mask]
        chosen = policy_logps[:, :, None].expand_as(mask)[mask]
        rejected = policy_logps[:, None, :].expand_as(mask)[mask]
        accuracy = (rewards > 0).float().mean() if pairs else nan
        margin = rewards.mean() if pairs else nan
        chosen_mean = chosen.mean() if pairs else nan
        rejected_mean = rejected.mean() if pairs else nan
    return DPOStats(
        loss=loss, accuracy=accuracy, margin=margin, chosen_logps=chosen_mean,
        rejected_logps=rejected_mean, pairs=pairs,
    )  # fmt: skip
