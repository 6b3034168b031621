"""Random augmentations of patch batches for SimSiam, as listed in the MiLoPYP paper.

Horizontal/vertical flips, intensity jitter (brightness 0.5, contrast 0.2), random resized
crop (area 0.7–1.0 of the patch, resized back with bilinear interpolation), corner
dropout (zero a random rectangle touching one corner) and rotations by multiples of 90°
(``torch.rot90``: exact pixel permutations; there is deliberately no interpolated rotation,
which the paper found to distort shapes).

Every function works on a batch ``x`` of shape (B, C, H, W) and draws its parameters from an
explicit :class:`torch.Generator` (on the CPU, so a seed gives the same augmentations on CPU
and GPU). One sample's channels (P_t, P_s) always get the same geometric transform and the
same jitter factors, so they stay aligned. A fixed number of random numbers is drawn per
call whatever the probabilities, so the generator's stream does not depend on the data.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation settings; defaults are the paper's values where it gives them.

    p_hflip, p_vflip: probability of flipping x (last axis) / y.
    rot90: rotate by k·90°, k uniform in {0, 1, 2, 3} ({0, 2} for non-square patches).
    brightness: additive offset uniform in ±brightness, in units of the patch channel's std
        (patches are normalised to zero mean, unit std, where a multiplicative "brightness"
        would only rescale). contrast: factor uniform in 1 ± contrast about the channel mean.
    p_jitter: probability of applying the intensity jitter to a sample (SimSiam uses 0.8).
    crop_scale: crop area as a fraction of the patch area. crop_ratio: crop aspect ratio
        range (width/height, sampled log-uniformly; torchvision's default 3/4–4/3).
    p_corner, corner_area, corner_ratio: corner dropout probability, area fraction range
        and aspect-ratio range of the zeroed rectangle.
    """

    p_hflip: float = 0.5
    p_vflip: float = 0.5
    rot90: bool = True
    brightness: float = 0.5
    contrast: float = 0.2
    p_jitter: float = 0.8
    crop_scale: tuple[float, float] = (0.7, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    p_corner: float = 0.5
    corner_area: tuple[float, float] = (0.02, 0.1)
    corner_ratio: tuple[float, float] = (0.5, 2.0)

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> AugmentConfig:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def _uniform(n: int, lo: float, hi: float, gen: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=gen, device=gen.device, dtype=torch.float64)


def _check(x: torch.Tensor) -> None:
    if x.ndim != 4:
        raise ValueError(f"expected a batch (B, C, H, W), got shape {tuple(x.shape)}")


def random_flip(x: torch.Tensor, gen: torch.Generator, p_h: float = 0.5, p_v: float = 0.5):
    """Flip each sample along x (last axis) with probability p_h, along y with p_v."""
    _check(x)
    b = x.shape[0]
    flip_h = (torch.rand(b, generator=gen, device=gen.device) < p_h).to(x.device)
    flip_v = (torch.rand(b, generator=gen, device=gen.device) < p_v).to(x.device)
    x = torch.where(flip_h[:, None, None, None], x.flip(-1), x)
    return torch.where(flip_v[:, None, None, None], x.flip(-2), x)


def random_rot90(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Rotate each sample by k·90° in the (y, x) plane, k uniform in {0,1,2,3}.

    Non-square batches only get k ∈ {0, 2} (a quarter turn would change their shape).
    """
    _check(x)
    b, h, w = x.shape[0], x.shape[-2], x.shape[-1]
    k = torch.randint(0, 4, (b,), generator=gen, device=gen.device).to(x.device)
    # All four rotations, then pick one per sample: (4, B, C, H, W) -> (B, C, H, W).
    turns = range(4) if h == w else (0, 0, 2, 2)
    rotated = torch.stack([torch.rot90(x, t, dims=(-2, -1)) for t in turns])
    return rotated[k, torch.arange(b, device=x.device)]


def intensity_jitter(
    x: torch.Tensor,
    gen: torch.Generator,
    brightness: float = 0.5,
    contrast: float = 0.2,
    p: float = 0.8,
) -> torch.Tensor:
    """x' = mean + c·(x − mean) + δ·std per sample and channel; c ∈ 1±contrast, δ ∈ ±brightness.

    The same (c, δ) is used for all channels of a sample; applied with probability p.
    """
    _check(x)
    b = x.shape[0]
    c = _uniform(b, 1.0 - contrast, 1.0 + contrast, gen)
    d = _uniform(b, -brightness, brightness, gen)
    apply = torch.rand(b, generator=gen, device=gen.device, dtype=torch.float64) < p
    c = torch.where(apply, c, torch.ones_like(c)).to(x.device, x.dtype)[:, None, None, None]
    d = torch.where(apply, d, torch.zeros_like(d)).to(x.device, x.dtype)[:, None, None, None]
    mean = x.mean(dim=(-2, -1), keepdim=True)
    std = x.std(dim=(-2, -1), keepdim=True) if x.shape[-1] * x.shape[-2] > 1 else 1.0
    return mean + c * (x - mean) + d * std


def random_resized_crop(
    x: torch.Tensor,
    gen: torch.Generator,
    scale: tuple[float, float] = (0.7, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> torch.Tensor:
    """Crop a random axis-aligned box (area fraction in ``scale``) and resize it to (H, W).

    Bilinear resampling through an affine grid holding only a scale and a shift (no
    rotation); crops never leave the patch. scale = ratio = (1, 1) is the identity.
    """
    _check(x)
    b, _, h, w = x.shape
    area = _uniform(b, scale[0], scale[1], gen)
    log_r = _uniform(b, math.log(ratio[0]), math.log(ratio[1]), gen)
    u = torch.rand(b, 2, generator=gen, device=gen.device, dtype=torch.float64)
    aspect = torch.exp(log_r) * (h / w)  # crop (w/h) in pixels -> in normalised units
    fw = torch.sqrt(area * aspect).clamp(max=1.0)  # crop width / W
    fh = torch.sqrt(area / aspect).clamp(max=1.0)  # crop height / H
    cx = (2 * u[:, 0] - 1) * (1 - fw)  # crop centre in [-1, 1] grid units
    cy = (2 * u[:, 1] - 1) * (1 - fh)
    theta = torch.zeros(b, 2, 3, dtype=torch.float64)
    theta[:, 0, 0], theta[:, 0, 2] = fw, cx
    theta[:, 1, 1], theta[:, 1, 2] = fh, cy
    grid = F.affine_grid(theta.to(x.device, x.dtype), [b, x.shape[1], h, w], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def corner_dropout(
    x: torch.Tensor,
    gen: torch.Generator,
    p: float = 0.5,
    area: tuple[float, float] = (0.02, 0.1),
    ratio: tuple[float, float] = (0.5, 2.0),
) -> torch.Tensor:
    """With probability p, set a random rectangle that touches one of the 4 corners to 0.

    Rectangle area is a fraction in ``area`` of H·W, its aspect (h/w) in ``ratio``; the same
    rectangle is zeroed in every channel of the sample.
    """
    _check(x)
    b, _, h, w = x.shape
    a = _uniform(b, area[0], area[1], gen)
    r = torch.exp(_uniform(b, math.log(ratio[0]), math.log(ratio[1]), gen))
    corner = torch.randint(0, 4, (b,), generator=gen, device=gen.device)
    apply = torch.rand(b, generator=gen, device=gen.device) < p
    rh = torch.round(torch.sqrt(a * r) * h).clamp(1, max(h - 1, 1)).long()  # (B,)
    rw = torch.round(torch.sqrt(a / r) * w).clamp(1, max(w - 1, 1)).long()
    top, left = corner < 2, corner % 2 == 0
    rows, cols = torch.arange(h)[None, :], torch.arange(w)[None, :]
    in_rows = torch.where(top[:, None], rows < rh[:, None], rows >= h - rh[:, None])  # (B, H)
    in_cols = torch.where(left[:, None], cols < rw[:, None], cols >= w - rw[:, None])  # (B, W)
    mask = in_rows[:, :, None] & in_cols[:, None, :] & apply[:, None, None]  # (B, H, W)
    return x.masked_fill(mask[:, None].to(x.device), 0.0)


def augment(
    x: torch.Tensor, gen: torch.Generator, config: AugmentConfig | None = None
) -> torch.Tensor:
    """One random view of a batch (B, C, H, W): crop, flips, rot90, jitter, corner dropout."""
    cfg = config or AugmentConfig()
    x = random_resized_crop(x, gen, cfg.crop_scale, cfg.crop_ratio)
    x = random_flip(x, gen, cfg.p_hflip, cfg.p_vflip)
    if cfg.rot90:
        x = random_rot90(x, gen)
    x = intensity_jitter(x, gen, cfg.brightness, cfg.contrast, cfg.p_jitter)
    return corner_dropout(x, gen, cfg.p_corner, cfg.corner_area, cfg.corner_ratio)
