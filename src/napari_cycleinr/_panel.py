"""What the dock shows: the basics up front, every expert option folded under "Advanced".

A radiologist needs four things to run the model: the input layer, the target, Run and the progress; then
"Show in 3D". Everything else (method, weights, slice profile, device, reference, extra layers, adaptation,
ensemble, exact consistency) has defaults that need no touching, so it sits in a collapsed group; the slice
profile the run will take, and why, is one line under the target (`_profile_label`). The behaviour lives in
`_widget.SuperResolutionWidget`, which subclasses this panel.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
from qtpy.QtCore import QEvent, QObject
from qtpy.QtWidgets import QSizePolicy
from superqt import QCollapsible

from napari_cycleinr._profile_label import PROFILE_CHOICES
from napari_cycleinr._runner import DEVICES, METHODS, SAME_AS_SPACING
from napari_cycleinr._target_text import VALUES_HELP
from napari_cycleinr.errors import CycleINRError
from napari_cycleinr.options import ADAPT_MINUTES as DEFAULT_ADAPT_MINUTES
from napari_cycleinr.options import ADAPT_MINUTES_RANGE, MAX_SMOOTHING, MAX_TEXTURE
from napari_cycleinr.request import AdaptSettings, Request

TARGET_CHOICES = (("spacing (mm)", "spacing"), ("factor", "factor"))
DEFAULT_VALUES = {"spacing": "1.25", "factor": "4"}
MODEL_DEFAULT, MODEL_MIXED, MODEL_FILE = "bundled, for the slice profile", "bundled mixed-profile", "checkpoint file"
RENDERINGS = ("attenuated_mip", "mip")
RUN_TEXT, CANCEL_TEXT = "Run", "Cancel"
SHOW_3D_TEXT, SHOW_2D_TEXT = "Show in 3D", "Back to 2D"
ADVANCED_TITLE = "Advanced"
ADAPT_MINUTES = (DEFAULT_ADAPT_MINUTES, *ADAPT_MINUTES_RANGE)
"""Default, minimum and maximum of the adaptation time budget (minutes)."""
SMOOTHING_MAX = MAX_SMOOTHING


class UndockWatcher(QObject):
    """Calls back when the widget leaves its dock (napari's X, or remove_dock_widget, unparent it)."""

    def __init__(self, native: Any, callback: Any) -> None:
        super().__init__(native)
        self._callback = callback
        native.installEventFilter(self)

    def eventFilter(self, obj: Any, event: Any) -> bool:  # noqa: N802 - Qt's name
        if event.type() == QEvent.Type.ParentChange and obj.parent() is None:
            self._callback()
        return False


class Panel(Container):
    """The controls and their layout; no behaviour."""

    def __init__(self) -> None:
        super().__init__(labels=True)
        self._make_basics()
        self._make_advanced()
        self.extend(
            [
                self._input,
                self._target_kind,
                self._values,
                self._grid,
                self._profile_found,
                self._run,
                self._progress,
                self._status,
                self._show_3d,
            ]
        )
        self._advanced = Container(
            labels=True,
            widgets=[
                self._method,
                self._model,
                self._checkpoint,
                self._profile,
                self._thickness,
                self._device,
                self._device_used,
                self._reference,
                self._consistency,
                self._adapt,
                self._adapt_minutes,
                self._ensemble,
                self._exact,
                self._smoothing,
                self._texture,
                self._rendering,
            ],
        )
        self._advanced.native.layout().setContentsMargins(0, 0, 0, 0)
        self._collapsible = QCollapsible(ADVANCED_TITLE)
        self._collapsible.addWidget(self._advanced.native)
        self._collapsible.collapse(animate=False)
        self.native.layout().addWidget(self._collapsible)
        for label in (self._grid, self._profile_found, self._device_used, self._status):
            label.native.setWordWrap(True)
            # at least as tall as its wrapped text: a narrow dock otherwise cut the profile line after two lines
            label.native.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Minimum)
        self._target_kind.changed.connect(self._on_target_kind)
        self._method.changed.connect(self._on_method)
        self._model.changed.connect(self._on_model)
        for widget in (self._adapt, self._exact):
            widget.changed.connect(self._update_scan_options)
        self._update_scan_options()

    def _make_basics(self) -> None:
        self._input = ComboBox(label="input", tooltip="the thick-slice volume (an image layer)")
        self._target_kind = ComboBox(
            label="target", choices=TARGET_CHOICES, value="spacing", tooltip="a slice spacing in mm, or a factor"
        )
        self._values = LineEdit(label="value(s)", value=DEFAULT_VALUES["spacing"], tooltip=VALUES_HELP)
        self._grid = Label(label="output", value="")
        self._profile_found = Label(label="", value="", tooltip="the slice profile the run takes, and why "
                                    "(change it under Advanced, slice profile)")
        self._run = PushButton(text=RUN_TEXT)
        self._progress = ProgressBar(label="progress", min=0, max=1, value=0)
        self._status = Label(label="status", value="")
        self._show_3d = PushButton(text=SHOW_3D_TEXT, tooltip="the selected image layer alone, in 3D")

    def _make_advanced(self) -> None:
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
        self._profile = ComboBox(
            label="slice profile",
            choices=PROFILE_CHOICES,
            value=None,
            tooltip="how the scanner made a slice from the tissue. Found from the scan: the DICOM record "
            "(slice thickness against spacing) picks the weights for it; without one (NIfTI, TIFF) the "
            "weights trained on every profile. Or say it: average (contiguous slab, most CT and 2D MRI), "
            "gaussian (a smooth slice profile), skip (thin slices with gaps between them). It picks the "
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
        self._device = ComboBox(
            label="device", choices=DEVICES, value="auto", tooltip="auto: the GPU if there is one, else the CPU"
        )
        self._device_used = Label(label="in use", value="chosen when you press Run")
        self._reference = ComboBox(
            label="reference",
            choices=(("none", None),),
            value=None,
            tooltip="a thin-slice scan on the output grid: adds an error layer (output minus reference)",
        )
        self._consistency = CheckBox(
            text="consistency layer",
            value=False,
            tooltip="input minus the output averaged back onto the input slices: where the output disagrees "
            "with what was measured (needs no reference)",
        )
        self._make_model_options()
        self._rendering = ComboBox(label="3D rendering", choices=RENDERINGS, value="attenuated_mip")

    def _make_model_options(self) -> None:
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
            "exactly (up to integer rounding), with a correction spread smoothly along z so that it draws no "
            "lines at the slab borders; in seconds",
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
        self._texture = FloatSpinBox(
            label="noise texture",
            value=0.0,
            min=0.0,
            max=MAX_TEXTURE,
            step=0.1,
            tooltip="gives every new slice its own draw of the scan's noise texture, this many times the "
            "acquired slices' noise level, where the acquired slices cannot see it (the result still "
            "reproduces them): the slices look grainy like a real thin scan's instead of smooth, for some "
            "accuracy (little on CT, much on MR). 0: none",
        )

    def _on_target_kind(self, kind: str) -> None:
        """Keep what the user typed; only an untouched default becomes the other kind's default."""
        other = "factor" if kind == "spacing" else "spacing"
        if self._values.value.strip() in ("", DEFAULT_VALUES[other]):
            self._values.value = DEFAULT_VALUES[kind]

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

    def _chosen_weights(self) -> str | None:
        """The weights the model controls name: `mixed`, a checkpoint file, or None (the bundled weights for the
        slice profile, or an interpolation); a checkpoint file not chosen or not there raises CycleINRError."""
        if self._method.value != "cycleinr" or self._model.value == MODEL_DEFAULT:
            return None
        if self._model.value == MODEL_MIXED:
            return "mixed"
        path = self._checkpoint.value
        if path is None or str(path) in ("", ".") or not Path(path).is_file():
            raise CycleINRError("choose a checkpoint file (.safetensors), or use the bundled default model")
        return str(path)

    def _profile_request(self) -> Request:
        """What the controls ask of a run, as far as the slice profile goes: the method, the weights (a
        checkpoint file not chosen yet as such) and the steps that use the profile."""
        try:
            weights = self._chosen_weights()
        except CycleINRError:
            weights = "a checkpoint file"
        return Request(method=self._method.value, weights=weights, consistency=bool(self._exact.value),
                       adapt=AdaptSettings() if self.adapting else None)

    @property
    def settings(self) -> list:
        """Every control a running job depends on: disabled while it runs."""
        return [self._input, self._target_kind, self._values, self._advanced]

    def visible_controls(self) -> list:
        """The controls a user sees (for tests and screenshots): hidden or folded-away ones left out."""
        shown = [w for w in self if not w.native.isHidden()]
        if self._collapsible.isExpanded():
            shown += [w for w in self._advanced if not w.native.isHidden()]
        return shown
