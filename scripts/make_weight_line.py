"""Weights on the line from the weights before the banding loss to the bundled ones (docs/results.md, "Lines at
the slab period": the trade along the fine-tune).

    python scripts/make_weight_line.py [--before runs/before] [--out runs/interp]
    python scripts/probe_banding_loss.py --variant a20=runs/interp/a20 --variant a35=runs/interp/a35 \
        --variant a50=runs/interp/a50 --out docs/results/banding_weight_line.json

For `average` and `average_mr` (the weights probe_banding_loss scores): a * before + (1 - a) * bundled, for a of
0.2, 0.35 and 0.5, into <out>/aNN/<name>.safetensors. The earlier weights as restored for probe_banding_loss.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from napari_cycleinr.model.checkpoint import load_model, save_model

SHARES = (0.2, 0.35, 0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="runs/before")
    parser.add_argument("--out", default="runs/interp")
    args = parser.parse_args()
    for name in ("average", "average_mr"):
        before, model = load_model(Path(args.before) / f"{name}.safetensors"), load_model(name)
        start, end = before.state_dict(), model.state_dict()
        for share in SHARES:
            folder = Path(args.out) / f"a{round(share * 100):02d}"
            folder.mkdir(parents=True, exist_ok=True)
            model.load_state_dict({k: share * start[k].float() + (1 - share) * end[k].float() for k in end})
            record = {"weight_line": f"{share} before + {1 - share:g} bundled"}
            save_model(model, folder / f"{name}.safetensors", record)
            print(folder / f"{name}.safetensors")


if __name__ == "__main__":
    main()
