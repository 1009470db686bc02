"""The npe2 manifest: valid, found through the entry point, and cheap to import (no torch, no Qt)."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import entry_points

from npe2 import PluginManifest

PLUGIN = "napari-cycleinr"


def test_manifest_is_valid_and_registered():
    (entry,) = [e for e in entry_points(group="napari.manifest") if e.name == PLUGIN]
    assert entry.value == "napari_cycleinr:napari.yaml"
    manifest = PluginManifest.from_distribution(PLUGIN)
    manifest.validate_imports()  # every python_name resolves
    contributions = manifest.contributions
    (reader,) = contributions.readers
    assert sorted(reader.filename_patterns) == ["*.dcm", "*.ima", "*.nii", "*.nii.gz", "*.tif", "*.tiff"]
    extensions = {tuple(w.filename_extensions) for w in contributions.writers}
    assert {(".nii.gz", ".nii"), (".tif", ".tiff"), (".dcm",), ()} == extensions
    assert {s.key for s in contributions.sample_data} == {"chest_ct_5mm", "chest_ct_1p25mm"}
    assert [w.display_name for w in contributions.widgets] == ["Through-plane super-resolution"]


def test_npe2_validate_command_passes():
    done = subprocess.run(
        [sys.executable, "-m", "npe2", "validate", PLUGIN], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "valid" in done.stdout


def test_importing_the_manifest_and_io_contributions_needs_neither_torch_nor_qt():
    script = """
import sys
from npe2 import PluginManifest
manifest = PluginManifest.from_distribution("napari-cycleinr")
import napari_cycleinr, napari_cycleinr._reader, napari_cycleinr._writer, napari_cycleinr._sample_data
heavy = sorted(m for m in ("torch", "PyQt6", "PyQt5", "PySide6", "qtpy") if m in sys.modules)
print("heavy:", heavy)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "heavy: []" in done.stdout
