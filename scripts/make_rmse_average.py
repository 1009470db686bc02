"""Ship the `average` weights (then `gaussian` and `skip`) fine-tuned with the root-mean-square fit (issue #21:
the CT PSNR the banding loss had cost, won back; docs/results.md, "Lines at the slab period").

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
configs/experiment_rmse_<weights>{,_800,_1200}.toml and runs/exp_rmse_<weights>{,_800,_1200}, measured before
shipping on their own profile against the weights bundled before (W = gaussian or skip):

    cycleinr evaluate runs/eval/lidc0002_slab0.nii.gz runs/eval/lidc0002_slab1.nii.gz tests/data/ct_*.nii.gz \
        --modality CT --factor 2.5,4,5 --degradation W --methods tricubic,before,after \
        --variant before=src/napari_cycleinr/weights/W.safetensors \
        --variant after=runs/exp_rmse_W_1200/final.safetensors --device cpu --json docs/results/rmse_W.json

(runs/eval: scripts/make_results.py; once shipped, the earlier weights are in git: commit bc9e6e5).
`--table` prints docs/results.md's table from those JSON files.
"""

from __future__ import annotations

import argparse
import json
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


def table(names: tuple[str, ...] = ("gaussian", "skip")) -> str:
    """Each weight on its own profile: PSNR dB / banding before and after, per scan and factor."""
    lines = ["| weights (profile) | scan | x | tricubic | before | after | after - before dB |",
             "|---|---|---:|---|---|---|---:|"]
    for name in names:
        for result in json.loads(Path(f"docs/results/rmse_{name}.json").read_text())["results"]:
            scores = {m: result["methods"][m] for m in ("tricubic", "before", "after")}
            shown = {m: f"{v['psnr']:.2f} / {v['banding']:.2f}" for m, v in scores.items()}
            lines.append(f"| `{name}` | {Path(result['reference']).name.split('.')[0]} | {result['factor']:g} | "
                         f"{shown['tricubic']} | {shown['before']} | {shown['after']} | "
                         f"{scores['after']['psnr'] - scores['before']['psnr']:+.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--table", action="store_true", help="print the gaussian and skip weights' table")
    group.add_argument("--export", type=Path, help="a finished stage's run folder: write its final.safetensors")
    group.add_argument("--ship", type=Path, help="the last stage's run folder: write it into the package")
    parser.add_argument("--weights", default="average", choices=("average", "gaussian", "skip"))
    args = parser.parse_args()
    if args.table:
        print(table())
    elif args.export:
        export(args.export, args.weights)
    else:
        shipped(args.ship, args.weights)


if __name__ == "__main__":
    main()
