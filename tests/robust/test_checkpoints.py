"""Checkpoints that travel by email: pickles that would run code, other architectures, other format versions,
tampered, poisoned and truncated files. Each is refused with one line naming the file, by `load_model`, by the
CLI (exit 2, nothing written) and by the widget's job (an error for a notification, no layer); a pickle is
never unpickled, which a marker file proves: the payload creates it when anything loads it.

tests/test_checkpoint.py has the basic refusals of load_model; this module adds the surfaces and the cases a
hostile sender would try.
"""

from __future__ import annotations

import pickle
import re

import pytest
import torch

from napari_cycleinr._runner import Job, execute, plan_targets
from napari_cycleinr.errors import CycleINRError
from napari_cycleinr.io import read_volume
from napari_cycleinr.model.checkpoint import load_model, read_header
from tests.robust.bad_files import CHECKPOINTS, Exploit, build_checkpoints
from tests.robust.surfaces import run_cli, run_cli_process

PICKLES = tuple(case for case in CHECKPOINTS if case.executable)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """(paths by key, marker) for a tiny real model; built once for the module."""
    from napari_cycleinr.model.config import ModelConfig
    from napari_cycleinr.model.cycleinr import CycleINR

    folder = tmp_path_factory.mktemp("checkpoints")
    marker = folder / "PWNED"
    torch.manual_seed(0)
    model = CycleINR(ModelConfig(channels=8, blocks=1, heads=2, decoder_width=16, position_frequencies=2))
    return build_checkpoints(folder, model, marker), marker


@pytest.fixture(autouse=True)
def no_code_ran(checkpoints):
    _, marker = checkpoints
    assert not marker.exists()
    yield
    assert not marker.exists(), "a pickle was unpickled: its payload ran"


def test_the_payload_is_real(tmp_path):
    """Without this, 'the marker did not appear' would prove nothing."""
    plain, zipped = tmp_path / "plain", tmp_path / "zipped"
    pickle.loads(pickle.dumps(Exploit(plain)))
    assert plain.exists()
    torch.save({"model": Exploit(zipped)}, tmp_path / "model.pth")
    torch.load(tmp_path / "model.pth", weights_only=False)
    assert zipped.exists()


@pytest.mark.parametrize("case", CHECKPOINTS, ids=lambda c: c.key)
def test_load_model_refuses(checkpoints, case):
    paths, _ = checkpoints
    with pytest.raises(CycleINRError, match=case.message) as caught:
        load_model(paths[case.key])
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("case", CHECKPOINTS, ids=lambda c: c.key)
def test_cli_refuses_with_one_line_and_writes_nothing(checkpoints, bad_paths, tmp_path, case, untouched):
    paths, _ = checkpoints
    out = tmp_path / "sr.nii.gz"
    result = run_cli("upsample", bad_paths["uint8"], "-o", out, "--factor", "2", "--model", paths[case.key])
    line = result.error_line
    assert re.search(case.message, line), line
    assert not out.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("key", ["pickle_pt", "torch_save_renamed", "other_architecture"])
def test_evaluate_refuses_a_bad_variant(checkpoints, bad_paths, tmp_path, key):
    paths, _ = checkpoints
    result = run_cli(
        "evaluate", bad_paths["two_slices"], "--factor", "2", "--methods", "trilinear,suspect",
        "--variant", f"suspect={paths[key]}", "--json", tmp_path / "r.json",
    )  # fmt: skip
    assert paths[key].name in result.error_line
    assert list(tmp_path.iterdir()) == []


def test_real_process_never_unpickles(checkpoints, bad_paths, tmp_path):
    paths, marker = checkpoints
    for key in ("pickle_pt", "torch_save_renamed"):
        result = run_cli_process("upsample", bad_paths["uint8"], "-o", tmp_path / "sr.nii", "--factor", "2",
                                 "--model", paths[key])  # fmt: skip
        assert "is not a" in result.error_line
        assert not marker.exists()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("case", CHECKPOINTS, ids=lambda c: c.key)
def test_widget_job_reports_the_refusal_and_adds_nothing(checkpoints, bad_paths, case):
    """The widget's worker (`_runner.execute`): an error message for the notification, no output."""
    paths, _ = checkpoints
    volume = read_volume(bad_paths["uint8"])
    targets = plan_targets(volume.shape[0], volume.spacing[0], "factor", "2")
    job = Job(
        volume=volume, input_name="uint8", targets=targets, checkpoint=str(paths[case.key]), device="cpu"
    )
    updates = []
    outcome = execute(job, updates.append, lambda: False)
    assert outcome.error and re.search(case.message, outcome.error), outcome.error
    assert outcome.outputs == [] and not outcome.cancelled


def test_a_refused_header_is_read_without_the_tensors(checkpoints):
    """read_header (what the widget may show before a run) refuses the same files without touching weights."""
    paths, _ = checkpoints
    with pytest.raises(CycleINRError, match="format version 2"):
        read_header(paths["version_2"])
    with pytest.raises(CycleINRError, match="implausible"):
        read_header(paths["implausible"])
    assert read_header(paths["other_architecture"])["config"].channels == 8  # the weights decide, later
