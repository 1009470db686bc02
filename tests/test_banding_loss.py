"""The loss on slab-period banding (issue #21): evenness across slab borders against inside slabs."""

import json
import math

import pytest
import torch

from napari_cycleinr.errors import CycleINRError
from napari_cycleinr.model.checkpoint import load_model
from napari_cycleinr.model.losses import banding_loss
from napari_cycleinr.model.metrics import slab_border_pairs
from napari_cycleinr.model.train import train
from napari_cycleinr.model.train_config import TrainConfig
from tests.conftest import CT_HEAD

BORDER = torch.from_numpy(slab_border_pairs(20, 5.0))  # 4 slabs of 5 thin slices


def _ramp() -> torch.Tensor:
    return torch.linspace(0, 1, 20).reshape(1, 1, 20)


def test_an_output_evenly_smoother_than_the_truth_pays_nothing():
    target = _ramp() + 0.05 * torch.randn(1, 8, 20, generator=torch.Generator().manual_seed(0))
    assert banding_loss(0.5 * target, target, BORDER).item() == pytest.approx(0.0, abs=1e-6)
    assert banding_loss(target + 3.0, target, BORDER).item() == pytest.approx(0.0, abs=1e-6)


def test_a_staircase_at_the_slab_period_pays_and_the_ramp_does_not():
    """Flat inside each slab and steep at its border: the lines at the slab period."""
    target = _ramp()
    staircase = target.reshape(1, 1, 4, 5).mean(dim=-1, keepdim=True).expand(1, 1, 4, 5).reshape(1, 1, 20)
    assert banding_loss(staircase, target, BORDER).item() > 2.0  # log of a large ratio: inside keeps ~nothing
    assert banding_loss(target, target, BORDER).item() == pytest.approx(0.0, abs=1e-6)
    half = target + 0.5 * (staircase - target)  # halfway to the staircase pays, less
    assert 0.1 < banding_loss(half, target, BORDER).item() < banding_loss(staircase, target, BORDER).item()


def test_it_has_a_gradient_that_evens_the_slabs():
    target = _ramp()
    staircase = target.reshape(1, 1, 4, 5).mean(dim=-1, keepdim=True).expand(1, 1, 4, 5).reshape(1, 1, 20)
    prediction = (0.8 * staircase + 0.2 * target).clone().requires_grad_(True)
    before = banding_loss(prediction, target, BORDER)
    before.backward()
    stepped = (prediction - 0.01 * prediction.grad).detach()
    assert banding_loss(stepped, target, BORDER).item() < before.item()


@pytest.mark.parametrize("weight", [-0.1, math.nan, math.inf])
def test_the_weight_is_checked(weight):
    with pytest.raises(CycleINRError, match="banding_weight"):
        TrainConfig(banding_weight=weight)


def test_fine_tuning_with_it_changes_the_weights_and_records_it(tmp_path, tiny_checkpoint):
    config = TrainConfig(
        steps=3, init=str(tiny_checkpoint), banding_weight=0.5, train_data=(str(CT_HEAD),), batch=2,
        thick_slices=4, crop=32, query_pixels=256, scale_min=3.0, scale_max=4.0, validation_every=3,
        checkpoint_every=3, log_every=1, warmup_steps=1, learning_rate=3e-3, threads=2,
    )
    train(config, tmp_path / "ft", device="cpu", log=lambda s: None)
    start, tuned = load_model(tiny_checkpoint), load_model(tmp_path / "ft" / "last.safetensors")
    assert any(not torch.equal(a, b) for a, b in zip(start.state_dict().values(), tuned.state_dict().values()))
    assert all(torch.isfinite(v).all() for v in tuned.state_dict().values())
    assert json.loads((tmp_path / "ft" / "train_config.json").read_text())["banding_weight"] == 0.5
