"""The widget's job, without Qt or napari: a `Job` (what the dock's controls say) turned into a `Request`,
carried out by the pipeline, and its Result turned into outputs for layers (`_outputs`).

`execute` never raises: it returns an `Outcome` holding the outputs or one message for the user. It reports
progress as `Update`s over the whole job; `run_in_thread` turns that into a generator of updates for napari's
thread worker. torch and the model package are imported only when a job runs, so opening the widget stays
cheap.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from napari_cycleinr._outputs import Output, outputs_of, reference_mismatch
from napari_cycleinr.errors import Cancelled, CycleINRError
from napari_cycleinr.options import (
    ADAPT_MINUTES, DEFAULT_PROFILE, DEVICES, METHODS, PROFILES, TARGET_KINDS, thickness_over_spacing,
)
from napari_cycleinr.request import ADAPT_NEEDS_CYCLEINR, AdaptSettings, Request, Target, parse_values, plan_targets
from napari_cycleinr.runtime.memory import out_of_memory
from napari_cycleinr.volume import Volume

__all__ = [
    "ADAPT_NEEDS_CYCLEINR", "ADAPT_STEPS", "CPU_FALLBACK_NOTICE", "DEVICES", "GPU_MEMORY_FALLBACK_NOTICE",
    "GPU_OUT_OF_MEMORY", "METHODS", "OUT_OF_MEMORY", "PROFILES", "SAME_AS_SPACING", "STEPS_PER_TARGET",
    "TARGET_KINDS", "Job", "Outcome", "Output", "Target", "Update", "execute", "job_request", "job_total",
    "out_of_memory", "parse_values", "plan_targets", "run_in_thread", "thickness_over_spacing",
]

log = logging.getLogger(__name__)

STEPS_PER_TARGET = 1000
ADAPT_STEPS = 1000
"""Progress units of the adaptation phase, when a job adapts the model to the scan before the targets."""
SAME_AS_SPACING = "same as spacing"
"""What the widget's slice thickness shows at 0: contiguous slices."""
CPU_FALLBACK_NOTICE = "no CUDA GPU found: running on the CPU (slower)"
GPU_MEMORY_FALLBACK_NOTICE = "the GPU ran out of memory: this run went on on the CPU (slower)"
GPU_OUT_OF_MEMORY = (
    "the GPU ran out of memory for this volume and target; choose the device cpu (slower) or auto, "
    "a smaller factor, or close other programs using the GPU"
)
OUT_OF_MEMORY = "not enough memory for this volume and target; try a smaller factor or close other programs"


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
    texture: float = 0.0
    """Every new slice gets its own draw of the scan's noise, this many times the acquired level (texture.py)."""
    profile: str | None = "average"
    """Slice profile of the scan (average, gaussian, skip): picks the bundled weights; used by adaptation and
    exact consistency. None: found from the scan by the pipeline (the DICOM record, else the mixed-profile
    weights and the slab average; pipeline.settle_profile)."""
    thickness: float = 1.0
    """Slice thickness over slice spacing of the scan (1: contiguous slices)."""

    @property
    def adapting(self) -> bool:
        return self.adapt_minutes is not None or self.adapt_steps is not None


def job_request(job: Job) -> Request:
    """The pipeline's Request for a job; bad values raise CycleINRError before any work."""
    adapt = None
    if job.adapting:
        minutes = job.adapt_minutes if job.adapt_minutes is not None else ADAPT_MINUTES
        adapt = AdaptSettings(minutes=minutes, steps=job.adapt_steps)
    return Request(
        targets=tuple(job.targets), method=job.method, weights=job.checkpoint or None,
        profile=job.profile or DEFAULT_PROFILE, profile_source="default" if job.profile is None else "user",
        thickness=job.thickness, adapt=adapt, ensemble=job.ensemble,
        consistency=job.exact_consistency, consistency_smoothing=job.consistency_smoothing, texture=job.texture,
        residual_image=job.consistency, reference=job.reference_name if job.reference is not None else None,
        device=job.device,
    )


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
class Outcome:
    outputs: list[Output] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    """Warnings for the user (CPU fallback, a reference that does not fit the output grid)."""
    device: str | None = None
    cancelled: bool = False
    error: str | None = None
    slice_profile: str | None = None
    """The profile the run settled on, and why (the widget's line shows it after the run)."""


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
    from napari_cycleinr import pipeline

    request = job_request(job)  # bad values fail before any work
    result = pipeline.run(request, job.volume, _Reporter(job, report, outcome), cancelled, reference=job.reference)
    outcome.outputs.extend(outputs_of(_as_run(job, result), result))
    if result.slice_profile is not None:
        outcome.slice_profile = result.slice_profile.describe()
        outcome.notices.append(outcome.slice_profile)
    if job.reference is not None and not any(done.scores is not None for done in result.outputs):
        outcome.notices.append(reference_mismatch(job))
    total = job_total(job)
    report(Update(total, total, "done"))


def _as_run(job: Job, result: Any) -> Job:
    """The job with the profile the pipeline settled on, for the outputs' record."""
    if job.profile is not None or result.slice_profile is None:
        return job
    return replace(job, profile=result.profile)


class _Reporter:
    """The pipeline's Steps as the widget's Updates over the whole job, and its notices, as they happen."""

    def __init__(self, job: Job, report: Callable[[Update], Any], outcome: Outcome) -> None:
        self.job, self.report, self.outcome = job, report, outcome
        self.total = job_total(job)
        self.first = ADAPT_STEPS if job.adapting else 0  # progress units before the first target

    def __call__(self, step: Any) -> None:
        getattr(self, "_" + step.phase.replace("-", "_"))(step)

    def _say(self, done: int, message: str, device: str | None = None) -> None:
        self.report(Update(done, self.total, message, device=device))

    def _base(self, index: int) -> int:
        return self.first + index * STEPS_PER_TARGET

    def _suffix(self, index: int) -> str:
        return self.job.targets[index].suffix

    def _device(self, step: Any) -> None:
        self.outcome.device = step.device
        if self.job.device == "auto" and step.device == "cpu":
            self.outcome.notices.append(CPU_FALLBACK_NOTICE)
        self._say(0, f"running on {step.device}", step.device)

    def _load(self, step: Any) -> None:
        self._say(0, "loading the model", step.device)

    def _adapt(self, step: Any) -> None:
        steps = self.job.adapt_steps
        budget = f"{steps} steps" if steps is not None else f"{self.job.adapt_minutes:g} min"
        self._say(0, f"adapting to this scan ({budget}, at {self._suffix(step.target)}): preparing")

    def _adapting(self, step: Any) -> None:  # seconds of the budget, or steps
        done, of = step.done, step.total
        if done >= of:
            status = "adapting to this scan: checking it on held-out in-plane pairs"
        elif self.job.adapt_steps is None:
            status = f"adapting to this scan: {done} s of {of}"
        else:
            status = f"adapting to this scan: step {done} of {of}"
        self._say(min(ADAPT_STEPS * done // max(of, 1), ADAPT_STEPS), status)

    def _adapted(self, step: Any) -> None:
        self._say(ADAPT_STEPS, step.detail.summary())
        self.outcome.notices.append(step.detail.summary())

    def _fallback(self, step: Any) -> None:
        self.outcome.device = "cpu"
        self.outcome.notices.append(GPU_MEMORY_FALLBACK_NOTICE)
        if step.target is None:
            self._say(0, "adapting to this scan: GPU out of memory, going on on the CPU", "cpu")
        else:
            status = f"{self._suffix(step.target)}: GPU out of memory, going on on the CPU"
            self._say(self._base(step.target), status, "cpu")

    def _target(self, step: Any) -> None:
        target = self.job.targets[step.target]
        self._say(self._base(step.target), f"{target.suffix}: {target.n_in} -> {target.n_out} slices")

    def _blocks(self, step: Any) -> None:
        done = self._base(step.target) + (STEPS_PER_TARGET * step.done) // max(step.total, 1)
        self._say(done, f"{self._suffix(step.target)}: block {step.done} of {step.total}")

    def _after(self, step: Any, what: str) -> None:
        self._say(self._base(step.target) + STEPS_PER_TARGET, f"{self._suffix(step.target)}: {what}")

    def _consistency(self, step: Any) -> None:
        self._after(step, "exact data consistency")

    def _consistent(self, step: Any) -> None:
        self.outcome.notices.append(f"{self._suffix(step.target)}: {step.detail.summary()}")

    def _texture(self, step: Any) -> None:
        self._after(step, "noise texture")

    def _textured(self, step: Any) -> None:
        self.outcome.notices.append(f"{self._suffix(step.target)}: {step.detail.summary()}")

    def _compare(self, step: Any) -> None:
        self._after(step, f"comparing with {self.job.reference_name}")

    def _scored(self, step: Any) -> None:
        from napari_cycleinr._outputs import grid_offset_notice
        from napari_cycleinr.model.evaluate import scores_summary

        suffix, done = self._suffix(step.target), step.detail
        self.outcome.notices.append(f"{suffix} against {self.job.reference_name}: {scores_summary(done.scores)}")
        notice = grid_offset_notice(self.job, done.volume, f"{self.job.input_name}_{suffix}")
        if notice:
            self.outcome.notices.append(notice)

    def _residual(self, step: Any) -> None:
        self._after(step, "consistency")


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
