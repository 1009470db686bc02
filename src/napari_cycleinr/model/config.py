"""Every architectural choice the paper leaves open, as one validated, serialisable config."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from napari_cycleinr.errors import CycleINRError


MAX_DILATION = 64


@dataclass(frozen=True)
class ModelConfig:
    channels: int = 32
    """Width of the latent codes."""
    blocks: int = 4
    """Residual (2+1)D blocks in the encoder; each widens the z receptive field by one slice each side."""
    neighbours: int = 4
    """Latent slices each query attends over along z (even: half below, half above)."""
    heads: int = 4
    """Attention heads; channels must be divisible by it."""
    attention: bool = True
    """False replaces the local attention by plain linear grid sampling of the codes (the ablation)."""
    decoder_width: int = 64
    decoder_depth: int = 3
    """Linear layers in the decoder MLP, the output layer included."""
    residual: bool = True
    """Predict a residual over linear interpolation of the input instead of the intensity itself."""
    position_frequencies: int = 4
    """Sinusoidal frequencies encoding relative z offsets."""
    dilations: tuple[int, ...] = ()
    """In-plane dilation of each encoder block (one per block); empty means 1 for every block."""

    def __post_init__(self) -> None:
        positive = ("channels", "blocks", "neighbours", "heads", "decoder_width", "decoder_depth")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise CycleINRError(f"model config: {name} must be a positive integer, got {value!r}")
        if self.neighbours % 2:
            raise CycleINRError("model config: neighbours must be even (as many below as above)")
        if self.channels % self.heads:
            raise CycleINRError("model config: channels must be divisible by heads")
        if self.decoder_depth < 2:
            raise CycleINRError("model config: decoder_depth must be at least 2")
        if not isinstance(self.position_frequencies, int) or self.position_frequencies < 0:
            raise CycleINRError("model config: position_frequencies must be a non-negative integer")
        if not isinstance(self.dilations, (list, tuple)):
            raise CycleINRError(f"model config: dilations must be a list of integers, got {self.dilations!r}")
        object.__setattr__(self, "dilations", tuple(self.dilations))  # JSON and TOML give lists
        if self.dilations and len(self.dilations) != self.blocks:
            raise CycleINRError(f"model config: {len(self.dilations)} dilations for {self.blocks} blocks (one each)")
        for d in self.dilations:
            if not isinstance(d, int) or isinstance(d, bool) or not 1 <= d <= MAX_DILATION:
                raise CycleINRError(f"model config: dilations must be integers from 1 to {MAX_DILATION}, got {d!r}")

    @property
    def block_dilations(self) -> tuple[int, ...]:
        return self.dilations or (1,) * self.blocks

    @property
    def z_halo(self) -> int:
        """Input slices beyond a slab that change its codes or its queries' neighbours."""
        return self.blocks + self.neighbours // 2 + 1

    @property
    def inplane_halo(self) -> int:
        """Pixels beyond an in-plane tile that change its codes (a 3x3 conv in the head and, dilated, per block)."""
        return 1 + sum(self.block_dilations)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise CycleINRError(f"model config: unknown option(s) {', '.join(unknown)}")
        return cls(**values)
