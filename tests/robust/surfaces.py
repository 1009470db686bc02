"""How the robustness tests drive the command line: in-process for speed, as a real process where the
process boundary matters (exit status, what really reaches stderr)."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class CliResult:
    code: int
    stdout: str
    stderr: str

    @property
    def error_line(self) -> str:
        """The one stderr line of a refused run (asserts that there is exactly one, and no traceback)."""
        lines = self.stderr.strip().splitlines()
        assert self.code == 2, f"exit code {self.code}; stderr: {self.stderr}"
        assert len(lines) == 1 and "Traceback" not in self.stderr, self.stderr
        assert lines[0].startswith("cycleinr: error: "), lines[0]
        return lines[0]


def run_cli(*args: object) -> CliResult:
    """`cycleinr ARGS` in this process: what main() returns and prints. An exception other than the
    CycleINRError that main turns into exit code 2 escapes and fails the test, as a traceback would."""
    from napari_cycleinr.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as exit_:  # argparse
            code = exit_.code if isinstance(exit_.code, int) else 1
    return CliResult(int(code), out.getvalue(), err.getvalue())


def run_cli_process(*args: object, timeout: float = 120) -> CliResult:
    """`python -m napari_cycleinr.cli ARGS` as a separate process."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run(
        [sys.executable, "-m", "napari_cycleinr.cli", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )
    return CliResult(done.returncode, done.stdout, done.stderr)
