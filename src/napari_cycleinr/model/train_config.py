"""Training configuration: one TOML file with [model], [train] and [data] tables, every value validated."""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from napari_cycleinr.errors import CycleINRError
from napari_cycleinr.model.config import ModelConfig
from napari_cycleinr.model.degrade import KINDS
from napari_cycleinr.model.losses import FIT_LOSSES


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 2000
    batch: int = 4
    thick_slices: int = 8
    """Thick slices per training crop; the thin crop holds ceil(thick_slices * scale) slices."""
    crop: int = 64
    """In-plane crop edge (pixels)."""
    query_pixels: int = 1024
    """Pixel columns decoded per crop (all z of each): the encoder sees the whole crop, the loss a sample."""
    scale_min: float = 1.5
    scale_max: float = 6.0
    degradations: tuple[str, ...] = KINDS
    validation_degradation: str = "average"
    """The slice profile of the fixed validation pairs that pick the kept checkpoint: a profile specialist is
    validated on its own profile."""
    fit: str = "l1"
    """The fit to the thin slices: l1 or rmse (losses.fit_loss)."""
    cycle_weight: float = 0.3
    """lambda of the cycle-consistent loss; 0 switches it off (the ablation)."""
    noise_weight: float = 0.0
    """Weight of the noise-level consistency loss (losses.noise_consistency_loss); above 0 the decoded pixels
    are a contiguous window of the crop instead of a random sample, so an in-plane Laplacian exists."""
    init: str | None = None
    """A checkpoint to start from (fine-tuning); its architecture replaces [model], unless grow is set."""
    grow: bool = False
    """With init: build [model], which adds encoder blocks to the checkpoint's, and start it from the
    checkpoint's weights with the new blocks as identities (model/grow.py)."""
    learning_rate: float = 1e-3
    warmup_steps: int = 50
    inplane_fraction: float = 0.0
    """Share of crops taken with an in-plane axis as z (self-supervised pairs)."""
    validation_every: int = 200
    checkpoint_every: int = 200
    log_every: int = 20
    threads: int = 0
    """CPU threads for torch; 0 keeps torch's default."""
    amp: bool = True
    """bf16 autocast on CUDA (the whole step); on a CPU with native bf16 (AVX512-BF16, AMX) the encoder's
    convolutions only, since the decoder's small residuals and the cycle loss need float32's precision."""
    seed: int = 0
    average_decay: float = 0.0
    """Above 0: keep an exponential moving average of the weights (model/averaging.py) with this decay per
    step, and validate and keep (best.safetensors) the average instead of the raw weights; last.safetensors
    stays the raw weights, to resume from. 0.998 averages over about the last 500 steps."""
    model: ModelConfig = field(default_factory=ModelConfig)
    train_data: tuple[str, ...] = ()
    validation_data: str | None = None
    inplane_data: tuple[str, ...] = ()
    """Scans used only through their in-plane axes (e.g. real thick-slice scans with no thin reference)."""

    def __post_init__(self) -> None:
        for name in ("steps", "batch", "thick_slices", "crop", "query_pixels", "validation_every", "checkpoint_every", "log_every"):
            if int(getattr(self, name)) < 1:
                raise CycleINRError(f"train config: {name} must be at least 1")
        if self.thick_slices < 2:
            raise CycleINRError("train config: thick_slices must be at least 2")
        if not 1.0 < self.scale_min <= self.scale_max:
            raise CycleINRError("train config: need 1 < scale_min <= scale_max")
        unknown = set(self.degradations) - set(KINDS)
        if unknown or not self.degradations:
            raise CycleINRError(f"train config: degradations must be a non-empty subset of {', '.join(KINDS)}")
        if self.validation_degradation not in KINDS:
            raise CycleINRError(f"train config: validation_degradation must be one of {', '.join(KINDS)}")
        if self.grow and not self.init:
            raise CycleINRError("train config: grow needs init (the checkpoint to grow)")
        if self.fit not in FIT_LOSSES:
            raise CycleINRError(f"train config: fit must be one of {', '.join(FIT_LOSSES)}")
        if not 0.0 <= self.average_decay < 1.0:
            raise CycleINRError("train config: average_decay must be at least 0 and below 1")
        if self.cycle_weight < 0 or self.noise_weight < 0 or not 0.0 <= self.inplane_fraction <= 1.0:
            raise CycleINRError(
                "train config: cycle_weight >= 0, noise_weight >= 0 and 0 <= inplane_fraction <= 1 are required"
            )

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["model"] = self.model.to_dict()
        return values


def load_train_config(path: str | Path | None, **overrides: Any) -> TrainConfig:
    """Read a TOML config (relative data paths resolve against the config's folder) and apply overrides."""
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        try:
            document = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
            raise CycleINRError(f"cannot read the training config {path}: {error}") from None
        unknown = set(document) - {"model", "train", "data"}
        if unknown:
            raise CycleINRError(f"train config: unknown table(s) {', '.join(sorted(unknown))}")
        values.update(document.get("train", {}))
        values["model"] = ModelConfig.from_dict(document.get("model", {}))
        data = document.get("data", {})
        resolve = lambda p: str((path.parent / p).resolve())  # noqa: E731
        if "train" in data:
            values["train_data"] = tuple(resolve(p) for p in data["train"])
        if data.get("validation"):
            values["validation_data"] = resolve(data["validation"])
        if "inplane" in data:
            values["inplane_data"] = tuple(resolve(p) for p in data["inplane"])
        if values.get("init"):
            values["init"] = resolve(values["init"])
    known = {f.name for f in fields(TrainConfig)}
    unknown = set(values) - known
    if unknown:
        raise CycleINRError(f"train config: unknown option(s) {', '.join(sorted(unknown))}")
    if "degradations" in values:
        values["degradations"] = tuple(values["degradations"])
    try:
        config = TrainConfig(**values)
    except TypeError as error:
        raise CycleINRError(f"train config: {error}") from None
    return replace(config, **{k: v for k, v in overrides.items() if v is not None})
