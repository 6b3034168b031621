"""Debiased voxel-level contrastive regularisation (Chuang et al. 2020), bounded memory.

Methods, "Debiased contrastive regularization", equations (11)–(16). For an anchor f, its
positive(s), N negatives {f⁻_i}, temperature t and positive prior τ⁺ (all vectors unit
length), with ``pos`` = exp(f·f⁺/t) (mean of these over several positives):

    g = max( (1/(1 − τ⁺)) · (mean_i exp(f·f⁻_i/t) − τ⁺ · pos),  exp(−1/t) )
    L = −log( pos / (pos + N · g) )

Supervised term (labelled voxels, eq. 11–12): anchors are positive voxels (target
y > ``positive_threshold``; 1.0 means centres only, the paper's y = 1) from both views;
their positives are all other positive vectors of both views (the anchor's augmented copy
included: particles are "naturally augmented pairs"), their negatives the remaining voxels
(unlabelled and weak soft positives); τ⁺ = π_p.

Unsupervised term (unlabelled voxels, y = −1; eq. 13–16): the positive of an anchor is
the same voxel in the other view, negatives are the other voxels of both views. Anchors are
grouped by the predicted probability of their view (detached: the contrastive term does not
move the heat map through its weights): pseudo-positives (p > 0.9) use g⁺ with τ⁺ = π_p,
pseudo-negatives (p < 0.3) use g⁻ with τ⁺ = π_n = 1 − π_p, neutrals p·L(g⁺) + (1 − p)·L(g⁻).
The paper names the prior in the 1/(1 − τ⁺) factor: g⁺ = (1/π_n)(… − π_p·pos) "uses π_n" and
g⁻ = (1/π_p)(… − π_n·pos) "uses π_p" — the same as the released code.

Memory: the released code builds the full (2M)×(2M) similarity matrix over all M voxels of
a crop (20+ GB on crowded crops). Here each call samples, with the given torch generator, at
most ``max_anchors`` anchors (unsupervised: a third from each probability group), at most
``max_positives`` positives and ``max_negatives`` negatives shared by all anchors, so the
largest matrix is max_anchors × (max_positives + max_negatives) whatever the crop holds.
Features may be given as gather functions, so that only the sampled voxels' vectors are
ever computed (training passes ``LocalizerOutput.voxel_features``).
All exponentials are shifted by −1/t (|f·f'| ≤ 1), which changes no ratio.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from milopyp.errors import MilopypError

MAX_ANCHORS = 256
MAX_POSITIVES = 1024
MAX_NEGATIVES = 1024

#: unit feature vectors of a view: a dense (B, C, D, H, W) map, or a function from flat voxel
#: indices into (B, D, H, W) to (n, C) vectors (e.g. ``LocalizerOutput.voxel_features``)
Features = torch.Tensor | Callable[[torch.Tensor], torch.Tensor]


def _gatherer(features: Features) -> Callable[[torch.Tensor], torch.Tensor]:
    if isinstance(features, torch.Tensor):
        flat = features.movedim(1, -1).reshape(-1, features.shape[1])  # (B·D·H·W, C)
        return lambda idx: flat[idx]
    return features


def _gather_pair(f1: Features, f2: Features, m: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """Vectors of indices into the stacked views [view 1 (m voxels); view 2 (m voxels)]."""
    g1, g2 = _gatherer(f1), _gatherer(f2)

    def gather(idx: torch.Tensor) -> torch.Tensor:
        first = idx < m
        a, b = g1(idx[first]), g2(idx[~first] - m)
        out = a.new_empty((idx.numel(), a.shape[1]))
        out[first] = a
        out[~first] = b
        return out

    return gather


def sample_indices(
    idx: torch.Tensor, cap: int | None, generator: torch.Generator | None
) -> torch.Tensor:
    """At most ``cap`` entries of the 1-D index tensor ``idx``, without replacement."""
    if cap is None or idx.numel() <= cap:
        return idx
    order = torch.randperm(idx.numel(), generator=generator)[:cap]
    return idx[order.to(idx.device)]


def _debiased(pos: torch.Tensor, neg_mean: torch.Tensor, n_neg: torch.Tensor, tau: float,
              temperature: float) -> torch.Tensor:
    """−log(pos / (pos + N·g)) per anchor; pos and neg_mean are shifted by exp(−1/t)."""
    floor = math.exp(-2.0 / temperature)  # exp(−1/t) after the −1/t shift
    g = ((neg_mean - tau * pos) / (1.0 - tau)).clamp(min=floor)
    return torch.log(pos + n_neg * g) - torch.log(pos)


def _check_prior(prior: float) -> None:
    if not 0.0 < prior < 1.0:
        raise MilopypError(f"contrastive prior: expected 0 < π_p < 1, got {prior}")


def supervised_contrastive(
    features1: Features,
    features2: Features,
    target: torch.Tensor,
    *,
    prior: float,
    temperature: float = 0.07,
    positive_threshold: float = 0.5,
    max_anchors: int | None = MAX_ANCHORS,
    max_positives: int | None = MAX_POSITIVES,
    max_negatives: int | None = MAX_NEGATIVES,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Debiased supervised contrastive loss over labelled positive voxels (scalar).

    features1, features2: unit vectors of the two views, aligned voxel by voxel: dense
    (B, C, D, H, W) maps or gather functions (see :data:`Features`); target: (B, 1, D, H, W)
    heat-map target (1 / [0, 1) / −1); prior: τ⁺ = π_p, the fraction of voxels that are
    positive. Caps of None mean "use all" (tests only).
    Returns 0 when there are fewer than 2 positive vectors.
    """
    _check_prior(prior)
    y = target.reshape(-1).repeat(2)
    f = _gather_pair(features1, features2, y.numel() // 2)
    is_pos = y >= 1.0 if positive_threshold >= 1.0 else y > positive_threshold
    pos_idx = torch.nonzero(is_pos).squeeze(1)
    neg_idx = torch.nonzero(~is_pos).squeeze(1)
    if pos_idx.numel() < 2 or neg_idx.numel() == 0:
        return target.new_zeros(())
    anchors = sample_indices(pos_idx, max_anchors, generator)
    positives = sample_indices(pos_idx, max_positives, generator)
    negatives = sample_indices(neg_idx, max_negatives, generator)
    fa = f(anchors)
    shift = 1.0 / temperature
    mask = (anchors[:, None] != positives[None, :]).to(fa.dtype)
    e_pos = torch.exp(fa @ f(positives).T / temperature - shift) * mask
    n_pos = mask.sum(1)
    keep = n_pos > 0
    if not bool(keep.any()):
        return target.new_zeros(())
    pos = e_pos.sum(1)[keep] / n_pos[keep]
    neg_mean = torch.exp(fa[keep] @ f(negatives).T / temperature - shift).mean(1)
    n_neg = torch.full_like(pos, float(negatives.numel()))
    return _debiased(pos, neg_mean, n_neg, prior, temperature).mean()


def unsupervised_contrastive(
    features1: Features,
    features2: Features,
    prob1: torch.Tensor,
    prob2: torch.Tensor,
    target: torch.Tensor,
    *,
    prior: float,
    temperature: float = 0.07,
    high: float = 0.9,
    low: float = 0.3,
    max_anchors: int | None = MAX_ANCHORS,
    max_negatives: int | None = MAX_NEGATIVES,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Debiased self-supervised contrastive loss over unlabelled voxels (scalar).

    features1, features2: aligned unit vectors of the two views (dense maps or gather
    functions, see :data:`Features`); prob1, prob2: (B, 1, D, H, W) predicted heat maps of the
    views (detached here); target: the heat-map target (anchors are voxels with y < 0);
    prior: π_p (π_n = 1 − π_p).
    """
    _check_prior(prior)
    m = target.numel()
    f = _gather_pair(features1, features2, m)
    p = torch.cat([prob1.reshape(-1), prob2.reshape(-1)]).detach()
    unl = target.reshape(-1).repeat(2) < 0
    zero = target.new_zeros(())
    groups = [unl & (p > high), unl & (p < low), unl & (p >= low) & (p <= high)]
    cap = None if max_anchors is None else max(1, max_anchors // 3)
    anchors = torch.cat(
        [sample_indices(torch.nonzero(g).squeeze(1), cap, generator) for g in groups]
    )
    if anchors.numel() == 0:
        return zero
    pairs = (anchors + m) % (2 * m)
    negatives = sample_indices(torch.arange(2 * m, device=target.device), max_negatives,
                               generator)
    fa = f(anchors)
    shift = 1.0 / temperature
    pos = torch.exp((fa * f(pairs)).sum(1) / temperature - shift)
    mask = ((negatives[None, :] != anchors[:, None])
            & (negatives[None, :] != pairs[:, None])).to(fa.dtype)
    e_neg = torch.exp(fa @ f(negatives).T / temperature - shift) * mask
    n_neg = mask.sum(1)
    keep = n_neg > 0
    if not bool(keep.any()):
        return zero
    pos, n_neg, pa = pos[keep], n_neg[keep], p[anchors][keep]
    neg_mean = e_neg[keep].sum(1) / n_neg
    loss_p = _debiased(pos, neg_mean, n_neg, prior, temperature)
    loss_n = _debiased(pos, neg_mean, n_neg, 1.0 - prior, temperature)
    w = torch.where(pa > high, torch.ones_like(pa),
                    torch.where(pa < low, torch.zeros_like(pa), pa))
    return (w * loss_p + (1.0 - w) * loss_n).mean()
