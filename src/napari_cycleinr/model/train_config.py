"""Training configuration: one TOML file with [model], [train] and [data] tables, every value validated."""

from __future__ import annotations

import math
import tomllib
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from napari_cycleinr.errors import CycleINRError
from napari_cycleinr.model.config import ModelConfig
from napari_cycleinr.model.degrade import KINDS
from napari_cycleinr.model.losses import FIT_LOSSES

BANDING_CLASSES = ("border", "phase", "ends")


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
    gradient_weight: float = 0.0
    """Weight of the loss on neighbouring-slice differences (losses.z_gradient_loss), an experiment against the
    lines at the slab period (docs/method.md, "Lines at the slab period"; measured and not taken)."""
    banding_weight: float = 0.0
    """Weight of the loss on slab-period banding (losses.banding_loss), against the lines at the slab period
    (docs/method.md, "Lines at the slab period")."""
    banding_classes: str = "border"
    """What the banding loss evens out: "border" (across slab borders against inside, losses.banding_loss) or
    "phase" (borders, near borders, around the acquired centres and beyond the end centres, each against
    all pairs: losses.even_change_loss) or "ends" ("border", plus the pairs beyond the outermost acquired
    centres against all others, the same ratio)."""
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
        """Every value checked (type, finite, range) when the config is made, so a bad one is refused before
        any folder, file or model exists; a NaN weight or learning rate would train on NaN for hours."""
        _check_types(self)
        for name in _AT_LEAST_ONE:
            if getattr(self, name) < 1:
                raise CycleINRError(f"train config: {name} must be at least 1, got {getattr(self, name)}")
        for name in ("warmup_steps", "threads", "seed"):
            if getattr(self, name) < 0:
                raise CycleINRError(f"train config: {name} must be 0 or more, got {getattr(self, name)}")
        if not 0.0 < self.learning_rate <= MAX_LEARNING_RATE:
            limit, rate = MAX_LEARNING_RATE, self.learning_rate
            raise CycleINRError(f"train config: learning_rate must be above 0, at most {limit}; got {rate}")
        if self.scale_max > MAX_SCALE:
            raise CycleINRError(f"train config: scale_max must be at most {MAX_SCALE}, got {self.scale_max}")
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
        if self.banding_classes not in BANDING_CLASSES:
            raise CycleINRError(f"train config: banding_classes must be one of {', '.join(BANDING_CLASSES)}")
        if self.fit not in FIT_LOSSES:
            raise CycleINRError(f"train config: fit must be one of {', '.join(FIT_LOSSES)}")
        if not 0.0 <= self.average_decay < 1.0:
            raise CycleINRError("train config: average_decay must be at least 0 and below 1")
        weights = (self.cycle_weight, self.noise_weight, self.gradient_weight, self.banding_weight)
        if min(weights) < 0 or not 0.0 <= self.inplane_fraction <= 1.0:
            raise CycleINRError(
                "train config: cycle_weight, noise_weight, gradient_weight and banding_weight >= 0 and "
                "0 <= inplane_fraction <= 1 are required"
            )

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["model"] = self.model.to_dict()
        return values


_AT_LEAST_ONE = (
    "steps", "batch", "thick_slices", "crop", "query_pixels", "validation_every", "checkpoint_every",
    "log_every",
)  # fmt: skip
MAX_LEARNING_RATE = 1.0
MAX_SCALE = 32.0
"""Thick slices 32 times the thin spacing: far beyond any scan this method is meant for."""
_KINDS = {
    "whole number": ("steps", "batch", "thick_slices", "crop", "query_pixels", "warmup_steps",
                     "validation_every", "checkpoint_every", "log_every", "threads", "seed"),
    "number": ("scale_min", "scale_max", "cycle_weight", "noise_weight", "gradient_weight", "banding_weight",
               "learning_rate", "inplane_fraction", "average_decay"),
    "true or false": ("grow", "amp"),
    "text": ("validation_degradation", "fit", "banding_classes"),
    "path or nothing": ("init", "validation_data"),
    "list of names": ("degradations", "train_data", "inplane_data"),
}  # fmt: skip


def _check_types(config: TrainConfig) -> None:
    """Each option has the type it must have, and numbers are finite (NaN and inf are refused here)."""
    for kind, names in _KINDS.items():
        for name in names:
            value = getattr(config, name)
            if not _is_kind(value, kind):
                raise CycleINRError(f"train config: {name} must be a {kind}, got {value!r}")
    if not isinstance(config.model, ModelConfig):
        raise CycleINRError(f"train config: model must be a [model] table, got {config.model!r}")


def _is_kind(value: Any, kind: str) -> bool:
    if kind == "whole number":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if kind == "true or false":
        return isinstance(value, bool)
    if kind == "text":
        return isinstance(value, str)
    if kind == "path or nothing":
        return value is None or isinstance(value, str)
    return isinstance(value, (tuple, list)) and all(isinstance(item, str) for item in value)


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
        for table in ("model", "train", "data"):
            if not isinstance(document.get(table, {}), dict):
                raise CycleINRError(f"train config: [{table}] must be a table, got {document[table]!r}")
        _check_data_paths(document.get("data", {}))
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
        if values.get("init") and isinstance(values["init"], str):  # other types: refused by TrainConfig
            values["init"] = resolve(values["init"])
    known = {f.name for f in fields(TrainConfig)}
    unknown = set(values) - known
    if unknown:
        raise CycleINRError(f"train config: unknown option(s) {', '.join(sorted(unknown))}")
    if isinstance(values.get("degradations"), list):
        values["degradations"] = tuple(values["degradations"])
    try:
        config = TrainConfig(**values)
        return replace(config, **{k: v for k, v in overrides.items() if v is not None})
    except TypeError as error:
        raise CycleINRError(f"train config: {error}") from None


def _check_data_paths(data: dict[str, Any]) -> None:
    """[data] train and inplane are lists of paths, validation one path: checked before they are resolved."""
    for key in ("train", "inplane"):
        if key in data and not _is_kind(data[key], "list of names"):
            raise CycleINRError(f"train config: [data] {key} must be a list of file paths, got {data[key]!r}")
    if data.get("validation") and not isinstance(data["validation"], str):
        said = repr(data["validation"])
        raise CycleINRError(f"train config: [data] validation must be a file path, got {said}")
