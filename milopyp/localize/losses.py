"""The localiser's training objective: consistency MSE and the weighted total.

Methods, equations (17)–(18):
``L = L_heat + λ1 · (L_sup + λ2 · L_unsup) + λ3 · MSE(Ŷ, Ỹ)`` with λ1 = 0.1, λ2 = 0.5,
λ3 = 0.1. ``L_heat`` is the non-negative PU focal loss (:mod:`milopyp.localize.pu`) or, for
the paper's "no PU" ablation (``pu=False``), the plain focal loss with unlabelled voxels as
negatives (:mod:`milopyp.localize.focal`); ``contrastive=False`` drops the contrastive part
(the "no CR" ablation). The heat-map loss is taken over both views of the Siamese pair
(each view is a valid input with the same, aligned target).

Both views' outputs must already be aligned voxel by voxel (undo the augmentation first,
:func:`milopyp.localize.augment.undo_flip_rot`). Nothing here calls ``backward()``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from milopyp.localize.contrastive import (
    MAX_ANCHORS,
    MAX_NEGATIVES,
    MAX_POSITIVES,
    Features,
    supervised_contrastive,
    unsupervised_contrastive,
)
from milopyp.localize.focal import focal_loss
from milopyp.localize.pu import pu_focal_loss


def consistency_loss(prob1: torch.Tensor, prob2: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of two aligned heat maps (probabilities), eq. (17)."""
    return torch.mean((prob1 - prob2) ** 2)


@dataclass(frozen=True)
class LossSettings:
    """Weights, switches and contrastive parameters of the total loss.

    prior: π_p for the PU loss (particle centres per voxel; fibres: tube voxels per voxel).
    contrastive_prior: τ⁺ for the contrastive terms (positive voxels per voxel).
    positive_on_clamp: on a negative PU bracket, step on the labelled particles' term as well
    as on the bracket (:func:`milopyp.localize.pu.pu_focal_loss`); False (the default):
    Kiryo's step on the bracket alone.
    negative_loss: known negatives' term, "voxels" (the default), "peaks" or "ranked"
    (:func:`milopyp.localize.pu.pu_focal_loss`).
    """

    prior: float
    contrastive_prior: float
    pu: bool = True
    positive_on_clamp: bool = False
    negative_loss: str = "voxels"
    contrastive: bool = True
    lambda1: float = 0.1
    lambda2: float = 0.5
    lambda3: float = 0.1
    temperature: float = 0.07
    positive_threshold: float = 0.5
    high: float = 0.9
    low: float = 0.3
    max_anchors: int = MAX_ANCHORS
    max_positives: int = MAX_POSITIVES
    max_negatives: int = MAX_NEGATIVES


@dataclass
class LossParts:
    """The total loss (for ``backward()``) and its parts (scalars, for logging)."""

    total: torch.Tensor
    heat: torch.Tensor
    sup: torch.Tensor
    unsup: torch.Tensor
    consistency: torch.Tensor

    def as_floats(self) -> dict[str, float]:
        return {k: float(getattr(self, k).detach()) for k in
                ("total", "heat", "sup", "unsup", "consistency")}


def localizer_loss(
    logits1: torch.Tensor,
    logits2: torch.Tensor,
    target: torch.Tensor,
    settings: LossSettings,
    *,
    features1: Features | None = None,
    features2: Features | None = None,
    generator: torch.Generator | None = None,
) -> LossParts:
    """Total loss of one Siamese batch.

    logits1, logits2: (B, 1, D, H, W) heat-map logits of the crops and of their augmented
    copies, aligned (augmentation undone); target: (B, 1, D, H, W) heat-map target;
    features1, features2: aligned unit features of the two views (dense maps or gather
    functions, :data:`milopyp.localize.contrastive.Features`), needed when
    ``settings.contrastive``; generator: seeds the contrastive sampling.
    """
    s = settings
    logits = torch.cat([logits1, logits2])
    target2 = torch.cat([target, target])
    if s.pu:
        heat = pu_focal_loss(logits, target2, s.prior, positive_on_clamp=s.positive_on_clamp,
                             negative_loss=s.negative_loss)
    else:
        heat = focal_loss(logits, target2)
    prob1, prob2 = torch.sigmoid(logits1), torch.sigmoid(logits2)
    cons = consistency_loss(prob1, prob2)
    zero = heat.new_zeros(())
    sup, unsup = zero, zero
    if s.contrastive:
        if features1 is None or features2 is None:
            raise ValueError("contrastive loss needs the projection features of both views")
        sup = supervised_contrastive(
            features1, features2, target, prior=s.contrastive_prior,
            temperature=s.temperature, positive_threshold=s.positive_threshold,
            max_anchors=s.max_anchors, max_positives=s.max_positives,
            max_negatives=s.max_negatives, generator=generator,
        )
        unsup = unsupervised_contrastive(
            features1, features2, prob1, prob2, target, prior=s.contrastive_prior,
            temperature=s.temperature, high=s.high, low=s.low, max_anchors=s.max_anchors,
            max_negatives=s.max_negatives, generator=generator,
        )
    total = heat + s.lambda1 * (sup + s.lambda2 * unsup) + s.lambda3 * cons
    return LossParts(total=total, heat=heat, sup=sup, unsup=unsup, consistency=cons)
