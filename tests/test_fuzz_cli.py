"""Every subcommand run with random argument values (hypothesis): words, numbers, NaN, infinities, negatives,
and paths that are inputs, references, models, folders, symlinks, symlink loops or missing.

Two promises are checked per subcommand, separately:
- nothing lost: no file of the workspace changes and no file appears except the outputs the command was
  asked for (every input, reference and model is hashed with its mtime before and after);
- one line: the exit code is 0 or 2, stderr has at most a few lines and never a traceback.

The second holds because cli.main runs each command in boundary.run_guarded behind one_line_parser_errors,
and every command hands its inputs to the output guard. Runs are in-process, small (a 6-slice scan,
trilinear/tricubic or the tiny budget of train/adapt) and derandomised.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from napari_cycleinr import cli
from napari_cycleinr.io import read_volume, write_volume
from tests.conftest import CT_3MM, CT_HEAD

MAX_STDERR_LINES = 3
SETTINGS = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],  # noqa: E501
)
INPUTS = ("scan.nii.gz", "reference.nii.gz", "model.safetensors", "model.json", "notes.txt")


@pytest.fixture(scope="module")
def originals(tmp_path_factory) -> dict[str, bytes]:
    """The workspace's files as bytes: a 6-slice CT, a thin reference, a tiny model and its sidecar."""
    import torch

    from napari_cycleinr.model.checkpoint import save_model
    from napari_cycleinr.model.config import ModelConfig
    from napari_cycleinr.model.cycleinr import CycleINR

    base = tmp_path_factory.mktemp("originals")
    ct = read_volume(CT_3MM)
    corner = np.ascontiguousarray(ct.data[:6, 30:62, 30:62])
    write_volume(ct.replace(data=corner, metadata={}), base / "scan.nii.gz")
    head = read_volume(CT_HEAD)
    write_volume(head.replace(data=np.ascontiguousarray(head.data[:24, 16:48, 16:48]), metadata={}),
                 base / "reference.nii.gz")  # fmt: skip
    torch.manual_seed(0)
    tiny = CycleINR(ModelConfig(channels=8, blocks=1, heads=2, decoder_width=16, position_frequencies=2))
    save_model(tiny, base / "model.safetensors", {"purpose": "fuzz"})
    (base / "notes.txt").write_text("not an image\n")
    return {name: (base / name).read_bytes() for name in INPUTS}


@dataclass
class Workspace:
    root: Path

    def path(self, name: str) -> str:
        return str(self.root / name)

    def snapshot(self) -> dict[str, tuple]:
        files = {}
        for path in sorted(self.root.rglob("*")):
            key = str(path.relative_to(self.root))
            if path.is_symlink():
                files[key] = ("link", os.readlink(path))
            elif path.is_file():
                stat = path.stat()
                files[key] = (stat.st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest())
            elif path.is_dir():
                files[key] = ("folder",)
        return files


@contextlib.contextmanager
def workspace(originals: dict[str, bytes], parent: Path):
    with tempfile.TemporaryDirectory(dir=parent) as folder:
        root = Path(folder)
        for name, data in originals.items():
            (root / name).write_bytes(data)
        (root / "folder").mkdir()
        (root / "out").mkdir()
        (root / "link.nii.gz").symlink_to(root / "scan.nii.gz")
        (root / "loop.nii.gz").symlink_to(root / "loop2.nii.gz")
        (root / "loop2.nii.gz").symlink_to(root / "loop.nii.gz")
        yield Workspace(root)


PATH_NAMES = ["scan.nii.gz", "reference.nii.gz", "model.safetensors", "model.json", "notes.txt", "folder",
              "link.nii.gz", "loop.nii.gz", "missing.nii.gz", "folder/missing/x.nii.gz"]  # fmt: skip
VOLUMES = ("out/new.nii.gz", "out/new.tif", "out/NEW.NII.GZ", "out/new.nii.gz", "out/new.xyz")
JSONS = ("out/new.json", "out/new.json", "out/new.png")
PLOTS = ("out/new.png", "out/new.png", "out/new.json", "out/missing/new.png")
RUNS = ("out/run", "out/run", "out/new.json")
numbers = st.one_of(
    st.sampled_from(["2", "2.5", "3", "1.5", "nan", "inf", "-inf", "-1", "0", "1e308", "abc", "", "1,5"]),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-(2**40), 2**40).map(str),
)
factors = st.one_of(st.sampled_from(["2", "2.5", "3", "1.5"]), numbers)
texts = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12)


@st.composite
def a_path(draw, outputs: tuple[str, ...] = ()) -> str:
    """Mostly a name from the workspace (four times in five), else any text."""
    names = [*outputs, *outputs, *PATH_NAMES] if outputs else ["scan.nii.gz"] * 4 + PATH_NAMES
    named = st.sampled_from(names)
    return draw(st.one_of(named, named, named, named, texts.filter(lambda t: not t.startswith("-"))))


def option(name: str, values) -> st.SearchStrategy[list[str]]:
    """[] or ['--name=value'] (the = form, so '-1e+16' is a value and not an option)."""
    return st.one_of(st.just([]), values.map(lambda value: [f"{name}={value}"]))


@st.composite
def upsample_argv(draw, command: str = "upsample") -> tuple[list[str], list[str]]:
    source, target = draw(a_path()), draw(a_path(VOLUMES))
    argv = [command, source, "-o", target, "-q", f"--{draw(st.sampled_from(['factor'] * 4 + ['spacing']))}="
            + draw(factors)]  # fmt: skip
    argv += draw(option("--threads", st.sampled_from(["1", "0", "-2", "1"])))
    argv += draw(option("--axis", st.just("z")))
    argv += draw(option("--reference", a_path())) + draw(option("--thickness", numbers))
    smoothing = ["--consistency", "--consistency-smoothing=1"]
    argv += draw(st.sampled_from([[], [], ["--float"], ["--consistency"], smoothing]))
    if command == "upsample":
        argv += ["--method", draw(st.sampled_from(["trilinear", "tricubic"]))]
        argv += draw(st.sampled_from([[], ["--model", "model.safetensors"], ["--overwrite"]]))
        return argv, [target]
    argv += [f"--steps={draw(st.sampled_from(['1', '1', '0', '-3', 'abc']))}"]
    argv += draw(option("--minutes", numbers))
    argv += ["--model", draw(st.sampled_from(["model.safetensors", "notes.txt", "missing.safetensors"]))]
    saved = draw(st.sampled_from([None, "out/adapted.safetensors", "scan.safetensors", "model.safetensors"]))
    extra = [saved, str(Path(saved).with_suffix(".json"))] if saved else []
    return argv + (["--save-model", saved] if saved else []), [target, *extra]


@st.composite
def train_argv(draw) -> tuple[list[str], list[str]]:
    out = draw(a_path(RUNS))
    argv = ["train", "--out", out, "--device", "cpu"]
    argv += draw(option("--steps", st.sampled_from(["abc", "-1", "0", "nan", "1"])))
    argv += draw(option("--seed", numbers)) + draw(option("--config", a_path()))
    argv += draw(st.sampled_from([[], ["--data", "scan.nii.gz"], ["--data", "folder", "loop.nii.gz"]]))
    argv += draw(option("--validation", a_path())) + draw(st.sampled_from([[], ["--resume"]]))
    return argv, [out]


@st.composite
def evaluate_argv(draw) -> tuple[list[str], list[str]]:
    references = draw(st.lists(a_path(), min_size=1, max_size=2))
    json_out, plot = draw(st.one_of(st.none(), a_path(JSONS))), draw(st.one_of(st.none(), a_path(PLOTS)))
    references = [r if r != "scan.nii.gz" else "reference.nii.gz" for r in references]
    argv = ["evaluate", *references, f"--factor={draw(factors)}", "--device", "cpu"]
    methods = st.sampled_from(["trilinear", "trilinear", "tricubic,trilinear", "nonsense", ""])
    argv += [f"--methods={draw(methods)}"]
    argv += draw(option("--degradation", st.sampled_from(["average", "skip", "gaussian", "blur"])))
    argv += draw(option("--variant", st.sampled_from(["tiny=model.safetensors", "x=notes.txt", "broken"])))
    argv += (["--json", json_out] if json_out else []) + (["--plot", plot] if plot else [])
    return argv, [p for p in (json_out, plot) if p]


@st.composite
def benchmark_argv(draw) -> tuple[list[str], list[str]]:
    json_out = draw(st.one_of(st.none(), a_path(JSONS)))
    argv = ["benchmark", "--device", "cpu", "--in-process", "--scaling=", "--methods", "trilinear"]
    argv += [f"--sizes={draw(st.sampled_from(['16x16x6', '16x16x6', '0x16x6', 'abc', '16x16x-6', '']))}"]
    argv += draw(option("--factor", numbers)) + draw(option("--input", a_path()))
    argv += draw(option("--model", a_path()))
    argv += draw(option("--threads", st.sampled_from(["-4", "0", "1", "x"])))
    return argv + (["--json", json_out] if json_out else []), [json_out] if json_out else []


@dataclass
class Outcome:
    code: int | str
    stderr: str
    changed: list[str]


def run(originals, tmp_path, argv: list[str], outputs: list[str]) -> Outcome:
    with workspace(originals, tmp_path) as space:
        before = space.snapshot()
        stderr, stdout = io.StringIO(), io.StringIO()
        cwd = os.getcwd()
        os.chdir(space.root)  # relative paths in argv name the workspace's files
        try:
            with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(stdout):
                code: int | str = cli.main(argv)
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 2
        except BaseException as error:  # noqa: BLE001 - what escaped main() is what the user would see
            code = f"Traceback: {type(error).__name__}: {error}"
        finally:
            os.chdir(cwd)
        after = space.snapshot()
        allowed = {str(Path(o)) for o in outputs}
        changed = sorted(
            key for key in set(before) | set(after)
            if before.get(key) != after.get(key)
            and not any(key == a or key.startswith(a + "/") for a in allowed)
        )  # fmt: skip
        return Outcome(code, stderr.getvalue(), changed)


def check_nothing_lost(outcome: Outcome, argv: list[str]) -> None:
    assert not outcome.changed, f"{argv} changed {outcome.changed}"


def check_one_line(outcome: Outcome, argv: list[str]) -> None:
    assert outcome.code in (0, 2), f"{argv} -> {outcome.code!r}"
    lines = [line for line in outcome.stderr.splitlines() if line.strip()]
    assert len(lines) <= MAX_STDERR_LINES and "Traceback" not in outcome.stderr, f"{argv}:\n{outcome.stderr}"


STRATEGIES = {
    "upsample": upsample_argv(),
    "adapt": upsample_argv("adapt"),
    "train": train_argv(),
    "evaluate": evaluate_argv(),
    "benchmark": benchmark_argv(),
}


def fuzz(command: str, check, originals, tmp_path) -> None:
    @SETTINGS
    @given(STRATEGIES[command])
    def each(case: tuple[list[str], list[str]]) -> None:
        argv, outputs = case
        check(run(originals, tmp_path, argv, outputs), argv)

    each()


def test_every_subcommand_is_fuzzed():
    parser = cli.build_parser()
    subcommands = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction").choices
    assert set(subcommands) == set(STRATEGIES)


@pytest.mark.parametrize("command", list(STRATEGIES))
def test_nothing_is_lost_whatever_the_arguments(command, originals, tmp_path):
    fuzz(command, check_nothing_lost, originals, tmp_path)


@pytest.mark.parametrize("command", list(STRATEGIES))
def test_one_line_and_exit_0_or_2_whatever_the_arguments(command, originals, tmp_path):
    fuzz(command, check_one_line, originals, tmp_path)


ISSUE_CASES = {
    "benchmark --json over its input": ["benchmark", "--input", "scan.nii.gz", "--json", "scan.nii.gz",
                                        "--sizes", "16x16x6", "--scaling=", "--methods", "trilinear", "--in-process"],
    "evaluate --plot over the reference": ["evaluate", "reference.nii.gz", "--factor", "2", "--methods",
                                           "trilinear", "--plot", "reference.nii.gz"],
    "evaluate --plot into a missing folder": ["evaluate", "reference.nii.gz", "--factor", "2", "--methods",
                                              "trilinear", "--plot", "missing/plot.png"],
    "train --steps abc": ["train", "--out", "out/run", "--data", "scan.nii.gz", "--steps", "abc"],
    "train --out is an input": ["train", "--out", "scan.nii.gz", "--data", "scan.nii.gz", "--steps", "1"],
    "upsample a symlink loop": ["upsample", "loop.nii.gz", "-o", "out/new.nii.gz", "--factor", "2"],
    "upsample into a symlink loop": ["upsample", "scan.nii.gz", "-o", "loop.nii.gz", "--factor", "2"],
}  # fmt: skip
@pytest.mark.parametrize("case", list(ISSUE_CASES))
def test_the_issues_own_examples_as_real_processes(case, originals, tmp_path):
    """The `cycleinr` executable in a subprocess: exit 2, one line, the workspace unchanged."""
    argv = ISSUE_CASES[case]
    with workspace(originals, tmp_path) as space:
        before = space.snapshot()
        done = subprocess.run([sys.executable, "-m", "napari_cycleinr.cli", *argv], cwd=space.root,
                              capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
        after = space.snapshot()
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    assert not changed, f"{case}: changed {changed}"
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith("cycleinr"), done.stderr
