"""Tiled heat-map inference over a whole tomogram in bounded memory.

The tomogram is cut into y–x tile columns, each read with a halo at least as wide as the
network's receptive field (:func:`milopyp.localize.unet.receptive_radius`), of which only
the centre is kept. In each column the 3×3×3 fusion and the z-context blocks run slab by
slab with a z-halo of their reach; the per-slice UNet runs slab by slab just ahead of them,
and its features are dropped once no later slab reads them, so no slice goes through the
UNet twice and a column holds at most two slabs and two z-halos of features. The automatic
tiles are those of least computation that fit ``memory_mb`` (:func:`tile_geometry`). Tile
starts in y and x are multiples of ``stride_xy · 2^(n_blocks − 1)``, so max-pooling windows
fall where they fall for the whole volume, and tiles that touch the end of an axis are
padded exactly as the whole volume is. BatchNorm runs in eval mode (a fixed affine map), so
the tiled heat map equals the whole-volume one up to float rounding (tested to 1e-5).

Memory bound (CPU): input tomogram (or only the pages of a memory-mapped one that the
current tile touches) + the output heat map (4 bytes/voxel, or a np.memmap given as
``out``) + the activations of one tile (≈ :data:`BYTES_PER_VOXEL` × tile voxels, kept under
``memory_mb``, default 512 MB) + the model (< 1 MB) + the Python/torch runtime (≈ 300 MB).
For 160 × 512 × 512: 168 MB in + 168 MB out + ≤ 512 MB tile + runtime ≈ 1.1 GB (measured
peak RSS 1.14 GB). ``memory_mb`` bounds the tile; the in/out volumes can be memory-mapped.
"""

from __future__ import annotations

import copy
import logging
import math
import time

import numpy as np
import torch
from torch import nn

from milopyp.device import resolve_device
from milopyp.errors import MilopypError
from milopyp.localize.normalize import intensity_stats, normalize
from milopyp.localize.scale import bin_volume, is_whole, resample_volume, upsample
from milopyp.localize.unet import Localizer, receptive_radius
from milopyp.shapes import shape as shape_named

log = logging.getLogger(__name__)

#: Peak activation bytes per input voxel of a tile for the default network (measured on
#: CPU, inference mode, folded BatchNorm, stride_xy = 2, base_channels = 8, fusion 16:
#: 74–109 incl. the normalised input), with margin; scaled by width for other networks.
BYTES_PER_VOXEL = 112.0
MEMORY_MB = 512
#: CPU time of the fusion and z-context blocks per slice against the per-slice UNet's, for
#: the default network (measured at 160 × 512 × 512: 0.025 s against 0.014 s a slice); the
#: automatic tiles trade the fusion's z-halos against the y–x halos of more columns with it
FUSION_PER_UNET = 1.8
#: test-time flips averaged into a heat map: the tomogram as it is, flipped in x, in y, and
#: in both (x–y mirror images are equally plausible tomograms, and training sees them)
FLIPS_YX = ((), (2,), (1,), (1, 2))
#: test-time flips of the workflow and the commands (``localize.test_time_flips``): on the
#: devset (benchmarks/accuracy.py --dataset) 4 flips raised the held-out F1 at the automatic
#: threshold from 0.791 to 0.877 (insitu) and 0.758 to 0.790 (crowded), for 4× the inference
DEFAULT_FLIPS = 4
#: ... and of filament targets: on the demo's microtubules 4 flips traced 3 of 4 fibres
#: (centre-line point F1 0.777), one flip 4 of 4 (0.953)
FIBER_FLIPS = 1


def default_flips(shape: str) -> int:
    """Test-time flips of a target of ``shape`` ("globular" or "fiber") when none are given."""
    return FIBER_FLIPS if shape_named(shape).filament else DEFAULT_FLIPS


def _axis_tiles(n: int, core: int, halo: int) -> list[tuple[int, int, int, int]]:
    """(read_lo, read_hi, keep_lo, keep_hi) along one axis of length ``n``."""
    if core >= n:
        return [(0, n, 0, n)]
    out = []
    for s in range(0, n, core):
        e = min(s + core, n)
        out.append((max(0, s - halo), min(n, e + halo), s, e))
    return out


def _round_up(v: int, m: int) -> int:
    return int(math.ceil(v / m) * m)


def tile_geometry(
    model: Localizer,
    shape_zyx: tuple[int, int, int],
    *,
    tile_zyx: tuple[int, int, int] | None = None,
    memory_mb: float = MEMORY_MB,
) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """(core_zyx, halo_zyx) for a tomogram: given cores rounded up to valid sizes, or chosen
    so that one tile's activations stay under ``memory_mb``.

    Automatic choice: for each number of equal y–x parts (1, 2, 3, ... per axis), slabs of
    as many slices as fit the budget; of those, the tiles of the least computation (y–x
    halos cost UNet and fusion time in every column, z-halos fusion time in every slab),
    the fewest parts among equals. A slab holds its slices' activations, the fusion's
    z-halo, and the UNet features of the slices its fusion reads, computed slab by slab
    (:func:`_sweep`): at most two slabs and the two z-halos, not the whole column.
    """
    cfg = model.config
    m = cfg.multiple_xy
    r_z, r_xy = receptive_radius(cfg)
    halo = (r_z, _round_up(r_xy, m), _round_up(r_xy, m))
    nz, ny, nx = shape_zyx
    if tile_zyx is not None:
        cz, cy, cx = (int(v) for v in tile_zyx)
        if min(cz, cy, cx) < 1:
            raise MilopypError(f"tile size: expected positive z, y, x, got {tile_zyx}")
        return (cz, _round_up(cy, m), _round_up(cx, m)), halo
    width = cfg.base_channels / 8.0
    bpv = BYTES_PER_VOXEL * max(width, cfg.fusion_channels / 16.0, 1.0 / 8.0)
    budget = memory_mb * 2**20 / bpv
    # UNet features: base_channels floats per UNet-grid pixel, in input-voxel units
    feature = 4.0 * cfg.base_channels / cfg.stride_xy**2 / bpv

    def per_plane(c: int) -> float:
        """Input-voxel units per y–x voxel of a slab of ``c`` slices: its activations,
        the fusion's z-halo activations, the UNet features the slab's fusion holds."""
        return c + 2 * halo[0] / 3 + min(nz, 2 * c + 2 * halo[0]) * feature

    best, best_cost, least_units = None, math.inf, math.inf
    for parts in range(1, 1 + max(1, max(ny, nx) // m)):
        cy = min(_round_up(math.ceil(ny / parts), m), _round_up(ny, m))
        cx = min(_round_up(math.ceil(nx / parts), m), _round_up(nx, m))
        ty = ny if cy >= ny else min(ny, cy + 2 * halo[1])
        tx = nx if cx >= nx else min(nx, cx + 2 * halo[2])
        least_units = min(least_units, per_plane(1) * ty * tx)  # one slice of this tiling
        cz = next((c for c in range(nz, 0, -1) if per_plane(c) * ty * tx <= budget), 0)
        if cz < 1:
            continue
        cz = math.ceil(nz / math.ceil(nz / cz))  # equal slabs, e.g. 160 = 8 × 20
        cost = _sweep_cost(shape_zyx, (cz, cy, cx), halo)
        if cost < best_cost:
            best, best_cost = (cz, cy, cx), cost
    if best is None:
        least_mb = least_units * bpv / 2**20  # the smallest tile any tiling allows
        raise MilopypError(f"memory_mb={memory_mb}: too small for even one tile of the "
                           f"localiser; give at least {math.ceil(least_mb)}")
    return best, halo


def _sweep_cost(shape_zyx: tuple[int, int, int], core_zyx: tuple[int, int, int],
                halo: tuple[int, int, int]) -> float:
    """Relative CPU time of a sweep of these tiles: every column's UNet reads each of its
    voxels once, its fusion reads each slab with the slab's z-halo."""
    nz, ny, nx = shape_zyx
    cz, cy, cx = core_zyx
    area = (sum(hi - lo for lo, hi, _, _ in _axis_tiles(ny, cy, halo[1]))
            * sum(hi - lo for lo, hi, _, _ in _axis_tiles(nx, cx, halo[2])))
    fused = sum(min(nz, z0 + cz + halo[0]) - max(0, z0 - halo[0]) for z0 in range(0, nz, cz))
    return area * (nz + FUSION_PER_UNET * fused)


def prepare_for_inference(model: Localizer) -> Localizer:
    """An eval-mode copy with BatchNorm folded into the preceding 2D convolutions and the 2D
    convolutions in channels-last layout (≈ 1.7× faster on CPU; same outputs up to float
    rounding)."""
    model = copy.deepcopy(model).eval()
    for seq in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        mods = list(seq)
        folded: list[nn.Module] = []
        i = 0
        while i < len(mods):
            conv = mods[i]
            if (isinstance(conv, nn.Conv2d) and i + 1 < len(mods)
                    and isinstance(mods[i + 1], nn.BatchNorm2d)):
                folded.append(_fold(conv, mods[i + 1]))
                i += 2
            else:
                folded.append(conv)
                i += 1
        seq._modules.clear()
        for k, mod in enumerate(folded):
            seq.add_module(str(k), mod)
    for mod in model.modules():
        if isinstance(mod, (nn.Conv2d, nn.ConvTranspose2d)):
            mod.to(memory_format=torch.channels_last)
    return model


@torch.no_grad()
def _fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    out = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                    conv.padding, conv.dilation, conv.groups, bias=True)
    out = out.to(device=conv.weight.device, dtype=conv.weight.dtype)
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    out.weight.copy_(conv.weight * scale[:, None, None, None])
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    out.bias.copy_((bias - bn.running_mean) * scale + bn.bias)
    return out


def predict_heatmap(
    model: Localizer | list[Localizer] | tuple[Localizer, ...],
    tomogram: np.ndarray,
    *,
    device: str | torch.device = "auto",
    tile_zyx: tuple[int, int, int] | None = None,
    memory_mb: float = MEMORY_MB,
    stats: tuple[float, float] | None = None,
    out: np.ndarray | None = None,
    flips: int = 1,
    bin_factor: float | None = None,
) -> np.ndarray:
    """Heat map (particle-centre probability per voxel) of a whole tomogram.

    model: a trained localiser, or a list of them (an ensemble: the mean of their heat
        maps, each with the same arguments; that many times the compute, one more heat map
        in memory).
    tomogram: [z, y, x] array or np.memmap (read tile by tile, never whole).
    device: "auto" | "cpu" | "cuda" | torch.device.
    tile_zyx: kept core of a tile (z, y, x) in voxels of the network's grid (the binned
        tomogram when ``model.config.bin_factor`` > 1); None chooses it from ``memory_mb``.
    stats: (mean, std) for normalisation; None computes them with
        :func:`milopyp.localize.normalize.intensity_stats` (as training does); a binned
        model normalises the binned tomogram by its own statistics (as training does).
    out: preallocated float32 [z, y, x] array (e.g. a np.memmap) to write into.
    flips: average the heat maps of the first ``flips`` of :data:`FLIPS_YX` (1, 2 or 4;
        test-time augmentation, ``flips`` times the compute, one more heat map in memory).

    bin_factor: voxels of the tomogram per voxel of the network's grid; None: the model's
        ``config.bin_factor``. A tomogram at another voxel size than the model's training
        tomograms needs that times their ratio (:func:`milopyp.localize.stage.model_rescale`),
        usually not an integer.

    A model with ``bin_factor`` b > 1 reads the tomogram binned by b
    (:func:`milopyp.localize.scale.bin_volume`, b³ times smaller, held in memory; a factor
    that is not an integer: :func:`~milopyp.localize.scale.resample_volume`) and its heat
    map is upsampled trilinearly to the tomogram's grid. Returns the float32 heat map
    [z, y, x] in [0, 1] on the tomogram's grid (``out`` when given).
    """
    if isinstance(model, (list, tuple)):
        if not model:
            raise MilopypError("predict_heatmap: an empty list of models")
        kw = {"device": device, "tile_zyx": tile_zyx, "memory_mb": memory_mb, "stats": stats,
              "flips": flips, "bin_factor": bin_factor}
        out = predict_heatmap(model[0], tomogram, out=out, **kw)
        for other in model[1:]:
            out += predict_heatmap(other, tomogram, **kw)
        out /= np.float32(len(model))
        return out
    if tomogram.ndim != 3:
        raise MilopypError(f"expected a 3-D tomogram [z, y, x], got shape {tomogram.shape}")
    shape = tuple(int(s) for s in tomogram.shape)
    if out is None:
        out = np.empty(shape, dtype=np.float32)
    elif tuple(out.shape) != shape or out.dtype != np.float32:
        raise MilopypError(f"out: expected float32 array of shape {shape}, got "
                           f"{out.dtype} {tuple(out.shape)}")
    if flips not in (1, 2, 4):
        raise MilopypError(f"flips: expected 1, 2 or 4 test-time flips, got {flips}")
    b = model.config.bin_factor if bin_factor is None else float(bin_factor)
    if not b > 0:
        raise MilopypError(f"bin_factor: expected a positive number, got {bin_factor}")
    whole = is_whole(b)
    if whole:
        b = round(b)
    if b != 1:
        binned = bin_volume(tomogram, b) if whole else resample_volume(tomogram, b)
        # binning averages b³ voxels: normalise the binned volume by its own statistics
        heat = _flipped_sweeps(model, binned, device, tile_zyx, memory_mb,
                               intensity_stats(binned), np.empty(binned.shape, np.float32),
                               flips)
        return upsample(heat, shape, b, out=out)
    stats = intensity_stats(tomogram) if stats is None else stats
    return _flipped_sweeps(model, tomogram, device, tile_zyx, memory_mb, stats, out, flips)


def _flipped_sweeps(model: Localizer, tomogram: np.ndarray, device, tile_zyx,
                    memory_mb: float, stats: tuple[float, float], out: np.ndarray,
                    flips: int) -> np.ndarray:
    """The mean of :func:`_sweep` over the first ``flips`` of :data:`FLIPS_YX`, in ``out``
    (a flipped view of the tomogram is read tile by tile like the tomogram itself)."""
    _sweep(model, tomogram, device, tile_zyx, memory_mb, stats, out)
    if flips == 1:
        return out
    one = np.empty(out.shape, dtype=np.float32)
    for axes in FLIPS_YX[1:flips]:
        _sweep(model, np.flip(tomogram, axes), device, tile_zyx, memory_mb, stats, one)
        out += np.flip(one, axes)
    out /= np.float32(flips)
    return out


def _sweep(model: Localizer, tomogram: np.ndarray, device, tile_zyx, memory_mb: float,
           stats: tuple[float, float], out: np.ndarray) -> np.ndarray:
    """The tiled sweep of :func:`predict_heatmap` on the network's own grid.

    In each y–x tile column the fusion and z-context blocks run slab by slab with a z-halo
    of ``config.z_reach`` slices, so every kept slice sees exactly the slices it would see
    in the whole volume. The per-slice UNet runs once per slab, in slab order, as far ahead
    as the fusion reads; its features are dropped once no later slab reads them (so a
    column holds at most two slabs and two z-halos of features, not the whole column).
    """
    shape = tuple(int(s) for s in tomogram.shape)
    dev = resolve_device(device)
    net = prepare_for_inference(model).to(dev)
    (cz, cy, cx), halo = tile_geometry(model, shape, tile_zyx=tile_zyx, memory_mb=memory_mb)
    nz, reach = shape[0], halo[0]
    columns = [(ay, ax) for ay in _axis_tiles(shape[1], cy, halo[1])
               for ax in _axis_tiles(shape[2], cx, halo[2])]
    slabs = [(z0, min(z0 + cz, nz)) for z0 in range(0, nz, cz)]
    log.info("heat map of %s: %d column(s) × %d slab(s), core %s, halo %s, %s", shape,
             len(columns), len(slabs), (cz, cy, cx), halo, dev)
    t0 = time.perf_counter()
    n_done, n_all = 0, len(columns) * len(slabs)
    with torch.inference_mode():
        for (ylo, yhi, ky0, ky1), (xlo, xhi, kx0, kx1) in columns:
            keep_yx = (slice(ky0 - ylo, ky1 - ylo), slice(kx0 - xlo, kx1 - xlo))
            feats, f_lo, f_hi, ahead = None, 0, 0, iter(slabs)  # features of [f_lo, f_hi)
            for z0, z1 in slabs:
                lo, hi = max(0, z0 - reach), min(nz, z1 + reach)
                parts = [] if feats is None else [feats[lo - f_lo:]]  # still read
                while f_hi < hi:
                    a, f_hi = next(ahead)
                    parts.append(net.slice_features(torch.from_numpy(
                        normalize(tomogram[a:f_hi, ylo:yhi, xlo:xhi], stats)[:, None]).to(dev)))
                feats, f_lo = parts[0] if len(parts) == 1 else torch.cat(parts), lo
                res = net.fuse(feats[:hi - lo], hi - lo, (yhi - ylo, xhi - xlo),
                               with_features=False)
                prob = torch.sigmoid(res.logits[0, 0, z0 - lo:z1 - lo])
                out[z0:z1, ky0:ky1, kx0:kx1] = prob[(slice(None), *keep_yx)].float().cpu().numpy()
                n_done += 1
                if n_all > 1 and n_done * 10 // n_all != (n_done - 1) * 10 // n_all:
                    log.info("  %d/%d slabs, %.1f s", n_done, n_all, time.perf_counter() - t0)
            del feats
    return out
