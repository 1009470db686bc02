"""The error boundary (boundary.py): one line and the documented exit code for every way a command ends;
SIGTERM and SIGINT in the middle of a real write leave no `.part` file."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from napari_cycleinr.boundary import (
    EXIT_BUG,
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    EXIT_USER_ERROR,
    one_line_parser_errors,
    run_guarded,
)
from napari_cycleinr.cli import build_parser
from napari_cycleinr.errors import Cancelled, CycleINRError
from napari_cycleinr.io import write_volume
from napari_cycleinr.volume import Volume


def guarded(run, **kwargs) -> tuple[int, list[str]]:
    stderr = io.StringIO()
    code = run_guarded(run, stderr=stderr, **kwargs)
    return code, stderr.getvalue().splitlines()


def raising(error: BaseException):
    def run() -> int:
        raise error

    return run


@pytest.mark.parametrize(
    ("error", "code", "line"),
    [
        (CycleINRError("no such file:\n  scan.nii"), EXIT_USER_ERROR, "cycleinr: error: no such file: scan"),
        (PermissionError(13, "Permission denied", "/o/sr"), EXIT_USER_ERROR, "cycleinr: error: /o/sr: Perm"),
        (MemoryError(), EXIT_USER_ERROR, "cycleinr: error: not enough memory"),
        (RuntimeError("CUDA out of memory"), EXIT_USER_ERROR, "cycleinr: error: not enough"),
        (Cancelled(), EXIT_INTERRUPTED, "cycleinr: cancelled; nothing was written"),
        (KeyboardInterrupt(), EXIT_INTERRUPTED, "cycleinr: interrupted; nothing was written"),
    ],
)  # fmt: skip
def test_what_the_user_can_fix_is_one_line(error, code, line):
    got, lines = guarded(raising(error), command="upsample")
    assert got == code
    assert [x for x in lines if x] == [next(x for x in lines if x)] and lines[-1].startswith(line)


def test_a_bug_is_one_line_naming_the_command_and_where_with_the_traceback_only_on_request(monkeypatch):
    def buggy() -> int:
        return {}["missing"]

    monkeypatch.delenv("CYCLEINR_DEBUG", raising=False)
    code, lines = guarded(buggy, command="evaluate")
    assert code == EXIT_BUG and len(lines) == 1
    assert "internal error in 'cycleinr evaluate' (KeyError: 'missing' at test_boundary.py:" in lines[0]
    assert "CYCLEINR_DEBUG=1" in lines[0] and "Traceback" not in lines[0]
    monkeypatch.setenv("CYCLEINR_DEBUG", "1")
    code, lines = guarded(buggy, command="evaluate")
    assert code == EXIT_BUG and lines[0].startswith("Traceback") and "internal error" in lines[-1]
    code, lines = guarded(buggy, command="evaluate", debug=False)
    assert len(lines) == 1


def test_success_and_warnings_as_single_lines():
    import warnings

    def warns() -> int:
        warnings.warn("voxel spacing\n not fully known", UserWarning, stacklevel=1)
        return 0

    assert guarded(lambda: None) == (0, [])
    assert guarded(warns) == (0, ["cycleinr: warning: voxel spacing not fully known"])


@pytest.mark.parametrize(
    "argv",
    [["upsample"], ["train", "--out", "x", "--steps", "abc"], ["benchmark", "--factor", "five"], ["nonsense"],
     ["evaluate", "a.nii", "--factor", "2", "--axis", "w"]],
)  # fmt: skip
def test_bad_arguments_are_one_line_pointing_to_help(argv, capsys):
    parser = one_line_parser_errors(build_parser())
    with pytest.raises(SystemExit) as exited:
        parser.parse_args(argv)
    assert exited.value.code == EXIT_USER_ERROR
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("cycleinr: error: ") and "--help)" in lines[0], lines


WRITER = """
import signal
import sys
import numpy as np
from napari_cycleinr.boundary import run_guarded
from napari_cycleinr.io import write_volume
from napari_cycleinr.volume import Volume

data = np.random.default_rng(0).random((48, 512, 512), dtype=np.float32)  # ~50 MB: seconds to compress
volume = Volume.from_spacing(data, (1.0, 1.0, 1.0))
# a shell starts background jobs with SIGINT ignored, and Python keeps it so: listen as a foreground one does
signal.signal(signal.SIGINT, signal.default_int_handler)
sys.exit(run_guarded(lambda: write_volume(volume, sys.argv[1]) and 0, command="upsample"))
"""


@pytest.mark.parametrize(
    ("signum", "code", "said"),
    [(signal.SIGTERM, EXIT_TERMINATED, "terminated"), (signal.SIGINT, EXIT_INTERRUPTED, "interrupted")],
)
def test_a_signal_mid_write_leaves_no_part_file_and_keeps_the_previous_output(tmp_path, signum, code, said):
    target = tmp_path / "sr.nii.gz"
    write_volume(Volume.from_spacing(np.zeros((2, 3, 4), np.float32), (1.0, 1.0, 1.0)), target)
    previous = target.read_bytes()
    process = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(target)], stderr=subprocess.PIPE, text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".*.part*")) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.02)
    assert list(tmp_path.glob(".*.part*")), "the write never started"
    time.sleep(0.3)  # well inside the compression
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == code, stderr
    assert stderr.strip().splitlines()[-1] == f"cycleinr: {said}; nothing was written"
    assert "Traceback" not in stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sr.nii.gz"]
    assert target.read_bytes() == previous


def test_sigterm_handler_is_restored_after_the_command():
    before = signal.getsignal(signal.SIGTERM)
    seen = []
    guarded(lambda: seen.append(signal.getsignal(signal.SIGTERM)))
    assert seen[0] is not before and signal.getsignal(signal.SIGTERM) is before
    code, lines = guarded(lambda: os.kill(os.getpid(), signal.SIGTERM) or time.sleep(5))
    assert code == EXIT_TERMINATED and lines == ["cycleinr: terminated; nothing was written"]
    assert Path(__file__).exists()
