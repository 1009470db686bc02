"""Where in the slab pattern the remaining banding sits (docs/results.md, "Lines at the slab period").

    python scripts/probe_banding_ends.py [--data ../shared/data] [--out docs/results/banding_ends.json] [--table]
        [--variant NAME=RUN_FOLDER ... --variant-modality MR]

Each neighbouring output pair is classed by its place in the acquired slab pattern (metrics.slab_pair_classes):
across a border, inside near a border, inside around the acquired centre, or beyond the outermost acquired
centres, where every method extrapolates. Per class, how much of the thin reference's slice-to-slice change the
output keeps (its mean neighbouring-slice difference over the reference's); banding of the whole output and
without the pairs beyond the outermost centres. Slab average at x4 and x5; tricubic and the bundled weights an
average profile gets, and each variant (a training run's final weight average) on the scans of its modality.
The scans in tests/data always, the held-out CT and MR when --data holds them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from make_banding_weights import final_average
from probe_texture import WEIGHTS, scans

from napari_cycleinr.io import read_volume
from napari_cycleinr.model.checkpoint import load_model, load_resume_state
from napari_cycleinr.model.evaluate import metric_window, simulate_thick
from napari_cycleinr.model.infer import predict
from napari_cycleinr.model.metrics import (
    PAIR_CLASSES,
    banding,
    neighbour_differences,
    psnr,
    slab_pair_classes,
)
from napari_cycleinr.texture import body_level

TESTS = Path(__file__).resolve().parents[1] / "tests" / "data"


def probe_scans(data: Path) -> list[tuple[str, str, object]]:
    """The held-out scans of scripts/probe_texture.py where the data folder has them, then tests/data's two."""
    held_out = []
    if (data / "train").is_dir():
        held_out = [scan for scan in scans(data) if "held out" in scan[0]]
    test_mr = read_volume(TESTS / "mr_totalseg_sm_117x91x20_3mm.nii.gz")
    test_ct = read_volume(TESTS / "ct_totalseg_sm_122x101x30_3mm.nii.gz")
    return [*held_out, ("tests/data TotalSegmentator MR", "MR", test_mr),
            ("tests/data TotalSegmentator CT", "CT", test_ct)]


def kept_per_class(output: np.ndarray, reference: np.ndarray, classes: np.ndarray, threshold: float) -> dict:
    """Mean neighbouring-slice difference of the output over the reference's, per class (None: no such pair)."""
    moved, truth = neighbour_differences(output, threshold), neighbour_differences(reference, threshold)
    kept = {}
    for number, name in enumerate(PAIR_CLASSES):
        where = (classes == number) & np.isfinite(moved) & np.isfinite(truth)
        kept[name] = round(float(moved[where].mean() / truth[where].mean()), 3) if where.any() else None
    return kept


def scores(output: np.ndarray, reference: np.ndarray, factor: float, modality: str, scored: bool = True) -> dict:
    """PSNR (unless not `scored`), banding whole and without the end half-slabs, and the change kept per class."""
    threshold, window = body_level(reference, modality), metric_window(reference, modality)
    classes = slab_pair_classes(reference.shape[0], factor)
    return {"psnr": round(psnr(reference, output, window), 3) if scored else None,
            "banding": round(banding(output, factor, modality, threshold), 3),
            "without_end_half_slabs": round(banding(output, factor, modality, threshold, pairs=classes != 3), 3),
            "kept": kept_per_class(output, reference, classes, threshold)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--out", default="docs/results/banding_ends.json")
    parser.add_argument("--table", action="store_true", help="only print the table from --out")
    parser.add_argument("--variant", action="append", default=[], help="NAME=RUN_FOLDER (with state.pt)")
    parser.add_argument("--variant-modality", default="MR", choices=sorted(WEIGHTS))
    args = parser.parse_args()
    if args.table:
        print(table(json.loads(Path(args.out).read_text())["rows"]))
        return
    models = {modality: {"cycleinr": load_model(name)} for modality, name in WEIGHTS.items()}
    for name, run in (v.split("=", 1) for v in args.variant):
        state = load_resume_state(Path(run) / "state.pt")
        models[args.variant_modality][name] = final_average(state, models[args.variant_modality]["cycleinr"])
    rows = []
    for scan, modality, volume in probe_scans(Path(args.data)):
        for factor in (4, 5):
            thick, reference, positions, intensities = simulate_thick(volume, factor, "average", modality)
            outputs = {"thin reference": reference,
                       "tricubic": intensities.denormalise(predict("tricubic", thick, positions, 1 / factor))}
            for method, model in models[modality].items():
                output = predict("cycleinr", thick, positions, 1 / factor, model=model)
                outputs[method] = intensities.denormalise(output)
            for method, output in outputs.items():
                rows.append({"scan": scan, "factor": factor, "method": method,
                             **scores(output, reference, factor, modality, scored=method != "thin reference")})
                print(rows[-1], flush=True)
    Path(args.out).write_text(json.dumps({"weights": WEIGHTS, "rows": rows}, indent=1) + "\n")
    print(table(rows))


def table(rows: list[dict]) -> str:
    """PSNR, banding (whole / without the end half-slabs) and the change kept per class."""
    kept_columns = " | ".join(f"kept {name}" for name in PAIR_CLASSES)
    lines = [f"| scan | x | method | PSNR dB | banding | without the end half-slabs | {kept_columns} |",
             "|---|---:|---|---:|---:|---:|" + "---:|" * len(PAIR_CLASSES)]
    for row in rows:
        if row["method"] == "thin reference":
            thin = row
            continue
        kept = " | ".join("" if v is None else f"{v:.2f}" for v in row["kept"].values())
        lines.append(f"| {row['scan']} | {row['factor']} | {row['method']} | {row['psnr']:.2f} | "
                     f"{row['banding']:.2f} (thin {thin['banding']:.2f}) | "
                     f"{row['without_end_half_slabs']:.2f} | {kept} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
