"""The local attention mechanism (LAM): a query at any z attends over the K nearest latent slices.

Plain grid sampling mixes the two nearest codes with fixed linear weights, which blurs across edges. Here the
weights come from content: the query is the linearly sampled code plus an embedding of its position and the
output cell size; keys and values are the K neighbouring codes plus embeddings of their offsets. Softmax over
the K neighbours, per head. The result is added to the sampled code, so attention refines grid sampling and
`attention=False` (the ablation) is exactly the same network without this refinement.

Layout: codes are channels-last (B, P, Z, C), P the flattened pixels of a tile; queries are (B, P, Q, C) for Q
output slices. Dense tensor maths, no voxel loops.
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
        """sampled (B, P, Q, C) grid-sampled codes; keys/values (B, P, Z, C); positions (Q,) -> (B, P, Q, C).

        query . (key + key offset) is split into query . key, scored against the few latent slices the queries
        reach as one matmul and then gathered per neighbour, plus query . key offset; the values are mixed the
        same way. No (B, P, Q, K, C) tensor is ever built, which made training steps memory bound.
        """
        b, p, q, c = sampled.shape
        h, k = self.heads, self.neighbours
        d = c // h
        idx, offsets = neighbour_indices(positions, keys.shape[2], k)  # (Q, K)
        lo, hi = int(idx.min()), int(idx.max()) + 1
        z = hi - lo
        frac = positions - torch.floor(positions)
        query = (self.query(sampled) + self.query_position(frac, cell).to(sampled.dtype)) * d**-0.5
        query = query.view(b, p, q, h, d)
        key_offsets = self.key_position(offsets, cell).to(sampled.dtype).view(q, k, h, d)
        value_offsets = self.value_position(offsets, cell).to(sampled.dtype).view(q, k, h, d)
        scores = torch.einsum("bpqhd,bpzhd->bpqzh", query, keys[:, :, lo:hi].reshape(b, p, z, h, d))
        neighbour = (idx - lo).view(1, 1, q, k, 1).expand(b, p, q, k, h)
        logits = scores.gather(3, neighbour) + torch.einsum("bpqhd,qkhd->bpqkh", query, key_offsets)
        weights = torch.softmax(logits, dim=3)  # over the K neighbours, per head
        # clamped neighbours at the ends of the stack may repeat a slice: their weights add up
        per_slice = weights.new_zeros(b, p, q, z, h).scatter_add(3, neighbour, weights)
        attended = torch.einsum("bpqzh,bpzhd->bpqhd", per_slice, values[:, :, lo:hi].reshape(b, p, z, h, d))
        attended = attended + torch.einsum("bpqkh,qkhd->bpqhd", weights, value_offsets)
        return sampled + self.out(attended.reshape(b, p, q, c))
