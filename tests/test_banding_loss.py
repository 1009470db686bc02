"""The loss on slab-period banding (issue #21): evenness across slab borders against inside slabs."""

import json
import math
from types import SimpleNamespace

import pytest
import torch

from napari_cycleinr.errors import CycleINRError
from napari_cycleinr.model.checkpoint import load_model
from napari_cycleinr.model.losses import banding_loss, even_change_loss
from napari_cycleinr.model.metrics import slab_border_pairs, slab_pair_classes
from napari_cycleinr.model.train import _banding_term, train
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


def test_the_pairs_are_classed_by_their_place_in_the_slab_pattern():
    # x4, 5 slabs: the first and last pairs lie beyond the end centres, the pairs straddling a centre are 2
    assert slab_pair_classes(20, 4).tolist() == [3, 2, 1, 0, 1, 2, 1, 0, 1, 2, 1, 0, 1, 2, 1, 0, 1, 2, 3]
    assert (slab_pair_classes(20, 4) == 0).tolist() == slab_border_pairs(20, 4).tolist()


def test_the_even_change_loss_sees_a_dip_at_the_acquired_centres_that_border_against_inside_misses():
    """Interpolation through noisy samples changes least around them: the dip hides in the inside mean."""
    target = torch.randn(1, 64, 20, generator=torch.Generator().manual_seed(1))
    classes = torch.from_numpy(slab_pair_classes(20, 4))
    steps = target.diff(dim=-1)
    weights = torch.ones(19)
    weights[classes == 2], weights[classes == 1] = 0.4, 1.25  # less change at the centres, more near borders
    dipped = torch.cat([target[..., :1], target[..., :1] + (steps * weights).cumsum(-1)], dim=-1)
    border = torch.from_numpy(slab_border_pairs(20, 4))
    assert banding_loss(dipped, target, border).item() < 0.1  # inside as a whole kept about as much
    assert even_change_loss(dipped, target, classes).item() > 0.25
    assert even_change_loss(0.5 * target + 1.0, target, classes).item() == pytest.approx(0.0, abs=1e-6)
    prediction = dipped.clone().requires_grad_(True)
    before = even_change_loss(prediction, target, classes)
    before.backward()
    assert even_change_loss((prediction - 0.05 * prediction.grad).detach(), target, classes) < before


def test_the_ends_option_also_pays_for_a_flat_extrapolation_beyond_the_end_centres():
    target = _ramp() + 0.05 * torch.randn(1, 8, 20, generator=torch.Generator().manual_seed(2))
    pair = SimpleNamespace(ratio=5.0, thick=torch.zeros(1, 4, 1, 1))  # 4 slabs of 5 thin slices
    ends = torch.from_numpy(slab_pair_classes(20, 5.0, 4) == 3)
    flat_ends = target.clone()
    flat_ends[..., :3] = flat_ends[..., 2:3]  # the first half slab held at the outermost centre's value
    flat_ends[..., 17:] = flat_ends[..., 17:18]
    assert ends[:2].all() and ends[-2:].all() and not ends[2:-2].any()
    assert _banding_term(target, target, pair, "ends").item() == pytest.approx(0.0, abs=1e-6)
    border_only = _banding_term(flat_ends, target, pair, "border").item()
    assert _banding_term(flat_ends, target, pair, "ends").item() > border_only + 1.0


def test_the_classes_are_a_checked_choice():
    with pytest.raises(CycleINRError, match="banding_classes"):
        TrainConfig(banding_classes="everything")


@pytest.mark.parametrize("weight", [-0.1, math.nan, math.inf])
def test_the_weight_is_checked(weight):
    with pytest.raises(CycleINRError, match="banding_weight"):
        TrainConfig(banding_weight=weight)


def test_fine_tuning_with_it_changes_the_weights_and_records_it(tmp_path, tiny_checkpoint):
    config = TrainConfig(
        steps=3, init=str(tiny_checkpoint), banding_weight=0.5, banding_classes="phase",
        train_data=(str(CT_HEAD),), batch=2,
        thick_slices=4, crop=32, query_pixels=256, scale_min=3.0, scale_max=4.0, validation_every=3,
        checkpoint_every=3, log_every=1, warmup_steps=1, learning_rate=3e-3, threads=2,
    )
    train(config, tmp_path / "ft", device="cpu", log=lambda s: None)
    start, tuned = load_model(tiny_checkpoint), load_model(tmp_path / "ft" / "last.safetensors")
    assert any(not torch.equal(a, b) for a, b in zip(start.state_dict().values(), tuned.state_dict().values()))
    assert all(torch.isfinite(v).all() for v in tuned.state_dict().values())
    recorded = json.loads((tmp_path / "ft" / "train_config.json").read_text())
    assert (recorded["banding_weight"], recorded["banding_classes"]) == (0.5, "phase")
