"""Positive-unlabelled focal loss with non-negative risk (Kiryo et al. 2017, nnPU).

Methods, equations (6)–(10). Voxel groups from the target heat map: true positives T
(y = 1, labelled centres), soft positives S (0 ≤ y < 1, the rest of each labelled
particle) and unlabelled U (y = −1). With the focal terms l⁺ (loss as positive) and l⁻
(loss as negative) of :mod:`milopyp.localize.focal` and n = max(|T|, 1) labelled centres:

    R_p⁺ = (1/n) · [ Σ_T l⁺ + Σ_S (1 − y)^β · l⁻ ]    labelled particles, as labelled
    R_p⁻ = (1/n) · [ Σ_T l⁻ + Σ_S l⁻ ]                labelled particles, as if unlabelled
    R_u⁻ = (1/|U|) · Σ_U l⁻                            unlabelled voxels as negatives

    R = π_p · R_p⁺ + max(0, R_u⁻ − π_p · R_p⁻)         (DESIGN.md; Kiryo eq. 4)

Known negatives N (y = −2, voxels of objects the user marked as not the target) are not
in U; they add ``R_n⁻ = (1/n) · Σ_N l⁻`` (per labelled centre, as the positives) to the
returned loss, outside the non-negative clamp: a PNU risk in which the negatives are
labelled data, not an estimate. Two other forms of that term are options
(``negative_loss``, :func:`pu_focal_loss`): each object's highest voxel as a negative, or
ranked below the labelled centres. On the devset's virus set (82 attached spikes labelled,
TS_01's 7 free spikes as negatives) none of the three taught the network to reject free
spikes: after training, those 7 scored 0.98 / 0.95 / 1.09 × the median label peak
(voxels / peaks / ranked; median heat-map peak), as without negatives (1.01;
docs/accuracy.md, "Tried at stop 36").

Soft positives join the positive terms with their focal weight (1 − y)^β, so R_p⁺ is the
CenterNet loss of the labelled particles. Risks are normalised per labelled particle and
``π_p`` is the expected number of particle centres per voxel; then π_p·R_p⁻ estimates
exactly what the hidden (unlabelled) particles contribute to R_u⁻ — an unlabelled particle
is seen in U with weight 1 on l⁻ at its centre and at every voxel around it, which is why
the soft positives enter R_p⁻ with weight 1 — and R is an unbiased estimate of the
CenterNet loss as if every particle were labelled (per voxel). For filaments S is empty
and every voxel of the labelled tube is a "centre"; π_p is then the fraction of voxels on
filaments.

Scale: :func:`pu_focal_loss` returns R / π_p. Dividing by the positive constant π_p
changes neither the minimiser nor the clamp decision, and puts the loss on the scale of
the plain focal loss (normalised per particle), so the λ weights of the total loss mean the
same with and without PU.

The non-negative correction: when the bracket B = R_u⁻ − π_p·R_p⁻ goes negative (the
model is over-fitting the labelled positives), Kiryo's Algorithm 1 does not step on R but
on −B (gradient ascent on B, γ = 1, β = 0). A loss cannot call backward(), so the returned
tensor carries the value of R and the gradient of −B:

    loss = −B/π_p + (R/π_p − (−B/π_p)).detach()

``loss.backward()`` then gives ∇(−B/π_p) while ``loss.item()`` reports R/π_p = R_p⁺
(max(0, B) = 0), exactly as Kiryo's reference code reports the clamped risk.

``positive_on_clamp=True`` (not the default) steps on R_p⁺ − B/π_p instead: the labelled
particles keep their own term on those steps. On a crop the bracket is an estimate from a
few particles, and a crop with several labels and little else makes it negative (in a
devset training, crowded, 55 labels: on 8-62 % of the steps of an epoch); Kiryo's step then
leaves out the labels' own term and lowers the labelled centres. Measured at stop 35
(docs/accuracy.md, "Tried at stop 35"), ten devset trainings: the held-out particles ranked
better in seven (F1 at the tuned threshold +0.003 on average), but F1 at the automatic
threshold moved both ways by up to 0.046, −0.009 on average; so Kiryo's step stays the
default.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from scipy import ndimage

from milopyp.errors import MilopypError
from milopyp.localize.focal import negative_term, positive_term
from milopyp.localize.targets import NEGATIVE

log = logging.getLogger(__name__)


def pu_focal_risks(
    logits: torch.Tensor, target: torch.Tensor, *, alpha: float = 2.0, beta: float = 4.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The three empirical risks ``(R_p⁺, R_p⁻, R_u⁻)`` defined in the module docstring.

    logits, target: same shape (e.g. (B, 1, D, H, W)); target 1 / [0, 1) / −1.
    Returns three scalars; a risk with no voxels behind it is 0.
    """
    t = target == 1
    s = (target >= 0) & (target < 1)
    u = target == -1
    n = t.sum().clamp(min=1)
    neg = negative_term(logits, alpha)
    r_p_plus = (positive_term(logits[t], alpha).sum()
                + ((1.0 - target[s]) ** beta * neg[s]).sum()) / n
    r_p_minus = (neg[t].sum() + neg[s].sum()) / n
    r_u_minus = neg[u].sum() / u.sum().clamp(min=1)
    return r_p_plus, r_p_minus, r_u_minus


#: how known negatives enter the loss: every voxel's focal term, each object's highest
#: voxel, or that voxel ranked below the labelled centres (:func:`pu_focal_loss`)
NEGATIVE_LOSSES = ("voxels", "peaks", "ranked")


def check_negative_loss(name: str) -> None:
    """Raise :class:`MilopypError` naming the choices unless ``name`` is in
    :data:`NEGATIVE_LOSSES`."""
    if name not in NEGATIVE_LOSSES:
        raise MilopypError(f"negative loss: expected one of {NEGATIVE_LOSSES}, got {name!r}")


def negative_peak_risk(logits: torch.Tensor, target: torch.Tensor,
                       reference: torch.Tensor | float = 0.0) -> torch.Tensor:
    """Σ over the known-negative objects (connected y = −2 regions of each crop) of
    softplus(max logit − ``reference``): with reference 0 the binary cross-entropy of the
    object's highest voxel as a negative. logits, target: same shape (B, 1, D, H, W) or
    (B, D, H, W). 0 without negatives."""
    known = target == NEGATIVE
    if not bool(known.any()):
        return logits.new_zeros(())
    mask = known.detach().cpu().numpy().reshape(known.shape[0], -1, *known.shape[-3:])
    mask = mask.any(axis=1)  # (B, D, H, W); the channel axis is 1
    structure = np.zeros((3, 3, 3, 3), bool)  # 6-connected in space, never across the batch
    structure[1] = ndimage.generate_binary_structure(3, 1)
    objects, n_objects = ndimage.label(mask, structure)
    ids = torch.from_numpy(objects.astype(np.int64)).to(logits.device)
    flat = logits.reshape(logits.shape[0], -1, *logits.shape[-3:])[:, 0]
    inside = ids > 0
    peaks = flat.new_full((n_objects,), float("-inf")).scatter_reduce(
        0, ids[inside] - 1, flat[inside], reduce="amax", include_self=True)
    return torch.nn.functional.softplus(peaks - reference).sum()


def pu_focal_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    prior: float,
    *,
    alpha: float = 2.0,
    beta: float = 4.0,
    nonnegative: bool = True,
    positive_on_clamp: bool = False,
    negative_loss: str = "voxels",
) -> torch.Tensor:
    """Non-negative PU focal loss R / π_p (scalar); on a negative bracket B Kiryo's gradient
    of −B/π_p, or that of R_p⁺ − B/π_p with ``positive_on_clamp``.

    logits, target: same shape; prior: π_p, expected particle centres per voxel (0, 1).
    ``nonnegative=False`` gives the unbiased (uPU) risk with no clamp. ``negative_loss``:
    known negatives as every voxel's focal term ("voxels", the default), as each object's
    highest voxel ("peaks": :func:`negative_peak_risk`, binary cross-entropy) or as that
    voxel ranked below the mean logit of the crop's labelled centres ("ranked", nothing
    where the batch holds none), per labelled centre.
    """
    check_negative_loss(negative_loss)
    if not 0.0 < prior < 1.0:
        raise MilopypError(f"class prior: expected 0 < π_p < 1 (particle centres per voxel), "
                           f"got {prior}")
    r_p_plus, r_p_minus, r_u_minus = pu_focal_risks(logits, target, alpha=alpha, beta=beta)
    bracket = r_u_minus / prior - r_p_minus  # B / π_p
    known, centres = target == NEGATIVE, target == 1
    n = centres.sum().clamp(min=1)
    if not bool(known.any()):
        r_n = logits.new_zeros(())
    elif negative_loss == "peaks":
        r_n = negative_peak_risk(logits, target) / n
    elif negative_loss == "ranked":  # below the labelled centres' mean logit
        r_n = (negative_peak_risk(logits, target, logits[centres].detach().mean()) / n
               if bool(centres.any()) else logits.new_zeros(()))
    else:
        r_n = negative_term(logits[known], alpha).sum() / n
    if not nonnegative or bracket.item() >= 0.0:
        return r_p_plus + bracket + r_n
    if positive_on_clamp:  # value R / π_p = R_p⁺ (max(0, B) = 0), gradient of R_p⁺ − B
        return r_p_plus - bracket + bracket.detach() + r_n
    return -bracket + (r_p_plus + bracket).detach() + r_n


def class_prior_from_count(expected_particles: float, shape_zyx: tuple[int, ...]) -> float:
    """π_p = expected particle centres per voxel of a tomogram of shape ``shape_zyx``."""
    n_vox = float(torch.tensor(shape_zyx, dtype=torch.float64).prod())
    if not expected_particles > 0:
        raise MilopypError(f"expected particles: expected a positive count, got "
                           f"{expected_particles}")
    return min(float(expected_particles) / n_vox, 0.5)
