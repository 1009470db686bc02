"""The implicit decoder: an MLP from a query's feature, its offset to the nearest slice and the cell size to
an intensity (or a residual over linear interpolation of the input)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from napari_cycleinr.model.position import encoding_width, sinusoidal


class ImplicitDecoder(nn.Module):
    def __init__(self, channels: int, width: int, depth: int, frequencies: int) -> None:
        super().__init__()
        self.frequencies = frequencies
        layers: list[nn.Module] = []
        n_in = channels + encoding_width(frequencies) + 1
        for _ in range(depth - 1):
            layers += [nn.Linear(n_in, width), nn.ReLU(inplace=True)]
            n_in = width
        layers.append(nn.Linear(n_in, 1))
        nn.init.zeros_(layers[-1].weight)  # with the residual on, an untrained model is linear interpolation
        nn.init.zeros_(layers[-1].bias)
        self.mlp = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor, positions: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
        """features (B, P, Q, C), positions (Q,) -> (B, P, Q)."""
        frac = positions - torch.floor(positions)
        context = torch.cat([sinusoidal(frac, self.frequencies), cell.expand(frac.shape)[:, None]], dim=-1)
        # layer 1 of [features, context], without copying the per-slice context to every pixel
        first = self.mlp[0]
        channels = features.shape[-1]
        per_slice = F.linear(context.to(features.dtype), first.weight[:, channels:], first.bias)  # (Q, width)
        hidden = F.linear(features, first.weight[:, :channels]) + per_slice
        return self.mlp[1:](hidden).squeeze(-1)
