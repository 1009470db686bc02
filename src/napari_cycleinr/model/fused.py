"""The standard CycleINR refolded for inference: the same function as `CycleINR.encode` + `decode`, fewer
operations per query. Used by the fast path (model/fast_path.py); tests/test_fast_inference.py checks it
against the model's own forward pass.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from napari_cycleinr.model.cycleinr import CycleINR
from napari_cycleinr.model.decoder import ImplicitDecoder
from napari_cycleinr.model.encoder import Encoder, SeparableResidualBlock
from napari_cycleinr.model.lam import LocalAttention
from napari_cycleinr.model.position import sinusoidal


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


def _augmented(weight: torch.Tensor, bias: torch.Tensor, keep_one: bool) -> torch.Tensor:
    """(In, Out) weight and its bias -> (In + 1, Out [+ 1]) for inputs whose last column is 1: the bias is the
    last row; keep_one adds an output column that is 1 again (ReLU keeps it), for the next layer's bias."""
    rows = torch.cat([weight, bias[None, :]])
    if keep_one:
        one = torch.zeros((rows.shape[0], 1), dtype=rows.dtype, device=rows.device)
        one[-1] = 1
        rows = torch.cat([rows, one], dim=1)
    return rows.contiguous()


def is_standard(model: CycleINR) -> bool:
    """The fast path knows this architecture; anything else takes the generic path."""
    blocks = model.encoder.body
    encoder_ok = type(model.encoder) is Encoder and all(type(b) is SeparableResidualBlock for b in blocks)
    attention_ok = model.attention is None or type(model.attention) is LocalAttention
    return encoder_ok and attention_ok and type(model.decoder) is ImplicitDecoder


class FusedModel:
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
            # sums over a head's channels, and a head's value spread over its channels, as matrix products:
            # torch's reductions and broadcasts over 8-wide innermost axes were 1.5x slower
            self.head_sum = self.head_mask.T.to(dtype).contiguous()  # (C, H)
            self.head_spread = self.head_mask.to(dtype).contiguous()  # (H, C)
        else:
            weights, biases = [w_codes], [torch.zeros_like(bias1)]
        # Biases ride as one more input row against a constant-1 input column (see _augmented): a matrix
        # product with a bias first copies the bias into every output row, which cost more than the product.
        # Each part of the projection is its own contiguous tensor: strided slices of one wide projection
        # made every elementwise operation of the decoder several times slower.
        self.parts = [_augmented(w.T, b, keep_one=w is w_codes).to(dtype) for w, b in zip(weights, biases)]
        self.bias1 = bias1
        if self.attention is not None:
            self.merge = F.pad(self.merge, (0, 1))  # nothing into layer 1's constant column
        self.hidden = [_augmented(lin.weight.T, lin.bias, keep_one=True).to(dtype) for lin in linears[1:-1]]
        self.last = _augmented(last.weight.T, last.bias, keep_one=False).to(dtype)

    @property
    def part_widths(self) -> list[int]:
        return [w.shape[1] for w in self.parts]

    def project(self, codes: torch.Tensor, out: list[torch.Tensor] | None = None) -> list[torch.Tensor]:
        """(P, C + 1) latent codes of one slice, a last column of ones appended (see augment) -> the per-code
        terms [keys, values, queries, layer 1] (attention) or [layer 1], each (P, width); layer 1 carries
        the constant-1 column on to the hidden layers."""
        targets = out or [None] * len(self.parts)
        return [torch.mm(codes, w, out=o) for w, o in zip(self.parts, targets)]

    def augment(self, codes: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """(..., C) codes of any dtype and strides (an in-plane crop of a latent slice) -> (P, C + 1) in the
        compute dtype, last column 1, in one copy."""
        pixels = codes.numel() // codes.shape[-1]
        if out is None:
            out = torch.empty((pixels, codes.shape[-1] + 1), dtype=self.dtype, device=codes.device)
        out.view(*codes.shape[:-1], -1)[..., :-1].copy_(codes)
        out[:, -1] = 1
        return out

    def slice_terms(self, frac: torch.Tensor, offsets: torch.Tensor, cell: torch.Tensor) -> dict:
        """What depends only on the output slice (never on the pixel), for an interval's Qf slices: frac (Qf,)
        their positions' fractional parts, offsets (Qf, K) from their neighbours."""
        context = torch.cat([sinusoidal(frac, self.frequencies), cell.expand(frac.shape)[:, None]], dim=-1)
        context_layer1 = F.pad(context @ self.w_context.T + self.bias1, (0, 1))  # (Qf, W + 1): 0 for the 1s
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

        lower/upper: per-code terms (see project) of the two slices the queries lie between; near: the K
        neighbours'.
        """
        qf, n = t.shape[0], lower[0].shape[0]
        ch, k, h = self.channels, self.neighbours, self.heads
        t3 = t.view(qf, 1, 1).to(self.dtype)
        layer1 = torch.lerp(lower[-1][None], upper[-1][None], t3)  # (Qf, n, W)
        if self.attention is None:
            layer1.add_(terms["layer1"][:, None, :])
        else:
            d = ch // h
            a, b = lower[2], upper[2]
            keys = torch.stack([m[0] for m in near], dim=1)  # (n, K, C)
            # query . key = lerp(a . key, b . key) + qpos . key + query . kpos, per head
            ab_keys = ((torch.stack([a, b])[:, :, None, :] * keys[None]).view(-1, ch) @ self.head_sum).view(2, n, k, h)
            logits = torch.lerp(ab_keys[0], ab_keys[1], t.view(qf, 1, 1, 1).to(self.dtype))  # (Qf, n, K, H)
            key_qpos = keys.view(n * k, ch) @ terms["qpos_heads"]
            logits += key_qpos.view(n, k, qf, h).permute(2, 0, 1, 3)
            query = torch.lerp(a[None], b[None], t3).add_(terms["qpos"][:, None, :])  # (Qf, n, C)
            logits = torch.baddbmm(logits.view(qf, n, k * h), query, terms["kpos_heads"])
            weights = torch.softmax(logits.view(qf, n, k, h), dim=2)
            spread = (weights.view(-1, h) @ self.head_spread).view(qf, n, k, ch)  # each head's weight per channel
            attended = spread[:, :, 0] * near[0][1]
            for j in range(1, k):
                attended.addcmul_(spread[:, :, j], near[j][1])
            layer1.view(qf * n, -1).addmm_(attended.view(qf * n, ch), self.merge)
            layer1.baddbmm_(weights.view(qf, n, k * h), terms["vpos_layer1"])  # + the layer-1 term
        x = layer1.relu_().view(qf * n, -1)
        for weight in self.hidden:
            x = torch.mm(x, weight).relu_()
        out = torch.mm(x, self.last).view(qf, n).float()
        if self.residual:
            out += torch.lerp(intensity_lower[None], intensity_upper[None], t.view(qf, 1))
        return out
