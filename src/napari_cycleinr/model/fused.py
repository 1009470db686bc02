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


def is_standard(model: CycleINR) -> bool:
    """The fast path knows this architecture; anything else takes the generic path."""
    blocks = model.encoder.body
    encoder_ok = type(model.encoder) is Encoder and all(type(b) is SeparableResidualBlock for b in blocks)
    attention_ok = model.attention is None or type(model.attention) is LocalAttention
    return encoder_ok and attention_ok and type(model.decoder) is ImplicitDecoder


class StreamingEncoder:
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
