"""The line under the target that says which slice profile a run will take for the chosen input layer, and
why: the user's choice, else the scan's DICOM record, else what the image suggests (slice_profile.py).

The record is read at once (no pass over the voxels). The image estimate takes a second or two on a full scan,
so it runs in a napari thread worker while the line says FINDING; one estimate at a time, and only the answer
for the layer chosen last is shown (the user may switch layers faster than the estimate). It asks the
pipeline's own `settle_profile`, so the line says what the run will do. No torch is imported.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable

from magicgui.widgets import Label

from napari_cycleinr import _exit
from napari_cycleinr._layers import layer_geometry, layer_meta, layer_to_volume
from napari_cycleinr.errors import CycleINRError
from napari_cycleinr.options import PROFILES
from napari_cycleinr.request import Request
from napari_cycleinr.slice_profile import SliceProfile, from_record

FOUND = "found from the scan"
PROFILE_CHOICES = ((FOUND, None), *((name, name) for name in PROFILES))
"""The slice-profile control: None (the default) lets the pipeline find it; a name is the user's override."""
FINDING = "finding the slice profile…"
NOT_3D = "slice profile: none (not a 3D volume)"
SMALL_VOXELS = 1 << 17
"""Layers this small are estimated on the spot (a few milliseconds); larger ones in a thread worker."""


def chosen_text(profile: str) -> str:
    return SliceProfile(profile, 1.0, "user").describe()


def found_text(data: Any, meta: dict[str, Any], request: Request | None = None) -> str:
    """What the pipeline will find for this layer (the DICOM record, else the image's estimate) when it runs
    `request` (its method, weights and steps: an interpolation with neither step needs no profile)."""
    from napari_cycleinr.pipeline import model_settles, settle_profile

    request = request or Request()
    try:
        volume = layer_to_volume(data, meta)
        _, found = settle_profile(request, volume)
    except CycleINRError as error:
        return f"slice profile: not known ({error})"
    if found is None:
        return ""
    if model_settles(request, volume, found):  # the run's settle_profile(ask_model=True) will
        found = replace(found, fallback=f"the run asks the model (else {found.fallback})")
    return found.describe()


class ProfileLabel:
    """Keeps `label` saying what the next run takes as the slice profile."""

    def __init__(self, label: Label) -> None:
        self._label = label
        self._asked = 0
        """Counts the questions: an answer to an older one is dropped."""
        self._busy = False
        self._next: tuple[int, Any, dict[str, Any], Request] | None = None
        self._closed = False
        self._request: Callable[[], Request] = Request

    @property
    def finding(self) -> bool:
        """An estimate is running, or waits for the one that runs."""
        return self._busy or self._next is not None

    def follow(
        self, layer_control: Any, profile_control: Any, request: Callable[[], Request] = Request, others: tuple = ()
    ) -> None:
        """Keep the line current as the input layer, the slice-profile control or any of `others` (the method,
        the weights, the steps that use the profile) changes; `request` gives the run those controls ask for."""
        self._request = request

        def update(_value: Any = None) -> None:
            self.show(layer_control.value, profile_control.value)

        for control in (layer_control, profile_control, *others):
            control.changed.connect(update)
        update()

    def close(self) -> None:
        self._closed = True
        _exit.wait_for_workers()

    def show(self, layer: Any, chosen: str | None) -> None:
        """The line for this input layer and the control's choice (None: found from the scan)."""
        if self._closed:
            return
        self._asked += 1
        self._next = None
        request = self._request()
        if not (request.uses_model or request.consistency or request.adapt is not None):
            self._label.value = f"slice profile: not needed ({request.method} interpolation)"
        elif chosen is not None:
            self._label.value = chosen_text(chosen)
        elif layer is None:
            self._label.value = ""
        elif layer.ndim != 3:
            self._label.value = NOT_3D
        else:
            self._find(layer)

    def _find(self, layer: Any) -> None:
        meta = layer_meta(layer)
        try:
            recorded = from_record(layer_geometry(meta, layer.ndim)[2])
        except CycleINRError:
            recorded = None
        if recorded is not None:
            self._label.value = recorded.describe()
        elif layer.data.size <= SMALL_VOXELS:
            self._label.value = found_text(layer.data, meta, self._request())
        else:
            self._label.value = FINDING
            self._next = (self._asked, layer.data, meta, self._request())
            self._start_next()

    def _start_next(self) -> None:
        if self._busy or self._next is None or self._closed:
            return
        from napari.qt.threading import create_worker

        asked, data, meta, request = self._next
        self._next, self._busy = None, True
        worker = create_worker(found_text, data, meta, request, _start_thread=False)
        worker.returned.connect(lambda text: self._answer(asked, text))
        worker.errored.connect(lambda error: self._answer(asked, f"slice profile: not known ({error})"))
        worker.finished.connect(self._on_finished)
        _exit.started(id(self))
        worker.start()

    def _answer(self, asked: int, text: str) -> None:
        if not self._closed and asked == self._asked:
            self._label.value = text

    def _on_finished(self) -> None:
        _exit.finished(id(self))
        self._busy = False
        self._start_next()
