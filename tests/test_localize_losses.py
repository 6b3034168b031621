"""Localiser losses against slow, obvious reference implementations (loops) on tiny tensors."""

from __future__ import annotations

import math

import pytest
import torch

from milopyp.localize import contrastive as con
from milopyp.localize.contrastive import supervised_contrastive, unsupervised_contrastive
from milopyp.localize.focal import EPS, focal_loss
from milopyp.localize.losses import LossSettings, consistency_loss, localizer_loss
from milopyp.localize.pu import pu_focal_loss, pu_focal_risks

ALPHA, BETA = 2.0, 4.0


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _l_pos(z: torch.Tensor) -> torch.Tensor:
    p = torch.sigmoid(z)
    return -((1 - p) ** ALPHA) * torch.log(p.clamp(EPS, 1 - EPS))


def _l_neg(z: torch.Tensor) -> torch.Tensor:
    p = torch.sigmoid(z)
    return -(p**ALPHA) * torch.log((1 - p).clamp(EPS, 1 - EPS))


def _target(gen: torch.Generator, shape=(2, 1, 3, 5, 7)) -> torch.Tensor:
    """Random PU target: a few centres (1), soft positives in (0, 1), the rest −1."""
    u = torch.rand(shape, generator=gen)
    y = torch.full(shape, -1.0)
    soft = u < 0.25
    y[soft] = torch.rand(int(soft.sum()), generator=gen) * 0.98 + 0.01
    y[u > 0.93] = 1.0
    return y


def _ref_focal(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    total, n_pos = torch.zeros(()), 0
    for zi, yi in zip(z.flatten(), y.flatten()):
        yi = max(float(yi), 0.0)
        if yi == 1.0:
            total = total + _l_pos(zi)
            n_pos += 1
        else:
            total = total + (1 - yi) ** BETA * _l_neg(zi)
    return total / max(n_pos, 1)


def _ref_risks(z: torch.Tensor, y: torch.Tensor):
    rp_plus, rp_minus, ru, n_t, n_u = torch.zeros(()), torch.zeros(()), torch.zeros(()), 0, 0
    for zi, yi in zip(z.flatten(), y.flatten()):
        yi = float(yi)
        if yi == 1.0:
            n_t += 1
            rp_plus = rp_plus + _l_pos(zi)
            rp_minus = rp_minus + _l_neg(zi)
        elif yi >= 0.0:
            rp_plus = rp_plus + (1 - yi) ** BETA * _l_neg(zi)
            rp_minus = rp_minus + _l_neg(zi)
        else:
            n_u += 1
            ru = ru + _l_neg(zi)
    return rp_plus / max(n_t, 1), rp_minus / max(n_t, 1), ru / max(n_u, 1)


def test_focal_loss_matches_loop_reference():
    gen = torch.Generator().manual_seed(1)
    y = _target(gen)
    z = torch.randn(y.shape, generator=gen) * 3
    assert torch.allclose(focal_loss(z, y), _ref_focal(z, y), rtol=1e-5, atol=1e-6)


def test_focal_loss_limits():
    gen = torch.Generator().manual_seed(2)
    y = _target(gen)
    perfect = torch.where(y == 1, torch.tensor(30.0), torch.tensor(-30.0))
    assert float(focal_loss(perfect, y)) < 1e-6
    wrong = -perfect
    assert float(focal_loss(wrong, y)) > 1.0
    # a soft positive predicted high costs less than a background voxel predicted high
    y2 = torch.tensor([1.0, 0.9, -1.0])
    z2 = torch.tensor([5.0, 2.0, -5.0])
    z3 = torch.tensor([5.0, -5.0, 2.0])
    assert float(focal_loss(z2, y2)) < float(focal_loss(z3, y2))


def test_pu_risks_match_loop_reference():
    gen = torch.Generator().manual_seed(3)
    y = _target(gen)
    z = torch.randn(y.shape, generator=gen) * 2
    got = pu_focal_risks(z, y)
    want = _ref_risks(z, y)
    for g, w in zip(got, want):
        assert torch.allclose(g, w, rtol=1e-5, atol=1e-6)


def test_pu_loss_without_clamp_is_risk_over_prior():
    gen = torch.Generator().manual_seed(4)
    y = _target(gen)
    z = torch.randn(y.shape, generator=gen)  # unlabelled predicted ~0.5: bracket positive
    prior = 0.01
    rp, rm, ru = _ref_risks(z, y)
    bracket = ru - prior * rm
    assert float(bracket) > 0
    r = prior * rp + bracket
    assert torch.allclose(pu_focal_loss(z, y, prior), r / prior, rtol=1e-5)


def _clamped_case():
    gen = torch.Generator().manual_seed(5)
    y = _target(gen)
    # over-fitted model: labelled voxels predicted high, unlabelled predicted very low
    base = torch.where(y >= 0, torch.tensor(4.0), torch.tensor(-4.0))
    z = (base + 0.1 * torch.randn(y.shape, generator=gen)).requires_grad_(True)
    prior = 0.05
    rp, rm, ru = _ref_risks(z, y)
    bracket = ru - prior * rm
    assert float(bracket.detach()) < 0, "test case must make the non-negative clamp active"
    return z, y, prior, rp, bracket


def test_nnpu_clamp_steps_on_minus_bracket():
    z, y, prior, rp, bracket = _clamped_case()
    loss = pu_focal_loss(z, y, prior)  # Kiryo's step, the default
    # value: R / π_p with max(0, bracket) = 0
    assert math.isclose(float(loss.detach()), float(rp.detach()), rel_tol=1e-5)
    (g_loss,) = torch.autograd.grad(loss, z)
    (g_want,) = torch.autograd.grad(-bracket / prior, z, retain_graph=True)
    assert torch.allclose(g_loss, g_want, rtol=1e-4, atol=1e-7)
    # ... which is not the gradient of R: descent now raises the unlabelled predictions
    (g_r,) = torch.autograd.grad(rp + bracket / prior, z)
    assert not torch.allclose(g_loss, g_r)
    assert float(g_loss[y < 0].sum()) < 0
    # and lowers the labelled centres (the gradient of −B at them is that of R_p⁻)
    assert float(g_loss[y == 1].sum()) > 0
    # the unbiased (uPU) variant keeps the negative bracket
    assert float(pu_focal_loss(z, y, prior, nonnegative=False).detach()) < float(loss.detach())


def test_nnpu_clamp_can_keep_the_labelled_particles_term():
    z, y, prior, rp, bracket = _clamped_case()
    loss = pu_focal_loss(z, y, prior, positive_on_clamp=True)
    assert math.isclose(float(loss.detach()), float(rp.detach()), rel_tol=1e-5)
    (g_loss,) = torch.autograd.grad(loss, z)
    (g_want,) = torch.autograd.grad(rp - bracket / prior, z, retain_graph=True)
    assert torch.allclose(g_loss, g_want, rtol=1e-4, atol=1e-7)
    # the bracket is still pushed back up (unlabelled predictions rise) ...
    assert float(g_loss[y < 0].sum()) < 0
    # ... and the labelled centres keep their own term: descent lowers them less than
    # Kiryo's step, which lowers them (the bracket's R_p⁻ part) with nothing against it
    (g_kiryo,) = torch.autograd.grad(pu_focal_loss(z, y, prior), z)
    assert float(g_loss[y == 1].sum()) < float(g_kiryo[y == 1].sum())


def _unit(gen, shape):
    f = torch.randn(shape, generator=gen)
    return f / f.norm(dim=1, keepdim=True)


def _debiased(f, pos_list, neg_list, tau, t):
    pos = sum(math.exp(float(f @ p) / t) for p in pos_list) / len(pos_list)
    neg = sum(math.exp(float(f @ n) / t) for n in neg_list) / len(neg_list)
    g = max((neg - tau * pos) / (1 - tau), math.exp(-1 / t))
    return -math.log(pos / (pos + len(neg_list) * g))


def test_supervised_contrastive_matches_formula():
    gen = torch.Generator().manual_seed(6)
    shape = (1, 4, 2, 3, 3)
    f1, f2 = _unit(gen, shape), _unit(gen, shape)
    y = torch.full((1, 1, 2, 3, 3), -1.0)
    y[0, 0, 0, 1, 1] = 1.0
    y[0, 0, 1, 0, 2] = 1.0
    y[0, 0, 0, 1, 2] = 0.7  # soft positive above the threshold: a positive
    y[0, 0, 1, 1, 2] = 0.3  # below: a negative
    t, tau = 0.5, 0.1
    vec = torch.cat([f1.movedim(1, -1).reshape(-1, 4), f2.movedim(1, -1).reshape(-1, 4)])
    lab = y.flatten().repeat(2)
    pos = [i for i in range(len(lab)) if lab[i] > 0.5]
    neg = [i for i in range(len(lab)) if lab[i] <= 0.5]
    want = sum(_debiased(vec[a], [vec[j] for j in pos if j != a], [vec[k] for k in neg], tau, t)
               for a in pos) / len(pos)
    got = supervised_contrastive(f1, f2, y, prior=tau, temperature=t, max_anchors=None,
                                 max_positives=None, max_negatives=None)
    assert math.isclose(float(got), want, rel_tol=1e-4)
    # centres only (the paper's y = 1)
    pos1 = [i for i in range(len(lab)) if lab[i] == 1]
    neg1 = [i for i in range(len(lab)) if lab[i] < 1]
    want1 = sum(_debiased(vec[a], [vec[j] for j in pos1 if j != a], [vec[k] for k in neg1],
                          tau, t) for a in pos1) / len(pos1)
    got1 = supervised_contrastive(f1, f2, y, prior=tau, temperature=t, positive_threshold=1.0,
                                  max_anchors=None, max_positives=None, max_negatives=None)
    assert math.isclose(float(got1), want1, rel_tol=1e-4)


def test_unsupervised_contrastive_matches_formula():
    gen = torch.Generator().manual_seed(7)
    shape = (1, 3, 1, 3, 4)
    f1, f2 = _unit(gen, shape), _unit(gen, shape)
    y = torch.full((1, 1, 1, 3, 4), -1.0)
    y[0, 0, 0, 0, 0] = 1.0
    y[0, 0, 0, 0, 1] = 0.4
    p1 = torch.rand((1, 1, 1, 3, 4), generator=gen)
    p1[0, 0, 0, 2, :] = torch.tensor([0.95, 0.97, 0.1, 0.2])
    p2 = torch.rand((1, 1, 1, 3, 4), generator=gen)
    t, prior = 0.5, 0.2
    vec = torch.cat([f1.movedim(1, -1).reshape(-1, 3), f2.movedim(1, -1).reshape(-1, 3)])
    prob = torch.cat([p1.flatten(), p2.flatten()])
    lab = y.flatten().repeat(2)
    m = len(lab) // 2
    losses = []
    for a in range(2 * m):
        if lab[a] >= 0:
            continue
        pair = (a + m) % (2 * m)
        negs = [vec[k] for k in range(2 * m) if k not in (a, pair)]
        lp = _debiased(vec[a], [vec[pair]], negs, prior, t)
        ln = _debiased(vec[a], [vec[pair]], negs, 1 - prior, t)
        p = float(prob[a])
        w = 1.0 if p > 0.9 else 0.0 if p < 0.3 else p
        losses.append(w * lp + (1 - w) * ln)
    want = sum(losses) / len(losses)
    got = unsupervised_contrastive(f1, f2, p1, p2, y, prior=prior, temperature=t,
                                   max_anchors=None, max_negatives=None)
    assert math.isclose(float(got), want, rel_tol=1e-4)


def test_contrastive_memory_is_bounded_on_crowded_crops(monkeypatch):
    """65,536 voxels per view, all positive or all unlabelled: an N×N matrix would need
    ~17 GB; the sampled losses must stay within the caps."""
    gen = torch.Generator().manual_seed(8)
    shape = (2, 8, 8, 32, 64)
    f1, f2 = _unit(gen, shape), _unit(gen, shape)
    sizes: list[tuple[int, int | None]] = []
    real = con.sample_indices

    def spy(idx, cap, generator):
        out = real(idx, cap, generator)
        sizes.append((out.numel(), cap))
        return out

    monkeypatch.setattr(con, "sample_indices", spy)
    crowded = torch.ones((2, 1, 8, 32, 64))
    prob = torch.rand((2, 1, 8, 32, 64), generator=gen)
    g = torch.Generator().manual_seed(0)
    sup = supervised_contrastive(f1, f2, crowded, prior=0.3, max_anchors=64, max_positives=128,
                                 max_negatives=128, generator=g)
    crowded[:, :, :, :, :2] = -1  # a few negatives for the supervised term above
    unsup = unsupervised_contrastive(f1, f2, prob, prob, -crowded.abs(), prior=0.3,
                                     max_anchors=60, max_negatives=100, generator=g)
    assert torch.isfinite(sup) and torch.isfinite(unsup)
    assert sizes and all(n <= cap for n, cap in sizes)
    assert max(n for n, _ in sizes) <= 128
    # sampling is seeded: the same generator seed gives the same loss
    def run(seed: int) -> float:
        return float(unsupervised_contrastive(
            f1, f2, prob, prob, -crowded.abs(), prior=0.3, max_anchors=60, max_negatives=100,
            generator=torch.Generator().manual_seed(seed)))

    assert run(3) == run(3)


def test_contrastive_without_positives_is_zero():
    gen = torch.Generator().manual_seed(9)
    f1, f2 = _unit(gen, (1, 4, 1, 2, 2)), _unit(gen, (1, 4, 1, 2, 2))
    y = torch.full((1, 1, 1, 2, 2), -1.0)
    assert float(supervised_contrastive(f1, f2, y, prior=0.1, temperature=0.5)) == 0.0
    y[0, 0, 0, 0, 0] = 1.0  # one centre gives two vectors (both views): a positive pair
    assert float(supervised_contrastive(f1, f2, y, prior=0.1, temperature=0.5)) > 0.0


def test_contrastive_accepts_gather_functions():
    gen = torch.Generator().manual_seed(11)
    shape = (2, 4, 2, 5, 6)
    f1, f2 = _unit(gen, shape), _unit(gen, shape)
    y = _target(gen, (2, 1, 2, 5, 6))
    flat1 = f1.movedim(1, -1).reshape(-1, 4)
    flat2 = f2.movedim(1, -1).reshape(-1, 4)
    p = torch.rand((2, 1, 2, 5, 6), generator=gen)
    for fn in (supervised_contrastive, unsupervised_contrastive):
        extra = (p, p) if fn is unsupervised_contrastive else ()
        dense = fn(f1, f2, *extra, y, prior=0.1, generator=torch.Generator().manual_seed(1),
                   max_anchors=12, max_negatives=20)
        gathered = fn(lambda i: flat1[i], lambda i: flat2[i], *extra, y, prior=0.1,
                      generator=torch.Generator().manual_seed(1), max_anchors=12,
                      max_negatives=20)
        assert torch.allclose(dense, gathered)


def test_consistency_and_total_loss_weights_and_ablations():
    gen = torch.Generator().manual_seed(10)
    shape = (1, 1, 2, 6, 6)
    y = _target(gen, shape)
    y[0, 0, 0, 2, 2] = 1.0
    z1, z2 = torch.randn(shape, generator=gen), torch.randn(shape, generator=gen)
    f1, f2 = _unit(gen, (1, 4, 2, 6, 6)), _unit(gen, (1, 4, 2, 6, 6))
    p1, p2 = torch.sigmoid(z1), torch.sigmoid(z2)
    assert math.isclose(float(consistency_loss(p1, p2)), float(((p1 - p2) ** 2).mean()),
                        rel_tol=1e-6)
    s = LossSettings(prior=0.02, contrastive_prior=0.1)
    parts = localizer_loss(z1, z2, y, s, features1=f1, features2=f2,
                           generator=torch.Generator().manual_seed(0))
    want = parts.heat + 0.1 * (parts.sup + 0.5 * parts.unsup) + 0.1 * parts.consistency
    assert math.isclose(float(parts.total), float(want), rel_tol=1e-6)
    assert float(parts.sup) > 0 and float(parts.unsup) > 0
    both, y2 = torch.cat([z1, z2]), torch.cat([y, y])
    assert math.isclose(float(parts.heat), float(pu_focal_loss(both, y2, 0.02)), rel_tol=1e-6)

    no_cr = localizer_loss(z1, z2, y, LossSettings(prior=0.02, contrastive_prior=0.1,
                                                   contrastive=False))
    assert float(no_cr.sup) == 0.0 and float(no_cr.unsup) == 0.0
    assert math.isclose(float(no_cr.total), float(no_cr.heat + 0.1 * no_cr.consistency),
                        rel_tol=1e-6)
    no_pu = localizer_loss(z1, z2, y, LossSettings(prior=0.02, contrastive_prior=0.1,
                                                   pu=False), features1=f1, features2=f2)
    assert math.isclose(float(no_pu.heat), float(focal_loss(both, y2)), rel_tol=1e-6)
    assert not math.isclose(float(no_pu.heat), float(parts.heat), rel_tol=1e-3)
