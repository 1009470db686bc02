"""The fast exact path: the standard CycleINR streamed along z tile by tile (see the notes in model/fused.py
and docs/performance.md). Same answer as the generic tiler up to rounding (~1e-6), in a fraction of the
time and with memory that does not grow with the number of slices.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable, Iterator

import numpy as np
import torch

from napari_cycleinr.model.cycleinr import CycleINR
from napari_cycleinr.model.fused import FusedModel
from napari_cycleinr.model.streaming_encoder import StreamingEncoder
from napari_cycleinr.runtime.blocks import Block, CancelCheck, raise_if_cancelled
from napari_cycleinr.runtime.devices import Finish, blocks_to_host, compiled, cpu_computes_bfloat16, to_device
from napari_cycleinr.runtime.memory import release_freed_memory
from napari_cycleinr.runtime.tiler import balanced_tiles
from napari_cycleinr.runtime.tuning import InferenceOptions
from napari_cycleinr.runtime.workers import Workers


@dataclass(frozen=True)
class _Interval:
    """Output slices j0:j1 whose positions share floor(position): same sampled pair, same neighbours."""

    j0: int
    j1: int
    lower: int
    neighbours: np.ndarray
    t: np.ndarray
    """Linear weights of the upper slice, per output slice (float32)."""


def _intervals(positions: np.ndarray, n: int, neighbours: int) -> list[_Interval]:
    keys = np.floor(positions).astype(np.int64)
    z = np.clip(positions, 0.0, n - 1.0)
    lower = np.minimum(np.floor(z).astype(np.int64), n - 2)
    t = (z - lower).astype(np.float32)
    out = []
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    for j0, j1 in zip(starts, np.r_[starts[1:], len(positions)]):
        base = keys[j0] - (neighbours // 2 - 1)
        near = np.clip(base + np.arange(neighbours), 0, n - 1)
        out.append(_Interval(int(j0), int(j1), int(lower[j0]), near, t[j0:j1]))
    return out


Step = tuple[int, int, int, int]
"""(feed_stop, ready, first interval, stop interval): feed the input up to feed_stop, hold latent slices
[0, ready) in the window, then decode intervals [first, stop)."""


def _stream_plan(intervals: list[_Interval], n: int, slab: int, lag: int) -> list[Step]:
    """The steps of one tile's stream. Feeding the last chunk makes the encoder's last `lag` slices final at
    once; they enter the window a slab at a time, the intervals they complete decoded in between, so the
    window never holds many more slices than a step in the middle of the scan needs."""
    plan: list[Step] = []
    i = 0

    def step(stop: int, ready: int) -> None:
        nonlocal i
        i0 = i
        while i < len(intervals) and max(intervals[i].lower + 1, int(intervals[i].neighbours[-1])) < ready:
            i += 1
        plan.append((stop, ready, i0, i))

    for start in range(0, n, slab):
        stop = min(n, start + slab)
        if stop < n:
            step(stop, max(0, stop - lag))
            continue
        for ready in range(max(0, stop - lag), n, slab):
            step(stop, ready)
        step(stop, n)
    return plan


def count_fast_blocks(
    positions: np.ndarray, shape: tuple[int, int, int], model: CycleINR, options: InferenceOptions
) -> int:
    """How many blocks fast_blocks yields, for an honest progress bar."""
    intervals = _intervals(positions, shape[0], model.config.neighbours)
    plan = _stream_plan(intervals, shape[0], options.slab, model.config.blocks)
    tiles = len(balanced_tiles(shape[1], options.tile)) * len(balanced_tiles(shape[2], options.tile))
    return sum(1 for *_, i0, i1 in plan if i1 > i0) * tiles


def compute_dtype(device: torch.device, options: InferenceOptions) -> torch.dtype:
    """The decoder's: bf16 on CUDA; float32 on a CPU, whose bf16 elementwise operations are slower."""
    if device.type == "cuda" and options.amp:
        return torch.bfloat16
    return torch.float32


def encoder_dtype(device: torch.device, options: InferenceOptions) -> torch.dtype:
    """The encoder's: bf16 where the device computes it natively (measured in docs/performance.md: the
    output moves by 0.3 HU on average, PSNR by under 0.01 dB)."""
    if options.amp and (device.type == "cuda" or cpu_computes_bfloat16()):
        return torch.bfloat16
    return torch.float32


def fast_blocks(
    model: CycleINR,
    lr: np.ndarray,
    positions: np.ndarray,
    cell: float,
    device: torch.device,
    options: InferenceOptions,
    cancel: CancelCheck | None = None,
    finish: Finish | None = None,
) -> Iterator[Block]:
    """Blocks of the standard model's normalised output (fused.is_standard), tile by tile; with `finish`, the
    values are finish(normalised), computed on the device before the copy to the host."""
    n, h, w = lr.shape
    cfg = model.config
    dtype = compute_dtype(device, options)
    fused = FusedModel(model, dtype)
    positions = np.asarray(positions, dtype=np.float64)
    intervals = _intervals(positions, n, cfg.neighbours)
    plan = _stream_plan(intervals, n, options.slab, cfg.blocks)
    cell_t = torch.tensor(cell, dtype=torch.float32, device=device)
    # per output slice, computed in float64 and sent to the device once: its interval's weights and offsets
    offsets = np.concatenate([positions[iv.j0 : iv.j1, None] - iv.neighbours[None, :] for iv in intervals])
    geometry = {
        "t": np.concatenate([iv.t for iv in intervals]),
        "frac": positions - np.floor(positions),
        "offsets": offsets,
    }
    geometry = {key: torch.from_numpy(value.astype(np.float32)).to(device) for key, value in geometry.items()}
    decode = compiled(fused.decode) if options.compile and device.type == "cuda" else fused.decode
    with torch.inference_mode():
        row_tiles, col_tiles = balanced_tiles(h, options.tile), balanced_tiles(w, options.tile)
        tiles = ((rows, cols) for rows in row_tiles for cols in col_tiles)
        workers = Workers(device, torch.get_num_threads())
        shared = (geometry, cell_t, intervals, plan, options, workers, cancel)
        try:
            results = (item for tile in tiles for item in _tile_blocks(fused, decode, lr, tile, *shared))
            yield from blocks_to_host(results, device, finish)
        finally:
            workers.close()


def _tile_blocks(
    fused: FusedModel,
    decode: Callable,
    lr: np.ndarray,
    tile: tuple[slice, slice],
    geometry: dict[str, torch.Tensor],
    cell: torch.Tensor,
    intervals: list[_Interval],
    plan: list[Step],
    options: InferenceOptions,
    workers: Workers,
    cancel: CancelCheck | None,
) -> Iterator[tuple[slice, slice, slice, torch.Tensor]]:
    """Stream one in-plane tile through the encoder along z and decode each interval once it can be.

    The per-slice terms are recomputed per tile (well under a millisecond per interval) rather than kept for
    the whole scan, so that nothing held grows with the number of slices. One function of ~70 lines because
    the stream's state (encoder buffers, code window, intensities) lives across the loop's steps; split, it
    would travel through every call as arguments.
    """
    n, h, w = lr.shape
    device = cell.device
    rows, cols = tile
    halo = fused.model.config.inplane_halo
    ylo, yhi = max(0, rows.start - halo), min(h, rows.stop + halo)
    xlo, xhi = max(0, cols.start - halo), min(w, cols.stop + halo)
    inner_rows = slice(rows.start - ylo, rows.stop - ylo)
    inner_cols = slice(cols.start - xlo, cols.stop - xlo)
    pixels = (rows.stop - rows.start) * (cols.stop - cols.start)
    queries = max(1, options.pixels_per_call * options.slices_per_call)
    encoder = StreamingEncoder(fused.model.encoder, encoder_dtype(device, options))
    capacity = _window_capacity(intervals, plan)
    codes = _Window(fused, pixels, capacity, device)
    intensity: dict[int, torch.Tensor] = {}
    pending: list[torch.Tensor] = []  # latent slices computed, not yet in the window
    fed = ready = 0
    for stop, target, i0, i1 in plan:
        raise_if_cancelled(cancel)
        if stop > fed:
            chunk = to_device(lr[fed:stop, ylo:yhi, xlo:xhi], device)
            pending.extend(encoder.push(chunk, final=stop == len(lr)))
            fed = stop
        if target > ready:
            planes = to_device(lr[ready:target, rows, cols], device).view(-1, pixels)
            for s in range(target - ready):
                codes.put(ready + s, pending.pop(0)[inner_rows, inner_cols])
                intensity[ready + s] = planes[s]
            ready = target
        if i1 == i0:
            continue
        j0, j1 = intervals[i0].j0, intervals[i1 - 1].j1
        out = torch.empty((j1 - j0, pixels), dtype=torch.float32, device=device)
        jobs = []
        for i in range(i0, i1):
            iv = intervals[i]
            j = slice(iv.j0, iv.j1)
            term = fused.slice_terms(geometry["frac"][j], geometry["offsets"][j], cell)
            t = geometry["t"][j]
            near = [codes[int(z)] for z in iv.neighbours]
            lower, upper = codes[iv.lower], codes[iv.lower + 1]
            below, above = intensity[iv.lower], intensity[iv.lower + 1]
            step = max(1, queries // len(iv.t))
            for p0 in range(0, pixels, step):
                p = slice(p0, min(pixels, p0 + step))
                rows_out = slice(iv.j0 - j0, iv.j1 - j0)
                jobs.append(partial(_decode_chunk, decode, out[rows_out, p], lower, upper, near, below, above, p, t, term, cancel))
        workers.run(jobs)
        following = intervals[i1] if i1 < len(intervals) else None
        keep = min(following.lower, int(following.neighbours[0])) if following is not None else ready
        codes.drop_below(keep)
        for z in [z for z in intensity if z < keep]:
            del intensity[z]
        yield slice(j0, j1), rows, cols, out.view(j1 - j0, rows.stop - rows.start, cols.stop - cols.start)
    del encoder, codes, intensity
    release_freed_memory()


class _Window:
    """The projected codes of the latent slices still needed, in one buffer allocated per tile and reused
    slot by slot, so the memory of a tile is that of a few slices whatever the length of the scan (and the
    heap does not fragment around many short-lived slice-sized blocks)."""

    def __init__(self, fused: FusedModel, pixels: int, capacity: int, device: torch.device) -> None:
        self.fused = fused
        self.buffers = [
            torch.empty((capacity, pixels, width), dtype=fused.dtype, device=device) for width in fused.part_widths
        ]
        self.codes = torch.empty((pixels, fused.channels + 1), dtype=fused.dtype, device=device)
        self.slots: dict[int, int] = {}
        self.free = list(range(capacity - 1, -1, -1))

    def put(self, z: int, codes: torch.Tensor) -> None:
        slot = self.free.pop()
        self.slots[z] = slot
        self.fused.project(self.fused.augment(codes, out=self.codes), out=[buffer[slot] for buffer in self.buffers])

    def __getitem__(self, z: int) -> list[torch.Tensor]:
        slot = self.slots[z]
        return [buffer[slot] for buffer in self.buffers]

    def drop_below(self, keep: int) -> None:
        for z in [z for z in self.slots if z < keep]:
            self.free.append(self.slots.pop(z))


def _decode_chunk(decode, into, lower, upper, near, below, above, p, t, term, cancel) -> None:
    """One chunk of one interval's queries, written into its place in the output (chunks never overlap)."""
    raise_if_cancelled(cancel)
    near_p = [[part[p] for part in m] for m in near]
    with torch.inference_mode():  # per thread: a worker does not inherit its caller's
        values = decode([part[p] for part in lower], [part[p] for part in upper], near_p, below[p], above[p], t, term)
        into.copy_(values)


def _window_capacity(intervals: list[_Interval], plan: list[Step]) -> int:
    """The most latent slices a tile holds at once, replaying the stream plan."""
    keep = most = 0
    for _, ready, i0, i1 in plan:
        most = max(most, ready - keep)
        if i1 > i0:
            following = intervals[i1] if i1 < len(intervals) else None
            keep = min(following.lower, int(following.neighbours[0])) if following is not None else ready
    return max(most, 1)
