"""Fuzzing the readers with hypothesis: random bytes, and real files with bytes overwritten (header fields
set to 0, -1, huge or NaN values), cut short or cut and padded. Only the documented outcomes may come out:

- `read_volume`: a sound Volume (3D, finite positive spacing, finite affine) or one CycleINRError line;
- napari's `get_reader`: None or a reader (it never raises), and the reader: layers or a CycleINRError;
- `load_model` on mutated checkpoints: a model or a CycleINRError.

Bounded for CI: a fixed number of examples per target, derandomized (the same examples on every run), no
example database, no deadline (a shared CI machine is slow in bursts).
"""

from __future__ import annotations

import contextlib
import gzip
import io
import math
import struct
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import tifffile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from napari_cycleinr._reader import napari_get_reader
from napari_cycleinr.errors import CycleINRError
from napari_cycleinr.io import read_volume
from napari_cycleinr.volume import Volume
from tests.conftest import CT_HEAD, MR_3MM
from tests.robust.bad_files import ramp

FUZZ = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.function_scoped_fixture,
        HealthCheck.data_too_large,
    ],
)
INT32_EDGES = [0, 1, -1, 2, 3, 7, 255, 348, 540, 2**15, 2**16 - 1, 2**31 - 1, -(2**31), 10**6, 10**9]
FLOAT32_EDGES = [0.0, -0.0, -1.0, 1e-30, 1e30, float("nan"), float("inf"), float("-inf")]


@st.composite
def mutations(draw, seed: bytes, header: int):
    """`seed` with 1 to 8 edits, half of them within its first `header` bytes, then maybe cut or padded."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 8))):
        size = len(data)
        if size == 0:
            break
        where = draw(st.integers(0, min(header, size) - 1) | st.integers(0, size - 1))
        kind = draw(st.sampled_from(["byte", "int16", "int32", "float32"]))
        if kind == "byte":
            value = bytes([draw(st.integers(0, 255))])
        elif kind == "int16":
            value = struct.pack("<h", draw(st.sampled_from([0, -1, 1, 2, 3, 4, 5, 7, 8, 32767, -32768])))
        elif kind == "int32":
            value = struct.pack(draw(st.sampled_from(["<i", ">i"])), draw(st.sampled_from(INT32_EDGES)))
        else:
            value = struct.pack("<f", draw(st.sampled_from(FLOAT32_EDGES)))
        data[where : where + len(value)] = value[: max(0, size - where)]
    ending = draw(st.sampled_from(["keep", "keep", "cut", "cut and pad"]))
    if ending != "keep":
        data = data[: draw(st.integers(0, len(data)))]
        if ending == "cut and pad":
            data += b"\0" * draw(st.integers(1, 4096))
    return bytes(data)


def small_nifti(compressed: bool) -> bytes:
    """A real crop of the MR test scan as NIfTI bytes: header mutations reach the fields, not just gzip."""
    image = nib.load(MR_3MM)
    crop = np.asanyarray(image.dataobj)[40:56, 30:46, 6:12]
    data = nib.Nifti1Image(crop, image.affine, image.header).to_bytes()
    return gzip.compress(data, mtime=0) if compressed else data


def small_tiff(kind: str) -> bytes:
    buffer = io.BytesIO()
    data = ramp((5, 12, 10), np.uint16, 0, 4000)
    if kind == "imagej":
        tifffile.imwrite(
            buffer,
            data,
            imagej=True,
            resolution=(2.0, 2.0),
            metadata={"axes": "ZYX", "spacing": 3.0, "unit": "mm"},
        )
    elif kind == "ome":
        metadata = {"axes": "ZYX", "PhysicalSizeZ": 3.0, "PhysicalSizeZUnit": "mm"}
        tifffile.imwrite(buffer, data.astype(np.int32), ome=True, photometric="minisblack", metadata=metadata)
    else:
        tifffile.imwrite(buffer, data, photometric="minisblack", compression="zlib")
    return buffer.getvalue()


SEEDS = {
    "nii": (small_nifti(compressed=False), 352),
    "nii.gz": (small_nifti(compressed=True), 64),
    "real.nii.gz": (CT_HEAD.read_bytes(), 64),
    "imagej.tif": (small_tiff("imagej"), 512),
    "ome.tif": (small_tiff("ome"), 2048),
    "zlib.tiff": (small_tiff("plain"), 512),
}


@pytest.fixture(scope="module")
def fuzz_folder(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


def check_only_documented_outcomes(path: Path) -> None:
    printed = io.StringIO()
    with contextlib.redirect_stderr(printed):
        _check_outcomes(path)
    # Nothing of the libraries' own logging may reach stderr: the CLI promises one line there.
    assert printed.getvalue() == "", printed.getvalue()


def _check_outcomes(path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # warnings (e.g. spacing assumed) are allowed
        try:
            volume = read_volume(path)
        except CycleINRError as error:
            text = str(error)
            assert text.startswith(f"cannot read {path}: ") and "\n" not in text, text
        else:
            assert isinstance(volume, Volume) and volume.data.ndim == 3 and volume.data.size > 0
            assert all(math.isfinite(s) and s > 0 for s in volume.spacing)
            assert np.all(np.isfinite(volume.affine))
        reader = napari_get_reader(str(path))
        assert reader is not None, "our suffix: the napari reader must take the file and explain a failure"
        try:
            layers = reader(str(path))
        except CycleINRError:
            pass
        else:
            ((data, kwargs, kind),) = layers
            assert kind == "image" and data.ndim == 3
            low, high = kwargs["contrast_limits"]
            assert math.isfinite(low) and math.isfinite(high) and high > low


@pytest.mark.parametrize("seed", list(SEEDS), ids=str)
def test_mutated_files(fuzz_folder, seed):
    original, header = SEEDS[seed]
    path = fuzz_folder / f"mutated.{seed}"
    check_only_documented_outcomes(write(path, original))  # the seed itself reads

    @FUZZ
    @given(mutations(original, header))
    def run(data: bytes) -> None:
        check_only_documented_outcomes(write(path, data))

    run()


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz", ".tif"])
def test_random_bytes(fuzz_folder, suffix):
    path = fuzz_folder / f"random{suffix}"
    prefixes = {".nii": [b"", struct.pack("<i", 348)], ".nii.gz": [b"", b"\x1f\x8b\x08\x00"],
                ".tif": [b"", b"II*\x00", b"MM\x00*", b"II+\x00\x08\x00\x00\x00"]}  # fmt: skip

    @settings(FUZZ, max_examples=40)
    @given(st.sampled_from(prefixes[suffix]), st.binary(max_size=2048))
    def run(prefix: bytes, tail: bytes) -> None:
        check_only_documented_outcomes(write(path, prefix + tail))

    run()


def test_mutated_checkpoints(tmp_path_factory, tiny_checkpoint):
    from napari_cycleinr.model.checkpoint import load_model

    original = Path(tiny_checkpoint).read_bytes()
    header = 8 + int.from_bytes(original[:8], "little")
    path = tmp_path_factory.mktemp("fuzz checkpoints") / "mutated.safetensors"

    @settings(FUZZ, max_examples=40)
    @given(mutations(original, header))
    def run(data: bytes) -> None:
        write(path, data)
        try:
            load_model(path)
        except CycleINRError as error:
            assert "\n" not in str(error)

    run()


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path
