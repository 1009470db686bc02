import subprocess
import sys

import numpy as np
import pytest
import torch

from napari_cycleinr.errors import CycleINRError
from napari_cycleinr.model.config import ModelConfig
from napari_cycleinr.model.cycleinr import CycleINR
from napari_cycleinr.model.infer import InferenceOptions, predict


def test_forward_and_backward_shapes(tiny_model):
    model = tiny_model.train()
    volume = torch.rand(2, 6, 20, 24)
    positions = (torch.arange(15) + 0.5) / 2.5 - 0.5
    out = model(volume, positions, 1 / 2.5)
    assert out.shape == (2, 15, 20, 24)
    out.square().mean().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None for g in grads)
    assert model.encoder.head.weight.grad.abs().sum() > 0


def test_untrained_residual_model_is_linear_interpolation(tiny_config):
    model = CycleINR(tiny_config).eval()
    lr = np.random.default_rng(0).random((5, 8, 8)).astype(np.float32)
    positions = (np.arange(20) + 0.5) / 4 - 0.5
    out = predict("cycleinr", lr, positions, 0.25, model=model)
    assert np.allclose(out, predict("trilinear", lr, positions, 0.25), atol=1e-6)


def test_attention_changes_the_answer_and_can_be_switched_off(tiny_model, tiny_config):
    from dataclasses import replace

    plain = CycleINR(replace(tiny_config, attention=False))
    assert plain.attention is None
    shared = {k: v for k, v in tiny_model.state_dict().items() if not k.startswith("attention.")}
    plain.load_state_dict(shared)
    lr = torch.rand(1, 6, 10, 10)
    positions = torch.linspace(0, 5, 13)
    with torch.no_grad():
        assert not torch.allclose(tiny_model(lr, positions, 0.4), plain.eval()(lr, positions, 0.4))


def _attention_by_definition(att, sampled, keys, values, positions, cell):
    """The local attention written literally: gather the K neighbours' keys and values, softmax per head."""
    from napari_cycleinr.model.lam import neighbour_indices

    b, p, q, c = sampled.shape
    idx, offsets = neighbour_indices(positions, keys.shape[2], att.neighbours)
    frac = positions - torch.floor(positions)
    query = att.query(sampled) + att.query_position(frac, cell)
    k = keys[:, :, idx] + att.key_position(offsets, cell)  # (B, P, Q, K, C)
    v = values[:, :, idx] + att.value_position(offsets, cell)
    split = (b, p, q, att.neighbours, att.heads, c // att.heads)
    logits = (query.view(b, p, q, 1, att.heads, -1) * k.view(split)).sum(-1) * (c // att.heads) ** -0.5
    attended = (torch.softmax(logits, dim=3).unsqueeze(-1) * v.view(split)).sum(3)
    return sampled + att.out(attended.reshape(b, p, q, c))


def test_local_attention_equals_its_definition_with_gradients(tiny_model):
    att = tiny_model.attention
    c = tiny_model.config.channels
    codes = torch.randn(2, 7, 5, c, requires_grad=True, generator=torch.Generator().manual_seed(3))
    keys, values = att.project(codes)
    positions = torch.linspace(-0.4, 4.4, 11)  # both ends, where clamped neighbours repeat a slice
    sampled = codes.mean(dim=2, keepdim=True).expand(2, 7, 11, c)
    cell = torch.tensor(0.4)
    fast = att(sampled, keys, values, positions, cell)
    literal = _attention_by_definition(att, sampled, keys, values, positions, cell)
    assert torch.allclose(fast, literal, atol=1e-5)
    (grad_fast,) = torch.autograd.grad(fast.square().sum(), codes, retain_graph=True)
    (grad_literal,) = torch.autograd.grad(literal.square().sum(), codes)
    assert torch.allclose(grad_fast, grad_literal, atol=1e-4)


@pytest.mark.parametrize("factor", [2.0, 2.5, 5.3])
def test_tiled_inference_equals_whole_volume_inference(tiny_model, factor):
    lr = np.random.default_rng(1).random((23, 31, 29)).astype(np.float32)
    positions = (np.arange(int(round(23 * factor))) + 0.5) / factor - 0.5
    whole = predict("cycleinr", lr, positions, 1 / factor, model=tiny_model, options=InferenceOptions(slab=100, tile=100))
    tiled = predict(
        "cycleinr", lr, positions, 1 / factor, model=tiny_model,
        options=InferenceOptions(slab=4, tile=9, pixels_per_call=50, slices_per_call=3),
    )
    assert np.abs(whole - tiled).max() < 1e-5


def test_config_validation():
    with pytest.raises(CycleINRError, match="even"):
        ModelConfig(neighbours=3)
    with pytest.raises(CycleINRError, match="divisible"):
        ModelConfig(channels=10, heads=4)
    with pytest.raises(CycleINRError, match="unknown option"):
        ModelConfig.from_dict({"channels": 8, "colour": "red"})
    assert ModelConfig.from_dict(ModelConfig(channels=16).to_dict()) == ModelConfig(channels=16)
    with pytest.raises(CycleINRError, match="one each"):
        ModelConfig(blocks=2, dilations=(1, 2, 4))
    with pytest.raises(CycleINRError, match="from 1 to"):
        ModelConfig(blocks=2, dilations=(1, 0))
    with pytest.raises(CycleINRError, match="list of integers"):
        ModelConfig(blocks=2, dilations="12")
    dilated = ModelConfig(blocks=3, dilations=[1, 2, 8])  # as TOML and JSON give it
    assert dilated.dilations == (1, 2, 8) and dilated.inplane_halo == 12
    assert ModelConfig.from_dict(dilated.to_dict()) == dilated
    assert ModelConfig(blocks=3).block_dilations == (1, 1, 1) and ModelConfig(blocks=3).inplane_halo == 4


def test_model_package_imports_no_napari_and_no_qt():
    code = (
        "import sys, napari_cycleinr, napari_cycleinr.cli, napari_cycleinr.io;"
        "import napari_cycleinr.model.infer, napari_cycleinr.model.train, napari_cycleinr.model.evaluate;"
        "import napari_cycleinr.model.checkpoint, napari_cycleinr.model.metrics;"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('napari', 'qtpy', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6', 'magicgui', 'vispy')];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_package_import_does_not_load_torch():
    code = "import sys, napari_cycleinr, napari_cycleinr.io; sys.exit(1 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
