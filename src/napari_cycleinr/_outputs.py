"""The widget's outputs from a pipeline Result: the super-resolved volumes with the job's record, the error
image against the reference, and the consistency residual, each with the metadata its layer carries.

No Qt and no torch: plain volumes and their metadata, for `_runner` to hand to the dock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from napari_cycleinr import __version__
from napari_cycleinr.errors import CycleINRError
from napari_cycleinr.grid import z_grid
from napari_cycleinr.volume import Volume

if TYPE_CHECKING:
    from napari_cycleinr._runner import Job
    from napari_cycleinr.pipeline import Result, TargetResult


@dataclass
class Output:
    name: str
    role: str
    """'super_resolved', 'error' or 'consistency'."""
    volume: Volume
    protect: tuple[str, ...] = ()
    """Input files a writer must never overwrite with this layer."""


def outputs_of(job: Job, result: Result) -> list[Output]:
    """Per target: the super-resolved volume, then its error image and its consistency residual if any."""
    source = job.volume.metadata.get("source_path")
    protect_input = (str(source),) if source else ()
    outputs = []
    for done in result.outputs:
        sr_name = f"{job.input_name}_{done.target.suffix}"
        sr = _recorded(job, result, done)
        outputs.append(Output(sr_name, "super_resolved", sr, protect_input))
        if done.scores is not None:
            error = _error_output(job, sr, protect_input)
            error.volume.metadata["error_image"].update(done.scores)
            outputs.append(error)
        if done.residual is not None:
            name = f"{sr_name}_consistency"
            outputs.append(_consistency_output(job, sr, done.residual, name, protect_input))
    return outputs


def _recorded(job: Job, result: Result, done: TargetResult) -> Volume:
    """The output with the job's parameters, the model's and the adaptation's records in its metadata."""
    target = done.target
    record = dict(done.volume.metadata.get("super_resolution") or {})
    record.update(
        napari_cycleinr_version=__version__,
        parameters={
            "target": target.kind,
            "value": target.value,
            "method": job.method,
            "model": job.checkpoint or "bundled default",
            "profile": job.profile,
            "device": job.device,
            "ensemble": job.ensemble,
        },
        input_layer=job.input_name,
        slices=[target.n_in, target.n_out],
    )
    if job.method == "cycleinr":
        record["model_info"] = dict(result.model_info)
    if result.adaptation is not None:
        record["adaptation"] = {
            **result.adaptation.as_dict(),
            "budget": {"steps": job.adapt_steps} if job.adapt_steps else {"minutes": job.adapt_minutes},
            "profile": job.profile,
            "thickness_over_spacing": job.thickness,
        }
    metadata = {**done.volume.metadata, "super_resolution": record}
    _described(metadata, f"napari-cycleinr {__version__} {target.suffix} {job.method}")
    return done.volume.replace(metadata=metadata)


def _described(metadata: dict, description: str) -> dict:
    """metadata whose NIfTI header (if any) describes the layer."""
    if "nifti_header" in metadata:
        metadata["nifti_header"] = {**metadata["nifti_header"], "descrip": description}
    return metadata


def _error_output(job: Job, sr: Volume, protect_input: tuple[str, ...]) -> Output:
    """Output minus reference, float32, on the output's grid."""
    assert job.reference is not None
    error = np.subtract(sr.data, job.reference.data, dtype=np.float32)
    reference_source = job.reference.metadata.get("source_path")
    metadata = {
        **sr.metadata,
        "dtype": "float32",
        "error_image": {"definition": "output minus reference", "reference": job.reference_name},
    }
    if reference_source:
        metadata["error_image"]["reference_path"] = str(reference_source)
    _described(metadata, "napari-cycleinr error (output - reference)")
    # the reference is protected by sr's metadata["reference_path"] (pipeline.py, _layers.protected_paths)
    error_volume = sr.replace(data=error, metadata=metadata)
    return Output(f"{job.input_name}_error", "error", error_volume, protect_input)


def _consistency_output(
    job: Job, sr: Volume, residual: np.ndarray, name: str, protect_input: tuple[str, ...]
) -> Output:
    """Input minus the output degraded back onto the acquired slices (slab average), on the input's grid."""
    metadata = {
        **job.volume.metadata,
        "dtype": "float32",
        "consistency": {
            "definition": "input minus the output averaged back onto the input slices",
            "output_layer": name.removesuffix("_consistency"),
            "super_resolution": sr.metadata.get("super_resolution"),
        },
    }
    _described(metadata, "napari-cycleinr consistency (input - degraded output)")
    return Output(name, "consistency", job.volume.replace(data=residual, metadata=metadata), protect_input)


def grid_offset_notice(job: Job, sr: Volume, sr_name: str) -> str | None:
    """A warning when the reference has the output's shape but not its grid, else None."""
    assert job.reference is not None
    offset = _grid_offset(job.reference, sr)
    if offset is None or offset <= 0.5 * min(sr.spacing):
        return None
    return (
        f"{job.reference_name} and {sr_name} have the same shape but their grids are "
        f"{offset:.2g} mm apart: the error image compares voxels at different positions"
    )


def _grid_offset(reference: Volume, output: Volume) -> float | None:
    """Largest distance (mm) between the two volumes' corner voxel centres, or None if not comparable."""
    corners = np.array(
        [
            [i, j, k, 1.0]
            for i in (0, output.shape[0] - 1)
            for j in (0, output.shape[1] - 1)
            for k in (0, output.shape[2] - 1)
        ]
    )
    if "source_path" not in reference.metadata:  # a layer made elsewhere: its geometry is only a guess
        return None
    a = corners @ reference.affine.T
    b = corners @ output.affine.T
    return float(np.max(np.linalg.norm(a[:, :3] - b[:, :3], axis=1)))


def reference_mismatch(job: Job) -> str:
    """Why no output got an error image: the reference fits none of the output grids."""
    assert job.reference is not None
    ref = job.reference
    shapes = ", ".join(f"{t.n_out}" for t in job.targets)
    if ref.shape[1:] != job.volume.shape[1:]:
        return (
            f"no error image: {job.reference_name} is {ref.shape[1]}x{ref.shape[2]} in-plane, "
            f"the input {job.volume.shape[1]}x{job.volume.shape[2]}; pick a reference of the same scan"
        )
    n_in, spacing_in = job.volume.shape[0], job.volume.spacing[0]
    hint = ref.spacing[0]
    try:
        z_grid(n_in, spacing_in, spacing=hint)
        advice = f"pick a target spacing equal to the reference's ({hint:.4g} mm)"
    except CycleINRError:
        advice = "pick a target spacing equal to the reference's"
    return f"no error image: {job.reference_name} has {ref.shape[0]} slices, the output {shapes}; {advice}"
