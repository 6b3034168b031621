"""Localisation network: a per-slice 2D UNet, a 3D fusion layer and two 1×1×1 heads.

Methods, "Feature extraction and center localization modules" (MiLoPYP, Nature Methods
2024; Extended Data Fig. 2). Each z-slice of a ``(B, 1, D, H, W)`` crop goes through the
same 2D UNet (D is folded into the batch), the per-slice feature maps are stacked back into
a volume and fused by one 3×3×3 convolution + ReLU, then

- the heat-map head (1×1×1 conv) gives one logit per voxel; ``sigmoid(logit)`` is the
  probability that the voxel is a particle centre (losses take the logits, for stability);
- the projection head (1×1×1 conv) gives an L2-normalised feature vector per voxel for the
  voxel-level contrastive loss (training only; see :class:`LocalizerOutput`).

Normalisation: BatchNorm after every 2D convolution (the paper says conv + ReLU). BatchNorm
(not GroupNorm) because in eval mode it is a fixed per-channel affine map, so a voxel's
output depends only on its receptive field: tiled inference then equals whole-volume
inference exactly. GroupNorm/InstanceNorm would make the output depend on the tile. The
statistics of that map are re-estimated after training over many training batches
(:func:`milopyp.localize.train.reestimate_batchnorm`).

``stride_xy`` (the paper's output stride R): with 2 a strided 3×3 convolution first halves
y and x (as the released MiLoPYP code does with ``down_ratio=2``), the UNet, fusion and
heads run at half resolution, and the heat map (and, where asked for, the features) are
bilinearly upsampled back to the input grid — so outputs are always on the input voxel
grid. This quarters the cost of inference; ``stride_xy=1`` is the paper's R = 1.

Sizes that are not multiples of ``stride_xy · 2^(n_blocks − 1)`` in y or x are padded
(reflect, at the end of the axis) and the outputs cropped back.

Defaults (:class:`LocalizerConfig`): 4 levels of 8/16/32/64 channels, fusion 16 channels,
projection 16-d, stride 2 — 125 k parameters, ≈ 6.4 kFLOP per voxel, so a 160 × 512 × 512
tomogram takes ≈ 8–10 s on one CPU core (target ≤ 10 s on 2 cores). Wider networks
(``base_channels`` 16, ``stride_xy`` 1) cost 3–4× more and are meant for a GPU.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from milopyp.errors import MilopypError


@dataclass(frozen=True)
class LocalizerConfig:
    """Hyper-parameters that define the network (stored in checkpoints).

    n_blocks: UNet levels = encoder blocks, the last without pooling (n_blocks − 1
        poolings), as in the released code's UNet. Paper: 4 for small particles, 5 for
        large ones.
    base_channels: channels of the first UNet level; doubled at each level.
    stride_xy: output stride R of the UNet in y and x (1 or 2), see the module docstring.
    fusion_channels: channels of the 3D fusion layer (the features both heads read).
    proj_dim: length of the contrastive feature vector.
    z_dilations: one residual z-context block per entry after the fusion, a 3-tap
        convolution along z with this dilation (see :class:`ZContext`); () is the paper's
        network (z receptive field ±1 slice).
    bin_factor: the network reads the tomogram binned by this factor
        (:mod:`milopyp.localize.scale`); its heat maps are upsampled back to the
        tomogram's grid by :func:`milopyp.localize.infer.predict_heatmap`.
    """

    n_blocks: int = 4
    base_channels: int = 8
    stride_xy: int = 2
    fusion_channels: int = 16
    proj_dim: int = 16
    z_dilations: tuple[int, ...] = ()
    bin_factor: int = 1

    def __post_init__(self) -> None:
        if not 2 <= self.n_blocks <= 6:
            raise MilopypError(f"n_blocks: expected 2..6 UNet levels, got {self.n_blocks}")
        if self.stride_xy not in (1, 2):
            raise MilopypError(f"stride_xy: expected 1 or 2, got {self.stride_xy}")
        object.__setattr__(self, "z_dilations", tuple(int(d) for d in self.z_dilations))
        if not 1 <= self.bin_factor <= 8:
            raise MilopypError(f"bin_factor: expected 1..8, got {self.bin_factor}")
        if any(d < 1 for d in self.z_dilations):
            raise MilopypError(f"z_dilations: expected positive dilations, got "
                               f"{self.z_dilations}")
        for name in ("base_channels", "fusion_channels", "proj_dim"):
            if getattr(self, name) < 1:
                raise MilopypError(f"{name}: expected a positive channel count, got "
                                   f"{getattr(self, name)}")

    @property
    def multiple_xy(self) -> int:
        """y and x sizes seen by the UNet must be multiples of this (padding makes them so)."""
        return self.stride_xy * 2 ** (self.n_blocks - 1)

    @property
    def z_reach(self) -> int:
        """One-sided z receptive field of the fusion and z-context blocks, in slices."""
        return 1 + sum(self.z_dilations)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["z_dilations"] = list(self.z_dilations)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> LocalizerConfig:
        """From :meth:`to_dict`; checkpoints written before z-context blocks have none."""
        d = dict(d)
        d["z_dilations"] = tuple(d.get("z_dilations", ()))
        return cls(**d)


def _conv_block(c_in: int, c_out: int) -> nn.Sequential:
    """Two 3×3 convolutions, each followed by BatchNorm and ReLU."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class UNet2d(nn.Module):
    """2D UNet: ``n_blocks`` levels with ``base_channels · 2^k`` channels at level k.

    Encoder: conv block, then 2×2 max-pool (except at the bottom level). Decoder: 2×2
    transposed convolution (stride 2), concatenation with the encoder skip, conv block.
    Input ``(N, c_in, H, W)`` with H, W multiples of ``2^(n_blocks − 1)``; output
    ``(N, base_channels, H, W)``.
    """

    def __init__(self, c_in: int, base_channels: int, n_blocks: int) -> None:
        super().__init__()
        widths = [base_channels * 2**k for k in range(n_blocks)]
        self.down = nn.ModuleList()
        c = c_in
        for w in widths:
            self.down.append(_conv_block(c, w))
            c = w
        self.up = nn.ModuleList()
        self.up_blocks = nn.ModuleList()
        for w in reversed(widths[:-1]):
            self.up.append(nn.ConvTranspose2d(c, w, kernel_size=2, stride=2))
            self.up_blocks.append(_conv_block(2 * w, w))
            c = w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for k, block in enumerate(self.down):
            x = block(x)
            if k < len(self.down) - 1:
                skips.append(x)
                x = F.max_pool2d(x, 2)
        for up, block in zip(self.up, self.up_blocks):
            x = block(torch.cat([skips.pop(), up(x)], dim=1))
        return x


class ZContext(nn.Module):
    """Residual z-context: ``g + ReLU(conv_z(g))`` with a 3-tap convolution along z of
    dilation ``dilation`` (zero padding at the ends of the volume), on (B, C, D, H·W).

    Why: the per-slice UNet and the 3×3×3 fusion see ±1 slice, while a particle spans its
    diameter in z (a 25 nm ribosome at 12 Å: 21 slices). Such a network cannot tell the
    centre slice from the slices around it, nor a particle from a look-alike of the same
    cross-section; on the independent crowded benchmark (benchmarks/dataset.py) its heat map
    never rose above its initial 0.1. Dilations 1, 2, 4, 8 reach ±16 slices for
    ≈ 3·C² multiply-adds per voxel of the UNet's grid.
    """

    def __init__(self, channels: int, dilation: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=(3, 1), dilation=(dilation, 1),
                              padding=(dilation, 0))
        nn.init.zeros_(self.conv.bias)

    def forward(self, g: torch.Tensor) -> torch.Tensor:
        return g + F.relu(self.conv(g))


@dataclass
class LocalizerOutput:
    """Network outputs.

    logits: (B, 1, D, H, W) heat-map logits on the input voxel grid;
        ``torch.sigmoid(logits)`` is the heat map.
    proj: (B, P, D, H', W') projection-head output on the UNet's grid (stride ``stride_xy``
        in y and x, over the padded input), not yet normalised; None at inference.
    padded_yx: (H + pad_h, W + pad_w), the padded input size the UNet saw.

    Per-voxel contrastive features on the input grid are the bilinear upsampling of ``proj``
    to ``padded_yx``, cropped to (H, W) and scaled to unit length: all of them with
    :meth:`dense_features`, or only those of given voxels with :meth:`voxel_features`
    (what training uses: the contrastive loss samples a few thousand voxels, so the
    full-resolution P-channel map is never built).
    """

    logits: torch.Tensor
    proj: torch.Tensor | None
    padded_yx: tuple[int, int]

    def dense_features(self) -> torch.Tensor:
        """(B, P, D, H, W) unit feature vectors of every voxel."""
        b, p, d = self.proj.shape[:3]
        h, w = self.logits.shape[-2:]
        t = self.proj
        if t.shape[-2:] != self.padded_yx:
            t = F.interpolate(t.reshape(b, p * d, t.shape[3], t.shape[4]), size=self.padded_yx,
                              mode="bilinear", align_corners=False)
            t = t.reshape(b, p, d, *self.padded_yx)
        return _unit(t[..., :h, :w], dim=1)

    def voxel_features(
        self, idx: torch.Tensor, index_map: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(n, P) unit feature vectors of voxels ``idx`` (flat indices into (B, D, H, W)).

        index_map: optional (B, H·W) long tensor; voxel (y, x) of batch element b is read at
        flat position ``index_map[b, y·W + x]`` of this output's own grid. Training passes
        the map of the Siamese copy's flip/rotation, so features are looked up where the
        augmentation moved each voxel (:func:`milopyp.localize.augment.flip_rot_index_map`).
        Equals ``dense_features()`` (after undoing the augmentation) at those voxels.
        """
        _, _, d, hc, wc = self.proj.shape
        h, w = self.logits.shape[-2:]
        b, rem = idx // (d * h * w), idx % (d * h * w)
        z, yx = rem // (h * w), rem % (h * w)
        if index_map is not None:
            yx = index_map[b, yx]
        y, x = yx // w, yx % w
        grid = self.proj.permute(0, 2, 3, 4, 1)  # (B, D, H', W', P)
        if (hc, wc) == tuple(self.padded_yx):
            return _unit(grid[b, z, y, x], dim=1)
        y0, y1, ly = _linear_source(y, hc, self.padded_yx[0])
        x0, x1, lx = _linear_source(x, wc, self.padded_yx[1])
        ly, lx = ly[:, None], lx[:, None]
        f = ((1 - ly) * ((1 - lx) * grid[b, z, y0, x0] + lx * grid[b, z, y0, x1])
             + ly * ((1 - lx) * grid[b, z, y1, x0] + lx * grid[b, z, y1, x1]))
        return _unit(f, dim=1)


def _unit(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Scale to unit length along ``dim`` (faster than F.normalize on CPU)."""
    return t * torch.rsqrt((t * t).sum(dim, keepdim=True).clamp_min(1e-24))


def _linear_source(
    o: torch.Tensor, n_in: int, n_out: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Source indices and weight of output positions ``o`` for bilinear resizing n_in -> n_out,
    as ``F.interpolate(mode="bilinear", align_corners=False)`` computes them."""
    src = ((o.to(torch.float32) + 0.5) * (n_in / n_out) - 0.5).clamp(min=0.0)
    i0 = src.floor().to(torch.long).clamp(max=n_in - 1)
    i1 = (i0 + 1).clamp(max=n_in - 1)
    return i0, i1, src - i0.to(src.dtype)


class Localizer(nn.Module):
    """Per-slice 2D UNet + 3×3×3 fusion + heat-map and projection heads (see module doc).

    Besides the weights, a trained model carries what its file records
    (:func:`milopyp.localize.train.load_localizer`): ``settings`` (the training settings,
    :class:`milopyp.localize.checkpoint.TrainSettings` as a dict), ``calibration`` (the
    automatic pick threshold) and ``history`` (per-epoch losses); empty until trained or
    loaded."""

    def __init__(self, config: LocalizerConfig | None = None, **kwargs) -> None:
        super().__init__()
        self.config = config if config is not None else LocalizerConfig(**kwargs)
        self.settings: dict = {}
        self.calibration: dict = {}
        self.history: list[dict[str, float]] = []
        cfg = self.config
        c = cfg.base_channels
        if cfg.stride_xy == 2:
            self.stem: nn.Module = nn.Sequential(
                nn.Conv2d(1, c, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(c),
                nn.ReLU(inplace=True),
            )
            c_unet_in = c
        else:
            self.stem = nn.Identity()
            c_unet_in = 1
        self.unet = UNet2d(c_unet_in, c, cfg.n_blocks)
        self.fusion = nn.Sequential(
            nn.Conv3d(c, cfg.fusion_channels, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
        )
        self.z_context = nn.ModuleList(ZContext(cfg.fusion_channels, d)
                                       for d in cfg.z_dilations)
        self.heat = nn.Conv3d(cfg.fusion_channels, 1, kernel_size=1)
        self.proj = nn.Conv3d(cfg.fusion_channels, cfg.proj_dim, kernel_size=1)
        # CenterNet initialises the heat-map bias to a prior probability of 0.1 so that the
        # focal loss does not start dominated by the (many) background voxels.
        nn.init.constant_(self.heat.bias, -math.log((1 - 0.1) / 0.1))

    def forward(self, x: torch.Tensor, *, with_features: bool = True) -> LocalizerOutput:
        """``x`` (B, 1, D, H, W) normalised intensities -> :class:`LocalizerOutput`
        (``with_features=False`` skips the projection head, for inference)."""
        if x.ndim != 5 or x.shape[1] != 1:
            raise MilopypError(
                f"Localizer: expected input (B, 1, D, H, W), got shape {tuple(x.shape)}"
            )
        b, _, d, h, w = x.shape
        f = self.slice_features(x.reshape(b * d, 1, h, w))  # slices into the batch
        return self.fuse(f, d, (h, w), with_features=with_features)

    def slice_features(self, slices: torch.Tensor) -> torch.Tensor:
        """Per-slice 2D UNet: (N, 1, H, W) -> (N, base_channels, H', W') on the UNet's grid
        (y, x padded to multiples of ``multiple_xy``, then divided by ``stride_xy``)."""
        _, _, h, w = slices.shape
        m = self.config.multiple_xy
        pad_h, pad_w = (-h) % m, (-w) % m
        if pad_h or pad_w:
            mode = "reflect" if pad_h < h and pad_w < w else "replicate"
            slices = F.pad(slices, (0, pad_w, 0, pad_h), mode=mode)
        return self.unet(self.stem(slices))

    def fuse(
        self, f: torch.Tensor, depth: int, size_yx: tuple[int, int], *,
        with_features: bool = True,
    ) -> LocalizerOutput:
        """3×3×3 fusion + ReLU and the 1×1×1 heads on per-slice features: (B·D, c, H', W')
        from :meth:`slice_features` (D = ``depth`` consecutive slices per volume) ->
        :class:`LocalizerOutput` for an input of y, x size ``size_yx``.

        The 3D convolution is computed as one 2D convolution of each slice stacked with its
        two neighbours (3·c channels, zero slices beyond the ends): the same numbers as
        ``nn.Conv3d``, but it keeps the channels-last fast path, where PyTorch's CPU Conv3d
        falls back to an im2col kernel on thin volumes (~200 bytes per voxel, slower).
        """
        h, w = size_yx
        n, c, hh, ww = f.shape
        b, d = n // depth, depth
        padded = (hh * self.config.stride_xy, ww * self.config.stride_xy)
        fmt = (torch.channels_last if f.is_contiguous(memory_format=torch.channels_last)
               and not f.is_contiguous() else torch.contiguous_format)
        # (B·D, 3c, H', W'): channels [slice z − 1, slice z, slice z + 1], zeros off the ends
        stack = f.new_zeros((n, 3 * c, hh, ww)).contiguous(memory_format=fmt)
        for i in range(0, n, d):
            stack[i + 1:i + d, :c] = f[i:i + d - 1]
            stack[i:i + d, c:2 * c] = f[i:i + d]
            stack[i:i + d - 1, 2 * c:] = f[i + 1:i + d]
        conv = self.fusion[0]
        weight = conv.weight.permute(0, 2, 1, 3, 4).reshape(conv.out_channels, 3 * c, 3, 3)
        g = F.relu(F.conv2d(stack, weight.contiguous(memory_format=fmt), conv.bias, padding=1))
        if len(self.z_context):
            # (B·D, C, H', W') -> (B, C, D, H'·W'): z becomes a 2D axis for the z-taps
            cg = g.shape[1]
            t = g.reshape(b, d, cg, hh * ww).permute(0, 2, 1, 3).contiguous()
            for block in self.z_context:
                t = block(t)
            g = t.permute(0, 2, 1, 3).reshape(n, cg, hh, ww).contiguous(memory_format=fmt)
        # The heads are 1×1×1 (linear) and bilinear weights sum to 1, so applying the heads
        # before upsampling equals upsampling the features first, at a fraction of the cost.
        logits = F.conv2d(g, self.heat.weight[:, :, 0], self.heat.bias)  # (B·D, 1, H', W')
        if self.config.stride_xy > 1:
            logits = F.interpolate(logits, size=padded, mode="bilinear", align_corners=False)
        logits = logits[..., :h, :w].reshape(b, d, h, w)[:, None]
        proj = None
        if with_features:
            p = F.conv2d(g, self.proj.weight[:, :, 0], self.proj.bias)
            proj = p.reshape(b, d, -1, hh, ww).permute(0, 2, 1, 3, 4)  # (B, P, D, H', W')
        return LocalizerOutput(logits=logits, proj=proj, padded_yx=padded)


def receptive_radius(config: LocalizerConfig) -> tuple[int, int]:
    """Upper bound on the one-sided receptive-field radius ``(r_z, r_yx)`` in input voxels.

    Walks the deepest path (stem, encoder, decoder, fusion, upsampling) adding each layer's
    reach times the current stride. A tile whose kept centre is at least this far from any
    cut edge gives the same output as the whole volume.
    """
    jump = 1
    r = 0
    if config.stride_xy == 2:
        r += jump  # 3×3 stride-2 stem
        jump *= 2
    for k in range(config.n_blocks):
        r += 2 * jump  # two 3×3 convolutions
        if k < config.n_blocks - 1:
            r += jump  # 2×2 max-pool reaches one pixel further to one side
            jump *= 2
    for _ in range(config.n_blocks - 1):
        jump //= 2
        r += jump  # 2×2 transposed conv: fine pixel <- coarse pixel floor(p / 2)
        r += 2 * jump  # two 3×3 convolutions
    r += jump  # 3×3×3 fusion (in y, x at the UNet's stride)
    if config.stride_xy == 2:
        r += 2  # bilinear ×2 upsampling reads the two nearest coarse pixels
    return config.z_reach, r
