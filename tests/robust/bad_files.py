"""Every hostile or broken input file of the robustness suite, built once and shared by all its surfaces.

`CASES` lists each file with what must happen to it: the one-line reason `read_volume` gives (or None when
the file is readable), the reason a run gives when the file reads but cannot be super-resolved, and the
warning it must raise. `build(folder)` writes them all; `tests/robust/conftest.py` does so once per session,
so the reader, CLI and widget tests all see the very same bytes (and can check that they never change).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import tifffile

from tests.conftest import CT_3MM
from tests.test_io_nifti import patch_header

THICK = (0.8, 0.8, 5.0)
"""Voxel size (x, y, z) in mm of the small volumes built here: thick slices along the file's k axis."""


@dataclass(frozen=True)
class BadFile:
    key: str
    name: str
    """Path relative to the folder the cases are built in (may hold a sub-folder)."""
    build: Callable[[Path], None]
    read: str | None
    """Regex the CycleINRError of read_volume must match, or None when the file must read."""
    run: str | None = None
    """For a readable file: regex of the error a run must give, or None when a run must succeed."""
    warns: str | None = None
    """Regex of the warning reading must give, if any."""
    dtype: str | None = None
    """The voxel type a readable file must come back with."""


def ramp(shape: tuple[int, ...], dtype: type = np.int16, low: float = -1000.0, high: float = 400.0):
    """A smooth, deterministic test volume (values between low and high)."""
    grids = np.meshgrid(*[np.linspace(0.0, 1.0, n) for n in shape], indexing="ij")
    values = low + (high - low) * (0.5 + 0.5 * np.sin(3.0 * sum(grids)))
    return values.astype(dtype)


def save_nifti(path: Path, array: np.ndarray, zooms: tuple[float, float, float] = THICK) -> None:
    image = nib.Nifti1Image(array, np.diag([*zooms, 1.0]), dtype=array.dtype)
    image.header.set_xyzt_units("mm")
    nib.save(image, path)


def _nifti(array_factory: Callable[[], np.ndarray], zooms: tuple[float, float, float] = THICK):
    return lambda path: save_nifti(path, array_factory(), zooms)


def _truncated(path: Path) -> None:
    data = CT_3MM.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _text(path: Path) -> None:
    path.write_text("Patient: DOE^JOHN\nThis is the radiology report, not an image.\n" * 20, encoding="utf-8")


def _huge_header(path: Path) -> None:
    """A valid header for 1000 x 1000 x 1000 int16 voxels (2 GB) followed by four bytes of data."""
    header = nib.Nifti1Header()
    header.set_data_shape((1000, 1000, 1000))
    header.set_data_dtype(np.int16)
    header.set_zooms((1.0, 1.0, 1.0))
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "wb") as file:
        header.write_to(file)
        file.write(b"\0" * 4)


def _with_bad_values(value: float) -> Callable[[Path], None]:
    def build(path: Path) -> None:
        array = ramp((12, 10, 4), np.float32)
        array[3, 4, 1] = value
        array[7, 2, 2] = value
        save_nifti(path, array)

    return build


def _pixdim(value: float) -> Callable[[Path], None]:
    def build(path: Path) -> None:
        save_nifti(path, ramp((8, 8, 4)))
        pixdim = nib.load(path).header["pixdim"].copy()
        pixdim[3] = value
        patch_header(path, pixdim=pixdim)

    return build


def _singular_affine(path: Path) -> None:
    image = nib.Nifti1Image(ramp((8, 8, 4)), np.diag([*THICK, 1.0]))
    image.set_sform(np.diag([0.8, 0.8, 0.0, 1.0]), code=1)
    nib.save(image, path)


def _binary_nifti(path: Path) -> None:
    """NIfTI datatype 1 (DT_BINARY, one bit per voxel), which nibabel cannot read."""
    save_nifti(path, ramp((8, 8, 4), np.uint8))
    patch_header(path, datatype=1, bitpix=1)


def _rgb_nifti(path: Path) -> None:
    rgb = np.zeros((8, 8, 4), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    nib.save(nib.Nifti1Image(rgb, np.diag([*THICK, 1.0])), path)


def _bool_tiff(path: Path) -> None:
    mask = ramp((4, 12, 10)) > 0
    tifffile.imwrite(path, mask, photometric="minisblack")  # one bit per voxel, no spacing


def _rgb_tiff(path: Path) -> None:
    tifffile.imwrite(path, ramp((4, 12, 10, 3), np.uint8, 0, 255), photometric="rgb")


def _plain_tiff(path: Path) -> None:
    tifffile.imwrite(path, ramp((4, 12, 10), np.uint16, 0, 4000), photometric="minisblack")


def _truncated_tiff(path: Path) -> None:
    metadata = {"axes": "ZYX", "spacing": 5.0}
    tifffile.imwrite(
        path, ramp((20, 30, 40), np.float32), imagej=True, resolution=(1.0, 1.0), metadata=metadata
    )
    path.write_bytes(path.read_bytes()[:5000])


def _copy_of_ct(path: Path) -> None:
    path.write_bytes(CT_3MM.read_bytes())


NON_FINITE = r"the volume has 2 NaN or infinite voxel\(s\); fix or mask them first"
CASES: tuple[BadFile, ...] = (
    BadFile("truncated_nii_gz", "truncated.nii.gz", _truncated, r"truncated\.nii\.gz: it is truncated"),
    BadFile(
        "empty_nii_gz", "empty.nii.gz", lambda p: p.write_bytes(b""), r"empty\.nii\.gz: the file is empty"
    ),
    BadFile("text_named_nii", "report.nii", _text, r"report\.nii: it is not a NIfTI file"),
    BadFile("huge_header_nii", "huge.nii", _huge_header, r"1,000,000,000 voxels \(2\.0 GB\) but the file"),
    BadFile("huge_header_nii_gz", "huge.nii.gz", _huge_header, r"1,000,000,000 voxels .* compressed file"),
    BadFile("nan_voxels", "nan.nii.gz", _with_bad_values(np.nan), None, run=NON_FINITE, dtype="float32"),
    BadFile("inf_voxels", "inf.nii", _with_bad_values(np.inf), None, run=NON_FINITE, dtype="float32"),
    BadFile("pixdim_zero", "pixdim zero.nii", _pixdim(0.0), r"pixdim\) must be positive .*\[0\.8, 0\.8, 0\]"),
    BadFile("pixdim_negative", "pixdim negative.nii", _pixdim(-5.0), r"pixdim\) must be positive .* -5\]"),
    BadFile("pixdim_nan", "pixdim nan.nii", _pixdim(np.nan), r"pixdim\) must be positive .* nan\]"),
    BadFile(
        "singular_affine", "singular.nii.gz", _singular_affine, r"spacing must be positive, got \(0\.8, 0,"
    ),
    BadFile("flat_2d", "flat.nii.gz", _nifti(lambda: ramp((12, 10))), r"it is a 2D image"),
    BadFile(
        "one_slice", "one slice.nii.gz", _nifti(lambda: ramp((12, 10, 1))), None, run=r"at least 2 slices"
    ),
    BadFile("two_slices", "two slices.nii.gz", _nifti(lambda: ramp((12, 10, 2))), None, dtype="int16"),
    BadFile(
        "several_volumes_4d",
        "fmri.nii.gz",
        _nifti(lambda: ramp((8, 8, 4, 3))),
        r"4 dimensions with 3 volumes",
    ),
    BadFile("five_d", "five.nii.gz", _nifti(lambda: ramp((8, 8, 4, 1, 2))), r"it has 5 dimensions"),
    BadFile(
        "uint8", "uint8.nii.gz", _nifti(lambda: ramp((12, 10, 4), np.uint8, 0, 255)), None, dtype="uint8"
    ),
    BadFile(
        "float64", "float64.nii.gz", _nifti(lambda: ramp((12, 10, 4), np.float64)), None, dtype="float64"
    ),
    BadFile("bool_tiff", "mask.tif", _bool_tiff, None, warns=r"assuming 1 mm", dtype="uint8"),
    BadFile("binary_nifti", "binary.nii", _binary_nifti, r"1-bit \(binary\) voxels"),
    BadFile("rgb_nifti", "rgb.nii.gz", _rgb_nifti, r"RGB colour voxels"),
    BadFile("rgb_tiff", "photo.tif", _rgb_tiff, r"colour \(RGB\) image"),
    BadFile("tiff_without_spacing", "plain.tif", _plain_tiff, None, warns=r"assuming 1 mm", dtype="uint16"),
    BadFile(
        "truncated_tiff", "truncated.tif", _truncated_tiff, r"truncated\.tif: it is truncated or damaged"
    ),
    BadFile("non_ascii_path", "Zürich données/tête 5 mm ñ.nii.gz", _copy_of_ct, None, dtype="int16"),
)
BY_KEY = {case.key: case for case in CASES}
UNREADABLE = tuple(case for case in CASES if case.read is not None)
READABLE = tuple(case for case in CASES if case.read is None)


def build(folder: Path) -> dict[str, Path]:
    """Write every case under `folder`; returns key -> path."""
    paths = {}
    for case in CASES:
        path = folder / case.name
        path.parent.mkdir(parents=True, exist_ok=True)
        case.build(path)
        paths[case.key] = path
    return paths


def fingerprint(folder: Path) -> dict[str, str]:
    """Relative path -> SHA-256 of every file under `folder` (hidden temporaries included)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


# --- checkpoints ---------------------------------------------------------------------------------------


class Exploit:
    """Unpickling this runs `Path(marker).touch()`: the proof that a loader executed code from a file."""

    def __init__(self, marker: Path) -> None:
        self.marker = Path(marker)

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@dataclass(frozen=True)
class BadCheckpoint:
    key: str
    name: str
    message: str
    """Regex the CycleINRError must match."""
    executable: bool = False
    """A pickle whose loading would create the marker file."""


CHECKPOINTS: tuple[BadCheckpoint, ...] = (
    BadCheckpoint(
        "pickle_pt", "evil.pt", r"evil\.pt is not a napari-cycleinr checkpoint: only \.safetensors", True
    ),
    BadCheckpoint("torch_save_pth", "model.pth", r"model\.pth is not a napari-cycleinr checkpoint", True),
    BadCheckpoint("pickle_ckpt", "last.ckpt", r"last\.ckpt is not a napari-cycleinr checkpoint", True),
    BadCheckpoint(
        "pickle_renamed", "evil.safetensors", r"evil\.safetensors is not a readable safetensors", True
    ),
    BadCheckpoint("torch_save_renamed", "torch.safetensors", r"torch\.safetensors is not a readable", True),
    BadCheckpoint(
        "foreign", "foreign.safetensors", r"foreign\.safetensors is a safetensors file but not a napari"
    ),
    BadCheckpoint(
        "no_header", "bare.safetensors", r"bare\.safetensors is a safetensors file but not a napari"
    ),
    BadCheckpoint(
        "version_2",
        "v2.safetensors",
        r"v2\.safetensors has checkpoint format version 2; this .* reads version 1",
    ),
    BadCheckpoint("version_text", "vx.safetensors", r"vx\.safetensors has checkpoint format version beta"),
    BadCheckpoint(
        "other_architecture", "wide.safetensors", r"wide\.safetensors does not fit the CycleINR archit"
    ),
    BadCheckpoint(
        "missing_tensor", "missing.safetensors", r"missing\.safetensors does not fit .* missing, e\.g\."
    ),
    BadCheckpoint(
        "invalid_config", "heads.safetensors", r"heads\.safetensors has an invalid model config .*heads"
    ),
    BadCheckpoint(
        "implausible", "huge.safetensors", r"huge\.safetensors .*blocks = 100000000 is implausible"
    ),
    BadCheckpoint("damaged_config", "json.safetensors", r"json\.safetensors has a damaged model config"),
    BadCheckpoint("nan_weights", "nan.safetensors", r"nan\.safetensors is damaged: its weights hold NaN"),
    BadCheckpoint(
        "truncated", "cut.safetensors", r"cut\.safetensors is not a readable safetensors checkpoint"
    ),
    BadCheckpoint("truncated_header", "head.safetensors", r"head\.safetensors is not a readable safetensors"),
    BadCheckpoint("empty", "empty.safetensors", r"empty\.safetensors is not a readable safetensors"),
    BadCheckpoint("folder", "folder.safetensors", r"folder\.safetensors is a folder, not a checkpoint file"),
    BadCheckpoint("absent", "absent.safetensors", r"checkpoint not found: .*absent\.safetensors"),
)
CHECKPOINTS_BY_KEY = {case.key: case for case in CHECKPOINTS}


def build_checkpoints(folder: Path, model, marker: Path) -> dict[str, Path]:
    """Write every bad checkpoint under `folder` from a real (tiny) model; `marker` is the file a pickle
    payload would create if anything ever unpickled it. Returns key -> path."""
    import torch
    from safetensors.torch import save_file

    from napari_cycleinr.model.checkpoint import FORMAT, save_model
    from napari_cycleinr.model.config import ModelConfig
    from napari_cycleinr.model.cycleinr import CycleINR

    paths = {case.key: folder / case.name for case in CHECKPOINTS}
    payload = pickle.dumps({"state_dict": Exploit(marker)})
    for key in ("pickle_pt", "pickle_ckpt", "pickle_renamed"):
        paths[key].write_bytes(payload)
    for key in ("torch_save_pth", "torch_save_renamed"):
        torch.save({"model": Exploit(marker), "weights": torch.zeros(3)}, paths[key])

    state = {name: t.detach().contiguous() for name, t in model.state_dict().items()}
    config = model.config.to_dict()

    def header(**changes: object) -> dict[str, str]:
        values = {"format": FORMAT, "format_version": "1", "model_config": json.dumps(config), "info": "{}"}
        return {**values, **{k: str(v) for k, v in changes.items()}}

    save_file(state, str(paths["foreign"]), metadata={"format": "someone-elses-model"})
    save_file(state, str(paths["no_header"]))
    save_file(state, str(paths["version_2"]), metadata=header(format_version=2))
    save_file(state, str(paths["version_text"]), metadata=header(format_version="beta"))
    wide = CycleINR(ModelConfig(**{**config, "channels": 2 * config["channels"]}))
    save_file(
        {n: t.contiguous() for n, t in wide.state_dict().items()}, str(paths["other_architecture"]), header()
    )
    save_file(dict(list(state.items())[1:]), str(paths["missing_tensor"]), metadata=header())
    bad_heads = json.dumps({**config, "heads": config["channels"] + 1})
    save_file(state, str(paths["invalid_config"]), metadata=header(model_config=bad_heads))
    save_file(
        state,
        str(paths["implausible"]),
        metadata=header(model_config=json.dumps({**config, "blocks": 10**8})),
    )
    save_file(state, str(paths["damaged_config"]), metadata=header(model_config="{channels: 8"))
    poisoned = {n: t.clone() for n, t in state.items()}
    next(t for t in poisoned.values() if t.is_floating_point()).view(-1)[0] = float("nan")
    save_file(poisoned, str(paths["nan_weights"]), metadata=header())
    good = save_model(model, folder / "good.safetensors")
    data = good.read_bytes()
    paths["truncated"].write_bytes(data[: len(data) - 100])
    paths["truncated_header"].write_bytes(data[:40])
    paths["empty"].write_bytes(b"")
    paths["folder"].mkdir()
    return paths
