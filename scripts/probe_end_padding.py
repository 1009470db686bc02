"""Would padding the thick stack at its ends even out the banding there? (docs/method.md: measured, not taken.)

    python scripts/probe_end_padding.py [--data ../shared/data] [--out docs/results/end_padding.json]

Beyond the outermost acquired centres the model extrapolates and keeps least of the thin scan's change
(scripts/probe_banding_ends.py). One slice added at each end of the thick stack turns that extrapolation into
interpolation: mirrored (`reflect`: the second slice again), linearly extrapolated (`linear`: 2 s0 - s1) or
halfway (`half`), against none. Slab average at x4 and x5, the weights an average profile gets, the scans of
scripts/probe_banding_ends.py; PSNR, banding, banding without the end half-slabs and the change kept per class.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from probe_banding_ends import probe_scans, scores
from probe_texture import WEIGHTS

from napari_cycleinr.model.checkpoint import load_model
from napari_cycleinr.model.evaluate import simulate_thick
from napari_cycleinr.model.infer import predict

PADDINGS = ("none", "reflect", "linear", "half")
REACH = {"reflect": None, "linear": 1.0, "half": 0.5}
"""How far past each end slice the added slice goes, in units of the end slices' difference (reflect: mirror)."""


def padded(thick: np.ndarray, how: str) -> np.ndarray:
    """The thick stack with one slice added at each end."""
    if how == "none":
        return thick
    if how == "reflect":
        low, high = thick[1], thick[-2]
    else:
        low = thick[0] + REACH[how] * (thick[0] - thick[1])
        high = thick[-1] + REACH[how] * (thick[-1] - thick[-2])
    return np.ascontiguousarray(np.concatenate([low[None], thick, high[None]]).astype(np.float32))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--out", default="docs/results/end_padding.json")
    args = parser.parse_args()
    models = {modality: load_model(name) for modality, name in WEIGHTS.items()}
    rows = []
    for scan, modality, volume in probe_scans(Path(args.data)):
        for factor in (4, 5):
            thick, reference, positions, intensities = simulate_thick(volume, factor, "average", modality)
            for how in PADDINGS:
                shift = 0 if how == "none" else 1
                output = predict("cycleinr", padded(np.asarray(thick), how), positions + shift, 1 / factor,
                                 model=models[modality])
                output = intensities.denormalise(output)
                rows.append({"scan": scan, "factor": factor, "padding": how,
                             **scores(output, reference, factor, modality)})
                print(rows[-1], flush=True)
    Path(args.out).write_text(json.dumps({"weights": WEIGHTS, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
