"""Ship the MR weights fine-tuned against the lines at the slab period on MR-rich data (issue #21; docs/results.md,
"Lines at the slab period").

    for n in mr average_mr gaussian_mr skip_mr; do
        cycleinr train --config configs/mr_banding_$n.toml --out runs/mr_banding_$n; done
    python scripts/make_mr_banding_weights.py [--runs runs] [--prefix mr_banding]

The banding loss on the CT-rich data of configs/banding_*.toml (one MR in five scans) cured the lines on CT but
left them on MR (held-out MEMPRAGE 1.10 at x5). Each of the four MR weights now gets 400 steps of its own with the
MR drawn three times in seven, from the bundled weights and with its own profile's degradation, so
`<profile>_mr` is no longer only `<profile> + (mr - mixed)`: its header keeps that record under `earlier`.
Run from the repository root, after scripts/make_banding_weights.py. A later stage of the same kind ships the
same way from runs/<prefix>_<name> (configs/<prefix>_<name>.toml), e.g. `--prefix mr_inplane`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from make_banding_weights import ship_tuned
from make_mr_weights import PROFILES

TUNED = ("mr", *(f"{p}_mr" for p in PROFILES))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="runs", help="the folder holding <prefix>_<name>/ for each weight")
    parser.add_argument("--prefix", default="mr_banding", help="the stage: its runs and configs/<prefix>_*.toml")
    parser.add_argument("--only", help="comma-separated names of the four to ship (default: all)")
    args = parser.parse_args()
    names = tuple(args.only.split(",")) if args.only else TUNED
    if unknown := [name for name in names if name not in TUNED]:
        parser.error(f"--only takes names of {', '.join(TUNED)}; not {', '.join(unknown)}")
    ship_tuned(Path(args.runs), args.prefix, names)


if __name__ == "__main__":
    main()
