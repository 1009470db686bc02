"""The widget's job, without Qt or napari: plan the output grids, run the model, build the output volumes.

`plan_targets` checks what the user typed against the input before anything runs. `execute` does the work
with a progress callback and a cancel check and never raises: it returns an `Outcome` holding the outputs or
one message for the user. `run_in_thread` turns that into a generator of progress updates for napari's thread
worker. torch and the model package are imported only inside `execute`, so opening the widget stays cheap.
"""

from __future__ import annotations

import logging
import math
import queue
import re
import sys
import threading
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from napari_cycleinr.errors import Cancelled, CycleINRError
from napari_cycleinr.grid import z_grid
from napari_cycleinr.volume import Volume

log = logging.getLogger(__name__)

TARGET_KINDS = ("spacing", "factor")
METHODS = ("cycleinr", "trilinear", "tricubic")
DEVICES = ("auto", "cpu", "cuda")
STEPS_PER_TARGET = 1000
ADAPT_STEPS = 1000
"""Progress units of the adaptation phase, when a job adapts the model to the scan before the targets."""
PROFILES = ("average", "gaussian", "skip")
"""Slice profiles (napari_cycleinr.model.degrade.KINDS, repeated here so that the widget needs no torch)."""
SAME_AS_SPACING = "same as spacing"
"""What the widget's slice thickness shows at 0: contiguous slices."""
ADAPT_NEEDS_CYCLEINR = (
    "adaptation needs the cycleinr method: {method} is an interpolation with nothing to fine-tune; "
    "choose the method cycleinr, or untick adapt to this scan"
)
CPU_FALLBACK_NOTICE = "no CUDA GPU found: running on the CPU (slower)"
GPU_MEMORY_FALLBACK_NOTICE = "the GPU ran out of memory: this run went on on the CPU (slower)"
GPU_OUT_OF_MEMORY = (
    "the GPU ran out of memory for this volume and target; choose the device cpu (slower) or auto, "
    "a smaller factor, or close other programs using the GPU"
)
OUT_OF_MEMORY = "not enough memory for this volume and target; try a smaller factor or close other programs"


def thickness_over_spacing(thickness_mm: float, spacing_mm: float) -> float:
    """The widget's slice thickness (mm; 0 = the spacing) as the models take it: in units of the spacing.
    Its plausibility is checked with the slice profile, when the job runs."""
    return 1.0 if thickness_mm <= 0 else thickness_mm / spacing_mm


@dataclass(frozen=True)
class Target:
    """One output grid: what was asked (a factor or a spacing in mm) and what it gives."""

    kind: str
    value: float
    n_in: int
    n_out: int
    spacing_out: float

    @property
    def factor(self) -> float:
        return self.n_out / self.n_in

    @property
    def suffix(self) -> str:
        """'SRx2.5': the factor asked for, or the factor a spacing gives (3 significant digits)."""
        shown = self.value if self.kind == "factor" else self.factor
        return f"SRx{shown:.3g}" if self.kind == "spacing" else f"SRx{shown:g}"

    def super_resolve_kwargs(self) -> dict[str, float]:
        return {self.kind: self.value}


def parse_values(text: str) -> list[float]:
    """'2, 3, 5' (commas, semicolons or spaces) -> [2.0, 3.0, 5.0]."""
    parts = [p for p in re.split(r"[,;\s]+", str(text).strip()) if p]
    if not parts:
        raise CycleINRError("type a target: one number, or several separated by commas (2, 3, 5)")
    values = []
    for part in parts:
        try:
            value = float(part)
        except ValueError:
            raise CycleINRError(f"{part!r} is not a number; type e.g. 2.5 or 2, 3, 5") from None
        if not math.isfinite(value):
            raise CycleINRError(f"{part!r} is not a finite number")
        values.append(value)
    return values


def plan_targets(n_in: int, spacing_in: float, kind: str, text: str) -> list[Target]:
    """The output grids for the typed values, in the order typed, one per distinct number of slices."""
    if kind not in TARGET_KINDS:
        raise CycleINRError(f"unknown target kind {kind!r}; choose {' or '.join(TARGET_KINDS)}")
    targets: list[Target] = []
    for value in parse_values(text):
        grid = z_grid(n_in, spacing_in, **{kind: value})
        if all(t.n_out != grid.n_out for t in targets):
            targets.append(Target(kind, value, n_in, grid.n_out, grid.spacing_out))
    return targets


@dataclass
class Job:
    volume: Volume
    input_name: str
    targets: Sequence[Target]
    method: str = "cycleinr"
    checkpoint: str | None = None
    """A .safetensors file or bundled weights' name ('mixed'), or None for the bundled weights for `profile`."""
    device: str = "auto"
    reference: Volume | None = None
    reference_name: str = "reference"
    consistency: bool = False
    """Add a consistency layer: the input minus the output averaged back (a residual to look at)."""
    adapt_minutes: float | None = None
    """Fine-tune the model on this scan's in-plane data for this many minutes first (None: no adaptation)."""
    adapt_steps: int | None = None
    """Fine-tune for a fixed number of steps instead (reproducible, and fast in tests); wins over minutes."""
    ensemble: bool = False
    """Average with a second pass on the scan reversed along z (cycleinr only; twice the time)."""
    exact_consistency: bool = False
    """Correct each output so that, degraded back onto the acquired slices, it reproduces the input."""
    consistency_smoothing: float = 0.0
    """Correct only the residual's in-plane low frequencies (Gaussian sigma, pixels); 0: all of it."""
    profile: str = "average"
    """Slice profile of the scan (average, gaussian, skip): picks the bundled weights; used by adaptation and
    exact consistency."""
    thickness: float = 1.0
    """Slice thickness over slice spacing of the scan (1: contiguous slices)."""

    @property
    def adapting(self) -> bool:
        return self.adapt_minutes is not None or self.adapt_steps is not None


def job_total(job: Job) -> int:
    """Progress units of the whole job: one phase per target, plus one for the adaptation if asked."""
    return STEPS_PER_TARGET * len(job.targets) + (ADAPT_STEPS if job.adapting else 0)


@dataclass(frozen=True)
class Update:
    """Progress of the whole job: done out of total steps, and a short status line."""

    done: int
    total: int
    message: str = ""
    device: str | None = None


@dataclass
class Output:
    name: str
    role: str
    """'super_resolved', 'error' or 'consistency'."""
    volume: Volume
    protect: tuple[str, ...] = ()
    """Input files a writer must never overwrite with this layer."""


@dataclass
class Outcome:
    outputs: list[Output] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    """Warnings for the user (CPU fallback, a reference that does not fit the output grid)."""
    device: str | None = None
    cancelled: bool = False
    error: str | None = None


def execute(job: Job, report: Callable[[Update], Any], cancelled: Callable[[], bool]) -> Outcome:
    """Run the job; every failure becomes `Outcome.error` (a message), a cancel `Outcome.cancelled`."""
    outcome = Outcome()
    try:
        _execute(job, report, cancelled, outcome)
    except Cancelled:
        return Outcome(cancelled=True, device=outcome.device)
    except CycleINRError as error:
        return Outcome(error=str(error), device=outcome.device, notices=outcome.notices)
    except Exception as error:  # a bug, or a library failing: one line for the user, the traceback in the log
        if out_of_memory(error):
            on_gpu = str(outcome.device or "").startswith("cuda")
            message = GPU_OUT_OF_MEMORY if on_gpu else OUT_OF_MEMORY
            return Outcome(error=message, device=outcome.device, notices=outcome.notices)
        log.exception("super-resolution failed")
        detail = " ".join(str(error).split())[:300] or "no details"
        return Outcome(
            error=f"super-resolution failed ({type(error).__name__}: {detail})", device=outcome.device
        )
    return outcome


def _execute(
    job: Job, report: Callable[[Update], Any], cancelled: Callable[[], bool], outcome: Outcome
) -> None:
    from napari_cycleinr import __version__
    from napari_cycleinr.model.infer import resolve_device, super_resolve

    def check() -> None:
        if cancelled():
            raise Cancelled("cancelled")

    if job.method not in METHODS:
        raise CycleINRError(f"unknown method {job.method!r}; choose one of {', '.join(METHODS)}")
    adapt_options = _check_scan_options(job)  # bad values fail before any work
    total = job_total(job)
    first = ADAPT_STEPS if job.adapting else 0  # progress units before the first target
    device = resolve_device(job.device)
    outcome.device = str(device)
    if job.device == "auto" and device.type == "cpu":
        outcome.notices.append(CPU_FALLBACK_NOTICE)
    report(Update(0, total, f"running on {device}", device=str(device)))
    model = None
    if job.method == "cycleinr":
        from napari_cycleinr.model.checkpoint import load_model

        report(Update(0, total, "loading the model", device=str(device)))
        model = load_model(job.checkpoint or None, device, profile=job.profile)
    check()
    adaptation = None
    if adapt_options is not None:
        model, adaptation, device = _adapt(job, adapt_options, model, device, report, cancelled, outcome)
        outcome.notices.append(adaptation.summary())
        check()
    source = job.volume.metadata.get("source_path")
    protect_input = (str(source),) if source else ()
    matched_reference = False
    for index, target in enumerate(job.targets):
        base = first + index * STEPS_PER_TARGET

        def progress(done: int, blocks: int, base: int = base, target: Target = target) -> None:
            step = base + (STEPS_PER_TARGET * done) // max(blocks, 1)
            report(Update(step, total, f"{target.suffix}: block {done} of {blocks}"))

        report(Update(base, total, f"{target.suffix}: {target.n_in} -> {target.n_out} slices"))
        kwargs = dict(
            method=job.method, progress=progress, cancel=cancelled, ensemble=job.ensemble,
            **target.super_resolve_kwargs(),
        )
        status = f"{target.suffix}: GPU out of memory, going on on the CPU"
        result, model, device = _with_cpu_fallback(
            lambda m, d: super_resolve(job.volume, model=m, device=d, **kwargs),  # noqa: B023 - called here
            job, model, device, outcome, lambda: report(Update(base, total, status, device="cpu")),  # noqa: B023
        )
        check()
        if job.exact_consistency:
            from napari_cycleinr.model.consistency import make_consistent

            report(Update(base + STEPS_PER_TARGET, total, f"{target.suffix}: exact data consistency"))
            corrected = make_consistent(
                result, job.volume, job.profile, job.thickness, cancel=cancelled, smoothing=job.consistency_smoothing
            )
            outcome.notices.append(f"{target.suffix}: {corrected.summary()}")
            check()
        sr_name = f"{job.input_name}_{target.suffix}"
        record = dict(result.metadata.get("super_resolution") or {})
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
        if job.method == "cycleinr" and model is not None:
            record["model_info"] = dict(getattr(model, "info", {}) or {})
        if adaptation is not None:
            record["adaptation"] = {
                **adaptation.as_dict(),
                "budget": {"steps": job.adapt_steps} if job.adapt_steps else {"minutes": job.adapt_minutes},
                "profile": job.profile,
                "thickness_over_spacing": job.thickness,
            }
        metadata = {**result.metadata, "super_resolution": record}
        if "nifti_header" in metadata:
            description = f"napari-cycleinr {__version__} {target.suffix} {job.method}"
            metadata["nifti_header"] = {**metadata["nifti_header"], "descrip": description}
        sr = result.replace(metadata=metadata)
        outcome.outputs.append(Output(sr_name, "super_resolved", sr, protect_input))
        if job.reference is not None and job.reference.shape == sr.shape:
            from napari_cycleinr.model.evaluate import reference_scores, scores_summary

            matched_reference = True
            report(Update(base + STEPS_PER_TARGET, total, f"{target.suffix}: comparing with {job.reference_name}"))
            error = _error_output(job, sr, protect_input)
            scores = reference_scores(job.reference.data, sr.data, record.get("modality"))
            error.volume.metadata["error_image"].update(scores)
            outcome.outputs.append(error)
            outcome.notices.append(f"{target.suffix} against {job.reference_name}: {scores_summary(scores)}")
            offset = _grid_offset(job.reference, sr)
            if offset is not None and offset > 0.5 * min(sr.spacing):
                outcome.notices.append(
                    f"{job.reference_name} and {sr_name} have the same shape but their grids are "
                    f"{offset:.2g} mm apart: the error image compares voxels at different positions"
                )
        if job.consistency:
            report(Update(base + STEPS_PER_TARGET, total, f"{target.suffix}: consistency"))
            outcome.outputs.append(_consistency_output(job, sr, f"{sr_name}_consistency", protect_input))
        check()
    if job.reference is not None and not matched_reference:
        outcome.notices.append(_reference_mismatch(job))
    report(Update(total, total, "done"))


def _check_scan_options(job: Job) -> Any:
    """The AdaptOptions of the job (None when it does not adapt), after checking the method, slice profile
    and thickness that adaptation and exact data consistency use."""
    if job.adapting and job.method != "cycleinr":
        raise CycleINRError(ADAPT_NEEDS_CYCLEINR.format(method=job.method))
    if not (job.adapting or job.exact_consistency):
        return None
    from napari_cycleinr.model.consistency import check_smoothing
    from napari_cycleinr.model.degrade import check_slice_profile

    check_slice_profile(job.profile, job.thickness)
    check_smoothing(job.consistency_smoothing)
    if not job.adapting:
        return None
    from napari_cycleinr.model.adapt import AdaptOptions

    return AdaptOptions(
        minutes=job.adapt_minutes if job.adapt_minutes is not None else 3.0,
        steps=job.adapt_steps,
        profile=job.profile,
        thickness=job.thickness,
    )


def _adapt(
    job: Job,
    options: Any,
    model: Any,
    device: Any,
    report: Callable[[Update], Any],
    cancelled: Callable[[], bool],
    outcome: Outcome,
) -> tuple[Any, Any, Any]:
    """Fine-tune the model on the scan: (adapted model, AdaptReport, device it ended on).

    One adaptation serves every target of the job, learnt at the largest target factor: the pairs already
    spread +-15 % around it, the largest factor is the hardest gap to fill (so where adapting helps most), and
    a model that has learnt to bridge it still interpolates the smaller gaps. Adapting once per target would
    multiply the wait by the number of targets.
    """
    from napari_cycleinr.model.adapt import adapt_model

    largest = max(job.targets, key=lambda t: t.n_out)
    total = job_total(job)
    timed = options.steps is None

    def progress(done: int, of: int) -> None:  # seconds of the budget, or steps
        if done >= of:
            status = "adapting to this scan: checking it on held-out in-plane pairs"
        elif timed:
            status = f"adapting to this scan: {done} s of {of}"
        else:
            status = f"adapting to this scan: step {done} of {of}"
        report(Update(min(ADAPT_STEPS * done // max(of, 1), ADAPT_STEPS), total, status))

    budget = f"{options.steps} steps" if not timed else f"{options.minutes:g} min"
    report(Update(0, total, f"adapting to this scan ({budget}, at {largest.suffix}): preparing"))
    kwargs = dict(options=options, progress=progress, cancel=cancelled, **largest.super_resolve_kwargs())
    status = "adapting to this scan: GPU out of memory, going on on the CPU"
    (adapted, adaptation), _, device = _with_cpu_fallback(
        lambda m, d: adapt_model(job.volume, model=m, device=d, **kwargs),
        job, model, device, outcome, lambda: report(Update(0, total, status, device="cpu")),
    )
    report(Update(ADAPT_STEPS, total, adaptation.summary()))
    return adapted, adaptation, device


def _with_cpu_fallback(
    work: Callable[[Any, Any], Any],
    job: Job,
    model: Any,
    device: Any,
    outcome: Outcome,
    announce: Callable[[], Any],
) -> tuple[Any, Any, Any]:
    """(work(model, device), model, device); if the GPU of device auto runs out of memory, once more on the
    CPU, and the model and device returned are the CPU ones, for the rest of the job."""
    try:
        return work(model, device), model, device
    except Exception as error:
        if not (out_of_memory(error) and device.type == "cuda" and job.device == "auto"):
            raise  # a GPU the user chose explicitly is explained, not silently replaced
    # retried here, once the exception and the GPU tensors its frames hold are gone
    import torch

    torch.cuda.empty_cache()
    device = torch.device("cpu")
    outcome.device = str(device)
    outcome.notices.append(GPU_MEMORY_FALLBACK_NOTICE)
    model = model.to(device) if model is not None else None
    announce()
    return work(model, device), model, device


def out_of_memory(error: BaseException) -> bool:
    """Whether an exception means memory ran out: Python's MemoryError, torch's CUDA OutOfMemoryError, or
    the RuntimeError torch's CPU allocator raises."""
    if isinstance(error, MemoryError):
        return True
    torch = sys.modules.get("torch")
    candidates = (
        getattr(torch, "OutOfMemoryError", None),
        getattr(getattr(torch, "cuda", None), "OutOfMemoryError", None),
    )
    oom_types = tuple(t for t in candidates if isinstance(t, type))
    if oom_types and isinstance(error, oom_types):
        return True
    text = str(error).lower()
    return isinstance(error, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


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
    if "nifti_header" in metadata:
        metadata["nifti_header"] = {
            **metadata["nifti_header"],
            "descrip": "napari-cycleinr error (output - reference)",
        }
    protect = protect_input + ((str(reference_source),) if reference_source else ())
    return Output(f"{job.input_name}_error", "error", sr.replace(data=error, metadata=metadata), protect)


def _consistency_output(job: Job, sr: Volume, name: str, protect_input: tuple[str, ...]) -> Output:
    """Input minus the output degraded back onto the acquired slices (slab average), on the input's grid."""
    from napari_cycleinr.model.degrade import degrade

    n_in, n_out = job.volume.shape[0], sr.shape[0]
    degraded = degrade(np.asarray(sr.data, dtype=np.float32), n_out / n_in, "average", n_thick=n_in)
    difference = np.subtract(job.volume.data, degraded, dtype=np.float32)
    metadata = {
        **job.volume.metadata,
        "dtype": "float32",
        "consistency": {
            "definition": "input minus the output averaged back onto the input slices",
            "output_layer": name.removesuffix("_consistency"),
            "super_resolution": sr.metadata.get("super_resolution"),
        },
    }
    if "nifti_header" in metadata:
        metadata["nifti_header"] = {
            **metadata["nifti_header"],
            "descrip": "napari-cycleinr consistency (input - degraded output)",
        }
    return Output(name, "consistency", job.volume.replace(data=difference, metadata=metadata), protect_input)


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


def _reference_mismatch(job: Job) -> str:
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


def run_in_thread(job: Job, cancel: threading.Event) -> Generator[Update, None, Outcome]:
    """Run `execute` in a helper thread and yield its progress updates; return its Outcome.

    napari's thread worker drives this generator: each yielded Update reaches the GUI thread as a signal.
    If the generator is closed early (worker aborted), the job is cancelled and waited for.
    """
    updates: queue.SimpleQueue[Update | None] = queue.SimpleQueue()
    box: dict[str, Outcome] = {}

    def work() -> None:
        try:
            box["outcome"] = execute(job, updates.put, cancel.is_set)
        finally:
            updates.put(None)

    thread = threading.Thread(target=work, name="cycleinr-super-resolution", daemon=True)
    thread.start()
    try:
        while (update := updates.get()) is not None:
            yield update
    except GeneratorExit:
        cancel.set()
        raise
    finally:
        thread.join()
    return box.get("outcome") or Outcome(error="super-resolution stopped unexpectedly")
