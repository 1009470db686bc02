"""Short scans with no profile given: what the weights `upsample` takes gain over the fallback weights, measured.

    PYTHONPATH=scripts python scripts/probe_short_runs.py [--data ../shared/data] [--table]

For every training and held-out scan of scripts/calibrate_slice_profile.py (a central 256 x 256 square), four
runs of the thin scan that make 4 and 6 thick slices under each profile at x2.5, x4 and x5: PSNR of `auto`
(`cycleinr evaluate`'s method: the profile estimated and settled by the cycle cue, as `upsample` does), of the
fallback weights (`mixed` for CT, `mr` for MR) and of tricubic, against the thin run. Chose the number of thick
slices from which the cycle cue is acted on (slice_profile.CYCLE_SLICES, docs/results.md, "With no slice profile
given"). JSON: docs/results/short_runs.json; --table prints the table from it. About 20 minutes on 2 CPU cores.
"""

from __future__ import annotations

import math
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

THICK_SLICES = (4, 6)


def cases(path: Path, group: str, models: dict, choosers: dict) -> list[dict]:
    volume = read_volume(path)
    data = slice_profile.central_square(volume.data)
    modality = guess_modality(volume.data)
    fallback = FALLBACK[modality]
    rows = []
    for n in THICK_SLICES:
        for factor in FACTORS:
            length = math.ceil(n * factor - 1e-9)
            for start in run_starts(len(data), length):
                run = volume.replace(data=np.ascontiguousarray(data[start : start + length]))
                for kind in slice_profile.PROFILES:
                    result = evaluate_volume(run, factor, kind, {fallback: models[modality]},
                                             ["tricubic", AUTO, fallback], modality, choose=choosers[modality])
                    psnr = {name: scores["psnr"] for name, scores in result["methods"].items()}
                    rows.append({"group": group, "scan": path.name, "modality": modality, "slices": n,
                                 "factor": factor, "start": start, "truth": kind, "weights": result[AUTO]["weights"],
                                 "auto": round(psnr[AUTO], 3), "fallback": round(psnr[fallback], 3),
                                 "tricubic": round(psnr["tricubic"], 3)})
                    print(rows[-1], flush=True)
    return rows


def table(rows: list[dict]) -> str:
    """Per scan group, modality and run length: the mean gain of `auto` over the fallback, its worst case,
    and how many cases fall below the fallback by more than 0.3 dB or below tricubic."""
    lines = [("| scans | modality | thick slices | cases | specialist answers | auto - fallback, mean dB | worst | "
              "under the fallback by > 0.3 dB | auto under tricubic | fallback under tricubic |"),
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for group in ("training", "held_out"):
        for modality in ("CT", "MR"):
            for n in THICK_SLICES:
                mine = [r for r in rows if (r["group"], r["modality"], r["slices"]) == (group, modality, n)]
                if not mine:
                    continue
                gains = [r["auto"] - r["fallback"] for r in mine]
                acted = sum(r["weights"] != FALLBACK[modality] for r in mine)
                lines.append(
                    f"| {group.replace('_', '-')} | {modality} | {n} | {len(mine)} | {acted} | "
                    f"{np.mean(gains):+.3f} | {min(gains):+.2f} | {sum(g < -0.3 for g in gains)} | "
                    f"{sum(r['auto'] < r['tricubic'] for r in mine)} | {sum(r['fallback'] < r['tricubic'] for r in mine)} |")
    return "\n".join(lines)


def collect(data: Path) -> list[dict]:
    models = {modality: load_model(name) for modality, name in FALLBACK.items()}
    choosers = {modality: weights_chooser(modality, None) for modality in FALLBACK}
    rows = [r for name in TRAINING for r in cases(data / name, "training", models, choosers)]
    return rows + [r for name in VALIDATION for r in cases(data / name, "held_out", models, choosers)]


if __name__ == "__main__":
    run_probe(__doc__, "docs/results/short_runs.json", table, collect)
