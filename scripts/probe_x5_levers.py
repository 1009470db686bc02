"""Inference-time levers at the x5 slab-average target (docs/results.md, "Levers tried at x5").

    python scripts/probe_x5_levers.py [--adapt-steps 400] [--compare runs/stage4_deep/best.safetensors]

Scores the bundled model on the two samples of the held-out validation scan that scripts/make_results.py
writes (runs/eval), alone and with what a user could add at inference time without a better model:
geometric self-ensembles (the mean over mirrored inputs: z reversed, the 8 in-plane flips and transposes),
the exact data-consistency step, and adapting to the thick scan itself (`cycleinr adapt`, fixed steps); and
another checkpoint to compare with (default: stage 4, configs/stage4_deep.toml, the bundled model before its
weights were averaged).
Each row also splits SNLI into its two parts, the mean noise level of the slices and the mean jump of that
level between neighbours (both in HU; SNLI = jump / level), to show which of the two keeps it high.
Writes docs/results/x5_levers.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from napari_cycleinr.intensity import IntensityMap
from napari_cycleinr.io import read_volume
from napari_cycleinr.model.adapt import AdaptOptions, adapt_model
from napari_cycleinr.model.checkpoint import load_model
from napari_cycleinr.model.consistency import project
from napari_cycleinr.model.degrade import degradation_matrix
from napari_cycleinr.model.evaluate import metric_window, simulate_thick
from napari_cycleinr.model.infer import predict
from napari_cycleinr.model.metrics import psnr, snli_parts
from napari_cycleinr.volume import Volume

FACTOR, PROFILE = 5.0, "average"
SAMPLES = [Path("runs/eval/lidc0002_slab0.nii.gz"), Path("runs/eval/lidc0002_slab1.nii.gz")]
OUT = Path("docs/results/x5_levers.json")


def inplane(array: np.ndarray, k: int, inverse: bool = False) -> np.ndarray:
    """The k-th of the 8 in-plane flips/transposes of a (z, y, x) array, or its inverse."""
    steps = [(4, lambda a: a.transpose(0, 2, 1)), (1, lambda a: a[:, :, ::-1]), (2, lambda a: a[:, ::-1, :])]
    for bit, step in reversed(steps) if inverse else steps:
        if k & bit:
            array = step(array)
    return np.ascontiguousarray(array)


def noise_parts(volume: np.ndarray) -> dict[str, float]:
    """SNLI and its two parts in HU: the mean jump of the slices' noise level, and that level."""
    jump, level = snli_parts(volume, "CT")
    return {"snli": jump / level, "noise_hu": level, "jump_hu": jump}


def predictions(model, thick: np.ndarray, positions: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """The model's answer on each in-plane mirror of the input (un-mirrored), and on the z-reversed input."""
    cell = 1.0 / FACTOR
    mirrored = [inplane(predict("cycleinr", inplane(thick, k), positions, cell, model=model), k, inverse=True)
                for k in range(8)]
    flipped = predict("cycleinr", thick, positions, cell, mirrored=True, model=model)  # upsample --ensemble's pass
    return mirrored, flipped


@dataclass
class Case:
    """One sample at x5: its thick slices, thin reference, metric window and degradation operator."""

    path: Path
    volume: Volume
    thick: np.ndarray
    reference: np.ndarray
    positions: np.ndarray
    intensities: IntensityMap
    window: tuple[float, float]
    operator: np.ndarray

    @classmethod
    def read(cls, path: Path) -> Case:
        volume = read_volume(path)
        thick, reference, positions, intensities = simulate_thick(volume, FACTOR, PROFILE)
        operator = degradation_matrix(len(positions), FACTOR, PROFILE, n_thick=thick.shape[0])
        window = metric_window(reference, intensities.modality)
        return cls(path, volume, thick, reference, positions, intensities, window, operator)


def score(rows: dict[str, list[dict]], case: Case, name: str, normalised: np.ndarray, seconds: float) -> None:
    """Rows `name` and `name+dc` (after the exact data-consistency step) for this case."""
    for suffix, values in (("", normalised), ("+dc", normalised.copy())):
        if suffix:
            project(values, case.thick, case.operator)
        output = case.intensities.denormalise(values)
        scores = {"psnr": psnr(case.reference, output, case.window), **noise_parts(output)}
        row = {"sample": str(case.path), **scores, "seconds": round(seconds, 2)}
        rows.setdefault(name + suffix, []).append(row)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--adapt-steps", type=int, default=400)
    parser.add_argument("--compare", default="runs/stage4_deep/best.safetensors")
    args = parser.parse_args()
    model, other = load_model("mixed"), load_model(args.compare)  # mixed: the default model when measured
    cell = 1.0 / FACTOR
    rows: dict[str, list[dict]] = {}
    for path in SAMPLES:
        case = Case.read(path)
        rows.setdefault("thin reference", []).append({"sample": str(path), **noise_parts(case.reference)})
        started = time.perf_counter()
        mirrored, flipped = predictions(model, case.thick, case.positions)
        per_pass = (time.perf_counter() - started) / 9
        score(rows, case, "tricubic", predict("tricubic", case.thick, case.positions, cell), 0.0)
        score(rows, case, "cycleinr", mirrored[0], per_pass)
        score(rows, case, "ensemble z (2 passes)", (mirrored[0] + flipped) / 2, 2 * per_pass)
        score(rows, case, "ensemble in-plane (8 passes)", np.mean(mirrored, axis=0), 8 * per_pass)
        everything = (np.sum(mirrored, axis=0) + flipped) / 9
        score(rows, case, "ensemble in-plane + z (9 passes)", everything, 9 * per_pass)
        started = time.perf_counter()
        result = predict("cycleinr", case.thick, case.positions, cell, model=other)
        name = Path(args.compare).parent.name
        score(rows, case, name, result, time.perf_counter() - started)
        thick_volume = case.volume.replace(data=case.intensities.denormalise(case.thick).astype(np.float32),
                                           affine=case.volume.affine @ np.diag([FACTOR, 1, 1, 1]))
        started = time.perf_counter()
        adapted, report = adapt_model(thick_volume, factor=FACTOR, model=model, device="cpu",
                                      options=AdaptOptions(steps=args.adapt_steps, profile=PROFILE))
        result = predict("cycleinr", case.thick, case.positions, cell, model=adapted)
        name = f"adapted ({report.steps} steps, {'kept' if report.kept else 'not kept'})"
        score(rows, case, name, result, time.perf_counter() - started)
    summary = {name: {key: float(np.mean([s[key] for s in samples])) for key in samples[0] if key != "sample"}
               for name, samples in rows.items()}
    levers = {"factor": FACTOR, "profile": PROFILE, "mean": summary, "samples": rows}
    OUT.write_text(json.dumps(levers, indent=2) + "\n")
    base = summary["tricubic"]["psnr"]
    print("| method | PSNR dB | gain over tricubic | SNLI | noise level HU | its jump HU | s per sample |")
    print("|---|---|---|---|---|---|---|")
    for name, m in summary.items():
        fidelity = f"{m['psnr']:.2f} | {m['psnr'] - base:+.2f}" if "psnr" in m else " | "
        noise = f"{m['snli']:.4f} | {m['noise_hu']:.1f} | {m['jump_hu']:.2f}"
        print(f"| {name} | {fidelity} | {noise} | {m.get('seconds', 0):.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
