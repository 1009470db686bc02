"""Ship the weights fine-tuned against the lines at the slab period (issue #21; docs/results.md, "Lines at the
slab period").

    for n in average gaussian skip mixed mr; do
        cycleinr train --config configs/banding_$n.toml --out runs/banding_$n; done
    python scripts/make_banding_weights.py [--runs runs]

- `average`, `gaussian`, `skip`, `mixed`, `mr`: each run's weight average after its last step (read from the
  run's state.pt; best.safetensors is chosen by validation PSNR alone, which the banding loss trades a little
  of, so it would favour the earliest checkpoint).
- `average_mr`, `gaussian_mr`, `skip_mr`: rebuilt from the new weights as scripts/make_mr_weights.py builds
  them, profile + (mr - mixed). scripts/make_mr_banding_weights.py then tunes the four MR weights further.

The header keeps the earlier weights' training record under `earlier`, with paths relative to the data folder.
Run from the repository root.
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
from pathlib import Path

from make_mr_weights import PROFILES, clean_train_config, ship, write_profile_mr

from napari_cycleinr.model.checkpoint import load_model, load_resume_state, save_model
from napari_cycleinr.model.cycleinr import CycleINR

TUNED = (*PROFILES, "mixed", "mr")


def final_average(state: dict, like: CycleINR) -> CycleINR:
    """A run's final weight average (from its state.pt) in a copy of the network it was tuned from."""
    model = copy.deepcopy(like)
    model.load_state_dict(state["average"]["weights"])
    return model


def tuned_model(run: Path, earlier: CycleINR, record: str | None = None, history: str | None = None) -> CycleINR:
    """The run's final weight average, with the run's record and the earlier weights' record. `record`: the
    config that names this fine-tune (default configs/<run>.toml); `history`: how the weights came about."""
    record = record or f"configs/{run.name}.toml"
    if record in json.dumps(earlier.info):
        raise SystemExit(f"the bundled weights already hold this fine-tune ({record}); bring back the earlier ones "
                         "first (git checkout COMMIT -- src/napari_cycleinr/weights)")
    state = load_resume_state(run / "state.pt")
    model = final_average(state, earlier)
    log = json.loads((run / "history.json").read_text())
    validation = [entry for entry in log if "psnr" in entry]
    model.info = {
        "train_config": clean_train_config(json.loads((run / "train_config.json").read_text())),
        "step": int(state["step"]),
        "validation": validation[-1] if validation else None,
        "history": history or f"the earlier bundled weights + {int(state['step'])} steps with the loss on "
                              f"slab-period banding ({record})",
        "earlier": earlier.info,
    }
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="runs", help="the folder holding banding_<name>/ for each tuned weight")
    args = parser.parse_args()
    ship_tuned(Path(args.runs), "banding", TUNED, rebuild_profile_mr=True)


def ship_tuned(runs: Path, prefix: str, names: tuple[str, ...], rebuild_profile_mr: bool = False) -> None:
    """Each name's run (runs/<prefix>_<name>) into the package; with rebuild_profile_mr also every
    `<profile>_mr` = profile + (mr - mixed) from the tuned weights."""
    tuned = {name: tuned_model(runs / f"{prefix}_{name}", load_model(name)) for name in names}
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder)
        for name, model in tuned.items():
            save_model(model, out / f"{name}.safetensors", model.info)
        if rebuild_profile_mr:
            write_profile_mr(out, tuned["mr"], tuned["mixed"], {p: tuned[p] for p in PROFILES})
            names = (*names, *(f"{p}_mr" for p in PROFILES))
        ship(out, names)


if __name__ == "__main__":
    main()
