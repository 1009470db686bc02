"""Does the fast path keep the bundled model's scores? The slow path (the model's own forward pass, tile by
tile, float32), the fast path in float32 and the fast path as it runs by default (bf16 encoder where the CPU
computes bf16 natively) on the two samples of the held-out validation scan, at x2.5, x4 and x5.

    python scripts/check_fast_path.py [--size 256] [--slabs 2] [--json docs/results/fast_path.json]

Needs ../shared/data (the samples are written to runs/eval by scripts/make_results.py's make_crops). Prints
a table and writes the scores with their largest differences from the slow path.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from make_results import make_crops  # noqa: E402

from napari_cycleinr.io import read_volume  # noqa: E402
from napari_cycleinr.model.checkpoint import default_model_path, load_model  # noqa: E402
from napari_cycleinr.model.evaluate import metric_window, simulate_thick  # noqa: E402
from napari_cycleinr.model.fast_path import encoder_dtype  # noqa: E402
from napari_cycleinr.model.infer import InferenceOptions, predict  # noqa: E402
from napari_cycleinr.model.metrics import psnr, snli, ssim  # noqa: E402

FACTORS = (2.5, 4.0, 5.0)
PATHS = {
    "slow": InferenceOptions(fast=False, amp=False),
    "fast float32": InferenceOptions(amp=False),
    "fast default": InferenceOptions(),
}
BOUNDS = {"psnr": 0.05, "ssim": 0.001, "snli": 0.002}
"""What the speed issue (#25) allows the fast path to move each score by."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--slabs", type=int, default=2)
    parser.add_argument("--json", default="docs/results/fast_path.json")
    args = parser.parse_args()
    import torch

    model = load_model(default_model_path("average"))
    rows = []
    for path in make_crops(args.size, args.slabs):
        volume = read_volume(path)
        for factor in FACTORS:
            thick, reference, positions, intensities = simulate_thick(volume, factor, "average", "CT")
            window = metric_window(reference, "CT")
            for name, options in PATHS.items():
                started = time.perf_counter()
                values = predict("cycleinr", thick, positions, 1 / factor, model=model, device="cpu", options=options)
                seconds = time.perf_counter() - started
                output = intensities.denormalise(values)
                rows.append({
                    "sample": path.name, "factor": factor, "path": name, "seconds": round(seconds, 2),
                    "encoder": str(encoder_dtype(torch.device("cpu"), options)).replace("torch.", "")
                    if options.fast else "float32",
                    "psnr": psnr(reference, output, window), "ssim": ssim(reference, output, window),
                    "snli": snli(output, "CT"),
                })
                print(json.dumps(rows[-1]), flush=True)
    deltas = {}
    for name in PATHS:
        if name == "slow":
            continue
        for key in BOUNDS:
            pairs = [(r, s) for r in rows if r["path"] == name for s in rows
                     if s["path"] == "slow" and s["sample"] == r["sample"] and s["factor"] == r["factor"]]
            deltas.setdefault(name, {})[key] = max(abs(r[key] - s[key]) for r, s in pairs)
    report = {"model": "average (bundled)", "degradation": "average", "bounds": BOUNDS, "rows": rows,
              "largest_difference_from_slow": deltas,
              "within_bounds": {n: all(d[k] <= BOUNDS[k] for k in BOUNDS) for n, d in deltas.items()},
              "command": "python scripts/check_fast_path.py"}
    Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    for name, d in deltas.items():
        print(name, {k: f"{v:.5f}" for k, v in d.items()}, "within bounds:", report["within_bounds"][name])


if __name__ == "__main__":
    main()
