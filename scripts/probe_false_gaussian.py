"""What a slab average named Gaussian costs: the held-out MR run the Gaussian cycle cue of the earlier `mr` named
so (docs/method.md, "Gaussian slices on short scans"; today's `mr` reads it as a slab average).

    PYTHONPATH=scripts python scripts/probe_false_gaussian.py [--data ../shared/data]

The held-out MR's four 12-slice runs slab-averaged at x2.5 (the cases of scripts/probe_gaps_cues.py, with their
decisions from docs/results/gaps_cues.json), each super-resolved back onto its own thin slices by tricubic,
`mr`, `average_mr` and `gaussian_mr`: PSNR dB over the MR window.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from calibrate_slice_profile import run_starts

from napari_cycleinr import slice_profile
from napari_cycleinr.intensity import intensity_map
from napari_cycleinr.io import read_volume
from napari_cycleinr.model.checkpoint import load_model
from napari_cycleinr.model.evaluate import metric_window
from napari_cycleinr.model.infer import predict
from napari_cycleinr.model.metrics import psnr

SCAN, FACTOR, RUN = "train/mr_fnndsc_memprage_1p0mm.nii.gz", 2.5, 12


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data")
    args = parser.parse_args()
    rows = json.loads(Path("docs/results/gaps_cues.json").read_text())["rows"]
    cases = [r for r in rows if r["group"] == f"held_out_{RUN}" and r["scan"] == Path(SCAN).name
             and r["factor"] == FACTOR and r["truth"] == "average"]
    data = slice_profile.central_square(read_volume(Path(args.data) / SCAN).data)
    matrix = slice_profile.profile_weights(data.shape[0], FACTOR, "average").astype(np.float32)
    whole = np.tensordot(matrix, data, axes=(1, 0))
    starts = run_starts(len(whole), RUN)
    models = {name: load_model(name) for name in ("mr", "average_mr", "gaussian_mr")}
    for start, case in zip(starts, cases):
        thick = whole[start : start + RUN]
        covered = np.nonzero(matrix[start : start + RUN].sum(axis=0))[0]
        thin = data[covered[0] : covered[-1] + 1]
        intensities = intensity_map(thick, "MR")
        normalised = intensities.normalise(thick)
        positions = (np.arange(len(thin)) + 0.5 + covered[0] - start * FACTOR) / FACTOR - 0.5
        outputs = {"tricubic": predict("tricubic", normalised, positions, 1 / FACTOR)}
        outputs |= {name: predict("cycleinr", normalised, positions, 1 / FACTOR, model=model)
                    for name, model in models.items()}
        window = metric_window(thin, "MR")
        scores = {name: round(psnr(thin, intensities.denormalise(out), window), 2) for name, out in outputs.items()}
        print(f"run from thick slice {start}: decided {case['decision']} (Gaussian / gaps log "
              f"{case['cycle_gaussian']:.3f}); PSNR {scores}")


if __name__ == "__main__":
    main()
