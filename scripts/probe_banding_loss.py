"""Weights against the lines at the slab period (docs/results.md, "Lines at the slab period").

    git show 4874dfb:src/napari_cycleinr/weights/average.safetensors > runs/before/average.safetensors  # etc.
    python scripts/probe_banding_loss.py --variant before=runs/before [--variant NAME=CHECKPOINT ...]
        [--data ../shared/data] [--out docs/results/banding_loss.json] [--table]

The scans and degradation of scripts/probe_texture.py (held-out CT and MR, the scans in tests/data; slab average
at x4 and x5), super-resolved by tricubic, the bundled weights an average profile gets (`average` for CT,
`average_mr` for MR) and each variant (a checkpoint, or a folder holding those two files): PSNR, SSIM, banding
and SNLI, beside the thin reference's banding. Issue #21's bar: banding <= 1.05 at PSNR no lower than before.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from probe_texture import FACTORS, WEIGHTS, scans

from napari_cycleinr.io import read_volume
from napari_cycleinr.model.checkpoint import load_model
from napari_cycleinr.model.evaluate import metric_window, simulate_thick
from napari_cycleinr.model.infer import predict
from napari_cycleinr.model.metrics import banding, psnr, snli, ssim
from napari_cycleinr.texture import body_level


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", action="append", default=[], help="NAME=CHECKPOINT")
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--out", default="docs/results/banding_loss.json")
    parser.add_argument("--table", action="store_true", help="only print the table from --out")
    args = parser.parse_args()
    if args.table:
        print(table(json.loads(Path(args.out).read_text())["rows"]))
        return
    variants = dict(v.split("=", 1) for v in args.variant)
    models = {modality: {"cycleinr": load_model(name), **{v: load_model(pick(path, name)) for v, path in variants.items()}}
              for modality, name in WEIGHTS.items()}
    tests = Path(__file__).resolve().parents[1] / "tests" / "data"
    test_mr = ("tests/data TotalSegmentator MR", "MR", read_volume(tests / "mr_totalseg_sm_117x91x20_3mm.nii.gz"))
    rows = []
    for name, modality, volume in [*scans(Path(args.data)), test_mr]:
        for factor in FACTORS:
            thick, reference, positions, intensities = simulate_thick(volume, factor, "average", modality)
            window = metric_window(reference, modality)
            threshold = body_level(reference, modality)
            outputs = {"thin reference": reference,
                       "tricubic": intensities.denormalise(predict("tricubic", thick, positions, 1 / factor))}
            for method, model in models[modality].items():
                output = predict("cycleinr", thick, positions, 1 / factor, model=model)
                outputs[method] = intensities.denormalise(output)
            for method, output in outputs.items():
                scored = method != "thin reference"
                rows.append({
                    "scan": name, "modality": modality, "factor": factor, "method": method,
                    "psnr": round(psnr(reference, output, window), 3) if scored else None,
                    "ssim": round(ssim(reference, output, window), 4) if scored else None,
                    "banding": round(banding(output, factor, modality, threshold), 3),
                    "snli": round(snli(output, modality, threshold), 4),
                })
                print(rows[-1], flush=True)
    Path(args.out).write_text(json.dumps({"weights": WEIGHTS, "variants": variants, "rows": rows},
                                         indent=1, allow_nan=False) + "\n")
    print(table(rows))


LABELS = {"cycleinr": "CycleINR now (bundled)", "before": "CycleINR before (4874dfb)"}


def pick(path: str, name: str) -> Path:
    """A checkpoint as given, or from a folder of weights the file named as the bundled one."""
    return Path(path) / f"{name}.safetensors" if Path(path).is_dir() else Path(path)


def table(rows: list[dict]) -> str:
    """PSNR dB / banding per method and scan, the thin reference's banding last."""
    methods = [m for m in dict.fromkeys(r["method"] for r in rows) if m not in ("thin reference", "cycleinr")]
    methods.append("cycleinr")
    labels = [LABELS.get(m, m) for m in methods]
    lines = ["| scan | x | " + " | ".join(labels) + " | thin scan banding |",
             "|---|---:|" + "---|" * (len(methods) + 1)]
    for key in dict.fromkeys((r["scan"], r["factor"]) for r in rows):
        by = {r["method"]: r for r in rows if (r["scan"], r["factor"]) == key}
        cells = [f"{by[m]['psnr']:.2f} / {by[m]['banding']:.2f}" for m in methods]
        lines.append(f"| {key[0]} | {key[1]} | " + " | ".join(cells) + f" | {by['thin reference']['banding']:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
