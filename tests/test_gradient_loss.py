"""The loss on neighbouring-slice differences (an experiment against lines at the slab period)."""

import math

import pytest
import torch

from napari_cycleinr.errors import CycleINRError
from napari_cycleinr.model.losses import z_gradient_loss
from napari_cycleinr.model.train_config import TrainConfig


def test_an_offset_along_z_costs_nothing_and_a_jump_costs_its_size():
    target = torch.linspace(0, 1, 40).reshape(1, 2, 20)
    assert z_gradient_loss(target + 0.3, target).item() == pytest.approx(0.0, abs=1e-7)
    jumped = target.clone()
    jumped[..., 10:] += 0.5
    assert z_gradient_loss(jumped, target).item() == pytest.approx(0.5 / 19, rel=1e-5)


def test_a_step_and_a_ramp_cost_the_same_which_is_why_it_barely_helped():
    """docs/method.md: an L1 on differences does not prefer spreading a change over a slab."""
    flat = torch.zeros(1, 1, 10)
    step = flat.clone()
    step[..., 5:] = 1.0
    ramp = torch.clamp((torch.arange(10.0) - 2.5) / 5.0, 0, 1).reshape(1, 1, 10)
    assert z_gradient_loss(step, flat).item() == pytest.approx(z_gradient_loss(ramp, flat).item(), rel=1e-5)


@pytest.mark.parametrize("weight", [-0.1, math.nan, math.inf])
def test_the_weight_is_checked(weight):
    with pytest.raises(CycleINRError, match="gradient_weight"):
        TrainConfig(gradient_weight=weight)
