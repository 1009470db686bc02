"""Every bad file through `read_volume` and the napari reader: one clear CycleINRError, or a sound layer.

Unreadable files must give exactly one line naming the file and the reason; napari's `get_reader` must accept
the path (the suffix is ours) and its reader must raise that same error, which napari shows as a notification
(see test_widget_hostile.py). Readable oddities (NaN voxels, one slice, uint8/float64/bool, no TIFF spacing,
non-ASCII paths) must give a layer napari can display. The header-size checks are proven to refuse before
allocating what a lying header claims.
"""

from __future__ import annotations

import re
import tracemalloc
import warnings

import numpy as np
import pytest

from napari_cycleinr._layers import KEY
from napari_cycleinr._reader import napari_get_reader
from napari_cycleinr.errors import CycleINRError
from napari_cycleinr.io import read_volume
from tests.robust.bad_files import BY_KEY, READABLE, UNREADABLE

pytestmark = pytest.mark.usefixtures("untouched")


def one_line(error: BaseException) -> str:
    text = str(error)
    assert text and "\n" not in text and "Traceback" not in text, repr(text)
    return text


@pytest.mark.parametrize("case", UNREADABLE, ids=lambda c: c.key)
def test_unreadable_file_gives_one_line_naming_it(bad_paths, case):
    path = bad_paths[case.key]
    with pytest.raises(CycleINRError, match=case.read) as caught:
        read_volume(path)
    message = one_line(caught.value)
    assert message.startswith(f"cannot read {path}: ")


@pytest.mark.parametrize("case", UNREADABLE, ids=lambda c: c.key)
def test_napari_reader_raises_the_same_message(bad_paths, case):
    path = bad_paths[case.key]
    reader = napari_get_reader(str(path))
    assert callable(reader), "the suffix is ours: the reader must say why the file fails, not stay silent"
    with pytest.raises(CycleINRError, match=case.read) as caught:
        reader(str(path))
    one_line(caught.value)
    # One bad file among good ones: nothing is half-opened, the bad file is named.
    good = bad_paths["two_slices"]
    with pytest.raises(CycleINRError, match=case.read):
        napari_get_reader([str(good), str(path)])([str(good), str(path)])


@pytest.mark.parametrize("key", ["huge_header_nii", "huge_header_nii_gz"])
def test_lying_header_is_refused_before_allocating(bad_paths, key):
    """1000^3 int16 voxels = 2 GB claimed by a 4-byte file: refused with less than 20 MB allocated."""
    tracemalloc.start()
    try:
        with pytest.raises(CycleINRError, match="1,000,000,000 voxels"):
            read_volume(bad_paths[key])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20e6, f"{peak / 1e6:.0f} MB allocated for a file that holds no voxels"


@pytest.mark.parametrize("case", READABLE, ids=lambda c: c.key)
def test_readable_oddities_give_a_displayable_layer(bad_paths, case):
    path = bad_paths[case.key]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        volume = read_volume(path)
        ((data, kwargs, kind),) = napari_get_reader(str(path))(str(path))
    messages = [str(w.message) for w in caught]
    if case.warns:
        assert any(path.name in m and re.search(case.warns, m) for m in messages), messages
    else:
        assert not messages, messages
    if case.dtype:
        assert volume.data.dtype == np.dtype(case.dtype)
    assert kind == "image" and data.shape == volume.shape and data.dtype == volume.data.dtype
    assert all(np.isfinite(s) and s > 0 for s in kwargs["scale"])
    low, high = kwargs["contrast_limits"]
    assert np.isfinite(low) and np.isfinite(high) and high > low
    assert np.all(np.isfinite(kwargs["metadata"][KEY]["data_range"]))


def test_non_finite_voxels_are_kept_as_they_are(bad_paths):
    """The reader shows what is in the file (NaN and Inf included); only a run refuses them."""
    for key, check in (("nan_voxels", np.isnan), ("inf_voxels", np.isinf)):
        volume = read_volume(bad_paths[key])
        assert int(check(volume.data).sum()) == 2
        assert volume.metadata["modality"] in ("CT", "MR")


def test_tiff_without_spacing_says_what_it_assumed(bad_paths):
    path = bad_paths["tiff_without_spacing"]
    with pytest.warns(UserWarning, match=r"plain\.tif: voxel spacing not fully known .*assuming 1 mm"):
        volume = read_volume(path)
    assert volume.spacing == (1.0, 1.0, 1.0)
    assert volume.metadata["spacing_assumed"] is True


def test_one_and_two_slice_volumes_keep_their_slice_axis(bad_paths):
    assert read_volume(bad_paths["one_slice"]).shape == (1, 10, 12)
    two = read_volume(bad_paths["two_slices"])
    assert two.shape == (2, 10, 12) and two.spacing[0] == pytest.approx(5.0)


def test_non_ascii_path_reads_and_names_the_layer(bad_paths):
    path = bad_paths["non_ascii_path"]
    ((_, kwargs, _),) = napari_get_reader(str(path))(str(path))
    assert kwargs["name"] == "tête 5 mm ñ"
    assert kwargs["metadata"][KEY]["volume_metadata"]["source_path"] == str(path.resolve())


def test_get_reader_never_raises_on_odd_paths(bad_paths, tmp_path):
    odd = [
        str(tmp_path / ("x" * 300 + ".nii")),  # longer than a file name may be
        "\0.nii",
        str(tmp_path / "missing" / "scan.nii.gz"),
        b"bytes.nii",
        [str(bad_paths["two_slices"]), None],
        {"a": 1},
        float("nan"),
    ]
    for path in odd:
        assert napari_get_reader(path) is None, path
    assert BY_KEY["text_named_nii"].read  # a bad file with our suffix is accepted, then refused when read
