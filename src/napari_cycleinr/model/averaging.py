"""An exponential moving average of the weights during training (the model that is validated and kept).

Small batches of random crops make every step's weights a noisy sample of where training is heading: the
validation PSNR of consecutive checkpoints jumps by +-0.15 dB. Averaging the weights over the last few hundred
steps removes most of that noise at no cost at inference (docs/method.md, "Weight averaging"; docs/model.md,
stage 5).
"""

from __future__ import annotations

import copy

import torch

from napari_cycleinr.model.cycleinr import CycleINR


class WeightAverage:
    """average <- decay * average + (1 - decay) * weights after every optimiser step, started at the weights.

    The first steps use min(decay, (1 + n) / (10 + n)) so the starting weights are forgotten quickly when
    training starts from scratch; from a checkpoint they are a good start either way.
    """

    def __init__(self, model: CycleINR, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError("the weight-average decay must lie strictly between 0 and 1")
        self.decay = decay
        self.updates = 0
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: CycleINR) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        averaged = list(self.model.state_dict().values())
        current = list(model.state_dict().values())
        floating = [(a, c) for a, c in zip(averaged, current, strict=True) if a.is_floating_point()]
        torch._foreach_lerp_([a for a, _ in floating], [c.detach() for _, c in floating], 1.0 - decay)

    def state_dict(self) -> dict:
        """Tensors and numbers only, so the resume state loads with torch.load(weights_only=True)."""
        return {"updates": self.updates, "weights": self.model.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.updates = int(state["updates"])
        self.model.load_state_dict(state["weights"])
