"""Inference: Volume in, Volume out, in bounded memory, with progress and cancel.

The model runs tile by tile, exactly (the answer equals the whole-volume forward pass up to rounding). The
fast path (`_fast_blocks`, used for the standard architecture) streams each in-plane tile through the encoder
along z, a few slices at a time, and decodes each output slice as soon as its neighbours are encoded; see
the notes above `_is_standard` and docs/performance.md. The generic path (`generic_blocks`, any other model,
or InferenceOptions(fast=False)) encodes slabs of input slices with a halo wide enough that their codes equal
those of the whole volume, then decodes the output slices inside each slab.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import time
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from napari_cycleinr.errors import CycleINRError
from napari_cycleinr.grid import ZGrid, z_grid
from napari_cycleinr.intensity import IntensityMap, cast_like, intensity_map
from napari_cycleinr.model.baselines import cubic_blocks, linear_blocks, slices_per_block
from napari_cycleinr.model.blocks import Block, CancelCheck, owner_ranges, raise_if_cancelled
from napari_cycleinr.model.cycleinr import CycleINR
from napari_cycleinr.model.decoder import ImplicitDecoder
from napari_cycleinr.model.encoder import Encoder, SeparableResidualBlock
from napari_cycleinr.model.lam import LocalAttention
from napari_cycleinr.model.position import sinusoidal
from napari_cycleinr.volume import Volume, resampled_z_affine

METHODS = ("cycleinr", "trilinear", "tricubic")
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class InferenceOptions:
    slab: int = 4
    """Input slices per step: the encoder streams through z this many at a time (the generic path encodes
    slabs of this many plus a halo)."""
    tile: int = 160
    """In-plane tile edge in pixels (the encoder recomputes a halo of a few pixels around it)."""
    pixels_per_call: int = 1024
    slices_per_call: int = 4
    """Queries per decoder call = pixels x slices: a few thousand keeps the MLP in cache on CPU."""
    amp: bool = True
    """bf16 on CUDA (ignored on CPU, which stays float32)."""
    fast: bool = True
    """The streaming, refolded evaluation (same function as the model's own decode, ~1e-6 apart)."""
    threads: int = 0
    """CPU threads for torch during inference; 0 chooses (see choose_threads)."""
    compile: bool = False
    """torch.compile the decoder on CUDA (falls back to eager if it fails)."""

    @classmethod
    def for_device(cls, device: torch.device) -> InferenceOptions:
        if device.type == "cuda":
            return cls(slab=8, tile=512, pixels_per_call=65536, slices_per_call=8)
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
            raise CycleINRError("cuda was asked for but no CUDA GPU is available here; choose the cpu or auto device")
        try:
            device = torch.device(key)
        except RuntimeError:
            raise CycleINRError(f"unknown device {name!r}; choose auto, cpu or cuda") from None
        if (device.index or 0) >= torch.cuda.device_count():
            raise CycleINRError(f"{name} does not exist: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
        return device
    raise CycleINRError(f"unknown device {name!r}; choose auto, cpu or cuda")


def available_cores() -> int:
    """CPU cores this process may use: its affinity mask, capped by a cgroup (container) CPU quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    try:
        with open("/sys/fs/cgroup/cpu.max") as handle:
            quota, period = handle.read().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, int(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def busy_elsewhere(interval: float = 0.1) -> float:
    """Cores that other processes keep busy, from /proc/stat over `interval` seconds (0 if unknown)."""

    def system_busy() -> float:
        with open("/proc/stat") as handle:
            fields = [int(v) for v in handle.readline().split()[1:]]
        busy = fields[0] + fields[1] + fields[2] + sum(fields[5:8])  # user nice system irq softirq steal
        return busy / os.sysconf("SC_CLK_TCK")

    def own() -> float:
        times = os.times()
        return times.user + times.system

    try:
        b0, o0, w0 = system_busy(), own(), time.monotonic()
        time.sleep(interval)
        b1, o1, w1 = system_busy(), own(), time.monotonic()
    except (OSError, ValueError, IndexError):
        return 0.0
    return max(0.0, ((b1 - b0) - (o1 - o0)) / max(w1 - w0, 1e-3))


_THREAD_CHOICE: list[tuple[float, int]] = []


def choose_threads(requested: int = 0) -> int:
    """Torch CPU threads for inference: `requested` if positive, else the available cores less those other
    processes keep busy (at least 1; the choice is kept for 10 s).

    A thread that shares its core with another busy process stalls every parallel region it joins, which on a
    loaded 2-core machine made small tensor operations 100 times slower than one thread; a quiet machine gets
    all its cores.
    """
    if requested > 0:
        return requested
    now = time.monotonic()
    if _THREAD_CHOICE and now - _THREAD_CHOICE[0][0] < 10.0:
        return _THREAD_CHOICE[0][1]
    cores = available_cores()
    threads = 1 if cores == 1 else max(1, min(cores, int(cores - busy_elsewhere() + 0.5)))
    _THREAD_CHOICE[:] = [(now, threads)]
    return threads


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run with `threads` torch CPU threads (0: leave as is), restoring the previous count afterwards."""
    previous = torch.get_num_threads()
    if threads > 0 and threads != previous:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)


def cycleinr_blocks(
    model: CycleINR,
    lr: np.ndarray,
    positions: np.ndarray,
    cell: float,
    device: torch.device,
    options: InferenceOptions,
    cancel: CancelCheck | None = None,
    finish: Finish | None = None,
) -> Iterator[Block]:
    """Blocks of the model's normalised output: the fast exact path for the standard architecture.

    With `finish` (fast path only, see uses_fast_path) the values are finish(normalised) instead.
    """
    if uses_fast_path(model, options):
        return _fast_blocks(model, lr, positions, cell, device, options, cancel, finish)
    if finish is not None:
        raise ValueError("finish needs the fast path")
    return generic_blocks(model, lr, positions, cell, device, options, cancel)


def uses_fast_path(model: CycleINR, options: InferenceOptions) -> bool:
    return options.fast and _is_standard(model)


def generic_blocks(
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


# ---------------------------------------------------------------------------------------------------------
# The fast exact path. Three ideas, none of which changes the maths (only the rounding, ~1e-6):
# 1. The encoder streams along z: each (2+1)D block keeps the two slices of its through-plane input that the
#    next chunk needs, so every input voxel is encoded exactly once, with no z halo to recompute, and memory
#    holds a few slices, never the scan.
# 2. Everything linear that the model applies after sampling the codes is applied to the codes instead, once
#    per latent voxel: query/key/value projections and the decoder's first layer (a lerp of projections is
#    the projection of the lerp). The attention output layer is folded into the decoder's first layer.
# 3. Output slices between the same two input slices (an "interval": 5 of them at x5) share their neighbours,
#    so the per-pixel dot products between the two sampled codes and the K neighbour keys are computed once
#    per interval; what differs per output slice (its offset embeddings) enters through small matmuls.
# Queries are evaluated as whole slices of a tile in chunks of a few thousand, in big batched tensor ops.
# ---------------------------------------------------------------------------------------------------------


def _is_standard(model: CycleINR) -> bool:
    """The fast path knows this architecture; anything else takes the generic path."""
    blocks = model.encoder.body
    encoder_ok = type(model.encoder) is Encoder and all(type(b) is SeparableResidualBlock for b in blocks)
    attention_ok = model.attention is None or type(model.attention) is LocalAttention
    return encoder_ok and attention_ok and type(model.decoder) is ImplicitDecoder


class _StreamingEncoder:
    """The (2+1)D encoder fed chunk by chunk along z; returns each latent slice once it is final.

    Block b's output at slice z needs its through-plane input at z-1, z, z+1 (zeros beyond the volume), so it
    lags one slice; after feeding slices [0, e) the latent slices [0, e - blocks) are final. Tensors are kept
    channels-last, (S, H, W, C): the in-plane convolutions run as 2D convolutions over a batch of S slices and
    the through-plane ones as three matrix products, which is what oneDNN and BLAS do fastest on a CPU.
    """

    def __init__(self, encoder: Encoder, dtype: torch.dtype = torch.float32) -> None:
        def inplane(conv: nn.Conv3d) -> tuple[torch.Tensor, torch.Tensor, int]:
            return conv.weight[:, :, 0].to(dtype), conv.bias.to(dtype), conv.dilation[-1]

        self.dtype = dtype
        self.head = inplane(encoder.head)
        blocks = list(encoder.body)
        self.inplane = [inplane(b.inplane) for b in blocks]
        self.through = [
            ([b.through_plane.weight[:, :, k, 0, 0].T.contiguous().to(dtype) for k in range(3)],
             b.through_plane.bias.to(dtype))
            for b in blocks
        ]
        self.a_buffer: list[torch.Tensor | None] = [None] * len(blocks)
        self.x_buffer: list[torch.Tensor | None] = [None] * len(blocks)

    @staticmethod
    def _inplane(x: torch.Tensor, conv: tuple[torch.Tensor, torch.Tensor, int]) -> torch.Tensor:
        """(S, H, W, Cin) -> (S, H, W, Cout): a (dilated) 3x3 convolution of every slice."""
        weight, bias, dilation = conv
        y = F.conv2d(x.permute(0, 3, 1, 2), weight, bias, padding=dilation, dilation=dilation)
        return y.permute(0, 2, 3, 1).contiguous()

    def push(self, chunk: torch.Tensor, final: bool) -> torch.Tensor:
        """chunk (S, H, W) -> the newly final latent slices (S', H, W, C), in the encoder's dtype."""
        y = self._inplane(chunk[..., None].to(self.dtype), self.head)
        for i in range(len(self.inplane)):
            y = self._block(i, y, final)
        return y

    def _block(self, i: int, x: torch.Tensor, final: bool) -> torch.Tensor:
        previous_a, previous_x = self.a_buffer[i], self.x_buffer[i]
        if x.shape[0] == 0 and (not final or previous_a is None):
            return x
        parts = []
        if x.shape[0]:
            parts.append(self._inplane(x, self.inplane[i]).relu_())
        if previous_a is None:  # the zero slice before the volume
            previous_a = torch.zeros_like(parts[0][:1])
            previous_x = x[:0]
        parts.insert(0, previous_a)
        if final:  # the zero slice after the volume
            parts.append(torch.zeros_like(previous_a[:1]))
        a_all = torch.cat(parts) if len(parts) > 1 else parts[0]
        x_all = torch.cat([previous_x, x]) if previous_x.shape[0] else x
        ready = a_all.shape[0] - 2
        keep = max(ready, 0)  # copies, so that the chunk itself can be freed
        self.a_buffer[i], self.x_buffer[i] = a_all[keep:].clone(), x_all[keep:].clone()
        if ready <= 0:
            return x_all[:0]
        (w0, w1, w2), bias = self.through[i]
        c = x_all.shape[-1]
        y = (x_all[:ready] + bias).view(-1, c)
        y.addmm_(a_all[:ready].reshape(-1, c), w0)
        y.addmm_(a_all[1 : ready + 1].reshape(-1, c), w1)
        y.addmm_(a_all[2 : ready + 2].reshape(-1, c), w2)
        return y.view(ready, *x_all.shape[1:])


class _FusedModel:
    """A CycleINR's weights refolded for inference (same function, fewer operations per query)."""

    def __init__(self, model: CycleINR, dtype: torch.dtype) -> None:
        c = model.config
        self.model, self.dtype = model, dtype
        self.channels, self.neighbours, self.heads = c.channels, c.neighbours, c.heads
        self.frequencies, self.residual = c.position_frequencies, c.residual
        self.attention = model.attention
        linears = [m for m in model.decoder.mlp if isinstance(m, nn.Linear)]
        first, last = linears[0], linears[-1]
        ch = c.channels
        w_codes, self.w_context = first.weight[:, :ch], first.weight[:, ch:]
        self.width = first.weight.shape[0]
        bias1 = first.bias
        if self.attention is not None:
            att = self.attention
            self.scale = (ch // c.heads) ** -0.5
            weights = [att.key.weight, att.value.weight, att.query.weight * self.scale, w_codes]
            biases = [att.key.bias, att.value.bias, att.query.bias * self.scale, torch.zeros_like(bias1)]
            self.merge = (w_codes @ att.out.weight).T.contiguous().to(dtype)  # (C, W): out layer into layer 1
            bias1 = bias1 + w_codes @ att.out.bias
            channel_head = torch.arange(ch, device=bias1.device) // (ch // c.heads)
            heads = torch.arange(c.heads, device=bias1.device)
            self.head_mask = channel_head[None, :] == heads[:, None]  # (H, C)
        else:
            weights, biases = [w_codes], [torch.zeros_like(bias1)]
        self.project_w = torch.cat(weights).T.contiguous().to(dtype)  # (C, F)
        self.project_b = torch.cat(biases).to(dtype)
        self.bias1 = bias1
        self.hidden = [(lin.weight.T.contiguous().to(dtype), lin.bias.to(dtype)) for lin in linears[1:-1]]
        self.last = (last.weight.T.contiguous().to(dtype), last.bias.to(dtype))

    def project(self, codes: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """(P, C) latent codes of one slice -> (P, F) per-code terms: [keys | values | queries | layer 1]."""
        return torch.addmm(self.project_b, codes.to(self.dtype), self.project_w, out=out)

    def slice_terms(self, frac: torch.Tensor, offsets: torch.Tensor, cell: torch.Tensor) -> dict:
        """What depends only on the output slice (never on the pixel), for an interval's Qf slices: frac (Qf,)
        their positions' fractional parts, offsets (Qf, K) from their neighbours."""
        context = torch.cat([sinusoidal(frac, self.frequencies), cell.expand(frac.shape)[:, None]], dim=-1)
        context_layer1 = context @ self.w_context.T + self.bias1  # (Qf, W)
        terms = {"layer1": context_layer1.to(self.dtype)}
        if self.attention is not None:
            att, mask = self.attention, self.head_mask.to(torch.float32)
            qf, k, h, ch = len(frac), self.neighbours, self.heads, self.channels
            qpos = att.query_position(frac, cell) * self.scale  # (Qf, C)
            kpos = att.key_position(offsets, cell)  # (Qf, K, C)
            vpos = att.value_position(offsets, cell)
            terms["qpos"] = qpos.to(self.dtype)
            # block-diagonal per head, so one matmul gives every head's dot product at once
            terms["qpos_heads"] = (qpos[:, None, :] * mask).reshape(qf * h, ch).T.contiguous().to(self.dtype)
            kpos_heads = (kpos[:, :, None, :] * mask).reshape(qf, k * h, ch)
            terms["kpos_heads"] = kpos_heads.transpose(1, 2).contiguous().to(self.dtype)
            vpos_heads = (vpos[:, :, None, :] * mask).reshape(qf, k * h, ch)
            # each head's softmax weights sum to 1, so adding layer 1's per-slice term / H to every row makes
            # the weights @ rows product deliver it too: one pass over (Qf, n, W) fewer per query chunk
            vpos_layer1 = vpos_heads @ self.merge.float() + context_layer1[:, None, :] / h
            terms["vpos_layer1"] = vpos_layer1.to(self.dtype)  # (Qf, K*H, W)
        return terms

    def decode(
        self,
        lower: torch.Tensor,
        upper: torch.Tensor,
        near: list[torch.Tensor],
        intensity_lower: torch.Tensor,
        intensity_upper: torch.Tensor,
        t: torch.Tensor,
        terms: dict[str, torch.Tensor],
    ) -> torch.Tensor:
        """Qf output slices of one interval over n pixels -> (Qf, n) float32.

        lower/upper: (n, F) per-code terms of the two slices the queries lie between; near: the K neighbours'.
        """
        qf, n = t.shape[0], lower.shape[0]
        ch, k, h = self.channels, self.neighbours, self.heads
        t3 = t.view(qf, 1, 1).to(self.dtype)
        if self.attention is None:
            layer1 = torch.lerp(lower[None], upper[None], t3).add_(terms["layer1"][:, None, :])  # (Qf, n, W)
        else:
            layer1 = torch.lerp(lower[None, :, 3 * ch :], upper[None, :, 3 * ch :], t3)
            d = ch // h
            a, b = lower[:, 2 * ch : 3 * ch], upper[:, 2 * ch : 3 * ch]
            keys = torch.stack([m[:, :ch] for m in near], dim=1)  # (n, K, C)
            values = torch.stack([m[:, ch : 2 * ch] for m in near], dim=1)
            # query . key = lerp(a . key, b . key) + qpos . key + query . kpos, per head
            ab_keys = (torch.stack([a, b])[:, :, None, :] * keys[None]).view(2, n, k, h, d).sum(-1)
            logits = torch.lerp(ab_keys[0], ab_keys[1], t.view(qf, 1, 1, 1).to(self.dtype))  # (Qf, n, K, H)
            key_qpos = keys.reshape(n * k, ch) @ terms["qpos_heads"]
            logits = logits + key_qpos.view(n, k, qf, h).permute(2, 0, 1, 3)
            query = torch.lerp(a[None], b[None], t3) + terms["qpos"][:, None, :]  # (Qf, n, C)
            logits = torch.baddbmm(logits.reshape(qf, n, k * h), query, terms["kpos_heads"])
            weights = torch.softmax(logits.view(qf, n, k, h), dim=2)
            values = values.reshape(n, k, h, d)
            attended = weights[:, :, 0, :, None] * values[None, :, 0]
            for j in range(1, k):
                attended.addcmul_(weights[:, :, j, :, None], values[None, :, j])
            layer1.view(qf * n, -1).addmm_(attended.view(qf * n, ch), self.merge)
            layer1.baddbmm_(weights.reshape(qf, n, k * h), terms["vpos_layer1"])  # + the layer-1 term
        x = layer1.relu_().view(qf * n, -1)
        for weight, bias in self.hidden:
            x = torch.addmm(bias, x, weight).relu_()
        out = torch.addmm(self.last[1], x, self.last[0]).view(qf, n).float()
        if self.residual:
            out += torch.lerp(intensity_lower[None], intensity_upper[None], t.view(qf, 1))
        return out


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


def _stream_plan(intervals: list[_Interval], n: int, slab: int, lag: int) -> list[tuple[int, int, int]]:
    """(feed_stop, first interval, stop interval) per encoder step: which intervals become decodable."""
    plan, i = [], 0
    for start in range(0, n, slab):
        stop = min(n, start + slab)
        ready = n if stop == n else max(0, stop - lag)  # latent slices [0, ready) are final
        i0 = i
        while i < len(intervals) and max(intervals[i].lower + 1, int(intervals[i].neighbours[-1])) < ready:
            i += 1
        plan.append((stop, i0, i))
    return plan


def _compute_dtype(device: torch.device, options: InferenceOptions) -> torch.dtype:
    if device.type == "cuda" and options.amp:
        return torch.bfloat16
    return torch.float32


Finish = Callable[[torch.Tensor], torch.Tensor]


def _fast_blocks(
    model: CycleINR,
    lr: np.ndarray,
    positions: np.ndarray,
    cell: float,
    device: torch.device,
    options: InferenceOptions,
    cancel: CancelCheck | None = None,
    finish: Finish | None = None,
) -> Iterator[Block]:
    n, h, w = lr.shape
    cfg = model.config
    dtype = _compute_dtype(device, options)
    fused = _FusedModel(model, dtype)
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
    decode = _compiled(fused.decode) if options.compile and device.type == "cuda" else fused.decode
    with torch.inference_mode():
        tiles = ((rows, cols) for rows in _balanced(h, options.tile) for cols in _balanced(w, options.tile))
        shared = (geometry, cell_t, intervals, plan, options, cancel)
        results = (item for tile in tiles for item in _tile_blocks(fused, decode, lr, tile, *shared))
        yield from _to_host(results, device, finish)


def _balanced(length: int, tile: int) -> list[slice]:
    """ceil(length / tile) near-equal parts: 512 px at tile 160 is 4 x 128, not 3 x 160 and a thin 32."""
    parts = math.ceil(length / tile)
    edges = [round(i * length / parts) for i in range(parts + 1)]
    return [slice(a, b) for a, b in zip(edges[:-1], edges[1:])]


def _compiled(function: Callable) -> Callable:
    """torch.compile where it works; the first failure falls back to eager for good."""
    try:
        compiled = torch.compile(function, dynamic=True)
    except Exception:  # noqa: BLE001 - an optional speed-up must never stop inference
        return function
    state = {"ok": True}

    def run(*args, **kwargs):
        if state["ok"]:
            try:
                return compiled(*args, **kwargs)
            except Exception:  # noqa: BLE001
                state["ok"] = False
        return function(*args, **kwargs)

    return run


def _to_host(
    results: Iterator[tuple[slice, slice, slice, torch.Tensor]], device: torch.device, finish: Finish | None
) -> Iterator[Block]:
    """Blocks on the host. On CUDA the copy of a block runs while the GPU computes the next one."""
    pending: tuple[Block, torch.cuda.Event] | None = None
    for out_slices, rows, cols, values in results:
        if finish is not None:
            values = finish(values)
        if device.type != "cuda":
            yield Block(out_slices, rows, cols, values.cpu().numpy())
            continue
        host = torch.empty(values.shape, dtype=values.dtype, pin_memory=True)
        host.copy_(values, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        if pending is not None:
            pending[1].synchronize()
            yield pending[0]
        pending = (Block(out_slices, rows, cols, host.numpy()), event)
    if pending is not None:
        pending[1].synchronize()
        yield pending[0]


def output_finisher(intensities: IntensityMap, dtype: np.dtype) -> Finish | None:
    """Denormalise, round and clip in torch, on the device, exactly as cast_like does in numpy; None for
    output types torch cannot hold."""
    dtype = np.dtype(dtype)
    torch_types = {
        np.dtype(np.int8): torch.int8,
        np.dtype(np.uint8): torch.uint8,
        np.dtype(np.int16): torch.int16,
        np.dtype(np.int32): torch.int32,
        np.dtype(np.float32): torch.float32,
        np.dtype(np.float64): torch.float64,
    }
    if dtype not in torch_types:
        return None
    scale, offset = float(np.float32(intensities.high - intensities.low)), float(np.float32(intensities.low))
    bounds = (int(np.iinfo(dtype).min), int(np.iinfo(dtype).max)) if dtype.kind in "iu" else None

    def finish(values: torch.Tensor) -> torch.Tensor:
        out = values.float() * scale + offset
        if bounds is not None:
            out = out.round_().clamp_(*bounds)
        return out.to(torch_types[dtype])

    return finish


def _tile_blocks(
    fused: _FusedModel,
    decode: Callable,
    lr: np.ndarray,
    tile: tuple[slice, slice],
    geometry: dict[str, torch.Tensor],
    cell: torch.Tensor,
    intervals: list[_Interval],
    plan: list[tuple[int, int, int]],
    options: InferenceOptions,
    cancel: CancelCheck | None,
) -> Iterator[tuple[slice, slice, slice, torch.Tensor]]:
    """Stream one in-plane tile through the encoder along z and decode each interval once it can be.

    The per-slice terms are recomputed per tile (well under a millisecond per interval) rather than kept for
    the whole scan, so that nothing held grows with the number of slices.
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
    encoder = _StreamingEncoder(fused.model.encoder, fused.dtype)
    capacity = _window_capacity(intervals, plan, n, fused.model.config.blocks)
    codes = _Window(fused, pixels, capacity, device)
    intensity: dict[int, torch.Tensor] = {}
    fed = ready = 0
    for stop, i0, i1 in plan:
        raise_if_cancelled(cancel)
        chunk = _to_device(lr[fed:stop, ylo:yhi, xlo:xhi], device)
        latent = encoder.push(chunk, final=stop == len(lr))
        fed = stop
        if latent.shape[0]:
            planes = _to_device(lr[ready : ready + latent.shape[0], rows, cols], device).view(-1, pixels)
            for s in range(latent.shape[0]):
                codes.put(ready + s, latent[s, inner_rows, inner_cols].reshape(pixels, -1))
                intensity[ready + s] = planes[s]
            ready += latent.shape[0]
        if i1 == i0:
            continue
        j0, j1 = intervals[i0].j0, intervals[i1 - 1].j1
        out = torch.empty((j1 - j0, pixels), dtype=torch.float32, device=device)
        for i in range(i0, i1):
            iv = intervals[i]
            j = slice(iv.j0, iv.j1)
            term = fused.slice_terms(geometry["frac"][j], geometry["offsets"][j], cell)
            t = geometry["t"][j]
            near = [codes[int(z)] for z in iv.neighbours]
            lower, upper = codes[iv.lower], codes[iv.lower + 1]
            step = max(1, queries // len(iv.t))
            below, above = intensity[iv.lower], intensity[iv.lower + 1]
            for p0 in range(0, pixels, step):
                raise_if_cancelled(cancel)
                p = slice(p0, min(pixels, p0 + step))
                values = decode(lower[p], upper[p], [m[p] for m in near], below[p], above[p], t, term)
                out[iv.j0 - j0 : iv.j1 - j0, p] = values
        following = intervals[i1] if i1 < len(intervals) else None
        keep = min(following.lower, int(following.neighbours[0])) if following is not None else ready
        codes.drop_below(keep)
        for z in [z for z in intensity if z < keep]:
            del intensity[z]
        yield slice(j0, j1), rows, cols, out.view(j1 - j0, rows.stop - rows.start, cols.stop - cols.start)
    del encoder, codes, intensity
    _release_freed_memory()


def _release_freed_memory() -> None:
    """Hand freed heap memory back to the OS (glibc keeps it otherwise, and RSS would only ever grow)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class _Window:
    """The projected codes of the latent slices still needed, in one buffer allocated per tile and reused
    slot by slot, so the memory of a tile is that of a few slices whatever the length of the scan (and the
    heap does not fragment around many short-lived slice-sized blocks)."""

    def __init__(self, fused: _FusedModel, pixels: int, capacity: int, device: torch.device) -> None:
        self.fused = fused
        features = fused.project_w.shape[1]
        self.buffer = torch.empty((capacity, pixels, features), dtype=fused.dtype, device=device)
        self.slots: dict[int, int] = {}
        self.free = list(range(capacity - 1, -1, -1))

    def put(self, z: int, codes: torch.Tensor) -> None:
        slot = self.free.pop()
        self.slots[z] = slot
        self.fused.project(codes, out=self.buffer[slot])

    def __getitem__(self, z: int) -> torch.Tensor:
        return self.buffer[self.slots[z]]

    def drop_below(self, keep: int) -> None:
        for z in [z for z in self.slots if z < keep]:
            self.free.append(self.slots.pop(z))


def _window_capacity(intervals: list[_Interval], plan: list[tuple[int, int, int]], n: int, lag: int) -> int:
    """The most latent slices a tile holds at once, replaying the stream plan."""
    keep = most = 0
    for stop, i0, i1 in plan:
        ready = n if stop == n else max(0, stop - lag)
        most = max(most, ready - keep)
        if i1 > i0:
            following = intervals[i1] if i1 < len(intervals) else None
            keep = min(following.lower, int(following.neighbours[0])) if following is not None else ready
    return max(most, 1)


def _to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor


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
    finish: Finish | None = None,
) -> Iterator[Block]:
    """Blocks of normalised output for any method; positions in input-slice units, sorted.

    On the CPU each block is computed with choose_threads(options.threads) torch threads; the caller's own
    setting is back in force whenever the generator is paused.
    """
    if method not in METHODS:
        raise CycleINRError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
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
        blocks = cycleinr_blocks(model, lr, positions, cell, device, options, cancel, finish)
    threads = choose_threads(options.threads) if device.type == "cpu" and method != "tricubic" else 0
    return _with_threads(blocks, threads)


def _with_threads(blocks: Iterator[Block], threads: int) -> Iterator[Block]:
    """Each step of a block generator with `threads` torch threads (0: leave), the caller's in between."""
    while True:
        with torch_threads(threads):
            block = next(blocks, None)
        if block is None:
            return
        yield block


def mirrored_blocks(method: str, lr: np.ndarray, positions: np.ndarray, cell: float, **kwargs) -> Iterator[Block]:
    """method_blocks on the input reversed along z, mapped back onto the unreversed output grid.

    The second pass of the z self-ensemble: the model is not symmetric in z (its attention and decoder see
    signed offsets), so its answer on the mirrored scan is a second, slightly different estimate, and the
    mean of the two has less error and smoother noise than either (docs/method.md, "Self-ensemble along z").
    """
    n_in, n_out = len(lr), len(positions)
    mirrored = (n_in - 1) - positions[::-1]
    # a copy, not a view: torch refuses the negative strides of a reversed one-slice chunk
    source = lr.reversed_z() if isinstance(lr, _Normalised) else np.ascontiguousarray(lr[::-1])
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


def check_ensemble(method: str, ensemble: bool) -> None:
    if ensemble and method != "cycleinr":
        raise CycleINRError(
            f"the z self-ensemble is for the cycleinr method; {method} gives the same answer on a reversed scan"
        )


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
    ensemble: bool = False,
) -> Volume:
    """Super-resolve z on the cell-centred grid for a factor or a target spacing (mm).

    Integer input stays integer (rounded and clipped) unless keep_dtype is False. `out` may be a preallocated
    (or memory-mapped) array of the output shape; progress(done, total) is called after each block; cancel()
    returning True raises Cancelled and leaves no result. ensemble (cycleinr only): a second pass on the
    input reversed along z, averaged with the first (twice the time; see mirrored_blocks).
    """
    if method not in METHODS:
        raise CycleINRError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    check_ensemble(method, ensemble)
    check_volume(volume)
    grid: ZGrid = z_grid(volume.shape[0], volume.spacing[0], factor=factor, spacing=spacing)
    torch_device = resolve_device(device)
    if method == "cycleinr":
        if model is None:
            from napari_cycleinr.model.checkpoint import load_model

            model = load_model(None, torch_device)
        model = model.to(torch_device).eval()
    intensities = intensity_map(volume.data, modality)
    options = options or InferenceOptions.for_device(torch_device)
    fast = method == "cycleinr" and uses_fast_path(model, options)
    # the fast path reads the input a slab at a time, so it is normalised on demand rather than copied whole
    lr = _Normalised(volume.data, intensities) if fast else intensities.normalise(volume.data)
    out_dtype = volume.data.dtype if keep_dtype else np.dtype(np.float32)
    shape = (grid.n_out, *volume.shape[1:])
    if out is None:
        out = np.empty(shape, dtype=out_dtype)
    elif out.shape != shape:
        raise CycleINRError(f"the output array has shape {out.shape}, expected {shape}")
    finish = output_finisher(intensities, out.dtype) if fast else None
    passes = 2 if ensemble else 1
    total = _count_blocks(method, grid, volume.shape, model, options) * passes
    threads = choose_threads(options.threads) if torch_device.type == "cpu" and method != "tricubic" else 0
    started = time.perf_counter()
    # method_blocks computes each block with `threads` torch threads
    arguments = (method, lr, grid.positions(), 1.0 / grid.factor)
    settings = {"model": model, "device": torch_device, "options": options, "cancel": cancel}
    blocks = ((False, block) for block in method_blocks(*arguments, finish=finish, **settings))
    if ensemble:  # the second pass is averaged in the output's units with what the first one wrote
        blocks = itertools.chain(blocks, ((True, block) for block in mirrored_blocks(*arguments, **settings)))
    for done, (second_pass, block) in enumerate(blocks, start=1):
        where = (block.out_slices, block.rows, block.cols)
        if second_pass:
            values = cast_like((out[where] + intensities.denormalise(block.values)) / 2, out.dtype)
        elif finish is None:
            values = cast_like(intensities.denormalise(block.values), out.dtype)
        else:
            values = block.values
        out[where] = values
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
    if ensemble:
        record["ensemble"] = "z mirror, 2 passes"
    if threads:
        record["threads"] = threads
    if method == "cycleinr":
        record["model"] = getattr(model, "source", "in-memory model")
    metadata = dict(volume.metadata)
    metadata["super_resolution"] = record
    return Volume(out, resampled_z_affine(volume.affine, grid.z_ratio), volume.file_axes, metadata)


class _Normalised:
    """A volume's normalised intensities, computed slab by slab when indexed."""

    def __init__(self, data: np.ndarray, intensities: IntensityMap) -> None:
        self.data, self.intensities, self.shape = data, intensities, data.shape

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key) -> np.ndarray:
        return self.intensities.normalise(self.data[key])

    def reversed_z(self) -> _Normalised:
        return _Normalised(self.data[::-1], self.intensities)


def _count_blocks(
    method: str, grid: ZGrid, shape: tuple[int, int, int], model: CycleINR | None, options: InferenceOptions
) -> int:
    """How many blocks a method will yield, for an honest progress bar."""
    if method != "cycleinr":
        return math.ceil(grid.n_out / slices_per_block(shape))
    tiles = math.ceil(shape[1] / options.tile) * math.ceil(shape[2] / options.tile)
    assert model is not None
    if options.fast and _is_standard(model):
        intervals = _intervals(grid.positions(), grid.n_in, model.config.neighbours)
        plan = _stream_plan(intervals, grid.n_in, options.slab, model.config.blocks)
        return sum(1 for _, i0, i1 in plan if i1 > i0) * tiles
    return len(owner_ranges(grid.positions(), grid.n_in, options.slab)) * tiles
