"""Encodings of relative z offsets and of the output cell size, shared by the attention and the decoder."""

from __future__ import annotations

import math

import torch
from torch import nn


def sinusoidal(offsets: torch.Tensor, frequencies: int) -> torch.Tensor:
    """(...,) offsets in low-resolution slice units -> (..., 1 + 2F): the offset and its sines and cosines.

    The lowest frequency has a period of 8 slices, wider than any neighbourhood, so no two offsets collide.
    """
    parts = [offsets[..., None]]
    for f in range(frequencies):
        angle = offsets[..., None] * (math.pi / 4.0) * (2.0**f)
        parts += [torch.sin(angle), torch.cos(angle)]
    return torch.cat(parts, dim=-1)


def encoding_width(frequencies: int) -> int:
    return 1 + 2 * frequencies


class OffsetEmbedding(nn.Module):
    """(offset, cell size) -> a vector added to keys, values or queries.

    It is evaluated once per (output slice, neighbour), never per pixel, so it costs nothing per voxel.
    """

    def __init__(self, frequencies: int, channels: int) -> None:
        super().__init__()
        self.frequencies = frequencies
        self.mlp = nn.Sequential(
            nn.Linear(encoding_width(frequencies) + 1, channels), nn.ReLU(inplace=True), nn.Linear(channels, channels)
        )

    def forward(self, offsets: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
        encoded = sinusoidal(offsets, self.frequencies)
        return self.mlp(torch.cat([encoded, cell.expand(offsets.shape)[..., None]], dim=-1))
