"""Train configs are validated (types, finite, ranges) when made, before any folder exists: a NaN cycle weight
or learning rate, an infinite scale, negative threads or a word where a number belongs is one message."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from napari_cycleinr.errors import CycleINRError
from napari_cycleinr.model.train_config import TrainConfig, load_train_config


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("cycle_weight", math.nan, "cycle_weight must be a number, got nan"),
        ("learning_rate", math.nan, "learning_rate must be a number, got nan"),
        ("learning_rate", 0.0, "learning_rate must be above 0"),
        ("learning_rate", 5.0, "learning_rate must be above 0, at most 1.0; got 5.0"),
        ("noise_weight", -math.inf, "noise_weight must be a number, got -inf"),
        ("scale_max", math.inf, "scale_max must be a number, got inf"),
        ("scale_max", 1000.0, "scale_max must be at most 32"),
        ("threads", -2, "threads must be 0 or more, got -2"),
        ("warmup_steps", -1, "warmup_steps must be 0 or more"),
        ("steps", "abc", "steps must be a whole number, got 'abc'"),
        ("steps", 2.5, "steps must be a whole number, got 2.5"),
        ("batch", True, "batch must be a whole number, got True"),
        ("amp", "yes", "amp must be a true or false"),
        ("train_data", ("a.nii", 3), "train_data must be a list of names"),
        ("init", 7, "init must be a path or nothing"),
    ],
)  # fmt: skip
def test_bad_values_are_one_message(option, value, message):
    with pytest.raises(CycleINRError, match=f"train config: {message}"):
        TrainConfig(**{option: value})
    with pytest.raises(CycleINRError, match=f"train config: {message}"):
        load_train_config(None, **{option: value})  # the CLI's overrides go the same way


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[train]\ncycle_weight = nan\n", "cycle_weight must be a number, got nan"),
        ("[train]\nlearning_rate = inf\n", "learning_rate must be a number, got inf"),
        ('[train]\nsteps = "abc"\n', "steps must be a whole number"),
        ("train = 5\n", r"\[train\] must be a table"),
        ('[data]\ntrain = "one.nii.gz"\n', r"\[data\] train must be a list of file paths"),
        ("[data]\nvalidation = 3\n", r"\[data\] validation must be a file path"),
        ("[train]\ninit = 3\n", "init must be a path or nothing"),
        ("[train]\ndegradations = 5\n", "degradations must be a list of names"),
    ],
)  # fmt: skip
def test_a_toml_file_with_bad_values_is_refused_and_nothing_is_made(tmp_path: Path, toml, message):
    config = tmp_path / "config.toml"
    config.write_text(toml)
    before = sorted(tmp_path.iterdir())
    with pytest.raises(CycleINRError, match=message):
        load_train_config(config)
    assert sorted(tmp_path.iterdir()) == before


def test_good_values_still_load(tmp_path: Path):
    config = tmp_path / "config.toml"
    config.write_text('[train]\nsteps = 10\nlearning_rate = 0.002\ncycle_weight = 0\n[data]\ntrain = ["a.nii.gz"]\n')
    loaded = load_train_config(config, seed=3, steps=None)
    assert (loaded.steps, loaded.learning_rate, loaded.cycle_weight, loaded.seed) == (10, 0.002, 0, 3)
    assert loaded.train_data == (str((tmp_path / "a.nii.gz").resolve()),)
