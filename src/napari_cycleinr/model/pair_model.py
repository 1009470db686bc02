"""The model applied to a training pair: the thin slices' positions, the codes of some pixel columns, and
the prediction for a sample of columns (a training step) or for every pixel (validation)."""

from __future__ import annotations

import torch

from napari_cycleinr.model.cycleinr import CycleINR
from napari_cycleinr.model.pairs import Pair


def predict_pair(
    model: CycleINR, pair: Pair, device: torch.device, columns: torch.Tensor | None = None, chunk: int = 2048
) -> torch.Tensor:
    """The model's thin slices for a pair: (B, pixels, L), for a sample of columns, or for every pixel, decoded
    `chunk` pixels at a time so that scoring whole crops needs no more memory than a training step."""
    positions, cell = pair_queries(pair, device)
    if columns is not None:
        return decode_columns(model, pair.thick.to(device), positions, cell, columns)
    latent = model.encode(pair.thick.to(device))
    pixels = pair.thin.shape[2] * pair.thin.shape[3]
    parts = []
    for start in range(0, pixels, chunk):
        part = torch.arange(start, min(start + chunk, pixels), device=device)
        parts.append(model.decode(latent_columns(latent, part), positions, cell))
    return torch.cat(parts, dim=1)


def pair_queries(pair: Pair, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The thin slices' positions (in thick-slice units) and the cell size of a pair."""
    length = pair.thin.shape[1]
    positions = (torch.arange(length, dtype=torch.float32, device=device) + 0.5) / pair.ratio - 0.5
    return positions, torch.tensor(1.0 / pair.ratio, device=device)


def decode_columns(
    model: CycleINR,
    thick: torch.Tensor,
    positions: torch.Tensor,
    cell: torch.Tensor,
    columns: torch.Tensor | None,
    encoder_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    latent = model.encode(thick, encoder_dtype)
    if columns is not None:
        latent = latent_columns(latent, columns)
    return model.decode(latent, positions, cell)


def latent_columns(latent, columns: torch.Tensor):
    """The latent codes of some pixel columns only (each latent tensor is (B, pixels, ...))."""
    return type(latent)(*(None if t is None else t[:, columns] for t in latent))


class PairPredictor(torch.nn.Module):
    """What a training step differentiates, as a module's forward, so DistributedDataParallel can wrap it."""

    def __init__(self, model: CycleINR) -> None:
        super().__init__()
        self.model = model

    def forward(self, thick, positions, cell, columns, encoder_dtype=None):  # type: ignore[override]
        return decode_columns(self.model, thick, positions, cell, columns, encoder_dtype)
