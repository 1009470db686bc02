"""The fast inference path (streaming encoder, refolded weights, per-interval attention) computes the same
function as the model's own forward pass, for every architecture option, at any slab and tile size."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_cycleinr.intensity import cast_like, intensity_map
from napari_cycleinr.model import fast_path
from napari_cycleinr.model.cycleinr import CycleINR
from napari_cycleinr.model.infer import InferenceOptions, output_finisher, predict, super_resolve
from napari_cycleinr.runtime import threads
from napari_cycleinr.volume import Volume

LIDC = Path(__file__).parent / "data" / "ct_lidc0002_crop_128x128x40_1p25mm.nii.gz"


def _random_model(config, seed=0):
    torch.manual_seed(seed)
    model = CycleINR(config)
    with torch.no_grad():
        if model.attention is not None:
            torch.nn.init.normal_(model.attention.out.weight, std=0.2)
        torch.nn.init.normal_(model.decoder.mlp[-1].weight, std=0.05)
    return model.eval()


def _whole(model, lr, positions, factor):
    with torch.no_grad():
        return model(torch.from_numpy(lr)[None], torch.from_numpy(positions).float(), 1 / factor)[0].numpy()


VARIANTS = {
    "default": {},
    "no attention": {"attention": False},
    "no residual": {"residual": False},
    "shallow decoder": {"decoder_depth": 2},
    "deep decoder": {"decoder_depth": 4},
    "two neighbours": {"neighbours": 2},
    "six neighbours": {"neighbours": 6, "blocks": 2},
    "one head": {"heads": 1},
    "dilated blocks": {"blocks": 3, "dilations": (1, 2, 4)},
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_fast_path_equals_the_model_forward(tiny_config, variant):
    model = _random_model(replace(tiny_config, **VARIANTS[variant]))
    lr = np.random.default_rng(3).random((13, 19, 17)).astype(np.float32)
    for factor in (2.0, 3.7):
        positions = (np.arange(int(round(13 * factor))) + 0.5) / factor - 0.5  # reaches beyond both ends
        reference = _whole(model, lr, positions, factor)
        exact = InferenceOptions(amp=False)  # float32 throughout, whatever this CPU computes natively
        small, large = replace(exact, slab=1, tile=7, pixels_per_call=16), replace(exact, slab=5, tile=100)
        for options in (small, large):
            fast = predict("cycleinr", lr, positions, 1 / factor, model=model, options=options)
            assert np.abs(fast - reference).max() < 2e-5, (variant, factor, options)


def test_fast_and_generic_paths_agree_on_a_real_scan(ct_volume, tiny_model):
    volume = Volume(ct_volume.data[:12], ct_volume.affine, ct_volume.file_axes, ct_volume.metadata)
    exact = InferenceOptions(amp=False)
    fast = super_resolve(volume, factor=2.5, model=tiny_model, device="cpu", keep_dtype=False, options=exact)
    slow = InferenceOptions(fast=False)
    generic = super_resolve(volume, factor=2.5, model=tiny_model, device="cpu", keep_dtype=False, options=slow)
    assert np.abs(fast.data - generic.data).max() < 0.05  # HU
    rounded = super_resolve(volume, factor=2.5, model=tiny_model, device="cpu", options=exact)
    assert rounded.data.dtype == volume.data.dtype
    assert np.abs(rounded.data.astype(np.float32) - generic.data).max() <= 0.55


def test_bf16_path_runs_and_stays_close(monkeypatch, tiny_model):
    """The CUDA path computes in bfloat16; run the same code on the CPU to check its dtypes line up."""
    lr = np.random.default_rng(0).random((9, 20, 20)).astype(np.float32)
    positions = (np.arange(27) + 0.5) / 3 - 0.5
    exact = predict("cycleinr", lr, positions, 1 / 3, model=tiny_model, options=InferenceOptions(amp=False))
    monkeypatch.setattr(fast_path, "compute_dtype", lambda device, options: torch.bfloat16)
    monkeypatch.setattr(fast_path, "encoder_dtype", lambda device, options: torch.bfloat16)
    approx = predict("cycleinr", lr, positions, 1 / 3, model=tiny_model)
    assert approx.dtype == np.float32 and np.abs(approx - exact).max() < 0.02


def test_bf16_encoder_keeps_the_bundled_models_scores_on_real_ct(monkeypatch):
    """The CPU fast path with its bf16 encoder (forced here, so it runs on any CPU) against the bundled model's
    own float32 forward pass, on real thin CT made 4x thicker: the scores the issue bounds stay put."""
    from napari_cycleinr.io import read_volume
    from napari_cycleinr.model.checkpoint import bundled_model_path, load_model
    from napari_cycleinr.model.evaluate import metric_window, simulate_thick
    from napari_cycleinr.model.metrics import psnr, ssim

    model = load_model(bundled_model_path("mixed"))
    thin = read_volume(LIDC)
    thick, reference, positions, intensities = simulate_thick(thin, 4.0, "average", "CT")
    plain = intensities.denormalise(_whole(model, thick, positions, 4.0))
    monkeypatch.setattr(fast_path, "encoder_dtype", lambda device, options: torch.bfloat16)
    fast = intensities.denormalise(predict("cycleinr", thick, positions, 0.25, model=model, device="cpu"))
    window = metric_window(reference, "CT")
    assert abs(psnr(reference, fast, window) - psnr(reference, plain, window)) < 0.05
    assert abs(ssim(reference, fast, window) - ssim(reference, plain, window)) < 0.001
    assert np.abs(fast - plain).mean() < 1.0  # HU


@pytest.mark.parametrize("dtype", [np.int16, np.uint8, np.int8, np.int32, np.float32, np.float64])
def test_the_torch_finisher_is_cast_like(dtype):
    data = np.linspace(-3000, 5000, 4000).astype(np.float32).reshape(4, 10, 100)
    mapping = intensity_map(data, "CT")
    noise = np.random.default_rng(0).random(4000).astype(np.float32) * 1.4 - 0.2
    ties = (np.arange(-8, 8) + 0.5 + 1024) / 4096  # halfway HU values round to even
    values = np.concatenate([noise, ties]).astype(np.float32)
    finish = output_finisher(mapping, np.dtype(dtype))
    expected = cast_like(mapping.denormalise(values), np.dtype(dtype))
    got = finish(torch.from_numpy(values)).numpy()
    assert got.dtype == expected.dtype and np.array_equal(got, expected)
    assert output_finisher(mapping, np.dtype(np.uint16)) is None  # numpy finishes those


def test_thread_choice_is_bounded_and_restored():
    cores = threads.available_cores()
    assert 1 <= threads.choose_threads() <= cores
    assert threads.choose_threads(3) == 3
    before = torch.get_num_threads()
    with threads.torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_progress_count_matches_the_blocks(ct_volume, tiny_model):
    calls = []
    options = InferenceOptions(slab=3, tile=50)
    record = lambda done, total: calls.append((done, total))  # noqa: E731
    super_resolve(ct_volume, factor=3.3, model=tiny_model, device="cpu", options=options, progress=record)
    assert calls[-1][0] == calls[-1][1] and len({total for _, total in calls}) == 1
