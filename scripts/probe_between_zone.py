"""Where the cycle cue falls between its boundaries: the fallback or the slab-average weights, which is better?

    PYTHONPATH=scripts python scripts/probe_between_zone.py [--data ../shared/data] [--table]

For every training and held-out scan of scripts/calibrate_slice_profile.py (a central 256 x 256 square), whole
and in four runs of 8, 12 and 16 thick slices, under each profile at x2.5, x4 and x5: the weights `upsample`
takes with no profile given (`cycleinr evaluate`'s method `auto`), the cycle cue it read, and the PSNR of `auto`
and of tricubic against the thin run; where the cue is left between its boundaries (the fallback weights,
`mixed` for CT, `mr` for MR, answer), also of the slab-average and Gaussian weights (`average`, `gaussian`;
`average_mr`, `gaussian_mr`). The table compares the two answers on the cases the cue leaves between its
boundaries (slice_profile.CYCLE_GAPS_BELOW < log ratio <= CYCLE_AVERAGE_ABOVE), by the profile that really made
the slices. JSON: docs/results/between_zone.json; --table prints the table from it. About an hour on 2 CPU
cores.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
from calibrate_slice_profile import FACTORS, TRAINING, VALIDATION, run_starts
from probe_rows import run_probe

from napari_cycleinr import slice_profile
from napari_cycleinr.cli import weights_chooser
from napari_cycleinr.intensity import guess_modality
from napari_cycleinr.io import read_volume
from napari_cycleinr.model.checkpoint import load_model
from napari_cycleinr.model.evaluate import AUTO, evaluate_volume
from napari_cycleinr.options import FALLBACK_WEIGHTS as FALLBACK

SLAB_AVERAGE = {"CT": "average", "MR": "average_mr"}
GAUSSIAN = {"CT": "gaussian", "MR": "gaussian_mr"}
RUNS = (None, 8, 12, 16)
"""None: the whole scan; else runs of this many thick slices (four per scan, profile and factor)."""
CUE = re.compile(r"cycle residual gaps / slab average ([0-9.]+), Gaussian / gaps ([0-9.]+)")


def cases(path: Path, group: str, models: dict, choosers: dict) -> list[dict]:
    volume = read_volume(path)
    data = slice_profile.central_square(volume.data)
    modality = guess_modality(volume.data)
    fallback, average, gaussian = FALLBACK[modality], SLAB_AVERAGE[modality], GAUSSIAN[modality]
    rows = []
    for n in RUNS:
        for factor in FACTORS:
            length = len(data) if n is None else math.ceil(n * factor - 1e-9)
            for start in [0] if n is None else run_starts(len(data), length):
                run = volume.replace(data=np.ascontiguousarray(data[start : start + length]))
                for kind in slice_profile.PROFILES:
                    result = evaluate_volume(run, factor, kind, {}, ["tricubic", AUTO], modality,
                                             choose=choosers[modality])
                    psnr = {name: round(scores["psnr"], 3) for name, scores in result["methods"].items()}
                    found = result[AUTO]["slice_profile"] or {}
                    cue = CUE.search(found.get("cues") or "")
                    row = {"group": group, "scan": path.name, "modality": modality, "slices": n or "whole",
                           "factor": factor, "start": start, "truth": kind, "weights": result[AUTO]["weights"],
                           "cycle_ratio": float(cue.group(1)) if cue else None,
                           "gaussian_ratio": float(cue.group(2)) if cue else None, "auto": psnr[AUTO],
                           "tricubic": psnr["tricubic"]}
                    if between(row):  # the fallback's answer and the specialists' beside it
                        three = {name: models[name] for name in (fallback, average, gaussian)}
                        other = evaluate_volume(run, factor, kind, three, list(three), modality)["methods"]
                        row.update(fallback=round(other[fallback]["psnr"], 3),
                                   average=round(other[average]["psnr"], 3),
                                   gaussian=round(other[gaussian]["psnr"], 3))
                    rows.append(row)
                    print(rows[-1], flush=True)
    return rows


def between(row: dict) -> bool:
    """The cue read, and between its boundaries: the fallback answered before slice_profile.LEANING, the
    slab-average weights since."""
    ratio = row["cycle_ratio"]
    if ratio is None or row["weights"] not in (FALLBACK[row["modality"]], SLAB_AVERAGE[row["modality"]]):
        return False
    return slice_profile.CYCLE_GAPS_BELOW <= math.log(ratio) <= slice_profile.CYCLE_AVERAGE_ABOVE


def table(rows: list[dict]) -> str:
    """Between-zone cases by scans, modality and true profile: the slab-average weights' gain over the fallback
    (mean, worst), and how often each answer falls under tricubic."""
    lines = [("| scans | modality | true profile | between-zone cases | slab-average weights - fallback, mean dB | "
              "worst | best | slab-average weights under tricubic | fallback under tricubic |"),
             "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for group in ("training", "held_out"):
        for modality in ("CT", "MR"):
            for kind in slice_profile.PROFILES:
                mine = [r for r in rows if (r["group"], r["modality"], r["truth"]) == (group, modality, kind)
                        and "fallback" in r]  # measured where the run found the cue between its boundaries
                if not mine:
                    continue
                gains = [r["average"] - r["fallback"] for r in mine]
                lines.append(
                    f"| {group.replace('_', '-')} | {modality} | {kind} | {len(mine)} | {np.mean(gains):+.3f} | "
                    f"{min(gains):+.2f} | {max(gains):+.2f} | {sum(r['average'] < r['tricubic'] for r in mine)} | "
                    f"{sum(r['fallback'] < r['tricubic'] for r in mine)} |")
    return "\n".join(lines)


def collect(data: Path) -> list[dict]:
    models = {name: load_model(name) for name in (*FALLBACK.values(), *SLAB_AVERAGE.values(), *GAUSSIAN.values())}
    choosers = {modality: weights_chooser(modality, None) for modality in FALLBACK}
    rows = [r for name in TRAINING for r in cases(data / name, "training", models, choosers)]
    return rows + [r for name in VALIDATION for r in cases(data / name, "held_out", models, choosers)]


if __name__ == "__main__":
    run_probe(__doc__, "docs/results/between_zone.json", table, collect)
