"""ResNet18 trunk for 2-D patches with any number of input channels (He et al. 2016).

Written here because torchvision is not a dependency. The layout is torchvision's
``resnet18``: a 7×7 stride-2 stem convolution + BN + ReLU + 3×3 stride-2 max-pool, four
stages of two :class:`BasicBlock` each (64, 128, 256, 512 channels × ``width / 64``), then
global average pooling. The classification ``fc`` layer is left out: SimSiam puts its
projector there.

No pretrained weights are loaded (the paper starts from ImageNet weights; nothing in
milopyp downloads anything, and ImageNet weights would not fit 2-channel cryo-ET patches
anyway). The network is initialised from the caller's torch generator state.
"""

from __future__ import annotations

import torch
from torch import nn

STEMS = ("imagenet", "small")


class BasicBlock(nn.Module):
    """Two 3×3 conv + BN layers with an identity (or 1×1 conv + BN) shortcut."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet18(nn.Module):
    """ResNet18 trunk: (B, in_channels, H, W) -> (B, 8·width) pooled features.

    Args:
        in_channels: 2 for the pair (P_t, P_s), 1 for P_s only.
        width: channels of the first stage (64 is the standard ResNet18; 16 or 32 train
            several times faster on a CPU). Stages have width·(1, 2, 4, 8) channels.
        zero_init_residual: start each block's last BN at γ = 0 (every block begins as the
            identity), as facebookresearch/simsiam does for ImageNet. Off by default: on
            32×32 cryo-ET patches with a few hundred steps it left the embedding at chance
            (5-NN species accuracy 0.50 vs 0.89 without it on P_s patches of the simulated
            two-species data of tests/test_explore.py).
        stem: "imagenet" (7×7 stride-2 conv + 3×3 max-pool, the paper's ResNet18) or
            "small" (3×3 stride-1 conv, no max-pool, as CIFAR ResNets; 16× more compute,
            keeps more resolution for patches of 32 pixels or less).

    Any H, W ≥ 1 work (non-square too): the stem and max-pool divide by 4, each later
    stage by 2, and global average pooling removes what is left.
    """

    def __init__(
        self,
        in_channels: int = 2,
        width: int = 64,
        zero_init_residual: bool = False,
        stem: str = "imagenet",
    ) -> None:
        super().__init__()
        if in_channels < 1 or width < 1:
            raise ValueError(f"in_channels and width must be >= 1, got {in_channels}, {width}")
        if stem not in STEMS:
            raise ValueError(f"stem must be one of {STEMS}, got {stem!r}")
        self.in_channels = int(in_channels)
        self.width = int(width)
        self.stem = stem
        self.out_dim = 8 * self.width
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False)
            self.maxpool: nn.Module = nn.MaxPool2d(3, stride=2, padding=1)
        else:
            self.conv1 = nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False)
            self.maxpool = nn.Identity()
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        planes = [width, 2 * width, 4 * width, 8 * width]
        self.layer1 = self._stage(width, planes[0], stride=1)
        self.layer2 = self._stage(planes[0], planes[1], stride=2)
        self.layer3 = self._stage(planes[1], planes[2], stride=2)
        self.layer4 = self._stage(planes[2], planes[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, BasicBlock):
                    nn.init.zeros_(m.bn2.weight)

    @staticmethod
    def _stage(in_planes: int, planes: int, stride: int) -> nn.Sequential:
        return nn.Sequential(BasicBlock(in_planes, planes, stride), BasicBlock(planes, planes, 1))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_channels, H, W) -> (B, 8·width) globally average-pooled features."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (B, w, H/4, W/4)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))  # (B, 8w, H/32, W/32)
        return torch.flatten(self.avgpool(x), 1)  # (B, 8w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)
