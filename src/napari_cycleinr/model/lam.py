"""The local attention mechanism (LAM): a query at any z attends over the K nearest latent slices.

Plain grid sampling mixes the two nearest codes with fixed linear weights, which blurs across edges. Here the
weights come from content: the query is the linearly sampled code plus an embedding of its position and the
output cell size; keys and values are the K neighbouring codes plus embeddings of their offsets. Softmax over
the K neighbours, per head. The result is added to the sampled code, so attention refines grid sampling and
`attention=False` (the ablation) is exactly the same network without this refinement.

Layout: codes are channels-last (B, P, Z, C), P the flattened pixels of a tile, so gathering K slices for Q
queries gives (B, P, Q, K, C) with the neighbours innermost: cache-friendly dense tensor maths, no voxel loops.
"""

from __future__ import annotations

import torch
from torch import nn

from napari_cycleinr.model.position import OffsetEmbedding


def neighbour_indices(positions: torch.Tensor, n_slices: int, neighbours: int) -> tuple[torch.Tensor, torch.Tensor]:
    """For (Q,) positions in slice units: (Q, K) clamped neighbour indices and their offsets position - index."""
    base = torch.floor(positions).long() - (neighbours // 2 - 1)
    idx = (base[:, None] + torch.arange(neighbours, device=positions.device)).clamp(0, n_slices - 1)
    return idx, positions[:, None] - idx.to(positions.dtype)


def linear_sample(values: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Linear interpolation along dim 2 of (B, P, Z, ...) at (Q,) positions, clamped: (B, P, Q, ...)."""
    n = values.shape[2]
    z = positions.clamp(0.0, n - 1.0)
    lower = torch.floor(z).long().clamp(max=max(n - 2, 0))
    upper = (lower + 1).clamp(max=n - 1)
    t = (z - lower.to(z.dtype)).to(values.dtype)
    t = t.view(1, 1, -1, *([1] * (values.dim() - 3)))
    return values[:, :, lower] * (1 - t) + values[:, :, upper] * t


class LocalAttention(nn.Module):
    def __init__(self, channels: int, neighbours: int, heads: int, frequencies: int) -> None:
        super().__init__()
        self.neighbours = neighbours
        self.heads = heads
        self.key = nn.Linear(channels, channels)
        self.value = nn.Linear(channels, channels)
        self.query = nn.Linear(channels, channels)
        self.key_position = OffsetEmbedding(frequencies, channels)
        self.value_position = OffsetEmbedding(frequencies, channels)
        self.query_position = OffsetEmbedding(frequencies, channels)
        self.out = nn.Linear(channels, channels)
        nn.init.zeros_(self.out.weight)  # start as plain grid sampling, learn the refinement
        nn.init.zeros_(self.out.bias)

    def project(self, codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of every latent code, computed once per code rather than once per query."""
        return self.key(codes), self.value(codes)

    def forward(
        self,
        sampled: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
        positions: torch.Tensor,
        cell: torch.Tensor,
    ) -> torch.Tensor:
        """sampled (B, P, Q, C) grid-sampled codes; keys/values (B, P, Z, C); positions (Q,) -> (B, P, Q, C)."""
        b, p, q, c = sampled.shape
        idx, offsets = neighbour_indices(positions, keys.shape[2], self.neighbours)  # (Q, K)
        frac = positions - torch.floor(positions)
        query = self.query(sampled) + self.query_position(frac, cell).to(sampled.dtype)  # (B, P, Q, C)
        k = keys[:, :, idx] + self.key_position(offsets, cell).to(keys.dtype)  # (B, P, Q, K, C)
        v = values[:, :, idx] + self.value_position(offsets, cell).to(values.dtype)
        head = c // self.heads
        logits = (query.view(b, p, q, 1, self.heads, head) * k.view(b, p, q, self.neighbours, self.heads, head)).sum(-1)
        weights = torch.softmax(logits * head**-0.5, dim=3)  # over the K neighbours
        attended = (weights.unsqueeze(-1) * v.view(b, p, q, self.neighbours, self.heads, head)).sum(3)
        return sampled + self.out(attended.reshape(b, p, q, c))
