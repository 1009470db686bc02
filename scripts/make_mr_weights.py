"""Write the bundled MR weights (issue #20; docs/results.md, "MR in training: longer, and the specialists").

    python scripts/make_mr_weights.py [--run runs/exp_mr_longer/best.safetensors]

- `mr`: the given training run's weights (`cycleinr train --config configs/experiment_mr_longer.toml`: the
  earlier `mr` plus 1600 steps), what an MR of unknown slice profile gets.
- `average_mr`, `gaussian_mr`, `skip_mr`: each profile's bundled weights plus what MR training added to
  `mixed` (the new `mr` - `mixed`, "task arithmetic", no training), what an MR of known profile gets.

Paths in the headers are made relative to the data folder (train/..., thick/...) or the repository, so no
path of the training machine ships. Run from the repository root; the files go to src/napari_cycleinr/weights
through a temporary folder (the output guard refuses to write into the package directly).
"""

from __future__ import annotations

import argparse
import copy
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

from make_ct_as_mr import derived_names

from napari_cycleinr.model.checkpoint import load_model, save_model
from napari_cycleinr.model.cycleinr import CycleINR

WEIGHTS = Path("src/napari_cycleinr/weights")
PROFILES = ("average", "gaussian", "skip")


def relative(path: str) -> str:
    """train/NAME or thick/NAME for data (a scan derived from one by scripts/make_ct_as_mr.py: its source, and
    how), the repository path for the package's own weights."""
    derived = derived_names().get(Path(path).name)
    if derived is not None:
        return derived
    parts = Path(path).parts
    for anchor in ("train", "thick"):
        if anchor in parts:
            return "/".join(parts[parts.index(anchor):])
    if "src" in parts:
        return "/".join(parts[parts.index("src"):])
    return Path(path).name


def clean_train_config(config: dict) -> dict:
    config = dict(config)
    for key in ("init", "validation_data"):
        if config.get(key):
            config[key] = relative(config[key])
    for key in ("train_data", "inplane_data"):
        config[key] = [relative(p) for p in config.get(key) or []]
    return config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="runs/exp_mr_longer/best.safetensors")
    args = parser.parse_args()
    trained = load_model(args.run)
    info = dict(trained.info)
    info["train_config"] = clean_train_config(info["train_config"])
    info["history"] = ("mixed + 400 steps with MR (configs/experiment_mr_mixed.toml) + 1600 steps "
                       "(configs/experiment_mr_longer.toml)")
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder)
        save_model(trained, out / "mr.safetensors", info)
        write_profile_mr(out, trained, load_model("mixed"), {p: load_model(p) for p in PROFILES})
        ship(out, ("mr", *(f"{p}_mr" for p in PROFILES)))


def write_profile_mr(out: Path, mr: CycleINR, mixed: CycleINR, profiles: dict[str, CycleINR]) -> None:
    """`<profile>_mr` = the profile's weights + (mr - mixed), each with mr's training record."""
    base = mixed.state_dict()
    delta = {k: v - base[k] for k, v in mr.state_dict().items()}
    for profile, model in profiles.items():
        model = copy.deepcopy(model)
        state = model.state_dict()
        model.load_state_dict({k: state[k] + delta[k] for k in state})
        save_model(model, out / f"{profile}_mr.safetensors", {
            "built_from": f"{profile} + (mr - mixed): the bundled {profile} weights plus what training with MR "
                          "added to mixed; no training of its own",
            "train_config": mr.info["train_config"], "history": mr.info["history"],
        })


def ship(out: Path, names: Iterable[str]) -> None:
    """Copy NAME.safetensors and NAME.json from out into the package."""
    for name in names:
        for suffix in (".safetensors", ".json"):
            shutil.copyfile(out / f"{name}{suffix}", WEIGHTS / f"{name}{suffix}")
            print("wrote", WEIGHTS / f"{name}{suffix}")


if __name__ == "__main__":
    main()
