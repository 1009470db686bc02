"""The "MR in training" table of docs/results.md from the evaluate JSON the commands below write.

    python scripts/make_mr_training_table.py

Runs (after `cycleinr train --config configs/experiment_mr_mixed.toml --out runs/exp_mr_mixed` and
`cycleinr train --config configs/experiment_ct_only.toml --out runs/exp_ct_only`, 400 steps each from the
bundled `mixed` weights), for DEG in average, gaussian, skip:

    cycleinr evaluate ../shared/data/train/mr_fnndsc_memprage_1p0mm.nii.gz --axis z --modality MR \\
        --factor 2.5,4,5 --degradation DEG --methods tricubic,mixed,ct_only_400,with_mr_400 --variant mixed=mixed \\
        --variant ct_only_400=runs/exp_ct_only/best.safetensors \\
        --variant with_mr_400=runs/exp_mr_mixed/best.safetensors --json docs/results/mr_training_mr_DEG.json

and the same on runs/eval/lidc0002_slab0.nii.gz (scripts/make_results.py writes it) at x2.5 and x5 for average
and skip, into docs/results/mr_training_ct_DEG.json; then the profile's own weights against them on the MR:

    cycleinr evaluate ../shared/data/train/mr_fnndsc_memprage_1p0mm.nii.gz --axis z --modality MR \
        --factor 2.5,4,5 --degradation DEG --methods cycleinr,with_mr_400 \
        --variant with_mr_400=runs/exp_mr_mixed/best.safetensors --json docs/results/mr_training_specialist_DEG.json

The bundled `mr` weights are runs/exp_mr_mixed/best.safetensors (step 400).
"""

from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path("docs/results")
METHODS = ("tricubic", "mixed", "ct_only_400", "with_mr_400", "cycleinr")


def rows(scan: str, degradations: tuple[str, ...]) -> list[str]:
    out = []
    for degradation in degradations:
        path = RESULTS / f"mr_training_{scan}_{degradation}.json"
        if not path.exists():
            continue
        own = RESULTS / f"mr_training_specialist_{degradation}.json"
        specialist = {r["factor"]: r["methods"]["cycleinr"] for r in json.loads(own.read_text())["results"]} \
            if scan == "mr" and own.exists() else {}
        for result in json.loads(path.read_text())["results"]:
            scores = dict(result["methods"])
            if result["factor"] in specialist:
                scores["cycleinr"] = specialist[result["factor"]]
            cells = [f"{scores[m]['psnr']:.2f}" if m in scores else "" for m in METHODS]
            gain = scores["with_mr_400"]["psnr"] - scores["mixed"]["psnr"]
            over = scores["with_mr_400"]["psnr"] - scores["tricubic"]["psnr"]
            name = "MEMPRAGE MR" if scan == "mr" else "LIDC CT"
            out.append(f"| {name} | {degradation} | {result['factor']:g} | " + " | ".join(cells)
                       + f" | {gain:+.2f} | {over:+.2f} |")
    return out


def main() -> None:
    print("| held-out scan | profile | x | tricubic | mixed | CT only, 400 steps | with MR, 400 steps (`mr`) "
          "| the profile's own weights | `mr` - mixed | `mr` - tricubic |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for line in rows("mr", ("average", "gaussian", "skip")) + rows("ct", ("average", "skip")):
        print(line)


if __name__ == "__main__":
    main()
