"""How results are looked at: the result on top and selected, the user's display kept on a rerun, the
selected layer alone in 3D and wholly in view, and z running upward (head at the top) in coronal and
sagittal views.

Nothing here changes a layer's scale or translate: world coordinates stay those of the scan. The head-up view
is napari's 2D camera orientation (its vertical axis pointing up), set whenever z becomes the vertical axis.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from napari.layers import Image

from napari_cycleinr._layers import KEY, volume_to_layer_data, widen_contrast_range

DIFFERENCE_ROLES = ("error", "consistency")
VIEW_3D_ANGLES = (-70.0, 20.0, -10.0)
"""An oblique view from above (z, y, x data): slices, surfaces and vessels all show their depth."""
VIEW_3D_MARGIN = 0.08
"""Room left around the rotated volume when it is fitted to the canvas."""
KEPT_DISPLAY = ("contrast_limits", "colormap", "gamma", "opacity", "blending")
"""What a rerun carries over from the layer it replaces: how the user chose to look at it."""


def display_of(layer: Image) -> dict[str, Any]:
    """The user's display settings of a layer, as keyword arguments of a new Image layer."""
    display = {name: getattr(layer, name) for name in KEPT_DISPLAY}
    display["contrast_limits"] = tuple(float(v) for v in layer.contrast_limits)
    return display


def add_output(viewer: Any, output: Any, input_display: Mapping[str, Any], protect: Sequence[str]) -> Image:
    """Add a run's output (`_runner.Output`) as a layer. One of the same name is replaced in place, keeping
    how the user chose to look at it; a new result opens like its input, a difference layer hidden (see
    place_outputs). `protect`: more files no writer may save this layer over (the run's reference)."""
    layers = viewer.layers
    old = layers[output.name] if output.name in layers else None
    if old is not None:
        display = display_of(old)
    else:
        display = dict(input_display) if output.role == "super_resolved" else {}
    data, kwargs = volume_to_layer_data(
        output.volume, name=output.name, role=output.role, protect=(*output.protect, *protect), **display
    )
    layer = Image(data, **kwargs, visible=output.role not in DIFFERENCE_ROLES)
    if old is not None:
        index = layers.index(old)
        layers.remove(old)
        layers.insert(index, layer)
    else:
        layers.append(layer)
    widen_contrast_range(layer)
    return layer


def place_outputs(viewer: Any, added: Sequence[tuple[str, Image]]) -> None:
    """Results on top of the layer list and the newest selected; difference layers just below them,
    hidden until the user ticks their eye (an opaque coolwarm layer over the result would hide it)."""
    layers = viewer.layers
    results = [layer for role, layer in added if role not in DIFFERENCE_ROLES]
    differences = [layer for role, layer in added if role in DIFFERENCE_ROLES]
    for layer in differences:
        layer.visible = False
    for layer in (*differences, *results):  # each to the top in turn: the results end above the differences
        layers.move(layers.index(layer), len(layers))
    if results:
        results[-1].visible = True
        layers.selection.active = results[-1]


def layer_for_3d(viewer: Any, fallback: Image | None) -> Image | None:
    """The selected image layer (the one whose controls the user sees), else the fallback."""
    active = viewer.layers.selection.active
    if isinstance(active, Image) and active.ndim >= 3:
        return active
    return fallback


def show_alone_in_3d(viewer: Any, layer: Image, rendering: str) -> list[tuple[Any, bool]]:
    """Render the layer alone in 3D, obliquely, fitted to the canvas; returns the other layers' visibility
    to restore when going back to 2D."""
    hidden = [(other, other.visible) for other in viewer.layers if other is not layer]
    for other, _ in hidden:
        other.visible = False
    layer.visible = True
    layer.rendering = rendering
    if layer.rendering == "attenuated_mip":
        layer.attenuation = 0.5
    viewer.dims.ndisplay = 3
    camera = viewer.scene.camera
    camera.angles = VIEW_3D_ANGLES
    viewer.fit_to_view(layers=[layer], margin=VIEW_3D_MARGIN)  # the rotated box fits, not the upright one
    return hidden


def restore_visibility(viewer: Any, hidden: Sequence[tuple[Any, bool]]) -> None:
    for other, visible in hidden:
        if other in viewer.layers:
            other.visible = visible


def z_points_to_head(layer: Any) -> bool:
    """Whether z increasing goes towards the head (superior): the stored affine's z column, else yes (the
    NIfTI convention for a layer made elsewhere)."""
    info = (getattr(layer, "metadata", None) or {}).get(KEY)
    affine = info.get("affine") if isinstance(info, Mapping) else None
    try:
        return float(affine[2][0]) >= 0.0  # world z (superior) component of the z axis
    except (TypeError, IndexError, ValueError):
        return True


def orient_head_up(viewer: Any, layer: Any) -> None:
    """In 2D with z vertical (coronal, sagittal), turn the camera so that the head is at the top; in any
    other view napari's default orientation (rows downward: the radiological axial view)."""
    dims = viewer.dims
    vertical = "down"
    if dims.ndisplay == 2 and dims.ndim >= 3 and dims.order[-2] == dims.ndim - 3 and layer is not None:
        vertical = "up" if z_points_to_head(layer) else "down"
    camera = viewer.scene.camera
    if str(getattr(camera.orientation2d[0], "value", camera.orientation2d[0])) != vertical:
        camera.orientation2d = (vertical, camera.orientation2d[1])
