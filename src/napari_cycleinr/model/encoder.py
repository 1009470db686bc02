"""Encoder: the thick-slice volume becomes one latent code per low-resolution voxel.

(2+1)D residual blocks (3x3 in-plane, then 3x1x1 through-plane) see in-plane detail at full resolution and
a few neighbouring slices, at about a third of the cost of full 3x3x3 convolutions. An in-plane dilation
widens what a block sees in-plane at no extra cost: oblique structures move several pixels from one thick
slice to the next, and the codes must see that far to place them between slices.
"""

from __future__ import annotations

import torch
from torch import nn


class SeparableResidualBlock(nn.Module):
    def __init__(self, channels: int, dilation: int = 1) -> None:
        super().__init__()
        self.inplane = nn.Conv3d(
            channels, channels, kernel_size=(1, 3, 3), padding=(0, dilation, dilation), dilation=(1, dilation, dilation)
        )
        self.through_plane = nn.Conv3d(channels, channels, kernel_size=(3, 1, 1), padding=(1, 0, 0))
        self.activation = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.through_plane(self.activation(self.inplane(x)))


class Encoder(nn.Module):
    def __init__(self, channels: int, dilations: tuple[int, ...]) -> None:
        """One residual block per entry of `dilations` (its in-plane dilation)."""
        super().__init__()
        self.head = nn.Conv3d(1, channels, kernel_size=(1, 3, 3), padding=(0, 1, 1))
        self.body = nn.Sequential(*[SeparableResidualBlock(channels, d) for d in dilations])

    def forward(self, volume: torch.Tensor) -> torch.Tensor:
        """(B, 1, Z, H, W) -> (B, C, Z, H, W)."""
        return self.body(self.head(volume))
