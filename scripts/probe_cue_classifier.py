"""Could one learnt rule read the slice profile better than today's boundaries? Measured on the cue table only.

    python scripts/probe_cue_classifier.py [--cues docs/results/gaps_cues.json] [--confidence 0.6]

Today the pipeline reads the cues one at a time against hand-set boundaries (the image's position and shared
noise, then the fallback model's two cycle residuals; slice_profile.py). Here a multinomial logistic regression
over the same numbers (both cycle cues, the position and whether there is one, the shared noise, log of the
number of thick slices, the factor, MR or not), fitted on the training scans' cases of
docs/results/gaps_cues.json and scored on the held-out ones (LIDC-IDRI-0002, the MEMPRAGE MR, the tests/data
CTs; whole and in runs of 8-16 slices), acts where its probability reaches --confidence. Mistakes are split as
the pipeline weighs them: a Gaussian profile read as a slab average (the `average` weights answer, a few tenths
of a dB below `gaussian`) against the costly ones (slab average against gaps, Gaussian named for either).
Nothing here runs a model; what the calls are worth in PSNR on the tests/data CTs: docs/method.md ("Measured and not
taken: one learnt rule").
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from napari_cycleinr.options import PROFILES

STEPS, RATE, RIDGE = 5000, 0.5, 1e-2


def features(row: dict) -> list[float]:
    position = row["position"]
    return [row["cycle"], row["cycle_gaussian"], 0.5 if position is None else position,
            float(position is not None), row["shared_noise"] or 0.0, math.log(row["slices"]), row["factor"],
            float(row["modality"] == "MR")]


def fit(rows: list[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Standardised features, then softmax regression by plain gradient descent (deterministic)."""
    x = np.array([features(r) for r in rows])
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-9
    x = np.c_[(x - mean) / scale, np.ones(len(x))]
    truth = np.eye(len(PROFILES))[[PROFILES.index(r["truth"]) for r in rows]]
    weights = np.zeros((x.shape[1], len(PROFILES)))
    for _ in range(STEPS):
        weights -= RATE * (x.T @ (softmax(x @ weights) - truth) / len(x) + RIDGE * weights)
    return weights, mean, scale


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def learnt_calls(rows: list[dict], model: tuple, confidence: float) -> list[str | None]:
    """The profile each row would get, None where the rule is not sure (the fallback weights answer)."""
    weights, mean, scale = model
    x = np.c_[(np.array([features(r) for r in rows]) - mean) / scale, np.ones(len(rows))]
    p = softmax(x @ weights)
    return [PROFILES[k] if p[i, k] >= confidence else None for i, k in enumerate(p.argmax(axis=1))]


def today_calls(rows: list[dict]) -> list[str | None]:
    """The profile the pipeline settled on where it acted (the cue table's decision), else None."""
    return [r["decision"] if r["confident"] else None for r in rows]


def tally(rows: list[dict], calls: list[str | None]) -> str:
    acted = [(r["truth"], c) for r, c in zip(rows, calls) if c is not None]
    mild = sum(truth == "gaussian" and call == "average" for truth, call in acted)
    costly = sum(truth != call for truth, call in acted) - mild
    return f"{len(acted)} | {sum(truth == call for truth, call in acted)} | {mild} | {costly}"


def table(rows: list[dict], model: tuple, confidence: float) -> str:
    header = ("| scans | modality | cases | today: acted | right | Gaussian as slab average | costly | "
              f"learnt ({confidence:g}): acted | right | Gaussian as slab average | costly |")
    lines = [header, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for group in ("training", "held"):
        for modality in ("CT", "MR"):
            mine = [r for r in rows if r["group"].startswith(group) and r["modality"] == modality]
            lines.append(f"| {'training' if group == 'training' else 'held-out'} | {modality} | {len(mine)} | "
                         f"{tally(mine, today_calls(mine))} | {tally(mine, learnt_calls(mine, model, confidence))} |")
    return "\n".join(lines)


def psnr_where_known(rows: list[dict], model: tuple, confidence: float, results: Path) -> str:
    """Mean PSNR of the weights each rule picks, on the whole held-out CT cases that the no-profile table's
    JSON scores with every bundled weight (make_no_profile_table.py); `mixed` where a rule is not sure."""
    scored = {}
    for profile in PROFILES:
        for r in json.loads((results / f"no_profile_tests_ct_{profile}.json").read_text())["results"]:
            scored[(Path(r["reference"]).name, profile, r["factor"])] = r["methods"]
    cases = [r for r in rows if r["group"] == "held_out" and r["modality"] == "CT"
             and (r["scan"], r["truth"], r["factor"]) in scored]
    means = {}
    for name, calls in (("today", today_calls(cases)), ("learnt", learnt_calls(cases, model, confidence))):
        values = [scored[(r["scan"], r["truth"], r["factor"])][call or "mixed"]["psnr"] for r, call in zip(cases, calls)]
        means[name] = sum(values) / len(values)
    return f"{len(cases)} whole tests/data CT cases: today {means['today']:.2f} dB, learnt {means['learnt']:.2f} dB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cues", default="docs/results/gaps_cues.json")
    parser.add_argument("--confidence", type=float, default=0.6)
    args = parser.parse_args()
    rows = [r for r in json.loads(Path(args.cues).read_text())["rows"]
            if r["cycle"] is not None and r["cycle_gaussian"] is not None]
    model = fit([r for r in rows if r["group"].startswith("training")])  # the training scans' cases only
    print(table(rows, model, args.confidence))
    print(psnr_where_known(rows, model, args.confidence, Path(args.cues).parent))


if __name__ == "__main__":
    main()
