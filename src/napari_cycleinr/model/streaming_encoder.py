"""The (2+1)D encoder fed chunk by chunk along z, for the fast path (model/fast_path.py).

Block b's output at slice z needs its through-plane input at z-1, z, z+1 (zeros beyond the volume), so it
lags one slice; after feeding slices [0, e) the latent slices [0, e - blocks) are final. Every input voxel is
encoded once, with no z halo to recompute, and memory holds a few slices, never the scan.

Tensors are kept channels-last, (S, H, W, C): the in-plane convolutions run as 2D convolutions over a batch
of S slices (with the ReLU fused in, where oneDNN offers it) and the through-plane ones as three matrix
products per contiguous run of slices, so the slices a block carries over from the previous chunk are never
concatenated with the new ones (those copies took a fifth of the encoder's time).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from napari_cycleinr.model.encoder import Encoder

InplaneConv = tuple[torch.Tensor, torch.Tensor, int]
"""weight (Cout, Cin, 3, 3), bias, dilation."""


def _plain_conv(x: torch.Tensor, conv: InplaneConv, relu: bool) -> torch.Tensor:
    weight, bias, dilation = conv
    y = F.conv2d(x, weight, bias, padding=dilation, dilation=dilation)
    return y.relu_() if relu else y


def _fused_conv(x: torch.Tensor, conv: InplaneConv, relu: bool) -> torch.Tensor:
    """oneDNN's convolution with the ReLU applied in the same pass (a quarter faster than two passes)."""
    weight, bias, dilation = conv
    pad = [dilation, dilation]
    return torch.ops.mkldnn._convolution_pointwise(x, weight, bias, pad, [1, 1], pad, 1, "relu" if relu else "none", [], "")


@functools.cache
def _fused_conv_agrees(dtype: torch.dtype) -> bool:
    """Whether this torch build has oneDNN's fused convolution and it agrees with the plain one (checked once
    per dtype on a small random convolution, not per tile)."""
    if not torch.backends.mkldnn.is_available():
        return False
    generator = torch.Generator().manual_seed(0)
    conv = ((torch.randn(8, 8, 3, 3, generator=generator) * 0.1).to(dtype), torch.zeros(8, dtype=dtype), 2)
    probe = torch.randn(1, 8, 6, 6, generator=generator).to(dtype).contiguous(memory_format=torch.channels_last)
    try:
        fused, plain = _fused_conv(probe, conv, True), _plain_conv(probe, conv, True)
    except (RuntimeError, AttributeError, NotImplementedError):
        return False
    return fused.shape == plain.shape and torch.allclose(fused.float(), plain.float(), atol=1e-2, rtol=1e-2)


class StreamingEncoder:
    def __init__(self, encoder: Encoder, dtype: torch.dtype = torch.float32) -> None:
        def inplane(conv: nn.Conv3d) -> InplaneConv:
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
        on_cpu = self.head[0].device.type == "cpu"
        self.conv = _fused_conv if on_cpu and _fused_conv_agrees(dtype) else _plain_conv
        self.a_buffer: list[torch.Tensor | None] = [None] * len(blocks)
        self.x_buffer: list[torch.Tensor | None] = [None] * len(blocks)

    def _inplane(self, x: torch.Tensor, conv: InplaneConv, relu: bool) -> torch.Tensor:
        """(S, H, W, Cin) -> (S, H, W, Cout): a (dilated) 3x3 convolution of every slice."""
        y = self.conv(x.permute(0, 3, 1, 2), conv, relu)
        return y.permute(0, 2, 3, 1).contiguous()

    def push(self, chunk: torch.Tensor, final: bool) -> torch.Tensor:
        """chunk (S, H, W) -> the newly final latent slices (S', H, W, C), in the encoder's dtype."""
        y = self._inplane(chunk[..., None].to(self.dtype), self.head, relu=False)
        for i in range(len(self.inplane)):
            y = self._block(i, y, final)
        return y

    def _block(self, i: int, x: torch.Tensor, final: bool) -> torch.Tensor:
        previous_a, previous_x = self.a_buffer[i], self.x_buffer[i]
        if x.shape[0] == 0 and (not final or previous_a is None):
            return x
        a = self._inplane(x, self.inplane[i], relu=True) if x.shape[0] else None
        # the through-plane input, in order: what the last chunk left (or the zero slice before the volume),
        # this chunk's, and the zero slice after the volume; None stands for zeros
        a_parts: list[tuple[torch.Tensor | None, int]] = [
            (previous_a, previous_a.shape[0]) if previous_a is not None else (None, 1)
        ]
        if a is not None:
            a_parts.append((a, a.shape[0]))
        if final:
            a_parts.append((None, 1))
        x_parts = [p for p in (previous_x, x) if p is not None and p.shape[0]]
        length = sum(n for _, n in a_parts)
        ready = length - 2
        zero = (a if a is not None else previous_a)[:1]
        self.a_buffer[i] = _tail(a_parts, min(2, length), zero)
        self.x_buffer[i] = _tail([(p, p.shape[0]) for p in x_parts], sum(p.shape[0] for p in x_parts) - max(ready, 0), x)
        if ready <= 0:
            return x[:0]
        return self._through_plane(i, a_parts, x_parts, ready)

    def _through_plane(self, i: int, a_parts, x_parts: list[torch.Tensor], ready: int) -> torch.Tensor:
        """y[r] = x[r] + bias + sum_k a[r + k] @ w_k, run by run of contiguous slices."""
        (w0, w1, w2), bias = self.through[i]
        first = x_parts[0]
        c = first.shape[-1]
        y = torch.empty((ready, *first.shape[1:]), dtype=first.dtype, device=first.device)
        row = 0
        for part in x_parts:
            take = min(part.shape[0], ready - row)
            if take > 0:
                torch.add(part[:take], bias, out=y[row : row + take])
            row += take
        for k, weight in enumerate((w0, w1, w2)):
            start = 0
            for part, length in a_parts:
                r0, r1 = max(0, start - k), min(ready, start + length - k)
                if part is not None and r1 > r0:
                    source = part[r0 + k - start : r1 + k - start]
                    y[r0:r1].view(-1, c).addmm_(source.reshape(-1, c), weight)
                start += length
        return y


def _tail(parts: list[tuple[torch.Tensor | None, int]], count: int, like: torch.Tensor) -> torch.Tensor:
    """The last `count` slices of the parts laid end to end (None: zero slices shaped like `like`'s), as a new
    tensor, so that the chunk itself can be freed."""
    pieces, need = [], max(count, 0)
    for part, length in reversed(parts):
        if need <= 0:
            break
        take = min(need, length)
        pieces.insert(0, torch.zeros_like(like[:1]).expand(take, *like.shape[1:]) if part is None else part[length - take :])
        need -= take
    if not pieces:
        return like[:0].clone()
    return torch.cat(pieces) if len(pieces) > 1 else pieces[0].clone()
