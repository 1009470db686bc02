"""Inference: Volume in, Volume out, in bounded memory, with progress and cancel.

The model runs tile by tile (MONAI-style sliding window, but exact): each tile is a slab of input slices
over an in-plane patch, encoded with a halo wide enough that its codes equal those of the whole volume,
then decoded for the output slices that fall inside the slab, a few slices and pixels at a time.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch

from napari_cycleinr.errors import CycleINRError
from napari_cycleinr.grid import ZGrid, z_grid
from napari_cycleinr.intensity import cast_like, intensity_map
from napari_cycleinr.model.baselines import cubic_blocks, linear_blocks, slices_per_block
from napari_cycleinr.model.blocks import Block, CancelCheck, owner_ranges, raise_if_cancelled
from napari_cycleinr.model.cycleinr import CycleINR
from napari_cycleinr.volume import Volume, resampled_z_affine

METHODS = ("cycleinr", "trilinear", "tricubic")
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class InferenceOptions:
    slab: int = 16
    """Input slices encoded together (plus the halo)."""
    tile: int = 192
    """In-plane tile edge in pixels (plus the halo)."""
    pixels_per_call: int = 2048
    slices_per_call: int = 4
    """Queries per decoder call = pixels x slices: a few thousand keeps the MLP in cache on CPU."""
    amp: bool = True
    """bf16 autocast on CUDA (ignored on CPU)."""

    @classmethod
    def for_device(cls, device: torch.device) -> InferenceOptions:
        if device.type == "cuda":
            return cls(slab=32, tile=512, pixels_per_call=65536, slices_per_call=8)
        return cls()


def resolve_device(name: str | torch.device | None) -> torch.device:
    """'auto' takes the GPU when there is one; naming cuda without one is an error, not a silent fallback."""
    if isinstance(name, torch.device):
        return name
    key = (name or "auto").strip().lower()
    if key == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if key == "cpu":
        return torch.device("cpu")
    if key == "cuda" or key.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise CycleINRError("cuda was asked for but no CUDA GPU is available here; use --device cpu or auto")
        return torch.device(key)
    raise CycleINRError(f"unknown device {name!r}; choose auto, cpu or cuda")


def cycleinr_blocks(
    model: CycleINR,
    lr: np.ndarray,
    positions: np.ndarray,
    cell: float,
    device: torch.device,
    options: InferenceOptions,
    cancel: CancelCheck | None = None,
) -> Iterator[Block]:
    n, h, w = lr.shape
    z_halo, xy_halo = model.config.z_halo, model.config.inplane_halo
    cell_t = torch.tensor(cell, dtype=torch.float32, device=device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda" and options.amp)
    for start, stop, j0, j1 in owner_ranges(positions, n, options.slab):
        lo, hi = max(0, start - z_halo), min(n, stop + z_halo)
        local = torch.from_numpy(np.ascontiguousarray(positions[j0:j1] - lo)).to(device)
        for y0 in range(0, h, options.tile):
            for x0 in range(0, w, options.tile):
                raise_if_cancelled(cancel)
                y1, x1 = min(h, y0 + options.tile), min(w, x0 + options.tile)
                ylo, yhi = max(0, y0 - xy_halo), min(h, y1 + xy_halo)
                xlo, xhi = max(0, x0 - xy_halo), min(w, x1 + xy_halo)
                chunk = torch.from_numpy(np.ascontiguousarray(lr[lo:hi, ylo:yhi, xlo:xhi])).to(device)
                with torch.inference_mode(), autocast:
                    latent = model.encode(chunk[None])
                    inner = _inner_pixels(yhi - ylo, xhi - xlo, y0 - ylo, y1 - ylo, x0 - xlo, x1 - xlo, device)
                    latent = type(latent)(*(None if t is None else t[:, inner] for t in latent))
                    out = torch.empty((j1 - j0, inner.numel()), dtype=torch.float32, device=device)
                    for p0 in range(0, inner.numel(), options.pixels_per_call):
                        raise_if_cancelled(cancel)
                        part = latent.pixels(p0, p0 + options.pixels_per_call)
                        for q0 in range(0, j1 - j0, options.slices_per_call):
                            q1 = min(j1 - j0, q0 + options.slices_per_call)
                            values = model.decode(part, local[q0:q1], cell_t)[0]  # (pixels, slices)
                            out[q0:q1, p0 : p0 + values.shape[0]] = values.T.float()
                values = out.view(j1 - j0, y1 - y0, x1 - x0).cpu().numpy()
                yield Block(slice(j0, j1), slice(y0, y1), slice(x0, x1), values)


def _inner_pixels(h: int, w: int, y0: int, y1: int, x0: int, x1: int, device: torch.device) -> torch.Tensor:
    """Flat indices of the tile's interior (without the halo) in its (h, w) patch."""
    rows = torch.arange(y0, y1, device=device)[:, None] * w
    return (rows + torch.arange(x0, x1, device=device)[None, :]).reshape(-1)


def method_blocks(
    method: str,
    lr: np.ndarray,
    positions: np.ndarray,
    cell: float,
    model: CycleINR | None = None,
    device: torch.device | None = None,
    options: InferenceOptions | None = None,
    cancel: CancelCheck | None = None,
) -> Iterator[Block]:
    """Blocks of normalised output for any method; positions in input-slice units, sorted."""
    if method == "trilinear":
        return linear_blocks(lr, positions, cancel)
    if method == "tricubic":
        return cubic_blocks(lr, positions, cancel)
    if method == "cycleinr":
        if model is None:
            raise CycleINRError("the cycleinr method needs a model")
        device = device or next(model.parameters()).device
        return cycleinr_blocks(model, lr, positions, cell, device, options or InferenceOptions.for_device(device), cancel)
    raise CycleINRError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")


def predict(method: str, lr: np.ndarray, positions: np.ndarray, cell: float, **kwargs) -> np.ndarray:
    """The whole normalised output as float32 (Q, H, W): for evaluation on volumes that fit in memory."""
    out = np.empty((len(positions), *lr.shape[1:]), dtype=np.float32)
    for block in method_blocks(method, lr, positions, cell, **kwargs):
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
) -> Volume:
    """Super-resolve z on the cell-centred grid for a factor or a target spacing (mm).

    Integer input stays integer (rounded and clipped) unless keep_dtype is False. `out` may be a preallocated
    (or memory-mapped) array of the output shape; progress(done, total) is called after each block; cancel()
    returning True raises Cancelled and leaves no result.
    """
    if method not in METHODS:
        raise CycleINRError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    check_volume(volume)
    grid: ZGrid = z_grid(volume.shape[0], volume.spacing[0], factor=factor, spacing=spacing)
    torch_device = resolve_device(device)
    if method == "cycleinr":
        if model is None:
            from napari_cycleinr.model.checkpoint import load_model

            model = load_model(None, torch_device)
        model = model.to(torch_device).eval()
    intensities = intensity_map(volume.data, modality)
    lr = intensities.normalise(volume.data)
    out_dtype = volume.data.dtype if keep_dtype else np.dtype(np.float32)
    shape = (grid.n_out, *volume.shape[1:])
    if out is None:
        out = np.empty(shape, dtype=out_dtype)
    elif out.shape != shape:
        raise CycleINRError(f"the output array has shape {out.shape}, expected {shape}")
    blocks = method_blocks(
        method, lr, grid.positions(), 1.0 / grid.factor, model=model, device=torch_device, options=options, cancel=cancel
    )
    total = _count_blocks(method, grid, volume.shape, model, options or InferenceOptions.for_device(torch_device))
    started = time.perf_counter()
    for done, block in enumerate(blocks, start=1):
        out[block.out_slices, block.rows, block.cols] = cast_like(intensities.denormalise(block.values), out.dtype)
        if progress is not None:
            progress(done, max(total, done))
        raise_if_cancelled(cancel)
    record = {
        "method": method,
        "factor": grid.factor,
        "spacing_in_mm": grid.spacing_in,
        "spacing_out_mm": grid.spacing_out,
        "modality": intensities.modality,
        "device": str(torch_device),
        "seconds": round(time.perf_counter() - started, 3),
    }
    if method == "cycleinr":
        record["model"] = getattr(model, "source", "in-memory model")
    metadata = dict(volume.metadata)
    metadata["super_resolution"] = record
    return Volume(out, resampled_z_affine(volume.affine, grid.z_ratio), volume.file_axes, metadata)


def _count_blocks(
    method: str, grid: ZGrid, shape: tuple[int, int, int], model: CycleINR | None, options: InferenceOptions
) -> int:
    """How many blocks a method will yield, for an honest progress bar."""
    if method != "cycleinr":
        return math.ceil(grid.n_out / slices_per_block(shape))
    tiles = math.ceil(shape[1] / options.tile) * math.ceil(shape[2] / options.tile)
    return len(owner_ranges(grid.positions(), grid.n_in, options.slab)) * tiles
