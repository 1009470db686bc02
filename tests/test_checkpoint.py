import json
import pickle
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from napari_cycleinr.errors import CycleINRError
from napari_cycleinr.model.checkpoint import FORMAT, load_model, read_header, save_model
from napari_cycleinr.model.config import ModelConfig
from napari_cycleinr.model.cycleinr import CycleINR


def test_round_trip_keeps_weights_config_and_info(tiny_model, tiny_checkpoint):
    loaded = load_model(tiny_checkpoint)
    assert loaded.config == tiny_model.config
    for name, tensor in tiny_model.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name])
    assert loaded.info == {"purpose": "tests"}
    sidecar = json.loads(Path(tiny_checkpoint).with_suffix(".json").read_text())
    assert sidecar["format"] == FORMAT and sidecar["model_config"]["channels"] == 8


def test_a_dilated_encoder_round_trips(tmp_path, tiny_config):
    model = CycleINR(replace(tiny_config, blocks=2, dilations=(1, 4)))
    loaded = load_model(save_model(model, tmp_path / "dilated.safetensors"))
    assert loaded.config.dilations == (1, 4)
    assert loaded.encoder.body[1].inplane.dilation == (1, 4, 4)


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_a_pickle_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    for name in ("evil.pt", "evil.safetensors"):
        path = tmp_path / name
        path.write_bytes(pickle.dumps(_Exploit(str(marker))))
        with pytest.raises(CycleINRError):
            load_model(path)
    assert not marker.exists()


def test_foreign_and_future_checkpoints_are_refused(tmp_path, tiny_model):
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign), metadata={"format": "someone-else"})
    with pytest.raises(CycleINRError, match="not a napari-cycleinr checkpoint"):
        load_model(foreign)
    future = tmp_path / "future.safetensors"
    save_file({"w": torch.zeros(2)}, str(future), metadata={"format": FORMAT, "format_version": "99"})
    with pytest.raises(CycleINRError, match="version 99"):
        read_header(future)


def test_other_architecture_and_truncation_are_refused(tmp_path, tiny_model):
    other = save_model(CycleINR(ModelConfig(channels=16, heads=2)), tmp_path / "other.safetensors")
    data = other.read_bytes()
    header_len = int.from_bytes(data[:8], "little")
    tampered = tmp_path / "tampered.safetensors"
    tampered.write_bytes(data.replace(b'\\"channels\\": 16', b'\\"channels\\": 24', 1))
    assert tampered.read_bytes() != data
    with pytest.raises(CycleINRError, match="does not fit"):
        load_model(tampered)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(data[: 8 + header_len + 100])
    with pytest.raises(CycleINRError):
        load_model(truncated)
    with pytest.raises(CycleINRError, match="not found"):
        load_model(tmp_path / "missing.safetensors")


def test_the_bundled_default_model_loads():
    model = load_model()
    assert isinstance(model, CycleINR) and not model.training
    assert model.config.attention
