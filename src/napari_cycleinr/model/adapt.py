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
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import numpy as np
import torch

from napari_cycleinr.errors import CycleINRError
from napari_cycleinr.grid import ZGrid, grid_for
from napari_cycleinr.intensity import intensity_map
from napari_cycleinr.model.cycleinr import CycleINR
from napari_cycleinr.model.infer import check_volume
from napari_cycleinr.model.pairs import TrainingVolume, sample_pair
from napari_cycleinr.model.schedule import cosine_decay, make_optimizer, optimizer_step
from napari_cycleinr.model.train import training_step, validate
from napari_cycleinr.model.train_config import TrainConfig
from napari_cycleinr.options import (
    ADAPT_MINUTES,
    DEFAULT_PROFILE,
    check_adapt_budget,
    check_noise_weight,
    check_slice_profile,
)
from napari_cycleinr.runtime.blocks import CancelCheck, raise_if_cancelled
from napari_cycleinr.runtime.devices import resolve_device
from napari_cycleinr.runtime.threads import choose_threads, torch_threads
from napari_cycleinr.volume import Volume

Progress = Callable[[int, int], None]
VALIDATION_SEED = 4321
ADAPT_TRAINING = TrainConfig(
    learning_rate=2e-4, warmup_steps=0, batch=4, crop=48, thick_slices=8, query_pixels=1024,
    cycle_weight=0.3, noise_weight=0.05,
)
"""Training as adaptation does it, before the scan's own factor, profile and budget are known: a small
learning rate with no warm-up, small crops, and the noise-level consistency loss of the bundled model's
stage 2 so that adapting keeps its even texture."""


@dataclass(frozen=True, init=False)
class AdaptOptions:
    """What to adapt for and how long; any other keyword is an override of ADAPT_TRAINING (a TrainConfig
    field: batch, crop, thick_slices, learning_rate, cycle_weight, noise_weight, ...)."""

    minutes: float
    """Time budget of the fine-tuning on this machine (ignored when steps is set)."""
    steps: int | None
    """A fixed number of steps instead of a time budget: the same run every time."""
    profile: str
    """Slice profile of the scan: average (contiguous slab), gaussian, or skip (thin slices far apart)."""
    thickness: float
    """Slice thickness over slice spacing (1: contiguous slices; NIfTI headers do not record it)."""
    scale_spread: float
    """Pairs use factors within +-15 % of the one asked for, so the model does not overfit one grid."""
    validation_pairs: int
    seed: int
    threads: int
    training: TrainConfig

    def __init__(
        self,
        minutes: float = ADAPT_MINUTES,
        steps: int | None = None,
        profile: str = DEFAULT_PROFILE,
        thickness: float = 1.0,
        scale_spread: float = 0.15,
        validation_pairs: int = 6,
        seed: int = 0,
        threads: int = 0,
        training: TrainConfig = ADAPT_TRAINING,
        **overrides: Any,
    ) -> None:
        check_adapt_budget(minutes, steps)
        check_noise_weight(overrides.get("noise_weight", training.noise_weight))
        check_slice_profile(profile, thickness)
        try:
            training = replace(training, **overrides)
        except TypeError as error:
            raise CycleINRError(f"adaptation: {error}") from None
        values = dict(
            minutes=minutes, steps=steps, profile=profile, thickness=thickness, scale_spread=scale_spread,
            validation_pairs=validation_pairs, seed=seed, threads=threads, training=training,
        )
        for name, value in values.items():
            object.__setattr__(self, name, value)


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
    thick = min(options.training.thick_slices, int(min(h, w) / longest_ratio))
    if thick < 2:
        raise CycleINRError(
            f"the scan is too small in-plane ({h}x{w}) to learn x{factor:g} from itself; "
            f"it needs at least {math.ceil(2 * longest_ratio)} pixels along x and y"
        )
    crop = options.training.crop
    return thick, (min(crop, z), min(crop, h, w))


def adapt_model(
    volume: Volume,
    *,
    grid: ZGrid | None = None,
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
    axes for the output grid (`grid`, or the one for a factor or a spacing), and a report.

    progress(done, total) counts steps, or seconds when the run is bounded by time. The model passed in is
    never changed.
    """
    options = options or AdaptOptions()
    grid = grid_for(volume.shape[0], volume.spacing[0], grid, factor, spacing)
    torch_device = resolve_device(device)
    if model is None:
        from napari_cycleinr.model.checkpoint import load_model

        model = load_model(None, torch_device, profile=options.profile)
    start = copy.deepcopy(model).to(torch_device)
    tuned = copy.deepcopy(model).to(torch_device).train()
    data = inplane_volume(volume, modality)
    thick, crop = pair_shape(volume.shape, grid.factor, options)
    spread = (max(1.05, grid.factor * (1 - options.scale_spread)), grid.factor * (1 + options.scale_spread))
    config = replace(
        options.training, steps=options.steps or 1_000_000, thick_slices=thick, crop=max(crop),
        scale_min=spread[0], scale_max=spread[1], degradations=(options.profile,), seed=options.seed,
    )
    draw = lambda rng, **fixed: sample_pair(  # noqa: E731
        [data], rng, config.batch, thick, crop, spread, (options.profile,), thickness=options.thickness, **fixed
    )
    held_out_rng = np.random.default_rng([VALIDATION_SEED, options.seed])
    held_out = [draw(held_out_rng) for _ in range(options.validation_pairs)]
    report = AdaptReport(factor=grid.factor)
    threads = choose_threads(options.threads) if torch_device.type == "cpu" else 0
    with torch_threads(threads):
        report.validation_l1_before = validate(start, held_out, torch_device)["l1"]
        started = time.perf_counter()
        _fine_tune(tuned, draw, config, options, torch_device, report, progress, cancel)
        raise_if_cancelled(cancel)
        report.seconds = time.perf_counter() - started
        report.validation_l1_after = validate(tuned, held_out, torch_device)["l1"]
    report.kept = report.validation_l1_after < report.validation_l1_before
    chosen = tuned if report.kept else start
    chosen.eval()
    outcome = "adapted to this scan" if report.kept else "(adaptation tried, not kept)"
    chosen.source = f"{getattr(model, 'source', 'in-memory model')} {outcome}"  # type: ignore[attr-defined]
    chosen.info = {**getattr(model, "info", {}), "adaptation": report.as_dict()}  # type: ignore[attr-defined]
    return chosen, report


def _fine_tune(
    tuned: CycleINR,
    draw: Callable,
    config: TrainConfig,
    options: AdaptOptions,
    device: torch.device,
    report: AdaptReport,
    progress: Progress | None,
    cancel: CancelCheck | None,
) -> None:
    """Training's step with its cosine schedule, over the step count or the time budget (the fraction of it
    used so far is the schedule's progress); the steps taken and the loss history go into `report`."""
    optimizer = make_optimizer(tuned, config)
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
        rate = config.learning_rate * cosine_decay(done_fraction)
        pair = draw(rng)
        loss, fit, cycle = optimizer_step(
            tuned, optimizer, rate, lambda: training_step(tuned, pair, config, device, rng)  # noqa: B023
        )
        step += 1
        report.steps = step
        if step % 10 == 0:
            report.history.append({"step": step, "loss": loss.item(), "fit": fit.item(), "cycle": cycle.item()})
        if progress is not None:
            if options.steps:
                progress(step, options.steps)
            else:
                progress(min(int(time.perf_counter() - started), int(budget)), int(math.ceil(budget)))
