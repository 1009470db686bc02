"""Checkpoints, resume states and result JSON (model/checkpoint.py, jsonsafe.py): tensor types checked as well
as shapes, a pickled resume state is one message, hostile JSON nesting is refused before parsing, results
are strict JSON, and no checkpoint or sidecar lands on an input or a packaged file."""

from __future__ import annotations

import json
import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from napari_cycleinr.errors import CycleINRError
from napari_cycleinr.io.guard import PACKAGE_ROOT
from napari_cycleinr.jsonsafe import json_depth, loads_bounded, strict_json, write_json
from napari_cycleinr.model.checkpoint import (
    bundled_model_path,
    load_model,
    load_resume_state,
    read_header,
    save_model,
    save_resume_state,
)
from tests.conftest import CT_3MM


def rewritten(checkpoint: Path, target: Path, tensors=None, metadata=None) -> Path:
    """A copy of `checkpoint` with its tensors and/or header metadata changed."""
    with safe_open(str(checkpoint), framework="pt") as handle:
        state = {name: handle.get_tensor(name) for name in handle.keys()}
        header = dict(handle.metadata())
    save_file(tensors(state) if tensors else state, str(target), metadata={**header, **(metadata or {})})
    return target


@pytest.mark.parametrize(
    ("convert", "kind"),
    [(lambda t: t > 0, "BOOL"), (lambda t: t.to(torch.int32), "I32"), (lambda t: t.to(torch.uint8), "U8")],
)
def test_weights_of_the_right_shape_but_not_floats_are_refused(tiny_checkpoint, tmp_path, convert, kind):
    def typed(state):
        return {name: convert(tensor) for name, tensor in state.items()}

    def halve(state):
        return {name: tensor.half() for name, tensor in state.items()}

    target = rewritten(tiny_checkpoint, tmp_path / "typed.safetensors", typed)
    pattern = rf"typed.safetensors holds \d+ tensor\(s\) of type {kind} .*floating"
    with pytest.raises(CycleINRError, match=pattern):
        load_model(target)
    halved = rewritten(tiny_checkpoint, tmp_path / "half.safetensors", halve)
    assert next(load_model(halved).parameters()).dtype == torch.float32  # float16 weights still load


@pytest.mark.parametrize("key", ["model_config", "info"])
def test_deeply_nested_header_json_is_refused_before_parsing(tiny_checkpoint, tmp_path, key):
    deep = "[" * 100_000 + "]" * 100_000
    target = rewritten(tiny_checkpoint, tmp_path / "deep.safetensors", metadata={key: deep})
    pattern = rf"deep.safetensors has a damaged model config \(its {key} field nests its JSON 100000 levels"
    with pytest.raises(CycleINRError, match=pattern):
        read_header(target)
    with pytest.raises(CycleINRError, match="nests its JSON"):
        load_model(target)


def test_bounded_json_reads_honest_text_and_names_what_is_wrong():
    assert json_depth('{"a": [1, {"b": "[[[[ not nesting ]"}], "c": "\\"{{"}') == 3
    assert loads_bounded('{"steps": [1, 2]}', what="x") == {"steps": [1, 2]}
    with pytest.raises(CycleINRError, match=r"history.json is not valid JSON \(Expecting"):
        loads_bounded('{"steps": [1, 2}', what="history.json")
    with pytest.raises(CycleINRError, match="nests its JSON 65 levels deep"):
        loads_bounded("{" * 0 + "[" * 65 + "]" * 65, what="x")


def test_a_pickled_or_damaged_resume_state_is_one_message(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("this must never run",))

    (tmp_path / "pickled.pt").write_bytes(pickle.dumps({"step": 3, "payload": Payload()}))
    (tmp_path / "garbage.pt").write_bytes(b"\x80\x04 not a torch file at all")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    for name, reason in (("pickled.pt", "not a resume state this package wrote"),
                         ("garbage.pt", "not a resume state"), ("list.pt", "keys missing")):  # fmt: skip
        with pytest.raises(CycleINRError, match=reason) as caught:
            load_resume_state(tmp_path / name)
        assert "\n" not in str(caught.value) and "delete it to start over" in str(caught.value)
    with pytest.raises(CycleINRError, match="nothing to resume"):
        load_resume_state(tmp_path / "missing.pt")


def test_a_resume_state_round_trips_and_is_guarded(tiny_model, tmp_path):
    optimizer = torch.optim.AdamW(tiny_model.parameters(), lr=1e-3)
    state = {"step": 5, "best_psnr": 30.5, "optimizer": optimizer.state_dict()}
    path = save_resume_state(state, tmp_path / "state.pt")
    again = load_resume_state(path)
    assert again["step"] == 5 and again["best_psnr"] == 30.5
    assert [p.name for p in tmp_path.iterdir()] == ["state.pt"]
    scan = tmp_path / "scan.nii.gz"
    scan.write_bytes(CT_3MM.read_bytes())
    with pytest.raises(CycleINRError, match="it is an input"):
        save_resume_state(state, scan, protected=[scan])
    assert scan.read_bytes() == CT_3MM.read_bytes()


def test_save_model_never_writes_its_sidecar_or_weights_over_an_input_or_the_package(tiny_model, tmp_path):
    scan = tmp_path / "scan.nii.gz"
    scan.write_bytes(CT_3MM.read_bytes())
    (tmp_path / "adapted.json").symlink_to(scan)  # the sidecar of adapted.safetensors resolves to the scan
    with pytest.raises(CycleINRError, match="scan.nii.gz: it is an input"):
        save_model(tiny_model, tmp_path / "adapted.safetensors", protected=[scan])
    assert scan.read_bytes() == CT_3MM.read_bytes()
    weights = bundled_model_path("mixed")
    before = weights.read_bytes()
    with pytest.raises(CycleINRError, match="inside the installed napari_cycleinr package"):
        save_model(tiny_model, weights)
    assert weights.read_bytes() == before and weights.parent == PACKAGE_ROOT / "weights"


def test_results_are_strict_json_with_null_for_undefined_scores(tmp_path, tiny_model):
    results = {"psnr": math.inf, "snli": float("nan"), "ssim": np.float32(0.5), "n": np.int64(3),
               "per_slice": np.array([1.0, np.nan]), "path": tmp_path, "pair": (1, -math.inf)}  # fmt: skip
    text = strict_json(results)
    for token in ("NaN", "Infinity"):
        assert token not in text
    assert json.loads(text, parse_constant=lambda token: pytest.fail(token)) == {
        "psnr": None, "snli": None, "ssim": 0.5, "n": 3, "per_slice": [1.0, None], "path": str(tmp_path),
        "pair": [1, None],
    }  # fmt: skip
    reference = tmp_path / "reference.nii.gz"
    reference.write_bytes(b"keep")
    with pytest.raises(CycleINRError, match="it is an input"):
        write_json(reference, results, protected=[reference])
    assert reference.read_bytes() == b"keep"
    written = write_json(tmp_path / "results.json", results)
    assert json.loads(written.read_text())["snli"] is None
    checkpoint = save_model(tiny_model, tmp_path / "m.safetensors", {"validation": {"psnr": math.inf}})
    assert json.loads(checkpoint.with_suffix(".json").read_text())["info"]["validation"]["psnr"] is None
    assert read_header(checkpoint)["info"]["validation"]["psnr"] is None
