"""Growing a trained model: extra encoder blocks start as identities, so the grown model computes exactly the
source's function until fine-tuning moves them; anything but added blocks is refused."""

from dataclasses import replace

import pytest
import torch

from napari_cycleinr.errors import CycleINRError
from napari_cycleinr.model.checkpoint import load_model
from napari_cycleinr.model.grow import grow_model
from napari_cycleinr.model.train import train
from napari_cycleinr.model.train_config import TrainConfig
from tests.conftest import CT_HEAD
from tests.test_train import FAST


def _output(model, volume):
    with torch.no_grad():
        return model(volume, torch.linspace(-0.4, 5.4, 17), 1 / 3)


def test_a_grown_model_computes_the_source_function(tiny_model, tiny_config):
    grown = grow_model(tiny_model, replace(tiny_config, blocks=3, dilations=(1, 2, 4))).eval()
    assert len(grown.encoder.body) == 3 and grown.encoder.body[2].inplane.dilation == (1, 4, 4)
    volume = torch.rand(1, 6, 20, 18, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(_output(grown, volume), _output(tiny_model, volume), atol=1e-6)
    # the new blocks are trainable: their in-plane branch is random, only the closing convolution is zero
    assert grown.encoder.body[1].inplane.weight.abs().sum() > 0
    assert grown.encoder.body[1].through_plane.weight.abs().sum() == 0


def test_growing_refuses_anything_but_added_blocks(tiny_model, tiny_config):
    with pytest.raises(CycleINRError, match="start with the old blocks"):
        grow_model(tiny_model, replace(tiny_config, blocks=2, dilations=(2, 1)))
    with pytest.raises(CycleINRError, match="every other model option"):
        grow_model(tiny_model, replace(tiny_config, blocks=2, decoder_width=32))
    with pytest.raises(CycleINRError, match="grow needs init"):
        TrainConfig(grow=True)


def test_training_a_grown_model_starts_where_the_checkpoint_ends(tmp_path, tiny_checkpoint, tiny_config):
    start = load_model(tiny_checkpoint)
    wide = replace(tiny_config, blocks=2, dilations=(1, 2))
    config = TrainConfig(
        steps=2, init=str(tiny_checkpoint), grow=True, model=wide, train_data=(str(CT_HEAD),),
        **{**FAST, "validation_every": 2, "checkpoint_every": 2},
    )
    lines = []
    train(config, tmp_path / "grown", device="cpu", log=lines.append)
    trained = load_model(tmp_path / "grown" / "last.safetensors")
    assert trained.config == wide
    assert any(not torch.equal(a, b) for a, b in zip(start.state_dict().values(), trained.state_dict().values()))
    # step 0 is validated before any update: it must be the source model's own score
    fresh = TrainConfig(steps=1, init=str(tiny_checkpoint), train_data=(str(CT_HEAD),), **FAST)
    other = []
    train(fresh, tmp_path / "plain", device="cpu", log=other.append)
    assert lines[0] == other[0] and lines[0].startswith("validation before training")
