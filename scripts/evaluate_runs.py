"""What the table scripts share: run `cycleinr evaluate` commands, and read back the JSON they wrote, one file
per scan and slice profile (docs/results/<prefix>_<scan>_<profile>.json)."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

RESULTS = Path("docs/results")


def run_commands(commands: Iterable[list[str]]) -> None:
    """Each command as printed; `cycleinr` is the one beside this Python when the environment is not active."""
    beside = Path(sys.executable).with_name("cycleinr")
    for command in commands:
        print("$", shlex.join(command), flush=True)
        if command[0] == "cycleinr" and shutil.which("cycleinr") is None and beside.exists():
            command = [str(beside), *command[1:]]
        subprocess.run(command, check=True)


def saved_results(prefix: str, scans: Iterable[str], profiles: Iterable[str]) -> Iterator[tuple[str, str, list]]:
    """(scan, profile, the evaluate results) for each file that exists, in the order given."""
    profiles = tuple(profiles)
    for scan in scans:
        for profile in profiles:
            path = RESULTS / f"{prefix}_{scan}_{profile}.json"
            if path.exists():
                yield scan, profile, json.loads(path.read_text())["results"]
