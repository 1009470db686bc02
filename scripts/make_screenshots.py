"""Screenshots for docs/usage.md: the dock widget after a real run on the bundled sample, and the 3D view.

Opens the 5 mm chest CT and its 1.25 mm reference through the plugin, runs the widget with the bundled default
model (5 mm -> 1.25 mm, reference = the 1.25 mm scan, consistency layer and exact data consistency on), and
saves, under docs/images/ (palette PNGs, well under 300 KB each):
  panel.png      the dock as it opens: the basics, "Advanced" folded
  running.png    the dock during the run: the progress bar, its phase and the time left
  widget.png     the napari window with the dock widget, coronal view (head at the top), output / reference /
                 error side by side
  3d.png         3D rendering (attenuated MIP) of the 5 mm input, the super-resolved output and the 1.25 mm
                 reference, side by side

Needs a display: run under Xvfb from the repository root,

    xvfb-run -a -s "-screen 0 1920x1200x24" .venv/bin/python scripts/make_screenshots.py

(--method trilinear gives a quick dry run of the layout; a CPU run of the default model takes a few minutes.)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import napari
from PIL import Image
from qtpy.QtWidgets import QApplication

from napari_cycleinr._widget import VIEW_3D_ANGLES

PLUGIN = "napari-cycleinr"
WIDGET = "Through-plane super-resolution"


def wait(condition, timeout: float) -> None:
    app = QApplication.instance()
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise TimeoutError("the run did not finish in time")
        app.processEvents()
        time.sleep(0.05)
    for _ in range(20):  # let the canvas catch up
        app.processEvents()
        time.sleep(0.02)


def save_small(image, path: Path) -> None:
    """An RGB(A) array or a QPixmap as a 256-colour PNG: screenshots of flat UI and grey scans lose nothing
    visible, and the file stays small."""
    if hasattr(image, "save"):  # QPixmap
        image.save(str(path))
        image = Image.open(path).convert("RGB")
    else:
        image = Image.fromarray(image[..., :3])
    image.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    print(f"wrote {path} ({path.stat().st_size // 1024} KB)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/images"))
    parser.add_argument("--method", default="cycleinr", choices=("cycleinr", "trilinear", "tricubic"))
    parser.add_argument("--timeout", type=float, default=1800.0)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    viewer = napari.Viewer(title="napari-cycleinr", show=True)
    viewer.window.resize(1600, 1000)
    viewer.open_sample(PLUGIN, "chest_ct_5mm")
    viewer.open_sample(PLUGIN, "chest_ct_1p25mm")
    thick, thin = viewer.layers["chest_ct_5mm"], viewer.layers["chest_ct_1p25mm"]
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    widget._input.value = thick
    wait(lambda: True, 2)
    save_small(widget.native.grab(), args.out / "panel.png")

    widget._reference.value = thin
    widget._values.value = "1.25"
    widget._consistency.value = True
    widget._exact.value = True  # exact data consistency (average profile: the sample is a slab average)
    widget._method.value = args.method
    started = time.monotonic()
    widget.start()
    wait(lambda: "left" in widget._status.value or not widget.running, args.timeout)
    save_small(widget.native.grab(), args.out / "running.png")
    wait(lambda: not widget.running, args.timeout)
    print(f"run took {time.monotonic() - started:.0f} s: {widget._status.value}")
    sr = viewer.layers["chest_ct_5mm_SRx4"]
    error = viewer.layers["chest_ct_5mm_error"]

    # Coronal view (z up, x across, through the middle of y): the through-plane axis is what changes.
    viewer.dims.order = (1, 0, 2)
    viewer.dims.set_point(1, float(sr.translate[1] + sr.scale[1] * sr.data.shape[1] * 0.5))
    # Grid, row by row: 5 mm input | super-resolved, then 1.25 mm reference | error (output - reference).
    for index, layer in enumerate((thick, sr, thin, error)):
        viewer.layers.move(viewer.layers.index(layer), index)
    for layer in viewer.layers:
        layer.visible = layer in (thick, sr, thin, error)
    grid = viewer.canvas.grid if hasattr(viewer, "canvas") else viewer.grid  # napari >= 0.9 / older
    grid.enabled, grid.shape, grid.stride = True, (2, 2), 1
    viewer.layers.selection.active = sr
    viewer.reset_view()
    wait(lambda: True, 5)
    save_small(viewer.screenshot(canvas_only=False, flash=False), args.out / "widget.png")

    grid.enabled = False
    viewer.dims.order = (0, 1, 2)
    viewer.layers.selection.active = sr
    widget._show_3d.native.click()  # the output alone, attenuated MIP; then the input and reference beside it
    for layer in (thick, thin):
        layer.visible = True
        layer.rendering, layer.attenuation = sr.rendering, sr.attenuation
    grid.enabled, grid.shape, grid.stride = True, (1, 3), 1
    viewer.window.resize(1600, 800)
    viewer.reset_view()
    viewer.scene.camera.angles = VIEW_3D_ANGLES
    viewer.fit_to_view(margin=0.08)  # the rotated boxes fit, as Show in 3D fits one
    wait(lambda: True, 5)
    save_small(viewer.screenshot(canvas_only=True, flash=False), args.out / "3d.png")
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
