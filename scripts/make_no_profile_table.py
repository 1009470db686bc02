"""Issue #20's table: with no slice profile given, how close the weights `upsample` takes come to the best
bundled weights for the profile the slices really have, and to tricubic + 1 dB.

    python scripts/make_no_profile_table.py [--run] [--glance]

--run first runs the `cycleinr evaluate` commands below (about half an hour on 2 CPU cores) into
docs/results/no_profile_<scan>_<profile>.json; without it the table is made from those files. `auto` is what
`upsample` does with a NIfTI of the simulated thick scan (no record of its profile): the profile estimated from
the image, acted on only when confident, else the fallback weights (`mixed` for CT, `mr` for MR). Scans: one
256 x 256 sample of the held-out CT (runs/eval/lidc0002_slab0.nii.gz, written by scripts/make_results.py),
the held-out MR along its own slice axis, and the scans in tests/data. --glance prints the held-out rows as
docs/results.md opens with them.
"""

from __future__ import annotations

import argparse
from functools import partial

from evaluate_runs import RESULTS, run_commands, saved_results

from napari_cycleinr.slice_profile import PROFILE_NAMES

PROFILES = ("average", "gaussian", "skip")
BUNDLED = ("mixed", "average", "gaussian", "skip", "mr", "average_mr", "gaussian_mr", "skip_mr")
SCANS = {
    "ct_validation": ("LIDC-IDRI-0002 (held out)", ["runs/eval/lidc0002_slab0.nii.gz"]),
    "mr_validation": ("MEMPRAGE MR (held out)",
                      ["../shared/data/train/mr_fnndsc_memprage_1p0mm.nii.gz", "--axis", "z", "--modality", "MR"]),
    "tests_ct": ("tests/data CT (3)", ["tests/data/ct_lidc0002_crop_128x128x40_1p25mm.nii.gz",
                                       "tests/data/ct_totalseg_sm_122x101x30_3mm.nii.gz",
                                       "tests/data/ct_vtk_headsq_64x64x93_1p5mm.nii.gz", "--modality", "CT"]),
    "tests_mr": ("tests/data MR", ["tests/data/mr_totalseg_sm_117x91x20_3mm.nii.gz", "--modality", "MR"]),
}


def command(scan: str, profile: str) -> list[str]:
    bundled = BUNDLED if scan.startswith("mr") or scan.endswith("mr") else BUNDLED[:5]  # *_mr: for MR only
    return ["cycleinr", "evaluate", *SCANS[scan][1], "--factor", "2.5,4,5", "--degradation", profile,
            "--methods", "tricubic,auto," + ",".join(bundled), "--device", "cpu",
            "--json", str(RESULTS / f"no_profile_{scan}_{profile}.json"), *(f"--variant={m}={m}" for m in bundled)]


def mean_psnr(rows: list[dict], method: str) -> float:
    """A method's PSNR over the scans of one scale (tests/data CT has three)."""
    return sum(r["methods"][method]["psnr"] for r in rows) / len(rows)


def table() -> str:
    lines = ["| scan | profile | x | tricubic | no profile given | its weights | best bundled | no profile - best "
             "| no profile - tricubic |", "|---|---|---:|---:|---:|---|---:|---:|---:|"]
    for scan, profile, results in saved_results("no_profile", SCANS, PROFILES):
        for factor in sorted({r["factor"] for r in results}):
            rows = [r for r in results if r["factor"] == factor]
            mean = partial(mean_psnr, rows)
            best = max((m for m in BUNDLED if m in rows[0]["methods"]), key=mean)
            chosen = sorted({r["auto"]["weights"] for r in rows})
            lines.append(
                f"| {SCANS[scan][0]} | {profile} | {factor:g} | {mean('tricubic'):.2f} | {mean('auto'):.2f} | "
                f"{', '.join(chosen)} | {mean(best):.2f} ({best}) | {mean('auto') - mean(best):+.2f} | "
                f"{mean('auto') - mean('tricubic'):+.2f} |"
            )
    return "\n".join(lines)


GLANCE_NAMES = {"ct_validation": "LIDC-IDRI-0002, chest CT", "mr_validation": "MEMPRAGE, brain MR (T1)"}


def glance() -> str:
    """The opening table of docs/results.md: the held-out scans with no profile given, PSNR and gain over
    tricubic at each scale."""
    held_out = list(GLANCE_NAMES)
    found = list(saved_results("no_profile", held_out, PROFILES))
    factors = sorted({r["factor"] for _, _, results in found for r in results})
    lines = ["| held-out scan | slices made by | " + " | ".join(f"x{f:g}" for f in factors) + " |",
             "|---|---|" + "---:|" * len(factors)]
    for scan, profile, results in found:
        cells = []
        for factor in factors:
            rows = [r for r in results if r["factor"] == factor]
            ours, tricubic = mean_psnr(rows, "auto"), mean_psnr(rows, "tricubic")
            cells.append(f"{ours:.2f} ({ours - tricubic:+.2f})")
        lines.append(f"| {GLANCE_NAMES[scan]} | {PROFILE_NAMES[profile]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="store_true", help="run the evaluate commands first")
    parser.add_argument("--only", help="with --run: these scans only (comma-separated keys of SCANS)")
    parser.add_argument("--glance", action="store_true", help="print the opening table of docs/results.md")
    args = parser.parse_args()
    if args.glance:
        print(glance())
        return
    if args.run:
        scans = args.only.split(",") if args.only else SCANS
        run_commands(command(scan, profile) for scan in scans for profile in PROFILES)
    print(table())


if __name__ == "__main__":
    main()
