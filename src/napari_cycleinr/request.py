"""A job as the user asked for it, checked before any work and without torch: the `Request`.

Shells (CLI, folders, widget) build a Request from what they were given; `pipeline.run` carries it out. The
output grids are resolved here, once, from the factor or spacing the user typed and the input's geometry,
and travel down to inference as `ZGrid` objects.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from typing import Sequence

from napari_cycleinr.errors import CycleINRError
from napari_cycleinr.grid import ZGrid, z_grid
from napari_cycleinr.options import (
    ADAPT_MINUTES,
    DEFAULT_PROFILE,
    MODEL_METHOD,
    PROFILE_SOURCES,
    TARGET_KINDS,
    check_adapt_budget,
    check_ensemble,
    check_method,
    check_noise_weight,
    check_precision,
    check_slice_profile,
    check_smoothing,
    check_texture,
)

ADAPT_NEEDS_CYCLEINR = (
    "adaptation needs the cycleinr method: {method} is an interpolation with nothing to fine-tune; "
    "choose the method cycleinr, or untick adapt to this scan"
)


@dataclass(frozen=True)
class Target:
    """One output grid: what was asked (a factor or a spacing in mm) and the grid it gives."""

    kind: str
    """'factor' or 'spacing'."""
    value: float
    grid: ZGrid

    @property
    def n_in(self) -> int:
        return self.grid.n_in

    @property
    def n_out(self) -> int:
        return self.grid.n_out

    @property
    def spacing_out(self) -> float:
        return self.grid.spacing_out

    @property
    def factor(self) -> float:
        return self.grid.factor

    @property
    def suffix(self) -> str:
        """'SRx2.5': the factor asked for, or the factor a spacing gives (3 significant digits)."""
        shown = self.value if self.kind == "factor" else self.factor
        return f"SRx{shown:.3g}" if self.kind == "spacing" else f"SRx{shown:g}"


def target(n_in: int, spacing_in: float, kind: str, value: float) -> Target:
    """The Target for a factor or a spacing on an input of n_in slices of spacing_in mm."""
    if kind not in TARGET_KINDS:
        raise CycleINRError(f"unknown target kind {kind!r}; choose {' or '.join(TARGET_KINDS)}")
    return Target(kind, value, z_grid(n_in, spacing_in, **{kind: value}))


def parse_values(text: str) -> list[float]:
    """'2, 3, 5' (commas, semicolons or spaces) -> [2.0, 3.0, 5.0]."""
    parts = [p for p in re.split(r"[,;\s]+", str(text).strip()) if p]
    if not parts:
        raise CycleINRError("type a target: one number, or several separated by commas (2, 3, 5)")
    values = []
    for part in parts:
        try:
            value = float(part)
        except ValueError:
            raise CycleINRError(f"{part!r} is not a number; type e.g. 2.5 or 2, 3, 5") from None
        if not math.isfinite(value):
            raise CycleINRError(f"{part!r} is not a finite number")
        values.append(value)
    return values


def plan_targets(n_in: int, spacing_in: float, kind: str, text: str) -> list[Target]:
    """The output grids for the typed values, in the order typed, one per distinct number of slices."""
    if kind not in TARGET_KINDS:
        raise CycleINRError(f"unknown target kind {kind!r}; choose {' or '.join(TARGET_KINDS)}")
    targets: list[Target] = []
    for value in parse_values(text):
        planned = target(n_in, spacing_in, kind, value)
        if all(t.n_out != planned.n_out for t in targets):
            targets.append(planned)
    return targets


@dataclass(frozen=True)
class AdaptSettings:
    """Fine-tune the model on the scan's own in-plane data before super-resolving (model/adapt.py)."""

    minutes: float = ADAPT_MINUTES
    """Time budget (ignored when steps is set)."""
    steps: int | None = None
    """A fixed number of steps instead: the same run every time."""
    seed: int = 0
    noise_weight: float | None = None
    """Weight of the noise-level consistency loss; None: adaptation's own default."""
    save_model: str | None = None
    """Also keep the adapted weights in this .safetensors file."""

    def __post_init__(self) -> None:
        check_adapt_budget(self.minutes, self.steps)
        if self.noise_weight is not None:
            check_noise_weight(self.noise_weight)

    @property
    def budget(self) -> dict[str, float]:
        return {"steps": self.steps} if self.steps else {"minutes": self.minutes}


@dataclass(frozen=True)
class Request:
    """Everything a run needs besides the volume itself; invalid values raise CycleINRError on creation.

    `targets` may be empty while a shell checks the rest before reading the input (`with_targets` adds
    them); `pipeline.run` needs at least one.
    """

    targets: tuple[Target, ...] = ()
    method: str = MODEL_METHOD
    weights: str | None = None
    """A .safetensors checkpoint or bundled weights' name ('mixed'); None: the bundled weights for the
    slice profile."""
    profile: str | None = DEFAULT_PROFILE
    """The scan's slice profile (options.PROFILES). Unless the user gave it (profile_source 'user'),
    pipeline.settle_profile finds it from the scan's record or image before any work. It picks the bundled
    weights and drives adaptation and data consistency."""
    profile_source: str = "default"
    """Where the profile came from (options.PROFILE_SOURCES)."""
    thickness: float = 1.0
    """Slice thickness over slice spacing (1: contiguous slices)."""
    adapt: AdaptSettings | None = None
    ensemble: bool = False
    """Average with a second pass on the scan reversed along z (cycleinr only; twice the time)."""
    consistency: bool = False
    """Correct each output so that, degraded back onto the acquired slices, it reproduces the input."""
    consistency_smoothing: float = 0.0
    """Correct only the residual's in-plane low frequencies (Gaussian sigma, pixels); 0: all of it."""
    texture: float = 0.0
    """Give every output slice its own draw of the scan's noise, this many times the acquired slices' level
    (0 to 2; 0: none; texture.py): lines at the slab period fade, for some PSNR."""
    residual_image: bool = False
    """Also return, per output, the input minus the output averaged back onto the input slices."""
    reference: str | None = None
    """The thin reference scan the outputs are scored against: its path, or its name in the shell."""
    source: str | None = None
    """Where the input came from (a file, or a DICOM series' folder); None for an in-memory volume."""
    output: str | None = None
    """Where the shell writes the result (a file or a folder, e.g. a DICOM series); the shell checks it with
    the output guard before the run. pipeline.run reads and writes no file."""
    device: str = "auto"
    """auto, cpu, cuda or cuda:N; auto falls back to the CPU when the GPU runs out of memory."""
    modality: str | None = None
    """CT or MR; None: guessed from the intensities."""
    keep_dtype: bool = True
    """Integer input gives integer output (rounded and clipped); False: float32."""
    threads: int = 0
    """Torch CPU threads; 0: the idle cores."""
    precision: str = "auto"
    """options.PRECISIONS."""

    def __post_init__(self) -> None:
        check_method(self.method)
        check_ensemble(self.method, self.ensemble)
        check_precision(self.precision)
        if self.profile_source not in PROFILE_SOURCES:
            raise CycleINRError(f"unknown profile source {self.profile_source!r}")
        if self.adapt is not None and self.method != MODEL_METHOD:
            raise CycleINRError(ADAPT_NEEDS_CYCLEINR.format(method=self.method))
        check_smoothing(self.consistency_smoothing)
        check_texture(self.texture)
        if self.adapt is not None or self.consistency:  # the two steps that use the thickness
            check_slice_profile(self.slice_profile, self.thickness)
        elif self.profile is not None:
            check_slice_profile(self.profile, 1.0)

    @property
    def slice_profile(self) -> str:
        """The profile to use: the one given or found, else DEFAULT_PROFILE (before pipeline.settle_profile)."""
        return self.profile or DEFAULT_PROFILE

    @property
    def uses_model(self) -> bool:
        return self.method == MODEL_METHOD

    def with_targets(self, targets: Sequence[Target]) -> Request:
        return replace(self, targets=tuple(targets))

    @property
    def largest(self) -> Target:
        """The target with the most output slices (adaptation learns at it, once for every target)."""
        return max(self.targets, key=lambda t: t.n_out)


def reference_mismatch(name: str, reference_shape: tuple, reference_spacing: float, expected: tuple) -> str | None:
    """Why a reference cannot be compared with an output of shape `expected`; None when it can."""
    if tuple(reference_shape) == tuple(expected):
        return None
    return (
        f"the reference {name} has shape {tuple(reference_shape)} (z, y, x) but the output "
        f"will have {tuple(expected)}: give the factor or spacing that lands on its grid "
        f"(it has {reference_shape[0]} slices of {reference_spacing:.4g} mm)"
    )
