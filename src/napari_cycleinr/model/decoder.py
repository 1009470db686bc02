"""The implicit decoder: an MLP from a query's feature, its offset to the nearest slice and the cell size to
an intensity (or a residual over linear interpolation of the input)."""

from __future__ import annotations

import torch
from torch import nn

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
        b, p, q, _ = features.shape
        frac = positions - torch.floor(positions)
        context = torch.cat([sinusoidal(frac, self.frequencies), cell.expand(frac.shape)[:, None]], dim=-1)
        context = context.to(features.dtype).expand(b, p, q, context.shape[-1])
        return self.mlp(torch.cat([features, context], dim=-1)).squeeze(-1)
