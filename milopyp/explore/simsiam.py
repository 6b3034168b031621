"""SimSiam (Chen & He 2021, "Exploring simple Siamese representation learning") and its loss.

Naming follows the SimSiam paper (the MiLoPYP paper swaps the letters): ``z = h(f(x))`` is
the 128-d output of the encoder (ResNet18 trunk ``f`` + projector MLP ``h``), ``p = g(z)``
the predictor's output. The **embedding** milopyp uses downstream (clustering, UMAP,
explorer) is the projector output ``z`` in eval mode, as in the MiLoPYP paper ("the output
vector from the encoder network of dimension 128").
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from milopyp.explore.resnet import ResNet18


def negative_cosine(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """D(p, z) = −⟨p/‖p‖₂, z/‖z‖₂⟩ averaged over the batch; p, z: (B, d) -> scalar.

    ``z`` is used as given: the caller detaches it (that is the stop-gradient).
    """
    return -(F.normalize(p, dim=1) * F.normalize(z, dim=1)).sum(dim=1).mean()


def simsiam_loss(
    p1: torch.Tensor, p2: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor
) -> torch.Tensor:
    """L = ½·D(p1, sg(z2)) + ½·D(p2, sg(z1)); all (B, d); minimum −1.

    The stop-gradient ``sg`` is applied here too (``detach``), so the loss is correct even
    when given targets that still carry a graph.
    """
    return 0.5 * negative_cosine(p1, z2.detach()) + 0.5 * negative_cosine(p2, z1.detach())


class SimSiam(nn.Module):
    """Siamese network: shared encoder (trunk + projector) and a predictor on one side.

    Args:
        encoder: a trunk with ``features(x) -> (B, out_dim)`` and an ``out_dim`` attribute
            (e.g. :class:`ResNet18`).
        dim: projector output (embedding) size, 128 in MiLoPYP.
        pred_dim: predictor bottleneck size.
    """

    def __init__(self, encoder: nn.Module, dim: int = 128, pred_dim: int = 64) -> None:
        super().__init__()
        self.encoder = encoder
        self.dim = int(dim)
        self.pred_dim = int(pred_dim)
        prev = int(encoder.out_dim)
        # Projector h: 3 FC layers with BN; the last BN has no affine parameters, so the
        # bias of the last linear layer would be redundant.
        self.projector = nn.Sequential(
            nn.Linear(prev, prev, bias=False),
            nn.BatchNorm1d(prev),
            nn.ReLU(inplace=True),
            nn.Linear(prev, prev, bias=False),
            nn.BatchNorm1d(prev),
            nn.ReLU(inplace=True),
            nn.Linear(prev, dim, bias=False),
            nn.BatchNorm1d(dim, affine=False),
        )
        # Predictor g: 2-layer bottleneck MLP, no BN/ReLU on the output.
        self.predictor = nn.Sequential(
            nn.Linear(dim, pred_dim, bias=False),
            nn.BatchNorm1d(pred_dim),
            nn.ReLU(inplace=True),
            nn.Linear(pred_dim, dim),
        )

    def forward(
        self, x1: torch.Tensor, x2: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Two views (B, C, H, W) each -> (p1, p2, z1.detach(), z2.detach()), all (B, dim)."""
        z1 = self.projector(self.encoder.features(x1))  # (B, dim)
        z2 = self.projector(self.encoder.features(x2))  # (B, dim)
        p1 = self.predictor(z1)  # (B, dim)
        p2 = self.predictor(z2)  # (B, dim)
        return p1, p2, z1.detach(), z2.detach()

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, dim) embedding = projector output z (call in eval mode)."""
        return self.projector(self.encoder.features(x))


def build_simsiam(
    in_channels: int, width: int = 64, dim: int = 128, pred_dim: int = 64, stem: str = "imagenet"
) -> SimSiam:
    """A SimSiam on a :class:`ResNet18` trunk, initialised from torch's current RNG state."""
    trunk = ResNet18(in_channels=in_channels, width=width, stem=stem)
    return SimSiam(trunk, dim=dim, pred_dim=pred_dim)


def architecture(model: SimSiam) -> dict[str, Any]:
    """The arguments of :func:`build_simsiam` that rebuild ``model``'s architecture."""
    return {
        "in_channels": int(model.encoder.in_channels),
        "width": int(model.encoder.width),
        "dim": model.dim,
        "pred_dim": model.pred_dim,
        "stem": str(getattr(model.encoder, "stem", "imagenet")),
    }
