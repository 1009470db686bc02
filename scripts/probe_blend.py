"""What answers a scan whose slice profile is not known: a mixture of the three profiles' weights, measured.

    PYTHONPATH=scripts python scripts/probe_blend.py [--data ../shared/data] [--table]

For every training scan of scripts/calibrate_slice_profile.py (a central 256 x 256 square), two runs of the thin
scan that make 8 thick slices under each profile at x2.5, x4 and x5: PSNR of each profile's weights (`average`,
`gaussian`, `skip`; for MR the `*_mr` ones), of the fallback weights (`mixed`, `mr`) and of every mixture of the
three profiles' outputs on a grid of tenths, against the thin run; the table shows the mixture that loses least
to the right profile's weights, on average over the three profiles, beside the fallback. (A mean of the weights
themselves, one network, answers within a few hundredths of a dB of the mean of the outputs on the tests/data
scans.) Measured and not taken: docs/method.md, "Which weights". JSON: docs/results/blend_choice.json; --table
prints the table from it. About 10 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
from pathlib import Path

import numpy as np
from calibrate_slice_profile import FACTORS, TRAINING, run_starts

from napari_cycleinr import slice_profile
from napari_cycleinr.intensity import guess_modality
from napari_cycleinr.io import read_volume
from napari_cycleinr.model.checkpoint import load_model
from napari_cycleinr.model.evaluate import evaluate_volume
from napari_cycleinr.model.metrics import psnr
from napari_cycleinr.options import FALLBACK_WEIGHTS as FALLBACK

RESULT = Path("docs/results/blend_choice.json")
THICK_SLICES = 8
SPECIALISTS = {"CT": ("average", "gaussian", "skip"), "MR": ("average_mr", "gaussian_mr", "skip_mr")}
GRID = [s for s in itertools.product(range(11), repeat=3) if sum(s) == 10]


def cases(path: Path, models: dict) -> list[dict]:
    volume = read_volume(path)
    data = slice_profile.central_square(volume.data)
    modality = guess_modality(volume.data)
    names = [*SPECIALISTS[modality], FALLBACK[modality]]
    rows = []
    for factor in FACTORS:
        length = math.ceil(THICK_SLICES * factor - 1e-9)
        for start in run_starts(len(data), length)[1:3]:
            run = volume.replace(data=np.ascontiguousarray(data[start : start + length]))
            for kind in slice_profile.PROFILES:
                result = evaluate_volume(run, factor, kind, {n: models[n] for n in names}, ["tricubic", *names],
                                         modality, keep_outputs=True)
                outputs, reference, window = result["outputs"], result["reference_array"], result["window"]
                mixes = {}
                for shares in GRID:
                    mix = sum(s / 10 * outputs[n] for s, n in zip(shares, SPECIALISTS[modality]) if s)
                    mixes[shares_key(shares)] = round(psnr(reference, mix, window), 3)
                rows.append({"scan": path.name, "modality": modality, "factor": factor, "start": start,
                             "truth": kind, **{n: round(result["methods"][n]["psnr"], 3) for n in
                                               ["tricubic", *names]}, "mixes": mixes})
                print({k: v for k, v in rows[-1].items() if k != "mixes"}, flush=True)
    return rows


def shares_key(shares: tuple[int, int, int]) -> str:
    return "".join(map(str, shares)) if 10 not in shares else ",".join(map(str, shares))


def right_weights(row: dict) -> float:
    return row[SPECIALISTS[row["modality"]][slice_profile.PROFILES.index(row["truth"])]]


def losses(rows: list[dict], shares: tuple[int, int, int]) -> list[float]:
    """Each case's PSNR of the mixture less that of the right profile's weights."""
    return [r["mixes"][shares_key(shares)] - right_weights(r) for r in rows]


def balanced(rows: list[dict], shares: tuple[int, int, int]) -> float:
    """Mean loss with each profile weighed alike."""
    return float(np.mean([np.mean(losses([r for r in rows if r["truth"] == k], shares))
                          for k in slice_profile.PROFILES]))


def best_shares(rows: list[dict]) -> tuple[int, int, int]:
    return max(GRID, key=lambda shares: balanced(rows, shares))


def answer_row(modality: str, label: str, rows: list[dict], answer) -> str:
    """One line of the table: `answer(row)`'s PSNR less the right profile's weights', by profile."""
    def loss(row: dict) -> float:
        return answer(row) - right_weights(row)

    by_kind = [np.mean([loss(r) for r in rows if r["truth"] == k]) for k in slice_profile.PROFILES]
    return (f"| {modality} | {label} | " + " | ".join(f"{v:+.2f}" for v in by_kind)
            + f" | {np.mean(by_kind):+.2f} | {min(loss(r) for r in rows):+.2f} |")


def table(rows: list[dict]) -> str:
    """PSNR less that of the right profile's weights: mean by profile, their mean, and the worst case."""
    lines = ["| modality | answer | slab average | Gaussian | gaps | mean | worst |", "|---|---|---:|---:|---:|---:|---:|"]
    thirds = ((3, 3, 4), (3, 4, 3), (4, 3, 3))
    for modality in ("CT", "MR"):
        mine = [r for r in rows if r["modality"] == modality]
        if not mine:
            continue
        fallback, best = FALLBACK[modality], best_shares(mine)
        best_key = shares_key(best)
        lines += [
            answer_row(modality, f"fallback (`{fallback}`)", mine, lambda r, name=fallback: r[name]),
            answer_row(modality, "tricubic", mine, lambda r: r["tricubic"]),
            answer_row(modality, "the three about alike (shares 0.3-0.4)", mine,
                       lambda r: float(np.mean([r["mixes"][shares_key(s)] for s in thirds]))),
            answer_row(modality, f"best mixture here ({best[0] / 10:g} / {best[1] / 10:g} / {best[2] / 10:g})",
                       mine, lambda r, key=best_key: r["mixes"][key]),
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--table", action="store_true", help="print the table from the saved JSON")
    args = parser.parse_args()
    if not args.table:
        models = {n: load_model(n) for group in SPECIALISTS.values() for n in group}
        models.update({n: load_model(n) for n in FALLBACK.values()})
        rows = [row for name in TRAINING for row in cases(Path(args.data) / name, models)]
        RESULT.write_text(json.dumps({"thick_slices": THICK_SLICES, "rows": rows}, indent=1) + "\n")
    print(table(json.loads(RESULT.read_text())["rows"]))


if __name__ == "__main__":
    main()
