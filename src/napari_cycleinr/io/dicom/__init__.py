"""DICOM series in and out: read a folder (or one file) of a series as a Volume, write a Volume as a new
derived series of the same study.

    list_series(path)                         -> [SeriesInfo(uid, number, description, modality, slices, ...)]
    read_dicom(path, axis=None, series=None)  -> Volume (metadata slice_thickness_mm, slice_spacing_mm, dicom)
    read_all_series(path, axis=None)           -> [(SeriesInfo, Volume or the CycleINRError that refused it)]
    write_dicom_series(volume, out_dir, ...)   -> Path of the new series folder (written atomically)

Only headers decide geometry (ImagePositionPatient, ImageOrientationPatient, PixelSpacing); what cannot be
stacked as a regular volume is refused with one message (see docs/dicom.md for every case).
"""

from napari_cycleinr.io.dicom.frames import is_dicom_file, looks_like_dicom
from napari_cycleinr.io.dicom.read import list_series, read_all_series, read_dicom
from napari_cycleinr.io.dicom.series import SeriesInfo
from napari_cycleinr.io.dicom.write import check_series_destination, default_description, write_dicom_series

__all__ = [
    "SeriesInfo",
    "check_series_destination",
    "default_description",
    "is_dicom_file",
    "list_series",
    "looks_like_dicom",
    "read_all_series",
    "read_dicom",
    "write_dicom_series",
]
