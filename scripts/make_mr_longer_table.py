"""More MR training, and MR-aware specialists without training (issue #20): the table of docs/results.md,
"MR in training: longer, and the specialists".

    python scripts/make_mr_longer_table.py [--run]

Needs runs/exp_mr_longer/best.safetensors (`cycleinr train --config configs/experiment_mr_longer.toml --out
runs/exp_mr_longer`: 1600 more steps from the bundled `mr` weights). --run first writes the MR-aware
specialists, each profile's bundled weights plus what MR training added to `mixed` (P + (mr - mixed), "task
arithmetic": no training), into runs/mr_arith/, then runs `cycleinr evaluate` on the held-out MEMPRAGE MR (its
own slice axis) and the MR in tests/data (an abdomen, 3 mm) at x2.5, x4 and x5 for each profile (JSON:
docs/results/mr_longer_<scan>_<profile>.json); without it the table is made from those files. The same
specialists plus what the longer training added are the `*_mr` columns' second variant.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from evaluate_runs import RESULTS, run_commands, saved_results

ARITH = Path("runs/mr_arith")
LONGER = "runs/exp_mr_longer/best.safetensors"
PROFILES = ("average", "gaussian", "skip")
SCANS = {
    "mr": ("MEMPRAGE MR", ["../shared/data/train/mr_fnndsc_memprage_1p0mm.nii.gz", "--axis", "z", "--modality", "MR",
                           "--factor", "2.5,4,5"]),
    "tests_mr": ("tests/data MR", ["tests/data/mr_totalseg_sm_117x91x20_3mm.nii.gz", "--modality", "MR",
                                   "--factor", "2.5,4,5"]),
}
COLUMNS = ("tricubic", "mixed", "mr", "mr_longer", "profile", "profile_mr", "profile_mr_longer")


def write_mr_specialists() -> None:
    from napari_cycleinr.model.checkpoint import load_model, save_model

    mixed = load_model("mixed").state_dict()
    ARITH.mkdir(parents=True, exist_ok=True)
    for source, suffix in (("mr", "mr"), (LONGER, "mr_longer")):
        delta = {k: v - mixed[k] for k, v in load_model(source).state_dict().items()}
        for profile in PROFILES:
            model = load_model(profile)
            state = model.state_dict()
            model.load_state_dict({k: state[k] + delta[k] for k in state})
            save_model(model, ARITH / f"{profile}_{suffix}.safetensors",
                       {"task_arithmetic": f"{profile} + ({suffix} - mixed)"})


def command(scan: str, profile: str) -> list[str]:
    variants = {"mixed": "mixed", "mr": "mr", "mr_longer": LONGER, "profile": profile,
                "profile_mr": str(ARITH / f"{profile}_mr.safetensors"),
                "profile_mr_longer": str(ARITH / f"{profile}_mr_longer.safetensors")}
    return ["cycleinr", "evaluate", *SCANS[scan][1], "--degradation", profile, "--methods",
            ",".join(("tricubic", *variants)), "--device", "cpu", "--json",
            str(RESULTS / f"mr_longer_{scan}_{profile}.json"), *(f"--variant={k}={v}" for k, v in variants.items())]


def table() -> str:
    lines = ["| held-out scan | profile | x | tricubic | mixed | `mr` | `mr`, 1600 more steps | the profile's weights "
             "| + (`mr` - mixed) | + (longer - mixed) |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for scan, profile, results in saved_results("mr_longer", SCANS, PROFILES):
        for result in results:
            cells = [f"{result['methods'][c]['psnr']:.2f}" for c in COLUMNS]
            lines.append(f"| {SCANS[scan][0]} | {profile} | {result['factor']:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="store_true")
    args = parser.parse_args()
    if args.run:
        write_mr_specialists()
        run_commands(command(scan, profile) for scan in SCANS for profile in PROFILES)
    print(table())


if __name__ == "__main__":
    main()
