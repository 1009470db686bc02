"""Inference: Volume in, Volume out, in bounded memory, with progress and cancel.

The model runs tile by tile, exactly (the answer equals the whole-volume forward pass up to rounding). The
standard architecture takes the fast path (model/fast_path.py): each in-plane tile streams through the
encoder along z and each output slice is decoded as soon as its neighbours are encoded. Any other model, or
InferenceOptions(fast=False), goes through the generic tiler (runtime/tiler.py) with `cycleinr_predictor`:
slabs of input slices with a halo wide enough that their codes equal those of the whole volume.
"""

from __future__ import annotations

import itertools
import math
import time
from typing import Callable, Iterator

import numpy as np
import torch

from napari_cycleinr.errors import CycleINRError
from napari_cycleinr.grid import ZGrid, grid_for
from napari_cycleinr.intensity import intensity_map
from napari_cycleinr.model.baselines import cubic_blocks, linear_blocks, slices_per_block
from napari_cycleinr.model.cycleinr import CycleINR
from napari_cycleinr.model.fast_path import count_fast_blocks, fast_blocks
from napari_cycleinr.model.fused import is_standard
from napari_cycleinr.model.output import Normalised, allocate_output, output_finisher, write_block
from napari_cycleinr.options import METHODS, check_ensemble, check_method
from napari_cycleinr.runtime.blocks import Block, CancelCheck, raise_if_cancelled
from napari_cycleinr.runtime.devices import Finish, resolve_device
from napari_cycleinr.runtime.threads import choose_threads, with_threads
from napari_cycleinr.runtime.tiler import Predictor, count_tiled_blocks, inner_pixels, tiled_blocks
from napari_cycleinr.runtime.tuning import InferenceOptions
from napari_cycleinr.volume import Volume, resampled_z_affine

__all__ = [
    "METHODS", "InferenceOptions", "check_volume", "cycleinr_blocks", "method_blocks", "mirrored_blocks",
    "output_finisher", "predict", "super_resolve", "uses_fast_path",
]
Progress = Callable[[int, int], None]


def cycleinr_blocks(model: CycleINR, lr: np.ndarray, positions: np.ndarray, cell: float, **settings) -> Iterator[Block]:
    """Blocks of the model's normalised output: the fast exact path for the standard architecture, else the
    generic tiler. settings: device, options, cancel, and finish (fast path only: the values are then
    finish(normalised), see uses_fast_path)."""
    device, options, cancel = settings["device"], settings["options"], settings.get("cancel")
    if uses_fast_path(model, options):
        return fast_blocks(model, lr, positions, cell, **settings)
    if settings.get("finish") is not None:
        raise ValueError("finish needs the fast path")
    config = model.config
    return tiled_blocks(
        lr, positions, cycleinr_predictor(model, cell, device, options, cancel), slab=options.slab,
        tile=options.tile, z_halo=config.z_halo, xy_halo=config.inplane_halo, device=device, cancel=cancel,
    )


def uses_fast_path(model: CycleINR, options: InferenceOptions) -> bool:
    return options.fast and is_standard(model)


def cycleinr_predictor(
    model: CycleINR, cell: float, device: torch.device, options: InferenceOptions, cancel: CancelCheck | None
) -> Predictor:
    """Any CycleINR as a predictor for the generic tiler: encode the window, decode the tile's pixels only,
    in chunks of pixels x slices that keep the decoder's MLP in cache."""
    cell_t = torch.tensor(cell, dtype=torch.float32, device=device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda" and options.amp)

    def predict_tile(window: torch.Tensor, local: torch.Tensor, inner: tuple[slice, slice]) -> torch.Tensor:
        rows, cols = inner
        queries = len(local)
        with torch.inference_mode(), autocast:
            latent = model.encode(window[None])
            wanted = inner_pixels(window.shape[1], window.shape[2], rows, cols, device)
            latent = type(latent)(*(None if t is None else t[:, wanted] for t in latent))
            out = torch.empty((queries, wanted.numel()), dtype=torch.float32, device=device)
            for p0 in range(0, wanted.numel(), options.pixels_per_call):
                raise_if_cancelled(cancel)
                part = latent.pixels(p0, p0 + options.pixels_per_call)
                for q0 in range(0, queries, options.slices_per_call):
                    q1 = min(queries, q0 + options.slices_per_call)
                    values = model.decode(part, local[q0:q1], cell_t)[0]  # (pixels, slices)
                    out[q0:q1, p0 : p0 + values.shape[0]] = values.T.float()
        return out.view(queries, rows.stop - rows.start, cols.stop - cols.start)

    return predict_tile


def method_blocks(
    method: str,
    lr: np.ndarray,
    positions: np.ndarray,
    cell: float,
    model: CycleINR | None = None,
    device: torch.device | None = None,
    options: InferenceOptions | None = None,
    cancel: CancelCheck | None = None,
    finish: Finish | None = None,
) -> Iterator[Block]:
    """Blocks of normalised output for any method; positions in input-slice units, sorted.

    On the CPU each block is computed with choose_threads(options.threads) torch threads; the caller's own
    setting is back in force whenever the generator is paused.
    """
    check_method(method)
    if method == "cycleinr":
        if model is None:
            raise CycleINRError("the cycleinr method needs a model")
        device = device or next(model.parameters()).device
    device = resolve_device(device) if device is not None else torch.device("cpu")
    options = options or InferenceOptions.for_device(device)
    if method == "trilinear":
        blocks = linear_blocks(lr, positions, cancel)
    elif method == "tricubic":
        blocks = cubic_blocks(lr, positions, cancel)
    else:
        assert model is not None
        blocks = cycleinr_blocks(
            model, lr, positions, cell, device=device, options=options, cancel=cancel, finish=finish
        )
    threads = choose_threads(options.threads) if device.type == "cpu" and method != "tricubic" else 0
    return with_threads(blocks, threads)


def mirrored_blocks(method: str, lr: np.ndarray, positions: np.ndarray, cell: float, **kwargs) -> Iterator[Block]:
    """method_blocks on the input reversed along z, mapped back onto the unreversed output grid.

    The second pass of the z self-ensemble: the model is not symmetric in z (its attention and decoder see
    signed offsets), so its answer on the mirrored scan is a second, slightly different estimate, and the
    mean of the two has less error and smoother noise than either (docs/method.md, "Self-ensemble along z").
    """
    n_in, n_out = len(lr), len(positions)
    mirrored = (n_in - 1) - positions[::-1]
    # a copy, not a view: torch refuses the negative strides of a reversed one-slice chunk
    source = lr.reversed_z() if isinstance(lr, Normalised) else np.ascontiguousarray(lr[::-1])
    for block in method_blocks(method, source, mirrored, cell, **kwargs):
        start, stop, _ = block.out_slices.indices(n_out)
        yield Block(slice(n_out - stop, n_out - start), block.rows, block.cols, block.values[::-1])


def predict(
    method: str, lr: np.ndarray, positions: np.ndarray, cell: float, mirrored: bool = False, **kwargs
) -> np.ndarray:
    """The whole normalised output as float32 (Q, H, W): for evaluation on volumes that fit in memory.

    mirrored: the answer on the input reversed along z (mirrored_blocks); the z self-ensemble is the mean of
    the two.
    """
    out = np.empty((len(positions), *lr.shape[1:]), dtype=np.float32)
    for block in (mirrored_blocks if mirrored else method_blocks)(method, lr, positions, cell, **kwargs):
        out[block.out_slices, block.rows, block.cols] = block.values
    return out


def check_volume(volume: Volume) -> None:
    """Refuse what the model cannot answer for, with a message a user can act on."""
    data = volume.data
    if data.dtype.kind not in "biuf":
        raise CycleINRError(f"voxel type {data.dtype} is not supported; give integer or real-valued data")
    if data.shape[0] < 2:
        raise CycleINRError(f"super-resolution along z needs at least 2 slices, the volume has {data.shape[0]}")
    if min(data.shape[1:]) < 1:
        raise CycleINRError(f"the volume is empty in-plane: shape {data.shape}")
    if data.dtype.kind == "f" and not np.isfinite(data).all():
        bad = int(np.size(data) - np.count_nonzero(np.isfinite(data)))
        raise CycleINRError(f"the volume has {bad} NaN or infinite voxel(s); fix or mask them first")


def super_resolve(
    volume: Volume,
    *,
    grid: ZGrid | None = None,
    factor: float | None = None,
    spacing: float | None = None,
    method: str = "cycleinr",
    model: CycleINR | None = None,
    device: str | torch.device = "auto",
    modality: str | None = None,
    keep_dtype: bool = True,
    options: InferenceOptions | None = None,
    progress: Progress | None = None,
    cancel: CancelCheck | None = None,
    out: np.ndarray | None = None,
    ensemble: bool = False,
) -> Volume:
    """Super-resolve z on the cell-centred grid: `grid` (a ZGrid made for this volume), or the grid for a
    factor or a target spacing (mm).

    Integer input stays integer (rounded and clipped) unless keep_dtype is False. `out` may be a preallocated
    (or memory-mapped) array of the output shape; progress(done, total) is called after each block; cancel()
    returning True raises Cancelled and leaves no result. ensemble (cycleinr only): a second pass on the
    input reversed along z, averaged with the first (twice the time; see mirrored_blocks).
    """
    check_method(method)
    check_ensemble(method, ensemble)
    check_volume(volume)
    grid = grid_for(volume.shape[0], volume.spacing[0], grid, factor, spacing)
    torch_device = resolve_device(device)
    model = _placed_model(model, torch_device) if method == "cycleinr" else model
    intensities = intensity_map(volume.data, modality, bounded=True)  # never below the input's minimum
    options = options or InferenceOptions.for_device(torch_device)
    fast = method == "cycleinr" and uses_fast_path(model, options)
    # the fast path reads the input a slab at a time, so it is normalised on demand rather than copied whole
    lr = Normalised(volume.data, intensities) if fast else intensities.normalise(volume.data)
    out_dtype = volume.data.dtype if keep_dtype else np.dtype(np.float32)
    out = allocate_output((grid.n_out, *volume.shape[1:]), out_dtype, out)
    finish = output_finisher(intensities, out.dtype) if fast else None
    total = _count_blocks(method, grid, volume.shape, model, options) * (2 if ensemble else 1)
    threads = choose_threads(options.threads) if torch_device.type == "cpu" and method != "tricubic" else 0
    started = time.perf_counter()
    # method_blocks computes each block with `threads` torch threads
    arguments = (method, lr, grid.positions(), 1.0 / grid.factor)
    settings = {"model": model, "device": torch_device, "options": options, "cancel": cancel}
    first = "normalised" if finish is None else "finished"
    blocks = ((first, block) for block in method_blocks(*arguments, finish=finish, **settings))
    if ensemble:  # the second pass is averaged in the output's units with what the first one wrote
        blocks = itertools.chain(blocks, (("mean", block) for block in mirrored_blocks(*arguments, **settings)))
    for done, (how, block) in enumerate(blocks, start=1):
        write_block(out, (block.out_slices, block.rows, block.cols), block.values, intensities, how)
        _report(progress, done, total, cancel)
    record = _record(method, grid, intensities.modality, torch_device, time.perf_counter() - started)
    record["clipped"] = intensities.clip_report()  # voxel counts; {} when nothing was clipped
    if ensemble:
        record["ensemble"] = "z mirror, 2 passes"
    if threads:
        record["threads"] = threads
    if method == "cycleinr":
        record["model"] = getattr(model, "source", "in-memory model")
    metadata = {**volume.metadata, "super_resolution": record}
    return Volume(out, resampled_z_affine(volume.affine, grid.z_ratio), volume.file_axes, metadata)


def _placed_model(model: CycleINR | None, device: torch.device) -> CycleINR:
    """The model on the device in eval mode (None: the bundled default weights)."""
    if model is None:
        from napari_cycleinr.model.checkpoint import load_model

        model = load_model(None, device)
    return model.to(device).eval()


def _report(progress: Progress | None, done: int, total: int, cancel: CancelCheck | None) -> None:
    if progress is not None:
        progress(done, max(total, done))
    raise_if_cancelled(cancel)


def _record(method: str, grid: ZGrid, modality: str, device: torch.device, seconds: float) -> dict:
    """What the output's metadata says about how it was made (its "super_resolution" record)."""
    return {
        "method": method,
        "factor": grid.factor,
        "spacing_in_mm": grid.spacing_in,
        "spacing_out_mm": grid.spacing_out,
        "modality": modality,
        "device": str(device),
        "seconds": round(seconds, 3),
    }


def _count_blocks(
    method: str, grid: ZGrid, shape: tuple[int, int, int], model: CycleINR | None, options: InferenceOptions
) -> int:
    """How many blocks a method will yield, for an honest progress bar."""
    if method != "cycleinr":
        return math.ceil(grid.n_out / slices_per_block(shape))
    assert model is not None
    if uses_fast_path(model, options):
        return count_fast_blocks(grid.positions(), shape, model, options)
    return count_tiled_blocks(grid.positions(), shape, options.slab, options.tile)
