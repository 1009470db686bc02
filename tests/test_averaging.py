import copy
import json

import pytest
import torch

from napari_cycleinr.errors import CycleINRError
from napari_cycleinr.model.averaging import WeightAverage
from napari_cycleinr.model.checkpoint import load_model
from napari_cycleinr.model.train import split_validation, train, validate, validation_pairs
from napari_cycleinr.model.train_config import TrainConfig
from tests.conftest import CT_HEAD
from tests.test_train import FAST


def shifted(model, by):
    moved = copy.deepcopy(model)
    with torch.no_grad():
        for parameter in moved.parameters():
            parameter.add_(by)
    return moved


def test_the_average_is_an_exponential_moving_average_of_the_weights(tiny_model):
    start = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    average = WeightAverage(tiny_model, decay=0.5)
    average.update(shifted(tiny_model, 1.0))  # first update: decay min(0.5, 2/11)
    average.update(shifted(tiny_model, 3.0))  # second: min(0.5, 3/12)
    first = 2 / 11 * 0 + 9 / 11 * 1.0
    expected = 0.25 * first + 0.75 * 3.0
    for name, value in average.model.state_dict().items():
        assert torch.allclose(value - start[name], torch.full_like(value, expected), atol=1e-5), name
    assert all(torch.equal(v, start[k]) for k, v in tiny_model.state_dict().items())  # the model is untouched
    restored = WeightAverage(tiny_model, decay=0.5)
    restored.load_state_dict(average.state_dict())
    assert restored.updates == 2
    pairs = zip(restored.model.state_dict().values(), average.model.state_dict().values())
    assert all(torch.equal(a, b) for a, b in pairs)


def test_the_decay_is_validated(tiny_model):
    with pytest.raises(ValueError, match="between 0 and 1"):
        WeightAverage(tiny_model, decay=1.0)
    with pytest.raises(CycleINRError, match="average_decay"):
        TrainConfig(average_decay=1.0)


def test_training_validates_and_keeps_the_average_and_resumes_it(tmp_path, tiny_config):
    fast = {**FAST, "validation_every": 30}  # one validation, at the end: the kept model is the final average
    config = TrainConfig(steps=30, model=tiny_config, train_data=(str(CT_HEAD),), average_decay=0.9, **fast)
    run = tmp_path / "run"
    train(config, run, device="cpu", log=lambda line: None)
    state = torch.load(run / "state.pt", weights_only=True)
    raw = load_model(run / "last.safetensors").state_dict()
    assert state["average"]["updates"] == 30
    assert any(not torch.equal(raw[k], v) for k, v in state["average"]["weights"].items())

    history = json.loads((run / "history.json").read_text())
    assert [h["step"] for h in history] == [0, 30]
    best = load_model(run / "best.safetensors")
    assert all(torch.equal(v, state["average"]["weights"][k]) for k, v in best.state_dict().items())
    pairs = validation_pairs(split_validation(config)[1], config)
    assert validate(best, pairs, torch.device("cpu"))["psnr"] == pytest.approx(history[-1]["psnr"], abs=1e-6)

    longer = TrainConfig(**{**config.__dict__, "steps": 45})
    train(longer, run, resume=True, device="cpu", log=lambda line: None)
    assert torch.load(run / "state.pt", weights_only=True)["average"]["updates"] == 45

    plain = TrainConfig(**{**config.__dict__, "average_decay": 0.0})
    train(plain, tmp_path / "plain", device="cpu", log=lambda line: None)
    with pytest.raises(CycleINRError, match="trained without averaging"):
        train(longer, tmp_path / "plain", resume=True, device="cpu")
