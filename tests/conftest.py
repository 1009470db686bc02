"""Shared fixtures: real small scans from tests/data and tiny real torch models."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

DATA = Path(__file__).parent / "data"
CT_3MM = DATA / "ct_totalseg_sm_122x101x30_3mm.nii.gz"
CT_HEAD = DATA / "ct_vtk_headsq_64x64x93_1p5mm.nii.gz"
MR_3MM = DATA / "mr_totalseg_sm_117x91x20_3mm.nii.gz"

torch.set_num_threads(2)


@pytest.fixture
def tiny_config():
    from napari_cycleinr.model.config import ModelConfig

    return ModelConfig(channels=8, blocks=1, heads=2, decoder_width=16, position_frequencies=2)


@pytest.fixture
def tiny_model(tiny_config):
    """A tiny CycleINR whose attention and decoder are switched on (non-zero output layers)."""
    from napari_cycleinr.model.cycleinr import CycleINR

    torch.manual_seed(0)
    model = CycleINR(tiny_config)
    with torch.no_grad():
        torch.nn.init.normal_(model.attention.out.weight, std=0.1)
        torch.nn.init.normal_(model.decoder.mlp[-1].weight, std=0.01)
    return model.eval()


@pytest.fixture
def tiny_checkpoint(tiny_model, tmp_path):
    from napari_cycleinr.model.checkpoint import save_model

    return save_model(tiny_model, tmp_path / "tiny.safetensors", {"purpose": "tests"})


@pytest.fixture
def ct_volume():
    from napari_cycleinr.io import read_volume

    return read_volume(CT_3MM)
