"""What a user installs: the built wheel carries the licence, every weight, the sample and the napari manifest;
the shipped weights name no path of the machine they were trained on; setup.sh says what it cannot do."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path, PurePosixPath, PureWindowsPath

import pytest

from napari_cycleinr.model.checkpoint import BUNDLED_MODELS, bundled_model_path

ROOT = Path(__file__).resolve().parents[1]
SETUP = ROOT / "scripts" / "setup.sh"


def _setuptools_major() -> int:
    try:
        return int(metadata.version("setuptools").split(".")[0])
    except (metadata.PackageNotFoundError, ValueError):
        return 0


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """The wheel, built once without network (no build isolation) from a copy of the sources, so a stale build/
    folder cannot leak into it and nothing is written into the checkout; with that copy's package folder."""
    if _setuptools_major() < 77:
        pytest.skip("building offline needs setuptools>=77 in this environment (pyproject's build requirement)")
    source, out = tmp_path_factory.mktemp("source"), tmp_path_factory.mktemp("wheel")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    shutil.copytree(ROOT / "src", source / "src", ignore=ignore)
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", out, "."]
    build = subprocess.run(command, cwd=source, capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    assert "BuildBackendWarning" not in build.stderr and "SetuptoolsDeprecationWarning" not in build.stderr
    (path,) = out.glob("napari_cycleinr-*.whl")
    with zipfile.ZipFile(path) as archive:
        yield archive, source / "src" / "napari_cycleinr"


def _dist_info(archive: zipfile.ZipFile, name: str) -> str:
    (entry,) = [n for n in archive.namelist() if n.split("/")[0].endswith(".dist-info") and n.endswith("/" + name)]
    return archive.read(entry).decode()


def test_wheel_holds_license_weights_sample_manifest_and_entry_points(wheel):
    wheel, package = wheel
    names = set(wheel.namelist())
    weights = [package / "weights" / bundled_model_path(name).name for name in BUNDLED_MODELS]
    samples = sorted((package / "sample_data").glob("*.nii.gz"))
    assert {"chest_ct_5mm.nii.gz", "chest_ct_1p25mm.nii.gz"} <= {p.name for p in samples}
    for path in weights + [p.with_suffix(".json") for p in weights] + samples + [package / "napari.yaml"]:
        inside = path.relative_to(package.parent).as_posix()
        assert inside in names, inside
        assert wheel.read(inside) == path.read_bytes(), inside
    assert _dist_info(wheel, "licenses/LICENSE") == (ROOT / "LICENSE").read_text()
    assert "License-Expression: BSD-3-Clause" in _dist_info(wheel, "METADATA").splitlines()
    entry_points = _dist_info(wheel, "entry_points.txt").splitlines()
    assert "napari-cycleinr = napari_cycleinr:napari.yaml" in entry_points
    assert "cycleinr = napari_cycleinr.cli:console" in entry_points


def _safetensors_metadata(path: Path) -> dict:
    """The header's metadata, read as a stranger would: 8 bytes little-endian length, then JSON."""
    with open(path, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(length))
    return {
        key: json.loads(value) if value.startswith(("{", "[")) else value
        for key, value in header["__metadata__"].items()
    }


def _absolute_paths(value) -> list[str]:
    if isinstance(value, str):
        absolute = PurePosixPath(value).is_absolute() or PureWindowsPath(value).is_absolute()
        return [value] if absolute or value.startswith("~") else []
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list):
        return [found for item in value for found in _absolute_paths(item)]
    return []


@pytest.mark.parametrize("name", sorted(BUNDLED_MODELS))
def test_shipped_weights_name_no_path_of_the_training_machine(name):
    path = bundled_model_path(name)
    header, sidecar = _safetensors_metadata(path), json.loads(path.with_suffix(".json").read_text())
    assert header["info"] == sidecar["info"] and header["model_config"] == sidecar["model_config"]
    assert _absolute_paths(header) == [] and _absolute_paths(sidecar) == []
    train = sidecar["info"]["train_config"]
    assert all(p.startswith(("train/", "thick/")) for p in [*train["train_data"], train["validation_data"]])


def test_setup_script_parses_and_reports_the_torch_build_last():
    assert subprocess.run(["bash", "-n", str(SETUP)]).returncode == 0
    text = SETUP.read_text()
    assert "'CUDA' if torch.version.cuda else 'CPU'" in text
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines[-1] == 'echo "setup: ready (.venv)"'  # what the test runner and helpers wait for


def test_setup_script_without_root_or_sudo_prints_the_apt_command_and_stops(tmp_path):
    """A user without root whose sudo asks for a password: a command to run, not an obscure failure."""
    shutil.copytree(ROOT / "scripts", tmp_path / "scripts")
    tools = tmp_path / "bin"
    tools.mkdir()
    for tool, body in {"id": "echo 1000", "sudo": "echo 'sudo: a password is required' >&2; exit 1",
                       "dpkg-query": "exit 1"}.items():
        (tools / tool).write_text(f"#!/bin/sh\n{body}\n")
        (tools / tool).chmod(0o755)
    env = {**os.environ, "PATH": f"{tools}{os.pathsep}{os.environ['PATH']}", "PYTHON": sys.executable}
    env.pop("SKIP_APT", None)
    run = subprocess.run(["bash", "scripts/setup.sh"], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 1
    assert "not root, and sudo asks for a password" in run.stderr
    assert "    sudo apt-get update && sudo apt-get install -y xvfb xauth" in run.stderr
    assert not (tmp_path / ".venv").exists()
