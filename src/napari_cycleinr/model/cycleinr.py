"""CycleINR: encoder -> latent grid -> local attention at any z -> implicit decoder.

Only z is continuous: the output shares the input's in-plane grid, so a query is (output slice position,
pixel) and a batch of queries is a few whole output slices over a tile of pixels.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import NamedTuple

import torch
from torch import nn

from napari_cycleinr.model.config import ModelConfig
from napari_cycleinr.model.decoder import ImplicitDecoder
from napari_cycleinr.model.encoder import Encoder
from napari_cycleinr.model.lam import LocalAttention, linear_sample


class Latent(NamedTuple):
    """Per-tile state that all queries share: channels-last (B, P, Z, ...) tensors."""

    codes: torch.Tensor
    keys: torch.Tensor | None
    values: torch.Tensor | None
    intensities: torch.Tensor
    """The normalised input itself, (B, P, Z), for the residual over linear interpolation."""

    def pixels(self, start: int, stop: int) -> "Latent":
        return Latent(*(None if t is None else t[:, start:stop] for t in self))


class CycleINR(nn.Module):
    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__()
        self.config = config or ModelConfig()
        c = self.config
        self.encoder = Encoder(c.channels, c.block_dilations)
        self.attention = (
            LocalAttention(c.channels, c.neighbours, c.heads, c.position_frequencies) if c.attention else None
        )
        self.decoder = ImplicitDecoder(c.channels, c.decoder_width, c.decoder_depth, c.position_frequencies)

    def encode(self, volume: torch.Tensor, encoder_dtype: torch.dtype | None = None) -> Latent:
        """(B, Z, H, W) normalised thick-slice volume -> Latent with P = H * W.

        encoder_dtype: run the encoder's convolutions under autocast to this type (bfloat16 when training on
        a CPU that computes it natively: twice as fast); the codes come back float32 either way."""
        b, z, h, w = volume.shape
        # only entered when asked, so an enclosing autocast (CUDA training) still reaches the encoder
        precision = torch.autocast(volume.device.type, dtype=encoder_dtype) if encoder_dtype else nullcontext()
        with precision:
            codes = self.encoder(volume[:, None]).float()  # (B, C, Z, H, W)
        codes = codes.permute(0, 3, 4, 2, 1).reshape(b, h * w, z, -1)
        keys = values = None
        if self.attention is not None:
            keys, values = self.attention.project(codes)
        intensities = volume.permute(0, 2, 3, 1).reshape(b, h * w, z)
        return Latent(codes, keys, values, intensities)

    def decode(self, latent: Latent, positions: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
        """Intensities at (Q,) z positions (input slice units) for every pixel of the latent: (B, P, Q)."""
        positions = positions.to(latent.codes.device, torch.float32)
        cell = torch.as_tensor(cell, dtype=torch.float32, device=latent.codes.device)
        features = linear_sample(latent.codes, positions)
        if self.attention is not None:
            features = self.attention(features, latent.keys, latent.values, positions, cell)
        out = self.decoder(features, positions, cell)
        if self.config.residual:
            out = out + linear_sample(latent.intensities, positions).to(out.dtype)
        return out

    def forward(self, volume: torch.Tensor, positions: torch.Tensor, cell: float | torch.Tensor) -> torch.Tensor:
        """(B, Z, H, W) -> (B, Q, H, W): the whole volume at once (training, small inputs)."""
        b, _, h, w = volume.shape
        out = self.decode(self.encode(volume), positions, torch.as_tensor(cell))
        return out.permute(0, 2, 1).reshape(b, -1, h, w)
