"""Ship the `average` weights fine-tuned with the root-mean-square fit (issue #21: the CT PSNR the banding loss
had cost, won back; docs/results.md, "Lines at the slab period").

    cycleinr train --config configs/experiment_rmse_average.toml --out runs/exp_rmse_average
    python scripts/make_rmse_average.py --export runs/exp_rmse_average
    cycleinr train --config configs/experiment_rmse_average_800.toml --out runs/exp_rmse_average_800
    python scripts/make_rmse_average.py --export runs/exp_rmse_average_800
    cycleinr train --config configs/experiment_rmse_average_1200.toml --out runs/exp_rmse_average_1200
    python scripts/make_rmse_average.py --ship runs/exp_rmse_average_1200

Three stages of 400 steps, each from the one before's final weight average (`--export` writes it to the run's
final.safetensors, which the next config starts from); `--ship` writes the last one into the package as
`average`, its header keeping the earlier weights' record under `earlier`. Run from the repository root.
`--weights gaussian` and `--weights skip` do the same for those weights, with
configs/experiment_rmse_<weights>{,_800,_1200}.toml and runs/exp_rmse_<weights>{,_800,_1200}.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from make_banding_weights import final_average, tuned_model
from make_mr_weights import ship

from napari_cycleinr.model.checkpoint import load_model, load_resume_state, save_model

def stages(weights: str) -> tuple[str, ...]:
    return tuple(f"configs/experiment_rmse_{weights}{suffix}.toml" for suffix in ("", "_800", "_1200"))


def export(run: Path, weights: str) -> Path:
    model = final_average(load_resume_state(run / "state.pt"), load_model(weights))
    path = run / "final.safetensors"
    save_model(model, path, {"note": f"the final weight average of {run.name}"})
    print("wrote", path)
    return path


def shipped(run: Path, weights: str) -> None:
    history = (f"the earlier bundled `{weights}` + 3 x 400 steps with the root-mean-square fit and the loss on "
               f"slab-period banding ({', '.join(stages(weights))})")
    model = tuned_model(run, load_model(weights), record=stages(weights)[0], history=history)
    with tempfile.TemporaryDirectory() as folder:
        save_model(model, Path(folder) / f"{weights}.safetensors", model.info)
        ship(Path(folder), [weights])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--export", type=Path, help="a finished stage's run folder: write its final.safetensors")
    group.add_argument("--ship", type=Path, help="the last stage's run folder: write it into the package")
    parser.add_argument("--weights", default="average", choices=("average", "gaussian", "skip"))
    args = parser.parse_args()
    if args.export:
        export(args.export, args.weights)
    else:
        shipped(args.ship, args.weights)


if __name__ == "__main__":
    main()
