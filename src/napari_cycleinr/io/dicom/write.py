"""A Volume as a NEW derived DICOM series of the study it came from, written atomically.

Every slice gets new SOP Instance UIDs under one new SeriesInstanceUID; the patient, the study and the frame
of reference are the source's, so archives and viewers file the result next to the original and overlay it.
A volume with no DICOM source (read from NIfTI or TIFF) gets a new study with placeholder patient fields
that say so. Values go in as 16-bit integers: integer values exactly (slope 1), anything else through the
finest RescaleSlope that spans the range. The series is written into a hidden folder next to the destination
and renamed into place only when every file is on disk, so a failed write leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import secrets
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid
from pydicom.valuerep import format_number_as_ds

from napari_cycleinr.errors import CycleINRError
from napari_cycleinr.io.dicom.encoding import encode_values
from napari_cycleinr.io.dicom.geometry import LPS_TO_RAS
from napari_cycleinr.volume import Volume

SOP_CLASS = {"CT": "1.2.840.10008.5.1.4.1.1.2", "MR": "1.2.840.10008.5.1.4.1.1.4"}
PLACEHOLDER_PATIENT = "CYCLEINR^NO DICOM SOURCE"
SERIES_NUMBER_OFFSET = 1000
"""A derived series is numbered source + 1000, the usual way to keep it next to its source in a list."""
COPIED = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "PatientAge", "StudyInstanceUID", "StudyID",
    "StudyDate", "StudyTime", "StudyDescription", "AccessionNumber", "ReferringPhysicianName",
    "FrameOfReferenceUID", "PositionReferenceIndicator", "BodyPartExamined", "PatientPosition",
)  # fmt: skip
SHEAR_TOLERANCE = 1e-5
FILE_NAME = "IM{:05d}.dcm"


def write_dicom_series(
    volume: Volume,
    out_dir: str | os.PathLike[str],
    *,
    description: str | None = None,
    source: Volume | Mapping[str, Any] | None = None,
    series_number: int | None = None,
    overwrite: bool = False,
    refuse: Iterable[str | os.PathLike[str]] = (),
) -> Path:
    """Write `volume` as a new series in the folder `out_dir` (created; its parent must exist).

    `source` is the volume (or its metadata) whose study the series joins; by default the volume's own
    metadata (a super-resolved volume keeps its input's). `out_dir` may exist only if empty, or, with
    `overwrite`, if it holds nothing but .dcm files (an earlier result). Never writes into a source folder
    nor into any path in `refuse`.
    """
    destination = check_series_destination(volume, out_dir, refuse=refuse, overwrite=overwrite)
    identity = _identity(volume, source)
    slices = _slice_datasets(volume, identity, description, series_number)
    temporary = destination.with_name(f".{destination.name}.{secrets.token_hex(4)}.part")
    try:
        temporary.mkdir()
        for index, dataset in enumerate(slices):
            dataset.save_as(temporary / FILE_NAME.format(index + 1), enforce_file_format=True)
        _replace_folder(temporary, destination)
    except BaseException as error:
        shutil.rmtree(temporary, ignore_errors=True)
        if isinstance(error, OSError):
            reason = error.strerror or str(error)
            raise CycleINRError(f"cannot write the DICOM series {destination}: {reason}") from error
        raise
    return destination


def check_series_destination(
    volume: Volume,
    out_dir: str | os.PathLike[str],
    *,
    refuse: Iterable[str | os.PathLike[str]] = (),
    overwrite: bool = False,
) -> Path:
    """The resolved series folder, after every refusal `write_dicom_series` would make: call it before a
    long run so a bad output folder is reported first, not after the computation."""
    destination = Path(os.fspath(out_dir)).expanduser().resolve()
    if not destination.parent.is_dir():
        raise CycleINRError(f"cannot write {destination}: folder {destination.parent} does not exist")
    protected = [volume.metadata.get("source_path"), *refuse]
    for path in filter(None, protected):
        path = Path(os.fspath(path)).resolve()
        inside_a_source_series = path.is_dir() and destination.is_relative_to(path)
        if inside_a_source_series or path.is_relative_to(destination):
            raise CycleINRError(
                f"refusing to write the series into {destination}: it holds an input of this run; choose "
                "a new folder"
            )
    if destination.exists():
        if not destination.is_dir():
            raise CycleINRError(f"cannot write a DICOM series to {destination}: it is a file, not a folder")
        contents = list(destination.iterdir())
        ours = all(p.is_file() and p.suffix.lower() == ".dcm" for p in contents)
        if contents and not (overwrite and ours):
            why = (
                "it is not empty"
                if not ours
                else "it already holds a series (allow overwriting to replace it)"
            )
            raise CycleINRError(f"cannot write a DICOM series into {destination}: {why}; choose a new folder")
    return destination


def _replace_folder(temporary: Path, destination: Path) -> None:
    """Move the finished series into place; an earlier series there is swapped out, then removed."""
    old = None
    if destination.exists() and any(destination.iterdir()):
        old = destination.with_name(f".{destination.name}.{secrets.token_hex(4)}.old")
        os.rename(destination, old)
    try:
        os.replace(temporary, destination)
    except BaseException:
        if old is not None:
            os.rename(old, destination)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    with contextlib.suppress(OSError):
        descriptor = os.open(destination.parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def _identity(volume: Volume, source: Volume | Mapping[str, Any] | None) -> dict[str, Any]:
    """Patient, study and frame of reference to join: the source's DICOM fields, else marked placeholders."""
    metadata = source.metadata if isinstance(source, Volume) else (source or volume.metadata)
    fields = dict(metadata.get("dicom") or {})
    if fields.get("StudyInstanceUID") and fields.get("FrameOfReferenceUID"):
        return {key: fields[key] for key in (*COPIED, "SeriesNumber") if fields.get(key) not in (None, "")}
    origin = Path(str(metadata.get("source_path") or "an in-memory volume")).name
    today = datetime.date.today().strftime("%Y%m%d")
    return {
        "PatientName": PLACEHOLDER_PATIENT,
        "PatientID": "CYCLEINR-" + secrets.token_hex(4).upper(),
        "StudyInstanceUID": generate_uid(),
        "StudyID": "CYCLEINR",
        "StudyDate": today,
        "StudyTime": "000000",
        "StudyDescription": f"CycleINR from {origin} (no DICOM source: placeholder patient)"[:64],
        "FrameOfReferenceUID": generate_uid(),
    }


def _slice_datasets(
    volume: Volume, identity: dict[str, Any], description: str | None, series_number: int | None
) -> list[Dataset]:
    lps = LPS_TO_RAS @ volume.affine  # its own inverse: RAS -> LPS
    spacing = volume.spacing
    row_direction = lps[:3, 2] / spacing[2]
    column_direction = lps[:3, 1] / spacing[1]
    normal = np.cross(row_direction, column_direction)
    stack = lps[:3, 0] / spacing[0]
    if (
        abs(row_direction @ column_direction) > SHEAR_TOLERANCE
        or abs(abs(stack @ normal) - 1) > SHEAR_TOLERANCE
    ):
        raise CycleINRError(
            "the volume's axes are not perpendicular (its affine has a shear): DICOM slices cannot hold that "
            "geometry; save it as NIfTI"
        )
    modality = str(volume.metadata.get("modality") or identity.get("Modality") or "CT").upper()
    modality = modality if modality in SOP_CLASS else "CT"
    stored, slope, intercept = encode_values(volume.data)
    shared = _shared_dataset(volume, identity, modality, description, series_number)
    _set_pixel_format(shared, stored, slope, intercept, modality)
    shared.ImageOrientationPatient = [_ds(v) for v in (*row_direction, *column_direction)]
    shared.PixelSpacing = [_ds(spacing[1]), _ds(spacing[2])]
    shared.SpacingBetweenSlices = _ds(spacing[0])
    shared.SliceThickness = _ds(_output_thickness(volume))
    datasets = []
    for index in range(volume.shape[0]):
        dataset = Dataset()
        dataset.update(shared)
        uid = generate_uid()
        dataset.file_meta = _file_meta(shared.SOPClassUID, uid)
        dataset.SOPInstanceUID = uid
        dataset.InstanceNumber = index + 1
        position = lps[:3, :] @ np.array([index, 0.0, 0.0, 1.0])
        dataset.ImagePositionPatient = [_ds(v) for v in position]
        dataset.SliceLocation = _ds(float(position @ normal))
        dataset.PixelData = np.ascontiguousarray(stored[index]).tobytes()
        datasets.append(dataset)
    return datasets


def _shared_dataset(
    volume: Volume,
    identity: dict[str, Any],
    modality: str,
    description: str | None,
    series_number: int | None,
) -> Dataset:
    now = datetime.datetime.now()
    dataset = Dataset()
    dataset.SpecificCharacterSet = "ISO_IR 192"
    dataset.ImageType = ["DERIVED", "SECONDARY", "AXIAL"] if modality == "CT" else ["DERIVED", "SECONDARY"]
    dataset.SOPClassUID = SOP_CLASS[modality]
    dataset.Modality = modality
    for key in COPIED:
        setattr(dataset, key, identity.get(key, ""))
    dataset.SeriesInstanceUID = generate_uid()
    source_number = identity.get("SeriesNumber")
    if series_number is None:
        series_number = int(source_number) + SERIES_NUMBER_OFFSET if source_number is not None else 1
    dataset.SeriesNumber = int(series_number)
    dataset.SeriesDescription = (description or default_description(volume))[:64]
    dataset.SeriesDate = dataset.ContentDate = dataset.InstanceCreationDate = now.strftime("%Y%m%d")
    dataset.SeriesTime = dataset.ContentTime = dataset.InstanceCreationTime = now.strftime("%H%M%S")
    dataset.Manufacturer = "napari-cycleinr"
    dataset.DerivationDescription = _derivation(volume)[:1024]
    dataset.AcquisitionNumber = None
    dataset.PatientOrientation = None
    if modality == "CT":
        dataset.KVP = None
    else:  # MR Image module: the acquisition is not known for a derived image
        dataset.ScanningSequence, dataset.SequenceVariant = "RM", "NONE"
        dataset.ScanOptions = dataset.MRAcquisitionType = dataset.EchoTime = None
        dataset.RepetitionTime = dataset.EchoTrainLength = None
    return dataset


def _set_pixel_format(
    dataset: Dataset, stored: np.ndarray, slope: float, intercept: float, modality: str
) -> None:
    dataset.SamplesPerPixel = 1
    dataset.PhotometricInterpretation = "MONOCHROME2"
    dataset.Rows, dataset.Columns = int(stored.shape[1]), int(stored.shape[2])
    dataset.BitsAllocated = dataset.BitsStored = 16
    dataset.HighBit = 15
    dataset.PixelRepresentation = 1 if stored.dtype == np.int16 else 0
    if modality == "CT" or slope != 1 or intercept != 0:
        dataset.RescaleIntercept = _ds(intercept)
        dataset.RescaleSlope = _ds(slope)
        dataset.RescaleType = "HU" if modality == "CT" else "US"
    if modality == "CT":
        dataset.WindowCenter, dataset.WindowWidth = "40", "400"


def _file_meta(sop_class: str, sop_instance: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_instance
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "CYCLEINR"
    return meta


def _output_thickness(volume: Volume) -> float:
    """The source's SliceThickness while the slices are still the source's, else the new spacing."""
    thickness = volume.metadata.get("slice_thickness_mm")
    spacing = volume.metadata.get("slice_spacing_mm")
    if thickness and spacing and abs(float(spacing) - volume.spacing[0]) <= 1e-3 * volume.spacing[0]:
        return float(thickness)
    return volume.spacing[0]


def default_description(volume: Volume) -> str:
    """'CycleINR 5->1.25 mm' for a super-resolved volume ('Tricubic 5->1.25 mm' for an interpolation: the
    archive must not call a baseline the model's), else 'CycleINR 1.25 mm'."""
    record = volume.metadata.get("super_resolution") or {}
    method = str(record.get("method") or "cycleinr")
    name = "CycleINR" if method == "cycleinr" else method.capitalize()
    if record.get("spacing_in_mm") and record.get("spacing_out_mm"):
        return f"{name} {float(record['spacing_in_mm']):.3g}->{float(record['spacing_out_mm']):.3g} mm"
    return f"{name} {volume.spacing[0]:.3g} mm"


def _derivation(volume: Volume) -> str:
    record = volume.metadata.get("super_resolution") or {}
    if not record:
        return "Written by napari-cycleinr"
    said = ", ".join(f"{key} {value}" for key, value in record.items() if key != "device")
    return f"Through-plane super-resolution by napari-cycleinr: {said}"


def _ds(value: float) -> str:
    """A decimal string DICOM can hold (16 characters) that reads back as the same number to 1e-9 mm."""
    return format_number_as_ds(float(value))
