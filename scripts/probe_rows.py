"""The command line the cue probes share: measure into a JSON of rows, or print the table from it.

    run_probe(__doc__, "docs/results/NAME.json", table, collect)

--data (default ../shared/data) is the folder `collect(data)` reads; --out the JSON it writes ({"rows": ...});
--table prints `table(rows)` from --out without measuring anything. A measuring run prints the table too.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path


def run_probe(
    doc: str, out: str, table: Callable[[list[dict]], str], collect: Callable[[Path], list[dict]]
) -> None:
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--out", default=out)
    parser.add_argument("--table", action="store_true", help="only print the table from --out")
    args = parser.parse_args()
    if not args.table:
        rows = collect(Path(args.data))
        Path(args.out).write_text(json.dumps({"rows": rows}, indent=1) + "\n")
    print(table(json.loads(Path(args.out).read_text())["rows"]))
