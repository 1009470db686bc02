"""Ship the MR weights fine-tuned against the lines at the slab period on MR-rich data (issue #21; docs/results.md,
"Lines at the slab period").

    for n in mr average_mr gaussian_mr skip_mr; do
        cycleinr train --config configs/mr_banding_$n.toml --out runs/mr_banding_$n; done
    python scripts/make_mr_banding_weights.py [--runs runs]

The banding loss on the CT-rich data of configs/banding_*.toml (one MR in five scans) cured the lines on CT but
left them on MR (held-out MEMPRAGE 1.10 at x5). Each of the four MR weights now gets 400 steps of its own with the
MR drawn three times in seven, from the bundled weights and with its own profile's degradation, so
`<profile>_mr` is no longer only `<profile> + (mr - mixed)`: its header keeps that record under `earlier`.
Run from the repository root, after scripts/make_banding_weights.py.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from make_banding_weights import ship_tuned
from make_mr_weights import PROFILES

TUNED = ("mr", *(f"{p}_mr" for p in PROFILES))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="runs", help="the folder holding mr_banding_<name>/ for each weight")
    args = parser.parse_args()
    ship_tuned(Path(args.runs), "mr_banding", TUNED)


if __name__ == "__main__":
    main()
