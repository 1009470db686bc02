"""The dock widget: a thin magicgui shell over `_runner` (the job) and `_layers` (the geometry).

Nothing here imports torch: the model is loaded inside the thread worker when Run is pressed. The worker
yields progress updates (GUI thread: progress bar and status), and returns an Outcome whose layers are added
in the GUI thread. Run turns into Cancel while a job runs; a cancelled job adds nothing. Every failure is a
napari notification, never a traceback dialog.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Label,
    LineEdit,
    ProgressBar,
    PushButton,
)
from napari.layers import Image
from napari.utils.notifications import show_error, show_info, show_warning

from napari_cycleinr._layers import (
    layer_geometry,
    layer_meta,
    layer_to_volume,
    volume_to_layer_data,
    widen_contrast_range,
)
from napari_cycleinr._runner import (
    CPU_FALLBACK_NOTICE,
    DEVICES,
    GPU_MEMORY_FALLBACK_NOTICE,
    METHODS,
    PROFILES,
    SAME_AS_SPACING,
    STEPS_PER_TARGET,
    Job,
    Outcome,
    Output,
    Update,
    job_total,
    plan_targets,
    run_in_thread,
    thickness_over_spacing,
)
from napari_cycleinr.errors import CycleINRError

if TYPE_CHECKING:
    import napari

TARGET_CHOICES = (("spacing (mm)", "spacing"), ("factor", "factor"))
DEFAULT_VALUES = {"spacing": "1.25", "factor": "4"}
MODEL_DEFAULT, MODEL_MIXED, MODEL_FILE = "bundled, for the slice profile", "bundled mixed-profile", "checkpoint file"
RENDERINGS = ("attenuated_mip", "mip")
RUN_TEXT, CANCEL_TEXT = "Run", "Cancel"
SHOW_3D_TEXT, SHOW_2D_TEXT = "Show in 3D", "Back to 2D"
VIEW_3D_ANGLES = (-70.0, 20.0, -10.0)
"""An oblique view from above (z, y, x data): slices, surfaces and vessels all show their depth."""
ADAPT_MINUTES = (3.0, 0.5, 60.0)
"""Default, minimum and maximum of the adaptation time budget (minutes)."""
SMOOTHING_MAX = 10.0
"""model.consistency.MAX_SMOOTHING, not imported from there: that would import torch when the dock opens."""


class SuperResolutionWidget(Container):
    """Through-plane super-resolution of an image layer, with optional error and consistency layers."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=True)
        self._viewer = viewer
        self._worker: Any = None
        self._cancel = threading.Event()
        self._display: dict[str, Any] = {}
        self._last_output: Image | None = None
        self._hidden_for_3d: list[tuple[Any, bool]] = []
        self._closed = False
        # Closing napari (or this dock) during a run: stop the job, and let the worker's last signals, which
        # arrive after the Qt widgets are gone, find nothing to update.
        self.native.destroyed.connect(self._on_native_destroyed)

        self._input = ComboBox(label="input", choices=self._image_choices, tooltip="the thick-slice volume")
        self._target_kind = ComboBox(
            label="target",
            choices=TARGET_CHOICES,
            value="spacing",
            tooltip="a slice spacing in mm, or a factor",
        )
        self._values = LineEdit(
            label="value(s)",
            value=DEFAULT_VALUES["spacing"],
            tooltip="one number, or several separated by commas (2, 3, 5) for one layer per scale",
        )
        self._grid = Label(label="output", value="")
        self._method = ComboBox(
            label="method", choices=METHODS, value="cycleinr", tooltip="trilinear and tricubic are baselines"
        )
        self._model = ComboBox(
            label="model",
            choices=(MODEL_DEFAULT, MODEL_MIXED, MODEL_FILE),
            value=MODEL_DEFAULT,
            tooltip="bundled, for the slice profile: the weights fine-tuned for the scan's slice profile (set "
            "below); bundled mixed-profile: the weights trained on every profile, which they came from",
        )
        self._checkpoint = FileEdit(label="checkpoint", mode="r", filter="*.safetensors", visible=False)
        self._device = ComboBox(label="device", choices=DEVICES, value="auto")
        self._device_used = Label(label="in use", value="chosen when you press Run")
        self._reference = ComboBox(
            label="reference",
            choices=self._reference_choices,
            value=None,
            tooltip="a thin-slice scan on the output grid: adds an error layer (output minus reference)",
        )
        self._consistency = CheckBox(
            text="consistency layer",
            value=False,
            tooltip="input minus the output averaged back onto the input slices: where the output disagrees "
            "with what was measured (needs no reference)",
        )
        self._adapt = CheckBox(
            text="adapt to this scan",
            value=False,
            tooltip="fine-tunes the model on this scan's own in-plane data (x and y are sharp; degraded like "
            "the slices, they teach the model this scan's texture) for a few minutes before super-resolving. "
            "Runs on this machine: the scan never leaves it. The adapted weights are kept only if they do "
            "better on held-out in-plane pairs",
        )
        default, low, high = ADAPT_MINUTES
        self._adapt_minutes = FloatSpinBox(
            label="adapt minutes",
            value=default,
            min=low,
            max=high,
            step=0.5,
            visible=False,
            tooltip="time budget of the adaptation on this machine (then the super-resolution runs as usual)",
        )
        self._ensemble = CheckBox(
            text="mirror ensemble (2x time)",
            value=False,
            tooltip="also runs the model on the scan reversed along z and averages the two answers: a little "
            "more accurate and with smoother noise, for twice the time",
        )
        self._exact = CheckBox(
            text="exact data consistency",
            value=False,
            tooltip="corrects the output so that, averaged back onto the acquired slices, it reproduces them "
            "exactly (up to integer rounding); the smallest change that does so, in seconds",
        )
        self._smoothing = FloatSpinBox(
            label="consistency smoothing (px)",
            value=0.0,
            min=0.0,
            max=SMOOTHING_MAX,
            step=0.5,
            visible=False,
            tooltip="correct only the coarse part of the disagreement (a Gaussian of this many pixels), leaving "
            "the thick slices' own noise out of the correction: even noise (no slab-wise horizontal lines) "
            "for a little less fidelity. 0: the exact correction",
        )
        self._profile = ComboBox(
            label="slice profile",
            choices=PROFILES,
            value="average",
            tooltip="how the scanner made a slice from the tissue: average (contiguous slab, most CT and 2D "
            "MRI), gaussian (a smooth slice profile), skip (thin slices with gaps between them). It picks the "
            "bundled weights, and sets adaptation and exact consistency",
        )
        self._thickness = FloatSpinBox(
            label="slice thickness (mm)",
            value=0.0,
            min=0.0,
            max=100.0,
            step=0.5,
            visible=False,
            tooltip="the slices' thickness, when it differs from their spacing (overlapping or gapped "
            "reconstructions, e.g. 5 mm slices every 2.5 mm); 'same as spacing' for contiguous slices",
        )
        self._thickness.native.setSpecialValueText(SAME_AS_SPACING)  # shown at the minimum, 0
        self._run = PushButton(text=RUN_TEXT)
        self._progress = ProgressBar(label="progress", min=0, max=STEPS_PER_TARGET, value=0)
        self._status = Label(label="status", value="")
        self._rendering = ComboBox(label="3D rendering", choices=RENDERINGS, value="attenuated_mip")
        self._show_3d = PushButton(text=SHOW_3D_TEXT)
        for label in (self._grid, self._device_used, self._status):
            label.native.setWordWrap(True)
        self.extend(
            [
                self._input,
                self._target_kind,
                self._values,
                self._grid,
                self._method,
                self._model,
                self._checkpoint,
                self._profile,
                self._device,
                self._device_used,
                self._reference,
                self._consistency,
                self._adapt,
                self._adapt_minutes,
                self._ensemble,
                self._exact,
                self._smoothing,
                self._thickness,
                self._run,
                self._progress,
                self._status,
                self._rendering,
                self._show_3d,
            ]
        )

        self._target_kind.changed.connect(self._on_target_kind)
        for widget in (self._input, self._values):
            widget.changed.connect(self._update_grid)
        self._method.changed.connect(self._on_method)
        self._model.changed.connect(self._on_model)
        for widget in (self._adapt, self._exact):
            widget.changed.connect(self._update_scan_options)
        self._run.changed.connect(self._on_run_clicked)
        self._show_3d.changed.connect(self._toggle_3d)
        layers = viewer.layers
        for event in (
            layers.events.inserted,
            layers.events.removed,
            layers.events.moved,
            layers.events.reordered,
        ):
            event.connect(self._on_layers_changed)
        viewer.dims.events.ndisplay.connect(self._on_ndisplay)
        self._update_grid()

    # --- choices and small updates -------------------------------------------------------------------

    def _images(self) -> list[Image]:
        return [layer for layer in self._viewer.layers if isinstance(layer, Image)]

    def _image_choices(self, _widget: Any = None) -> list[tuple[str, Image]]:
        return [(layer.name, layer) for layer in self._images()]

    def _reference_choices(self, _widget: Any = None) -> list[tuple[str, Image | None]]:
        return [("none", None), *self._image_choices()]

    def _on_layers_changed(self, event: Any = None) -> None:
        layer = getattr(event, "value", None)
        if getattr(event, "type", "") == "inserted" and isinstance(layer, Image):
            layer.events.name.connect(self._refresh_choices)
        self._refresh_choices()

    def _refresh_choices(self, _event: Any = None) -> None:
        self._input.reset_choices()
        self._reference.reset_choices()
        self._update_grid()

    def _on_target_kind(self, kind: str) -> None:
        self._values.value = DEFAULT_VALUES[kind]
        self._update_grid()

    def _on_method(self, method: str) -> None:
        self._model.enabled = method == "cycleinr"
        self._checkpoint.enabled = method == "cycleinr"
        self._update_scan_options()

    @property
    def adapting(self) -> bool:
        """Whether Run will adapt the model: the box is ticked and the method is the model (interpolation has
        nothing to adapt, so a tick left from cycleinr is ignored while trilinear or tricubic is chosen)."""
        return bool(self._adapt.value) and self._method.value == "cycleinr"

    def _update_scan_options(self, _value: Any = None) -> None:
        """Adapt and the ensemble only for cycleinr; the minutes only when adapting, the smoothing only with
        exact consistency; the thickness when either option is ticked, and the slice profile then too, or
        when it picks the bundled weights."""
        model = self._method.value == "cycleinr"
        self._adapt.visible = model
        self._ensemble.visible = model
        self._adapt_minutes.visible = self.adapting
        needs_thickness = self.adapting or bool(self._exact.value)
        self._smoothing.visible = bool(self._exact.value)
        self._profile.visible = needs_thickness or (model and self._model.value == MODEL_DEFAULT)
        self._thickness.visible = needs_thickness

    def _on_model(self, choice: str) -> None:
        self._checkpoint.visible = choice == MODEL_FILE
        self._update_scan_options()

    def _update_grid(self, _value: Any = None) -> None:
        """Show what the typed target gives for the chosen input, before anything runs."""
        layer = self._input.value
        if layer is None:
            self._grid.value = "open a volume (File > Open, or File > Open Sample > napari-cycleinr)"
            return
        try:  # geometry only: no pass over the voxels on every keystroke
            affine, _, _ = layer_geometry(layer_meta(layer), layer.ndim)
            n_in, s_in = int(layer.data.shape[0]), float(np.linalg.norm(affine[:3, 0]))
            targets = plan_targets(n_in, s_in, self._target_kind.value, self._values.value)
        except CycleINRError as error:
            self._grid.value = str(error)
            return
        self._grid.value = "; ".join(
            f"{n_in} x {s_in:.3g} mm -> {t.n_out} x {t.spacing_out:.3g} mm ({t.suffix})" for t in targets
        )

    # --- running ---------------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._worker is not None

    def _on_run_clicked(self, _value: Any = None) -> None:
        if self.running:
            self.cancel()
        else:
            self.start()

    def cancel(self) -> None:
        """Ask the running job to stop; it stops at its next block and adds no layer."""
        if self.running:
            self._cancel.set()
            self._status.value = "cancelling..."
            self._run.enabled = False

    def _make_job(self) -> Job:
        layer = self._input.value
        if layer is None:
            raise CycleINRError("choose an input image layer (open a volume first)")
        volume = layer_to_volume(layer.data, layer_meta(layer))
        targets = plan_targets(
            volume.shape[0], volume.spacing[0], self._target_kind.value, self._values.value
        )
        reference_layer = self._reference.value
        reference = None
        if reference_layer is not None:
            if reference_layer is layer:
                raise CycleINRError("the reference must be another layer than the input")
            reference = layer_to_volume(reference_layer.data, layer_meta(reference_layer))
        checkpoint = "mixed" if self._method.value == "cycleinr" and self._model.value == MODEL_MIXED else None
        if self._method.value == "cycleinr" and self._model.value == MODEL_FILE:
            path = self._checkpoint.value
            if path is None or str(path) in ("", ".") or not Path(path).is_file():
                raise CycleINRError(
                    "choose a checkpoint file (.safetensors), or use the bundled default model"
                )
            checkpoint = str(path)
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
            profile=self._profile.value,
            thickness=thickness_over_spacing(float(self._thickness.value), volume.spacing[0]),
        )

    def start(self) -> None:
        """Check the settings, then run the job in a napari thread worker."""
        from napari.qt.threading import create_worker

        if self.running:  # one job at a time: a second would lose the first one's cancel switch
            show_info("a super-resolution is already running: wait for it, or press Cancel")
            return
        try:
            job = self._make_job()
        except CycleINRError as error:
            self._status.value = str(error)
            show_error(str(error))
            return
        self._cancel = threading.Event()
        worker = create_worker(run_in_thread, job, self._cancel, _start_thread=False)
        worker.yielded.connect(self._on_update)
        worker.returned.connect(self._on_outcome)
        worker.errored.connect(self._on_crash)
        worker.finished.connect(self._on_finished)
        self._worker = worker
        self._progress.max = job_total(job)
        self._progress.value = 0
        self._run.text = CANCEL_TEXT
        self._status.value = "starting"
        worker.start()

    def _on_native_destroyed(self, *_args: Any) -> None:
        self._closed = True
        self._cancel.set()

    def _on_update(self, update: Update) -> None:
        if self._closed:
            return
        self._progress.max = max(update.total, 1)
        self._progress.value = min(update.done, update.total)
        if update.message and not self._cancel.is_set():
            self._status.value = update.message
        if update.device:
            self._device_used.value = update.device

    def _on_outcome(self, outcome: Outcome) -> None:
        if self._closed:  # napari was closed during the run: the job was cancelled, nothing to show
            return
        if outcome.device:
            self._device_used.value = outcome.device
            if CPU_FALLBACK_NOTICE in outcome.notices:
                self._device_used.value = f"{outcome.device} (no CUDA GPU found)"
            elif GPU_MEMORY_FALLBACK_NOTICE in outcome.notices:
                self._device_used.value = f"{outcome.device} (the GPU ran out of memory)"
        if outcome.cancelled or self._cancel.is_set():
            self._status.value = "cancelled: nothing was added"
            show_info("super-resolution cancelled: nothing was added")
            return
        for notice in outcome.notices:
            show_warning(notice)
        if outcome.error:
            self._status.value = outcome.error
            show_error(outcome.error)
            return
        for output in outcome.outputs:
            self._add_or_replace(output)
        names = ", ".join(output.name for output in outcome.outputs)
        self._status.value = f"added {names}"
        self._progress.value = self._progress.max

    def _on_crash(self, error: BaseException) -> None:  # execute() catches everything; this is a safety net
        if not self._closed:
            self._status.value = f"super-resolution failed: {error}"
            show_error(self._status.value)

    def _on_finished(self) -> None:
        self._worker = None
        if self._closed:
            return
        self._run.text = RUN_TEXT
        self._run.enabled = True
        if self._cancel.is_set():
            self._progress.value = 0

    def _add_or_replace(self, output: Output) -> Image:
        """Add the output as a layer, replacing (in place in the list) a layer of the same name."""
        display = self._display if output.role == "super_resolved" else {}
        data, kwargs = volume_to_layer_data(
            output.volume, name=output.name, role=output.role, protect=output.protect, **display
        )
        layer = Image(data, **kwargs)
        layers = self._viewer.layers
        if output.name in layers:
            old = layers[output.name]
            index = layers.index(old)
            layers.remove(old)
            layers.insert(index, layer)
        else:
            layers.append(layer)
        widen_contrast_range(layer)
        if output.role == "super_resolved":
            self._last_output = layer
        return layer

    # --- 3D ---------------------------------------------------------------------------------------------

    def _layer_for_3d(self) -> Image | None:
        if self._last_output is not None and self._last_output in self._viewer.layers:
            return self._last_output
        return self._input.value

    def _toggle_3d(self, _value: Any = None) -> None:
        """Show the latest super-resolved layer (else the input) alone in 3D, or go back to 2D."""
        viewer = self._viewer
        if viewer.dims.ndisplay == 3:
            viewer.dims.ndisplay = 2
            return
        layer = self._layer_for_3d()
        if layer is None or layer.ndim < 3:
            show_info("open a 3D volume first")
            return
        self._hidden_for_3d = [(other, other.visible) for other in viewer.layers if other is not layer]
        for other, _ in self._hidden_for_3d:
            other.visible = False
        layer.visible = True
        layer.rendering = self._rendering.value
        if layer.rendering == "attenuated_mip":
            layer.attenuation = 0.5
        viewer.dims.ndisplay = 3
        viewer.reset_view()
        camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera  # napari >= 0.9 / older
        camera.angles = VIEW_3D_ANGLES

    def _on_ndisplay(self, event: Any = None) -> None:
        three_d = self._viewer.dims.ndisplay == 3
        self._show_3d.text = SHOW_2D_TEXT if three_d else SHOW_3D_TEXT
        if not three_d:
            for other, visible in self._hidden_for_3d:
                if other in self._viewer.layers:
                    other.visible = visible
            self._hidden_for_3d = []
