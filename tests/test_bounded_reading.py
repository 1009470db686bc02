"""Reading is bounded by memory: what a NIfTI or TIFF file will cost is decided from its header before anything
is allocated. Hostile files (a small .nii.gz that inflates to a huge volume, a huge header extension, TIFF
strips that all point at the same bytes, a claimed shape beyond the limit) are refused with one line, and the
peak memory of the reading process (VmHWM, measured in a fresh subprocess) stays within ~2x the honest
in-memory size or the limit."""

from __future__ import annotations

import gzip
import json
import os
import struct
import subprocess
import sys
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import tifffile

from napari_cycleinr.errors import CycleINRError
from napari_cycleinr.io import read_volume
from napari_cycleinr.io.budget import MEMORY_VARIABLE, configured_limit_bytes

MB = 2**20
MEASURE = """
import json, sys, warnings
warnings.filterwarnings("ignore", message=".*voxel spacing not fully known")  # plain TIFFs: said, not failed
import napari_cycleinr.io.nifti, napari_cycleinr.io.tiff  # imported before the baseline is taken
from napari_cycleinr.errors import CycleINRError
from napari_cycleinr.io import read_volume

def peak_mb():  # VmHWM: this process's own peak (ru_maxrss keeps the forking parent's peak across exec)
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024

before = peak_mb()
try:
    outcome = {"read_mb": read_volume(sys.argv[1]).data.nbytes / 2**20}
except CycleINRError as error:
    outcome = {"refused": str(error)}
print(json.dumps({**outcome, "grew_mb": peak_mb() - before}))
"""


def read_in_fresh_process(path: Path, limit_gb: float | None = None) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop(MEMORY_VARIABLE, None)
    if limit_gb is not None:
        env[MEMORY_VARIABLE] = str(limit_gb)
    done = subprocess.run([sys.executable, "-c", MEASURE, str(path)], capture_output=True, text=True, env=env)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    return json.loads(done.stdout)


def honest_voxels(shape: tuple[int, ...]) -> np.ndarray:
    """Voxels that compress well but are not zeros (zero pages would not show in the resident size)."""
    return np.resize(np.arange(1, 252, dtype=np.uint8), shape)


def inflating_nifti(path: Path, shape=(128, 512, 512)) -> Path:
    """A .nii.gz of ~0.9 MB that really holds `shape` uint8 voxels (32 MB, none zero: every page is touched)."""
    image = nib.Nifti1Image(honest_voxels(shape), np.eye(4))
    image.header.set_data_dtype(np.uint8)
    nib.save(image, path)
    return path


def nifti_with_extension(path: Path, extension_size: int, vox_offset: int | None = None) -> Path:
    """A small NIfTI whose header extension is `extension_size` bytes (zeros), written gzip-streamed."""
    header = nib.Nifti1Header()
    header.set_data_shape((4, 4, 4))
    header.set_data_dtype(np.int16)
    header["vox_offset"] = vox_offset if vox_offset is not None else 352 + max(extension_size, 0)
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "wb") as file:
        file.write(header.binaryblock + b"\x01\0\0\0" + struct.pack("<ii", extension_size, 4))
        left = max(extension_size - 8, 0)
        while left:
            file.write(b"\0" * min(left, 8 * MB))
            left -= min(left, 8 * MB)
        file.write(np.arange(64, dtype=np.int16).tobytes())
    return path


def tiff_with_shared_strips(path: Path, pages=64, edge=512) -> Path:
    """A deflate TIFF stack whose every page's strip points at the first page's bytes."""
    tifffile.imwrite(path, np.zeros((pages, edge, edge), np.uint8), compression="zlib", rowsperstrip=edge)
    with tifffile.TiffFile(path, mode="r+b") as tif:
        first = tif.pages[0].tags["StripOffsets"].value
        for page in tif.pages[1:]:
            page.tags["StripOffsets"].overwrite(first)
    return path


def test_a_small_gz_that_inflates_beyond_the_limit_is_refused_before_decompressing(tmp_path):
    path = inflating_nifti(tmp_path / "bomb.nii.gz")
    assert path.stat().st_size < 2_000_000  # < 1 MB for 32 MB of voxels
    refused = read_in_fresh_process(path, limit_gb=0.02)
    assert "needs 64 MiB to read, more than the CYCLEINR_MAX_MEMORY_GB limit of 20 MiB" in refused["refused"]
    assert refused["grew_mb"] < 8, refused  # nothing of the 32 MB was allocated
    honest = read_in_fresh_process(path)  # no limit but the free memory: read, within 2x its size
    assert honest["read_mb"] == 32 and honest["grew_mb"] < 2 * 32 + 8, honest
    print(f"\ninflating .nii.gz (32 MB honest): refused peak +{refused['grew_mb']:.1f} MB, read +{honest['grew_mb']:.1f} MB")


def test_a_huge_header_extension_is_refused_without_reading_it(tmp_path):
    for name in ("extension.nii.gz", "extension.nii"):
        path = nifti_with_extension(tmp_path / name, 100 * MB)
        outcome = read_in_fresh_process(path)
        assert "header extensions hold more than 64 MB" in outcome["refused"], outcome
        assert outcome["grew_mb"] < 8, outcome
        print(f"\n100 MB header extension ({name}, {path.stat().st_size:,} bytes): peak +{outcome['grew_mb']:.1f} MB")


@pytest.mark.parametrize("size", [0, -8, 7])
def test_an_impossible_extension_size_is_refused_before_nibabel_reads_to_the_end(tmp_path, size):
    path = nifti_with_extension(tmp_path / "odd.nii.gz", size, vox_offset=352 + 16)
    with pytest.raises(CycleINRError, match=rf"impossible size \({size} bytes\)"):
        read_volume(path)


def test_an_odd_sized_extension_reads_without_nibabels_warning(tmp_path):
    for name in ("odd.nii", "odd.nii.gz"):
        path = nifti_with_extension(tmp_path / name, 24)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            volume = read_volume(path)
        assert volume.shape == (4, 4, 4) and int(volume.data.max()) == 63
        assert read_in_fresh_process(path)["read_mb"] > 0  # and nothing on stderr (asserted inside)


def test_tiff_strips_pointing_at_the_same_bytes_are_refused(tmp_path):
    path = tiff_with_shared_strips(tmp_path / "shared.tif")
    assert path.stat().st_size < 100_000
    outcome = read_in_fresh_process(path)
    assert "strips or tiles share bytes" in outcome["refused"] and outcome["grew_mb"] < 8, outcome
    tiled = tmp_path / "tiled.tif"
    tifffile.imwrite(tiled, np.zeros((16, 256, 256), np.uint16), compression="zlib", tile=(64, 64))
    with tifffile.TiffFile(tiled, mode="r+b") as tif:
        tif.pages[3].tags["TileOffsets"].overwrite(tif.pages[2].tags["TileOffsets"].value)
    with pytest.raises(CycleINRError, match="share bytes"):
        read_volume(tiled)
    print(f"\nTIFF with shared strips (16 MB claimed, {path.stat().st_size:,} bytes): peak +{outcome['grew_mb']:.1f} MB")


def test_a_tiff_claiming_more_than_the_limit_is_refused_and_an_honest_one_reads_within_2x(tmp_path):
    path = tmp_path / "big.tif"
    tifffile.imwrite(path, honest_voxels((64, 1024, 1024)), compression="zlib", rowsperstrip=1024)
    refused = read_in_fresh_process(path, limit_gb=0.03)
    assert "more than the CYCLEINR_MAX_MEMORY_GB limit" in refused["refused"] and refused["grew_mb"] < 8
    honest = read_in_fresh_process(path, limit_gb=1)
    assert honest["read_mb"] == 64 and honest["grew_mb"] < 2 * 64 + 8, honest
    print(f"\nTIFF 64 MB claimed: refused peak +{refused['grew_mb']:.1f} MB, read +{honest['grew_mb']:.1f} MB")


def test_a_scale_slope_that_overflows_float32_is_refused(tmp_path):
    data = np.full((4, 5, 6), 30000, np.int16)
    for name, slope, inter in (("slope.nii.gz", 1e35, 0.0), ("inter.nii", -1e35, -3e38)):
        image = nib.Nifti1Image(data, np.eye(4))
        image.header.set_slope_inter(slope, inter)
        nib.save(image, tmp_path / name)
        with pytest.raises(CycleINRError, match=r"its scaling \(scl_slope .*beyond what a float32 holds"):
            read_volume(tmp_path / name)
    image = nib.Nifti1Image(data, np.eye(4))
    image.header.set_slope_inter(2.0, -1024.0)  # an ordinary scaling still reads
    nib.save(image, tmp_path / "ordinary.nii")
    assert float(read_volume(tmp_path / "ordinary.nii").data.max()) == 30000 * 2 - 1024


@pytest.mark.parametrize("text", ["lots", "-1", "0", "nan", "inf"])
def test_a_bad_memory_limit_is_one_clear_message(monkeypatch, tmp_path, text):
    monkeypatch.setenv(MEMORY_VARIABLE, text)
    with pytest.raises(CycleINRError, match=f"{MEMORY_VARIABLE} must be a positive number of gigabytes"):
        configured_limit_bytes()
    path = inflating_nifti(tmp_path / "small.nii.gz", shape=(4, 4, 4))
    with pytest.raises(CycleINRError, match=MEMORY_VARIABLE):
        read_volume(path)
    monkeypatch.setenv(MEMORY_VARIABLE, "0.5")
    assert configured_limit_bytes() == 2**29 and read_volume(path).shape == (4, 4, 4)
