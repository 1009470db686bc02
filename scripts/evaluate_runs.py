"""What the table scripts share: run `cycleinr evaluate` commands, and read back the JSON they wrote, one file
per scan and slice profile (docs/results/<prefix>_<scan>_<profile>.json)."""

from __future__ import annotations

import json
import shlex
import subprocess
from collections.abc import Iterable, Iterator
from pathlib import Path

RESULTS = Path("docs/results")


def run_commands(commands: Iterable[list[str]]) -> None:
    for command in commands:
        print("$", shlex.join(command), flush=True)
        subprocess.run(command, check=True)


def saved_results(prefix: str, scans: Iterable[str], profiles: Iterable[str]) -> Iterator[tuple[str, str, list]]:
    """(scan, profile, the evaluate results) for each file that exists, in the order given."""
    profiles = tuple(profiles)
    for scan in scans:
        for profile in profiles:
            path = RESULTS / f"{prefix}_{scan}_{profile}.json"
            if path.exists():
                yield scan, profile, json.loads(path.read_text())["results"]
