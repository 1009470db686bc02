"""The optimiser, its learning-rate schedule and one optimisation step: shared by training (model/train.py)
and adapting to a scan (model/adapt.py), so the two cannot drift apart."""

from __future__ import annotations

import math
from typing import Callable

import torch

from napari_cycleinr.model.cycleinr import CycleINR
from napari_cycleinr.model.train_config import TrainConfig

WEIGHT_DECAY = 1e-4


def cosine_decay(progress: float) -> float:
    """The schedule's factor on the learning rate: 1 at the start, 5 % once progress reaches 1."""
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def make_optimizer(model: CycleINR, config: TrainConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=WEIGHT_DECAY)


def optimizer_step(
    model: CycleINR, optimizer: torch.optim.Optimizer, rate: float, losses: Callable[[], tuple]
) -> tuple:
    """One step at learning rate `rate`: losses() -> (loss, fit, cycle), the loss's gradient clipped to norm 1,
    AdamW. Returns what losses() returned."""
    for group in optimizer.param_groups:
        group["lr"] = rate
    loss, fit, cycle = losses()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    return loss, fit, cycle
