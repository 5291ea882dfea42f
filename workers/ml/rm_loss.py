"""The reward model's loss with InstructGPT's K-wise batching, on plain tensors.

A batch holds whole prompts with all their K answers, so each answer is scored once and all
C(K,2) pairs of a prompt are in the same step (InstructGPT §3.5: spreading one prompt's pairs
over an epoch overfits). For answers ``w`` placed above ``l`` (ties give no pair):

    loss = mean over prompts [ mean over the prompt's pairs ( -log sigmoid(r_w - r_l - m_wl) ) ]
           + center_coef * mean(r ** 2)

where the optional margin ``m_wl = margin_coef * (place_l - place_w)`` asks for a wider gap
between answers ranked further apart, and the centering term keeps rewards near zero (TRL's
``center_rewards_coefficient``). Each prompt weighs the same whatever its number of pairs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class PairStats:
    loss: torch.Tensor
    accuracy: torch.Tensor  # share of pairs with r_w > r_l (a tie counts as wrong)
    margin: torch.Tensor  # mean r_w - r_l over the pairs
    pairs: int


def pair_mask(places: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """(B, K, K): True where answer i is placed above answer j (a smaller place is better);
    with ``valid`` (B, K), padding slots of shorter rankings take part in no pair."""
    mask = places[:, :, None] < places[:, None, :]
    if valid is not None:
        mask = mask & valid[:, :, None] & valid[:, None, :]
    return mask


def kwise_loss(
    rewards: torch.Tensor,
    places: torch.Tensor,
    *,
    margin_coef: float = 0.0,
    center_coef: float = 0.0,
    valid: torch.Tensor | None = None,
) -> PairStats:
    """``rewards`` and ``places`` are (B prompts, K answers); see the module docstring. A
    batch may mix rankings of different sizes: each is padded to the batch's largest K and
    ``valid`` (B, K) says which slots hold an answer."""
    if rewards.shape != places.shape or rewards.dim() != 2:
        raise ValueError(
            f"rewards {tuple(rewards.shape)} and places {tuple(places.shape)} must both be "
            "(prompts, K)"
        )
    mask = pair_mask(places, valid)
    diff = rewards[:, :, None] - rewards[:, None, :]  # r_i - r_j
    gap = (places[:, None, :] - places[:, :, None]).to(rewards.dtype)  # place_j - place_i
    per_pair = -F.logsigmoid(diff - margin_coef * gap)
    counts = mask.sum(dim=(1, 2))
    has_pairs = counts > 0
    per_prompt = (per_pair * mask).sum(dim=(1, 2)) / counts.clamp(min=1)
    # Every prompt all ties: nothing to learn, but a zero that keeps the graph.
    loss = per_prompt[has_pairs].mean() if has_pairs.any() else rewards.sum() * 0.0
    if center_coef:
        squares = rewards**2 if valid is None else (rewards**2)[valid]
        loss = loss + center_coef * squares.mean()
    pair_diffs = diff[mask]
    pairs = int(mask.sum())
    with torch.no_grad():
        accuracy = (pair_diffs > 0).float().mean() if pairs else torch.tensor(float("nan"))
        margin = pair_diffs.mean() if pairs else torch.tensor(float("nan"))
    return PairStats(loss=loss, accuracy=accuracy, margin=margin, pairs=pairs)
