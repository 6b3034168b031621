"""Focal loss on heat maps (CornerNet, Law & Deng 2018; CenterNet, Zhou et al. 2019).

With prediction ŷ = sigmoid(logit) and target y:
``−(1 − ŷ)^α · log ŷ`` where y = 1, and ``−(1 − y)^β · ŷ^α · log(1 − ŷ)`` elsewhere,
summed and divided by the number of voxels with y = 1; α = 2, β = 4.

The per-voxel terms ``l⁺`` (loss of a voxel as positive) and ``l⁻`` (as negative) are
shared with the positive-unlabelled loss in :mod:`milopyp.localize.pu`. They are computed
from logits with ``logsigmoid`` (stable for any logit); ŷ is clamped to [1e-4, 1 − 1e-4]
inside the logs as CenterNet does, so that one confident mistake cannot dominate a step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

EPS = 1e-4
_LOG_LO = float(torch.log(torch.tensor(EPS)))
_LOG_HI = float(torch.log1p(torch.tensor(-EPS)))


def positive_term(logits: torch.Tensor, alpha: float = 2.0) -> torch.Tensor:
    """l⁺ = −(1 − ŷ)^α · log ŷ per voxel (same shape as ``logits``)."""
    p = torch.sigmoid(logits)
    return -((1.0 - p) ** alpha) * F.logsigmoid(logits).clamp(_LOG_LO, _LOG_HI)


def negative_term(logits: torch.Tensor, alpha: float = 2.0) -> torch.Tensor:
    """l⁻ = −ŷ^α · log(1 − ŷ) per voxel (same shape as ``logits``)."""
    p = torch.sigmoid(logits)
    return -(p**alpha) * F.logsigmoid(-logits).clamp(_LOG_LO, _LOG_HI)


def focal_loss(
    logits: torch.Tensor, target: torch.Tensor, *, alpha: float = 2.0, beta: float = 4.0
) -> torch.Tensor:
    """CenterNet focal loss, every voxel labelled (unlabelled y = −1 count as negatives, y = 0).

    logits, target: same shape, e.g. (B, 1, D, H, W); target 1 at centres, [0, 1) or −1
    elsewhere. Returns a scalar: the sum over voxels divided by max(#(y = 1), 1).
    This is the "no PU" ablation of the paper.
    """
    y = target.clamp(min=0.0)
    pos = y == 1
    loss_pos = positive_term(logits, alpha)[pos].sum()
    loss_neg = ((1.0 - y[~pos]) ** beta * negative_term(logits[~pos], alpha)).sum()
    n_pos = pos.sum().clamp(min=1)
    return (loss_pos + loss_neg) / n_pos
