"""Adapt to this scan: fine-tune a model on the input volume alone, with no thin reference.

The in-plane axes of a thick-slice scan are sharp. Taking x or y as the "thin" axis and degrading it with
the scan's own slice profile (thickness over spacing, the factor asked for) makes training pairs that look
like the z axis, so the model can learn this scanner's and this patient's texture before it super-resolves
z (the self-supervised idea of SMORE/ECLARE, here as a short fine-tuning of the shipped model).

The run is bounded by minutes (or a step count, for reproducible runs), reports progress, can be cancelled,
and keeps the adapted weights only if they do better than the starting ones on held-out in-plane pairs.
Choices are documented in docs/method.md ("Adapting to a scan").
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from napari_cycleinr.errors import CycleINRError
from napari_cycleinr.grid import z_grid
from napari_cycleinr.intensity import intensity_map
from napari_cycleinr.model.blocks import CancelCheck, raise_if_cancelled
from napari_cycleinr.model.cycleinr import CycleINR
from napari_cycleinr.model.degrade import check_slice_profile
from napari_cycleinr.model.infer import check_volume, choose_threads, resolve_device, torch_threads
from napari_cycleinr.model.pairs import TrainingVolume, sample_pair
from napari_cycleinr.model.train import training_step, validate
from napari_cycleinr.model.train_config import TrainConfig
from napari_cycleinr.volume import Volume

Progress = Callable[[int, int], None]
VALIDATION_SEED = 4321


@dataclass(frozen=True)
class AdaptOptions:
    minutes: float = 3.0
    """Time budget of the fine-tuning on this machine (ignored when steps is set)."""
    steps: int | None = None
    """A fixed number of steps instead of a time budget: the same run every time."""
    profile: str = "average"
    """Slice profile of the scan: average (contiguous slab), gaussian, or skip (thin slices far apart)."""
    thickness: float = 1.0
    """Slice thickness over slice spacing (1: contiguous slices; NIfTI headers do not record it)."""
    learning_rate: float = 2e-4
    batch: int = 4
    crop: int = 48
    thick_slices: int = 8
    cycle_weight: float = 0.3
    noise_weight: float = 0.05
    """The noise-level consistency loss of the bundled model's stage 2, so adapting keeps its even texture."""
    scale_spread: float = 0.15
    """Pairs use factors within +-15 % of the one asked for, so the model does not overfit one grid."""
    validation_pairs: int = 6
    seed: int = 0
    threads: int = 0

    def __post_init__(self) -> None:
        if self.steps is None and not (math.isfinite(self.minutes) and 0 < self.minutes <= 24 * 60):
            raise CycleINRError(f"adaptation minutes must be above 0 and at most a day, got {self.minutes:g}")
        if self.steps is not None and self.steps < 1:
            raise CycleINRError(f"adaptation steps must be at least 1, got {self.steps}")
        if not (math.isfinite(self.noise_weight) and self.noise_weight >= 0):
            raise CycleINRError(f"the noise weight must be 0 or more, got {self.noise_weight:g}")
        check_slice_profile(self.profile, self.thickness)


@dataclass
class AdaptReport:
    steps: int = 0
    seconds: float = 0.0
    factor: float = 0.0
    validation_l1_before: float = math.nan
    validation_l1_after: float = math.nan
    kept: bool = False
    """Whether the adapted weights were kept (they beat the starting model on held-out in-plane pairs)."""
    history: list[dict[str, float]] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "steps": self.steps,
            "seconds": round(self.seconds, 2),
            "factor": round(self.factor, 4),
            "validation_l1_before": self.validation_l1_before,
            "validation_l1_after": self.validation_l1_after,
            "kept": self.kept,
        }

    def summary(self) -> str:
        verdict = "kept" if self.kept else "not kept (no better on held-out in-plane pairs; the starting model is used)"
        return (
            f"adapted for {self.steps} steps in {self.seconds:.0f} s: held-out in-plane L1 "
            f"{self.validation_l1_before:.5f} -> {self.validation_l1_after:.5f}, {verdict}"
        )


def inplane_volume(volume: Volume, modality: str | None = None) -> TrainingVolume:
    """The scan, normalised, usable only through its in-plane axes."""
    check_volume(volume)
    data = intensity_map(volume.data, modality).normalise(volume.data)
    return TrainingVolume(np.ascontiguousarray(data, dtype=np.float32), inplane_only=True)


def pair_shape(shape: tuple[int, int, int], factor: float, options: AdaptOptions) -> tuple[int, tuple[int, int]]:
    """Thick slices per pair and the crop (rows along the real z axis, columns in-plane) this scan allows."""
    z, h, w = shape
    longest_ratio = factor * (1 + options.scale_spread)
    thick = min(options.thick_slices, int(min(h, w) / longest_ratio))
    if thick < 2:
        raise CycleINRError(
            f"the scan is too small in-plane ({h}x{w}) to learn x{factor:g} from itself; "
            f"it needs at least {math.ceil(2 * longest_ratio)} pixels along x and y"
        )
    return thick, (min(options.crop, z), min(options.crop, h, w))


def adapt_model(
    volume: Volume,
    *,
    factor: float | None = None,
    spacing: float | None = None,
    model: CycleINR | None = None,
    options: AdaptOptions | None = None,
    device: str | torch.device = "auto",
    modality: str | None = None,
    progress: Progress | None = None,
    cancel: CancelCheck | None = None,
) -> tuple[CycleINR, AdaptReport]:
    """A copy of `model` (default: the bundled weights for options.profile) fine-tuned on `volume`'s in-plane
    axes, and a report.

    progress(done, total) counts steps, or seconds when the run is bounded by time. The model passed in is
    never changed.
    """
    options = options or AdaptOptions()
    grid = z_grid(volume.shape[0], volume.spacing[0], factor=factor, spacing=spacing)
    torch_device = resolve_device(device)
    if model is None:
        from napari_cycleinr.model.checkpoint import load_model

        model = load_model(None, torch_device, profile=options.profile)
    start = copy.deepcopy(model).to(torch_device)
    tuned = copy.deepcopy(model).to(torch_device).train()
    data = inplane_volume(volume, modality)
    thick, crop = pair_shape(volume.shape, grid.factor, options)
    spread = (max(1.05, grid.factor * (1 - options.scale_spread)), grid.factor * (1 + options.scale_spread))
    config = TrainConfig(
        steps=options.steps or 1_000_000, batch=options.batch, thick_slices=thick, crop=max(crop),
        query_pixels=1024, scale_min=spread[0], scale_max=spread[1], degradations=(options.profile,),
        cycle_weight=options.cycle_weight, noise_weight=options.noise_weight,
        learning_rate=options.learning_rate, seed=options.seed,
    )
    draw = lambda rng, **fixed: sample_pair(  # noqa: E731
        [data], rng, options.batch, thick, crop, spread, (options.profile,), thickness=options.thickness, **fixed
    )
    held_out_rng = np.random.default_rng([VALIDATION_SEED, options.seed])
    held_out = [draw(held_out_rng) for _ in range(options.validation_pairs)]
    report = AdaptReport(factor=grid.factor)
    threads = choose_threads(options.threads) if torch_device.type == "cpu" else 0
    optimizer = torch.optim.AdamW(tuned.parameters(), lr=options.learning_rate, weight_decay=1e-4)
    with torch_threads(threads):
        report.validation_l1_before = validate(start, held_out, torch_device)["l1"]
        started = time.perf_counter()
        budget = options.minutes * 60.0
        step = 0
        while True:
            elapsed = time.perf_counter() - started
            done_fraction = step / options.steps if options.steps else elapsed / budget
            if done_fraction >= 1.0:
                break
            raise_if_cancelled(cancel)
            rng = np.random.default_rng([options.seed, step])
            for group in optimizer.param_groups:  # cosine decay to 5 % over the budget
                group["lr"] = options.learning_rate * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * done_fraction)))
            loss, fit, cycle = training_step(tuned, draw(rng), config, torch_device, rng)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(tuned.parameters(), 1.0)
            optimizer.step()
            step += 1
            if step % 10 == 0:
                report.history.append({"step": step, "loss": loss.item(), "fit": fit.item(), "cycle": cycle.item()})
            if progress is not None:
                if options.steps:
                    progress(step, options.steps)
                else:
                    progress(min(int(time.perf_counter() - started), int(budget)), int(math.ceil(budget)))
        raise_if_cancelled(cancel)
        report.steps, report.seconds = step, time.perf_counter() - started
        report.validation_l1_after = validate(tuned, held_out, torch_device)["l1"]
    report.kept = report.validation_l1_after < report.validation_l1_before
    chosen = tuned if report.kept else start
    chosen.eval()
    outcome = "adapted to this scan" if report.kept else "(adaptation tried, not kept)"
    chosen.source = f"{getattr(model, 'source', 'in-memory model')} {outcome}"  # type: ignore[attr-defined]
    chosen.info = {**getattr(model, "info", {}), "adaptation": report.as_dict()}  # type: ignore[attr-defined]
    return chosen, report
