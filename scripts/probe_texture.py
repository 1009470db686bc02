"""The noise texture option against the lines at the slab period (docs/results.md, "Noise texture").

    python scripts/probe_texture.py [--data ../shared/data] [--out docs/results/texture.json]

Thin scans slab-averaged at x4 and x5 and super-resolved back with the weights a slab average gets (`average`;
an MR `average_mr`), then
the scan's own noise texture added at strength 0.5, 1 and 2 (texture.py): as `--texture` adds it, where the
acquisition cannot see it ("unseen"), and as an independent draw per slice (what it did before): PSNR, SSIM,
banding, SNLI and the in-plane noise level in flat tissue, beside tricubic and the thin reference. Scans:
the held-out CT (LIDC-IDRI-0002, central 256 x 256, thin slices 60-219) and MR (MEMPRAGE, central 160 x 160
of its own slice axis), and the CT scans in tests/data (the VTK head along its 1.5 mm axis; the MR there has
too few slices for x4).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from napari_cycleinr.io import read_volume
from napari_cycleinr.model.checkpoint import load_model
from napari_cycleinr.model.consistency import output_degradation
from napari_cycleinr.model.evaluate import metric_window, simulate_thick
from napari_cycleinr.model.infer import predict
from napari_cycleinr.model.metrics import banding, psnr, snli, ssim
from napari_cycleinr.options import MR_PROFILE_WEIGHTS
from napari_cycleinr.texture import add_texture, body_level, measure_noise

STRENGTHS = (0.5, 1.0, 2.0)
FACTORS = (4, 5)
WEIGHTS = {"CT": "average", "MR": MR_PROFILE_WEIGHTS["average"]}
"""The bundled weights a slab average gets, by modality (what `upsample --profile average` takes)."""


def scans(data: Path) -> list[tuple[str, str, object]]:
    def central(volume, size, z0=0, z1=None):
        _, h, w = volume.shape
        y0, x0 = max(0, (h - size) // 2), max(0, (w - size) // 2)
        return volume.replace(data=np.ascontiguousarray(volume.data[z0:z1, y0 : y0 + size, x0 : x0 + size]))

    tests = Path(__file__).resolve().parents[1] / "tests" / "data"
    return [
        ("LIDC-IDRI-0002 (held out)", "CT",
         central(read_volume(data / "train/ct_lidc0002_chest_1p25mm.nii.gz"), 256, 60, 220)),
        ("MEMPRAGE MR (held out)", "MR",
         central(read_volume(data / "train/mr_fnndsc_memprage_1p0mm.nii.gz", axis="z"), 160)),
        ("tests/data LIDC crop", "CT", read_volume(tests / "ct_lidc0002_crop_128x128x40_1p25mm.nii.gz")),
        ("tests/data VTK head", "CT", read_volume(tests / "ct_vtk_headsq_64x64x93_1p5mm.nii.gz", axis="z")),
        ("tests/data TotalSegmentator CT", "CT", read_volume(tests / "ct_totalseg_sm_122x101x30_3mm.nii.gz")),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--out", default="docs/results/texture.json")
    parser.add_argument("--table", action="store_true", help="only print the table from --out")
    args = parser.parse_args()
    if args.table:
        print(table(json.loads(Path(args.out).read_text())["rows"]))
        return
    models = {modality: load_model(name) for modality, name in WEIGHTS.items()}
    rows = []
    for name, modality, volume in scans(Path(args.data)):
        for factor in FACTORS:
            thick, reference, positions, intensities = simulate_thick(volume, factor, "average", modality)
            window = metric_window(reference, modality)
            threshold = body_level(reference, modality)

            def row(method: str, output: np.ndarray, added: float | None = None) -> None:
                noise = measure_noise(output, threshold)
                rows.append({
                    "scan": name, "modality": modality, "factor": factor, "method": method,
                    "psnr": None if method == "thin reference" else round(psnr(reference, output, window), 3),
                    "ssim": None if method == "thin reference" else round(ssim(reference, output, window), 4),
                    "banding": round(banding(output, factor, modality, threshold), 3),
                    "snli": round(snli(output, modality, threshold), 4),
                    "noise": None if noise is None else round(noise.level, 2), "added_noise": added,
                })
                print(rows[-1], flush=True)

            row("thin reference", reference)
            row("tricubic", intensities.denormalise(predict("tricubic", thick, positions, 1 / factor)))
            output = predict("cycleinr", thick, positions, 1 / factor, model=models[modality])
            output = intensities.denormalise(output)
            row("cycleinr", output)
            acquired = measure_noise(intensities.denormalise(thick), threshold)
            unseen = output_degradation(len(thick), len(output)).numpy()
            for strength in STRENGTHS:
                for kind, w in (("texture", None), ("unseen texture", unseen)):
                    textured = output.copy()
                    report = add_texture(textured, acquired, strength=strength, threshold=threshold, unseen=w)
                    row(f"cycleinr, {kind} {strength:g}", textured, round(report.added, 2))
    Path(args.out).write_text(json.dumps({"weights": WEIGHTS, "profile": "average", "rows": rows},
                                         indent=1, allow_nan=False) + "\n")
    print(table(rows))


def table(rows: list[dict]) -> str:
    """The docs/results.md table: PSNR dB / banding per method (the texture as `--texture` adds it: unseen by
    the acquisition; and the independent draw it replaced, at 1), the noise added, the thin scan's banding."""
    methods = ["tricubic", "cycleinr", *(f"cycleinr, unseen texture {s:g}" for s in STRENGTHS), "cycleinr, texture 1"]
    lines = ["| scan | x | tricubic | CycleINR | " + " | ".join(f"--texture {s:g}" for s in STRENGTHS)
             + " | independent draw at 1 (before) | noise added at 1 | thin scan: banding, noise |",
             "|---|---:|" + "---|" * (len(methods) + 2)]
    for key in dict.fromkeys((r["scan"], r["factor"]) for r in rows):
        by = {r["method"]: r for r in rows if (r["scan"], r["factor"]) == key}
        cells = [f"{by[m]['psnr']:.2f} / {by[m]['banding']:.2f}" for m in methods]
        thin = by["thin reference"]
        lines.append(f"| {key[0]} | {key[1]} | " + " | ".join(cells)
                     + f" | {by['cycleinr, unseen texture 1']['added_noise']:.3g} | {thin['banding']:.2f}, "
                     f"{thin['noise']:.3g} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
