"""The dock widget's behaviour: a thin shell over `_runner` (the job), `_layers` (the geometry), `_panel`
(what the dock shows), `_progress` (the bar) and `_view` (how results are looked at).

Nothing here imports torch: the model is loaded inside the thread worker when Run is pressed. The worker
yields progress updates (GUI thread: progress bar and status), and returns an Outcome whose layers are added
in the GUI thread. Run turns into Cancel while a job runs (clicks in the first half second are ignored, so a
double click does not cancel), the settings are locked, and the preview line describes the running job. A
cancelled job adds nothing; closing the dock cancels. Every failure is a napari notification, never a
traceback dialog; outcomes are information, problems warnings.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Image
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import QTimer

from napari_cycleinr import _exit
from napari_cycleinr._gpu import NO_GPU_FOR_CUDA, no_cuda_reason
from napari_cycleinr._layers import layer_geometry, layer_meta, layer_to_volume, protected_paths
from napari_cycleinr._panel import (  # noqa: F401 - names the tests and scripts use
    CANCEL_TEXT,
    MODEL_FILE,
    MODEL_MIXED,
    RUN_TEXT,
    SHOW_2D_TEXT,
    SHOW_3D_TEXT,
    SMOOTHING_MAX,
    Panel,
    UndockWatcher,
)
from napari_cycleinr._profile_label import ProfileLabel
from napari_cycleinr._progress import ProgressView
from napari_cycleinr._runner import (
    CPU_FALLBACK_NOTICE,
    GPU_MEMORY_FALLBACK_NOTICE,
    Job,
    Outcome,
    Output,
    Update,
    job_total,
    plan_targets,
    run_in_thread,
    thickness_over_spacing,
)
from napari_cycleinr._target_text import with_decimal_points
from napari_cycleinr._view import (  # noqa: F401 - VIEW_3D_ANGLES: the screenshots script
    VIEW_3D_ANGLES, add_output, layer_for_3d, orient_head_up, place_outputs, restore_visibility,
    show_alone_in_3d,
)
from napari_cycleinr.errors import CycleINRError

if TYPE_CHECKING:
    import napari

CLICK_GUARD_S = 0.5
"""Clicks on Cancel this soon after Run are the second half of a double click, not a cancel."""
ADD_PAUSE_MS = 40
"""Between two output layers: time for napari to paint and answer the user (a zero timer would not)."""
PROBLEM_MARKERS = (CPU_FALLBACK_NOTICE, GPU_MEMORY_FALLBACK_NOTICE, "no error image", " apart: ")
"""Runner notices that report a problem (warnings); the others report an outcome (information)."""


def is_problem(notice: str) -> bool:
    return any(marker in notice for marker in PROBLEM_MARKERS)


class SuperResolutionWidget(Panel):
    """Through-plane super-resolution of an image layer, with optional error and consistency layers."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self._viewer = viewer
        self._worker: Any = None
        self._cancel = threading.Event()
        self._display: dict[str, Any] = {}
        self._last_output: Image | None = None
        self._hidden_for_3d: list[tuple[Any, bool]] = []
        self._closed = False
        self._started_at = 0.0
        self._job_text = ""
        self._cpu_noted = False
        self._protect: tuple[str, ...] = ()
        self._pending: list[Output] = []  # outputs of the finished job still to add, one per event-loop turn
        self._added: list[tuple[str, Image]] = []
        self._progress_view = ProgressView(self._progress, self._status, parent=self.native)
        self._profile_label = ProfileLabel(self._profile_found)
        self._input.choices = self._image_choices
        self._reference.choices = self._reference_choices
        self._reference.value = None
        # Closing the dock or napari during a run: stop the job, and let the worker's last signals, which
        # may arrive after the Qt widgets are gone, find nothing to update.
        self.native.destroyed.connect(self._on_closed)
        self._undock_watcher = UndockWatcher(self.native, self._on_closed)

        for widget in (self._input, self._values, self._target_kind):
            widget.changed.connect(self._update_grid)
        self._run.changed.connect(self._on_run_clicked)
        self._show_3d.changed.connect(self._toggle_3d)
        layers = viewer.layers
        self._connections = [
            *((event, self._on_layers_changed) for event in (
                layers.events.inserted, layers.events.removed, layers.events.moved, layers.events.reordered
            )),
            (viewer.dims.events.ndisplay, self._on_ndisplay),
            (viewer.dims.events.order, self._orient),
            (layers.selection.events.active, self._orient),
        ]
        for emitter, callback in self._connections:
            emitter.connect(callback)
        self._update_grid()
        self._profile_label.follow(
            self._input, self._profile, self._profile_request,
            (self._method, self._model, self._checkpoint, self._exact, self._adapt),
        )
        self._orient()

    # --- choices and small updates -------------------------------------------------------------------

    def _image_choices(self, _widget: Any = None) -> list[tuple[str, Image]]:
        return [(layer.name, layer) for layer in self._viewer.layers if isinstance(layer, Image)]

    def _reference_choices(self, _widget: Any = None) -> list[tuple[str, Image | None]]:
        return [("none", None), *self._image_choices()]

    def _on_layers_changed(self, event: Any = None) -> None:
        layer = getattr(event, "value", None)
        if getattr(event, "type", "") == "inserted" and isinstance(layer, Image):
            layer.events.name.connect(self._refresh_choices)
        self._refresh_choices()
        self._orient()

    def _refresh_choices(self, _event: Any = None) -> None:
        if self._closed:
            return
        self._input.reset_choices()
        self._reference.reset_choices()
        self._update_grid()

    @property
    def _typed_values(self) -> str:
        """The typed target values, decimal commas read as points (see `_target_text`)."""
        return with_decimal_points(self._values.value)

    def _update_grid(self, _value: Any = None) -> None:
        """Show what the typed target gives for the chosen input, before anything runs; while a job runs,
        what that job does."""
        if self._closed:
            return
        if self.running:
            self._grid.value = self._job_text
            return
        layer = self._input.value
        if layer is None:
            self._grid.value = "open a volume (File > Open, or File > Open Sample > napari-cycleinr)"
            return
        try:  # geometry only: no pass over the voxels on every keystroke
            affine, _, _ = layer_geometry(layer_meta(layer), layer.ndim)
            n_in, s_in = int(layer.data.shape[0]), float(np.linalg.norm(affine[:3, 0]))
            targets = plan_targets(n_in, s_in, self._target_kind.value, self._typed_values)
        except CycleINRError as error:
            self._grid.value = str(error)
            return
        self._grid.value = "; ".join(
            f"{n_in} x {s_in:.3g} mm -> {t.n_out} x {t.spacing_out:.3g} mm ({t.suffix})" for t in targets
        )

    # --- running ---------------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """A job runs, or its layers are still being added."""
        return self._worker is not None or bool(self._pending)

    def _on_run_clicked(self, _value: Any = None) -> None:
        if not self.running:
            self.start()
        elif time.monotonic() - self._started_at >= CLICK_GUARD_S:
            self.cancel()

    def cancel(self) -> None:
        """Ask the running job to stop; it stops at its next block and adds no layer."""
        if self.running:
            self._cancel.set()
            self._progress_view.stop()
            if not self._closed:
                self._status.value = "cancelling..."
                self._run.enabled = False

    def _make_job(self) -> Job:
        layer = self._input.value
        if layer is None:
            raise CycleINRError("choose an input image layer (open a volume first)")
        volume = layer_to_volume(layer.data, layer_meta(layer))
        targets = plan_targets(
            volume.shape[0], volume.spacing[0], self._target_kind.value, self._typed_values
        )
        reference_layer = self._reference.value
        reference = None
        if reference_layer is not None:
            if reference_layer is layer:
                raise CycleINRError("the reference must be another layer than the input")
            reference = layer_to_volume(reference_layer.data, layer_meta(reference_layer))
        checkpoint = self._chosen_weights()
        self._display = {"contrast_limits": tuple(layer.contrast_limits), "colormap": layer.colormap.name}
        return Job(
            volume=volume,
            input_name=layer.name,
            targets=targets,
            method=self._method.value,
            checkpoint=checkpoint,
            device=self._device.value,
            reference=reference,
            reference_name=reference_layer.name if reference_layer is not None else "reference",
            consistency=bool(self._consistency.value),
            adapt_minutes=float(self._adapt_minutes.value) if self.adapting else None,
            ensemble=bool(self._ensemble.value) and self._method.value == "cycleinr",
            exact_consistency=bool(self._exact.value),
            consistency_smoothing=float(self._smoothing.value),
            texture=float(self._texture.value),
            profile=self._profile.value,
            thickness=thickness_over_spacing(float(self._thickness.value), volume.spacing[0]),
        )

    def start(self) -> None:
        """Check the settings and the device, then run the job in a napari thread worker."""
        if self.running:  # one job at a time: a second would lose the first one's cancel switch
            show_info("a super-resolution is already running: wait for it, or press Cancel")
            return
        try:
            no_gpu = self._check_device()
            job = self._make_job()
        except CycleINRError as error:
            self._status.value = str(error)
            self._progress_view.finish(False)
            show_error(str(error))
            return
        self._cpu_noted = bool(no_gpu)
        if no_gpu:  # said before the run, not after it
            self._device_used.value = "cpu (no CUDA GPU found)"
            show_info(CPU_FALLBACK_NOTICE)
        self._job_text = f"running: {self._grid.value}"
        reference = self._reference.value  # its files, which no output of this run may be saved over
        self._protect = tuple(protected_paths(layer_meta(reference))) if reference is not None else ()
        self._launch(job)

    def _check_device(self) -> str | None:
        """Why there is no CUDA GPU for device auto (the run goes to the CPU), None if there may be one;
        device cuda without a GPU fails here, at once, before torch is imported."""
        if self._device.value == "cpu":
            return None
        reason = no_cuda_reason()
        if reason and self._device.value == "cuda":
            raise CycleINRError(NO_GPU_FOR_CUDA.format(reason=reason))
        return reason

    def _launch(self, job: Job) -> None:
        """Run the job in a napari thread worker (the runner's generator) and lock the settings meanwhile."""
        from napari.qt.threading import create_worker

        self._cancel = threading.Event()
        worker = create_worker(run_in_thread, job, self._cancel, _start_thread=False)
        worker.yielded.connect(self._on_update)
        worker.returned.connect(self._on_outcome)
        worker.errored.connect(self._on_crash)
        worker.finished.connect(self._on_finished)
        self._worker = worker
        self._started_at = time.monotonic()
        self._progress_view.start(job_total(job))
        self._run.text = CANCEL_TEXT
        self._lock(True)
        self._update_grid()
        _exit.started(id(worker))
        worker.finished.connect(lambda: _exit.finished(id(worker)))
        worker.start()

    def _lock(self, locked: bool) -> None:
        for control in self.settings:
            control.enabled = not locked

    def _on_closed(self, *_args: Any) -> None:
        """The dock was closed (or napari): cancel the job and stop listening to the viewer."""
        if self._closed:
            return
        self._closed = True
        self._cancel.set()  # first: closing the profile line waits for running workers, this job's too
        self._profile_label.close()
        self._progress_view.stop()
        for emitter, callback in self._connections:
            emitter.disconnect(callback)

    def _on_update(self, update: Update) -> None:
        if self._closed or self._cancel.is_set():
            return
        self._progress_view.report(update.done, update.total, update.message)
        if update.device and not self._cpu_noted:
            self._device_used.value = update.device

    def _on_outcome(self, outcome: Outcome) -> None:
        if self._closed:  # the dock or napari was closed during the run: the job was cancelled
            return
        self._show_device(outcome)
        if outcome.cancelled or self._cancel.is_set():
            self._status.value = "cancelled: nothing was added"
            show_info("super-resolution cancelled: nothing was added")
            return
        for notice in outcome.notices:
            if notice == CPU_FALLBACK_NOTICE and self._cpu_noted:
                continue  # said before the run
            (show_warning if is_problem(notice) else show_info)(notice)
        if outcome.error:
            self._status.value = outcome.error
            show_error(outcome.error)
            return
        self._pending, self._added = list(outcome.outputs), []  # added once the worker has finished
        if outcome.slice_profile and self._profile.value is None:
            self._profile_found.value = outcome.slice_profile  # what the run found (the model may have settled it)

    def _show_device(self, outcome: Outcome) -> None:
        if outcome.device:
            self._device_used.value = outcome.device
            if CPU_FALLBACK_NOTICE in outcome.notices:
                self._device_used.value = f"{outcome.device} (no CUDA GPU found)"
            elif GPU_MEMORY_FALLBACK_NOTICE in outcome.notices:
                self._device_used.value = f"{outcome.device} (the GPU ran out of memory)"

    def _on_crash(self, error: BaseException) -> None:  # execute() catches everything; this is a safety net
        if not self._closed:
            self._status.value = f"super-resolution failed: {error}"
            show_error(self._status.value)

    def _on_finished(self) -> None:
        self._worker = None
        if self._closed:
            return
        if self._pending:
            self._run.enabled = False  # nothing left to cancel
            self._status.value = "adding the layers"
            QTimer.singleShot(ADD_PAUSE_MS, self._add_next)
            return
        if self._progress_view.active:  # no layer was added: an error, a cancel or a crash
            self._progress_view.finish(False)
        self._end_run()

    def _add_next(self) -> None:
        """Add one output layer, then let napari breathe before the next: adding a layer costs napari
        a fraction of a second (its canvas visual and layer controls), all of them at once would freeze it."""
        if self._closed or not self._pending:
            return
        output = self._pending.pop(0)
        layer = add_output(self._viewer, output, self._display, self._protect)
        if output.role == "super_resolved":
            self._last_output = layer
        self._added.append((output.role, layer))
        if self._pending:
            QTimer.singleShot(ADD_PAUSE_MS, self._add_next)
            return
        place_outputs(self._viewer, self._added)
        self._progress_view.finish(True)
        self._status.value = "added " + ", ".join(layer.name for _, layer in self._added)
        self._end_run()

    def _end_run(self) -> None:
        self._run.text = RUN_TEXT
        self._run.enabled = True
        self._lock(False)
        self._update_grid()

    # --- viewing ----------------------------------------------------------------------------------------

    def _toggle_3d(self, _value: Any = None) -> None:
        """Show the selected image layer (else the newest output, else the input) alone in 3D, or go back."""
        viewer = self._viewer
        if viewer.dims.ndisplay == 3:
            viewer.dims.ndisplay = 2
            return
        fallback = self._last_output if self._last_output in viewer.layers else self._input.value
        layer = layer_for_3d(viewer, fallback)
        if layer is None or layer.ndim < 3:
            show_info("open a 3D volume first")
            return
        self._hidden_for_3d = show_alone_in_3d(viewer, layer, self._rendering.value)

    def _on_ndisplay(self, event: Any = None) -> None:
        three_d = self._viewer.dims.ndisplay == 3
        self._show_3d.text = SHOW_2D_TEXT if three_d else SHOW_3D_TEXT
        if not three_d:
            restore_visibility(self._viewer, self._hidden_for_3d)
            self._hidden_for_3d = []
        self._orient()

    def _orient(self, _event: Any = None) -> None:
        """Head at the top when z is the vertical axis of a 2D view (coronal, sagittal)."""
        if not self._closed:
            orient_head_up(self._viewer, layer_for_3d(self._viewer, self._input.value))
