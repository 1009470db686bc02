"""Slab average, gaps or Gaussian: the image's cues and the fallback model's cycle cues on the calibration cases,
and what the pipeline decides from them (docs/results.md, "Finding the slice profile").

    PYTHONPATH=scripts python scripts/probe_gaps_cues.py [--data ../shared/data] [--table]

For every case of scripts/calibrate_slice_profile.py, training and held-out scans, whole and in runs of 8, 12
and 16 thick slices: the image position, the shared noise, the cycle cue (model/cycle_cue.py) at the case's
own factor (both: gaps / slab average, Gaussian / gaps), and the profile the pipeline settles on
(slice_profile.estimate, then with_cycle_cue), confident or not. JSON: docs/results/gaps_cues.json; --table
prints the accuracy table from it. Run from the repository root with ../shared/data present (about 15
minutes on 2 CPU cores).
"""

from __future__ import annotations

import math
from pathlib import Path

from calibrate_slice_profile import TESTS, TRAINING, VALIDATION, thick_cases
from probe_rows import run_probe

from napari_cycleinr import slice_profile
from napari_cycleinr.model.checkpoint import load_model
from napari_cycleinr.model.cycle_cue import cycle_cues
from napari_cycleinr.options import FALLBACK_WEIGHTS


def cases(path: Path, group: str, models: dict, window: int | None = None) -> list[dict]:
    rows = []
    for modality, factor, kind, thick, spacing in thick_cases(path, window):
        cues = cycle_cues(thick, factor, modality, models[modality])
        found = slice_profile.with_cycle_cue(slice_profile.estimate(thick, spacing, modality), cues, len(thick),
                                             modality)
        row = {"group": group, "scan": path.name, "modality": modality, "factor": factor, "truth": kind,
               "slices": len(thick), "position": slice_profile.profile_position(thick, spacing, modality),
               "shared_noise": slice_profile.shared_noise(thick, modality), "cycle": cues.gaps_over_average,
               "cycle_gaussian": cues.gaussian_over_gaps,
               "decision": found.kind, "source": found.source, "confident": found.confident}
        rows.append({k: (round(v, 4) if math.isfinite(v) else None) if isinstance(v, float) else v
                     for k, v in row.items()})
        print(rows[-1], flush=True)
    return rows


RUNS = (8, 12, 16)
"""Short scans: runs of this many thick slices (four per scan, profile and factor)."""
GROUPS = {"training": "training scans (calibration), whole", "held_out": "held-out scans, whole",
          **{f"training_{n}": f"training scans, {n}-slice runs" for n in RUNS},
          **{f"held_out_{n}": f"held-out scans, {n}-slice runs" for n in RUNS}}


def table(rows: list[dict]) -> str:
    """Slab averages and gaps: how often the profile is acted on (the specialist answers), and how often wrongly
    (Gaussian included); and what a Gaussian profile the image did not name confidently turns into."""
    lines = [("| scans | slab average or gaps | acted on | right | wrong | Gaussian, not named by the image | "
              "named Gaussian by the model | read as slab average |"),
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for group, title in GROUPS.items():
        for modality in ("CT", "MR"):
            mine = [r for r in rows if r["group"] == group and r["modality"] == modality]
            plain = [r for r in mine if r["truth"] != "gaussian"]
            acted = [r for r in plain if r["confident"]]
            right = sum(r["decision"] == r["truth"] for r in acted)
            unnamed = [r for r in mine if r["truth"] == "gaussian" and not (r["confident"] and r["source"] == "estimate")]
            as_gaussian = sum(r["confident"] and r["decision"] == "gaussian" for r in unnamed)
            as_average = sum(r["confident"] and r["decision"] == "average" for r in unnamed)
            lines.append(f"| {title}, {modality} | {len(plain)} | {len(acted)} | {right} | {len(acted) - right} | "
                         f"{len(unnamed)} | {as_gaussian} | {as_average} |")
    return "\n".join(lines)


def collect(data: Path) -> list[dict]:
    models = {modality: load_model(name) for modality, name in FALLBACK_WEIGHTS.items()}
    rows = [r for name in TRAINING for r in cases(data / name, "training", models)]
    rows += [r for name in VALIDATION for r in cases(data / name, "held_out", models)]
    rows += [r for name in TESTS for r in cases(Path(name), "held_out", models)]
    for n in RUNS:
        rows += [r for name in TRAINING for r in cases(data / name, f"training_{n}", models, n)]
        rows += [r for name in VALIDATION for r in cases(data / name, f"held_out_{n}", models, n)]
        rows += [r for name in TESTS for r in cases(Path(name), f"held_out_{n}", models, n)]
    return rows


if __name__ == "__main__":
    run_probe(__doc__, "docs/results/gaps_cues.json", table, collect)
