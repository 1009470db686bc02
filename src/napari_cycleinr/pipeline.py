"""The job, written once: carry out a `Request` on a volume.

device -> weights -> (adapt to the scan) -> for each output grid: super-resolve -> (exact data consistency)
-> (noise texture) -> (score against the reference) -> (residual image). Progress arrives as `Step`s, cancel
is checked between and inside the steps, and when the GPU of the device `auto` runs out of memory the job goes
on on the CPU.
The CLI, the folder runner, the widget and the benchmark call `run`; they turn their input into a Request
and the `Result` into text, files or layers. This is the one module outside `model/` that calls
super_resolve, adapt_model and make_consistent.

Importing it does not import torch: the model package is imported when a job runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from napari_cycleinr.errors import CycleINRError
from napari_cycleinr.options import DEFAULT_PROFILE, FALLBACK_WEIGHTS, MAX_THICKNESS, MR_PROFILE_WEIGHTS
from napari_cycleinr.request import Request, Target
from napari_cycleinr.runtime.blocks import CancelCheck, raise_if_cancelled
from napari_cycleinr.runtime.memory import out_of_memory
from napari_cycleinr.volume import Volume

if TYPE_CHECKING:
    import torch

    from napari_cycleinr.model.adapt import AdaptReport
    from napari_cycleinr.model.consistency import ConsistencyReport
    from napari_cycleinr.slice_profile import SliceProfile
    from napari_cycleinr.texture import NoiseSpectrum, TextureReport


@dataclass(frozen=True)
class Step:
    """Something the job started or finished, for a shell to show. Phases, in order: device, load, adapt
    (`target`: the grid it adapts at), adapting (done of total steps or seconds), adapted (detail: the
    AdaptReport), then per target (index `target`):
    target, blocks (done of total), consistency, consistent (detail: the ConsistencyReport), texture, textured
    (detail: the TextureReport), compare, scored (detail: the TargetResult), residual; fallback (device cpu)
    whenever the GPU ran out of memory."""

    phase: str
    done: int = 0
    total: int = 0
    target: int | None = None
    device: str | None = None
    detail: Any = None


Progress = Callable[[Step], Any]


@dataclass
class TargetResult:
    target: Target
    volume: Volume
    """The super-resolved volume; its metadata["super_resolution"] records how it was made."""
    consistency: ConsistencyReport | None = None
    texture: TextureReport | None = None
    scores: dict | None = None
    """Against the reference (model.evaluate.reference_scores), when the reference is on this grid."""
    residual: np.ndarray | None = None
    """Input minus the output averaged back onto the input slices (float32), when the request asks."""


@dataclass
class Result:
    outputs: list[TargetResult] = field(default_factory=list)
    device: str = ""
    """Where the job ended (cpu after a fallback)."""
    fallback: bool = False
    """The GPU ran out of memory and the job went on on the CPU."""
    weights: str | None = None
    """The weights used (their file, "... adapted to this scan"); None for an interpolation."""
    model_info: dict = field(default_factory=dict)
    adaptation: AdaptReport | None = None
    slice_profile: SliceProfile | None = None
    """The scan's slice profile and where it came from (settle_profile); None when no step needs it."""
    profile: str | None = None
    """The profile the job used for its weights, consistency and adaptation (after settle_profile)."""


@dataclass
class Engine:
    """What outlives one volume: the device and the weights on it, so that a folder loads them once."""

    device: torch.device
    model: Any = None
    auto: bool = True
    """The device was chosen automatically: only then may an out-of-memory GPU be swapped for the CPU."""
    weights_key: tuple = ()
    """Which weights the model is (weights_key(request)), so a volume that needs others gets them."""


def prepare(request: Request, progress: Progress | None = None) -> Engine:
    """Resolve the device and load the weights the request names (bundled ones for its slice profile)."""
    from napari_cycleinr.runtime import devices

    device = devices.resolve_device(request.device)
    _tell(progress, Step("device", device=str(device)))
    return _load_weights(request, Engine(device, auto=request.device == "auto"), progress)


def weights_key(request: Request) -> tuple:
    return (request.weights, request.slice_profile) if request.uses_model else ()


def _load_weights(request: Request, engine: Engine, progress: Progress | None) -> Engine:
    """The engine with the weights the request names, on the engine's device (a GPU given up stays so)."""
    engine.weights_key = weights_key(request)
    if request.uses_model:
        from napari_cycleinr.model.checkpoint import load_model

        _tell(progress, Step("load", device=str(engine.device)))
        engine.model = load_model(request.weights or None, engine.device, profile=request.slice_profile)
    return engine


def settle_profile(
    request: Request, volume: Volume, *, ask_model: bool = False
) -> tuple[Request, SliceProfile | None]:
    """The request with the scan's slice profile settled: the user's choice, else the scan's DICOM record,
    else an estimate from the image (slice_profile.py), settled by the model where asked (`ask_model`). Only a
    confident estimate is acted on (a Gaussian profile that both image cues name, or slab average or gaps
    as the model's cycle residual says); any other is reported, while the weights become the mixed-profile
    ones (never far from the best, where a wrong specialist can fall below tricubic) and consistency and
    adaptation keep the default slab average (docs/method.md, "Which weights: the slice profile, found").
    An MR gets weights trained with MR instead:
    `mr` where the profile is not known, the profile's MR-aware weights where it is (better on held-out MR
    than the CT-trained ones: docs/results.md, "MR in training: longer, and the specialists").
    ask_model: where the image cannot tell slab average from gaps and the bundled weights answer, let the
    fallback weights' cycle residual settle it (model/cycle_cue.py; loads torch, so the widget's label, which
    shows the finding before the run, does not)."""
    from napari_cycleinr.slice_profile import SliceProfile, find_profile

    if request.profile is not None and request.profile_source != "default":
        chosen = SliceProfile(request.profile, request.thickness, "user")
        return _for_an_mr(request, volume, request.profile), chosen
    if not (request.uses_model or request.consistency or request.adapt is not None):
        return request, None
    modality = _modality(request, volume)
    found = find_profile(volume.data, volume.spacing, modality, volume.metadata)
    if ask_model and model_settles(request, volume, found):
        found = _ask_model(found, request, volume, modality)
    if not found.confident:
        changes: dict[str, Any] = {"profile": DEFAULT_PROFILE, "profile_source": "default"}
        if request.weights is None and request.uses_model:
            changes["weights"] = FALLBACK_WEIGHTS[modality]
        if request.weights is not None and request.uses_model:
            found = replace(found, fallback=f"the weights chosen ({Path(request.weights).name})")
        elif modality == "MR":
            found = replace(found, fallback="the weights trained with MR")
        return replace(request, **changes), found
    changes = {"profile": found.kind, "profile_source": found.source}
    if found.kind != "skip" and 0 < found.thickness <= MAX_THICKNESS:
        changes["thickness"] = found.thickness
    if modality == "MR" and request.weights is None and request.uses_model:
        changes["weights"] = MR_PROFILE_WEIGHTS[found.kind]
    return replace(request, **changes), found


def model_settles(request: Request, volume: Volume, found: SliceProfile) -> bool:
    """Whether a run asks the fallback weights to settle this finding: the bundled model answers and the cue
    applies (slice_profile.cycle_cue_applies). The widget's line says so before the run."""
    from napari_cycleinr.slice_profile import cycle_cue_applies

    return request.uses_model and request.weights is None and cycle_cue_applies(found, volume.shape[0])


def _ask_model(found: SliceProfile, request: Request, volume: Volume, modality: str) -> SliceProfile:
    """The estimate settled by the cycle residuals of the weights that would answer otherwise, at the factor
    of the first output grid (slice_profile.with_cycle_cue)."""
    from napari_cycleinr.model.checkpoint import load_model
    from napari_cycleinr.model.cycle_cue import cycle_cues
    from napari_cycleinr.slice_profile import with_cycle_cue

    fallback = load_model(FALLBACK_WEIGHTS[modality])
    cues = cycle_cues(volume.data, request.targets[0].factor, modality, fallback)
    return with_cycle_cue(found, cues, volume.shape[0], modality)


def _modality(request: Request, volume: Volume) -> str:
    """CT or MR: as the request says, else the file, else guessed from the intensities."""
    from napari_cycleinr.intensity import guess_modality

    modality = (request.modality or volume.metadata.get("modality") or guess_modality(volume.data)).upper()
    return "CT" if modality == "CT" else "MR"


def _for_an_mr(request: Request, volume: Volume, profile: str) -> Request:
    """The request with the profile's MR-aware weights when it runs the bundled model on an MR."""
    if request.weights is not None or not request.uses_model or _modality(request, volume) != "MR":
        return request
    return replace(request, weights=MR_PROFILE_WEIGHTS[profile])


def run(
    request: Request,
    volume: Volume,
    progress: Progress | None = None,
    cancel: CancelCheck | None = None,
    *,
    reference: Volume | None = None,
    engine: Engine | None = None,
    out: np.ndarray | None = None,
) -> Result:
    """Carry out the request on the volume; see the module notes. `reference`: a thin scan to score every
    output on its grid against; `engine`: the device and weights of an earlier prepare (default: prepared
    here); `out`: a preallocated (or memory-mapped) array for a single target's output."""
    if not request.targets:
        raise CycleINRError("the request has no output grid: give a factor or a spacing")
    if out is not None and len(request.targets) > 1:
        raise CycleINRError("a preallocated output array holds one target's output")
    # settled once, so that the weights, the profile, the texture and the intensities agree on it
    request = replace(request, modality=_modality(request, volume))
    request, found = settle_profile(request, volume, ask_model=True)
    noise = _acquired_noise(request, volume)  # before any work: a scan with nothing to measure fails now
    if engine is None:
        engine = prepare(request, progress)
    elif engine.weights_key != weights_key(request):  # a folder's scan that needs other weights
        engine = _load_weights(request, replace(engine), progress)
    result = Result(device=str(engine.device), slice_profile=found, profile=request.slice_profile)
    raise_if_cancelled(cancel)
    current = engine  # the adapted weights serve this volume only; a GPU given up stays given up
    if request.adapt is not None:
        current = replace(engine, model=_adapt(request, volume, engine, result, progress, cancel))
    for index, target in enumerate(request.targets):
        _tell(progress, Step("target", target=index))
        sr = _super_resolve(request, volume, target, index, current, result, progress, cancel, out)
        if found is not None:
            sr.metadata["super_resolution"]["slice_profile"] = found.to_record()
        raise_if_cancelled(cancel)
        done = _finish_target(request, volume, reference, TargetResult(target, sr), index, progress, cancel, noise)
        result.outputs.append(done)
    if current.model is not None:
        result.weights = getattr(current.model, "source", "in-memory model")
        result.model_info = dict(getattr(current.model, "info", {}) or {})
    return result


def _tell(progress: Progress | None, step: Step) -> None:
    if progress is not None:
        progress(step)


def _with_cpu_fallback(work: Callable[[], Any], engine: Engine, result: Result, announce: Step, progress) -> Any:
    """work(); if the GPU of the device auto runs out of memory, once more on the CPU, which the engine
    keeps for the rest of the job (a GPU the user chose explicitly is explained, not silently replaced)."""
    try:
        return work()
    except Exception as error:
        if not (out_of_memory(error) and engine.device.type == "cuda" and engine.auto):
            raise
    # retried here, once the exception and the GPU tensors its frames hold are gone
    import torch

    torch.cuda.empty_cache()
    engine.device = torch.device("cpu")
    engine.model = engine.model.to(engine.device) if engine.model is not None else None
    result.device, result.fallback = "cpu", True
    _tell(progress, announce)
    return work()


def _adapt(request: Request, volume: Volume, engine: Engine, result: Result, progress, cancel) -> Any:
    """Fine-tune the model on the scan, once for every target, at the largest target's grid: the pairs spread
    +-15 % around it, the largest factor is the hardest gap to fill, and a model that has learnt to bridge it
    still interpolates the smaller gaps; adapting once per target would multiply the wait."""
    from napari_cycleinr.model.adapt import AdaptOptions, adapt_model

    settings = request.adapt
    assert settings is not None
    largest = request.largest
    chosen = {} if settings.noise_weight is None else {"noise_weight": settings.noise_weight}
    options = AdaptOptions(
        minutes=settings.minutes, steps=settings.steps, profile=request.slice_profile,
        thickness=request.thickness, seed=settings.seed, threads=request.threads, **chosen,
    )
    _tell(progress, Step("adapt", target=request.targets.index(largest)))

    def step(done: int, of: int) -> None:
        _tell(progress, Step("adapting", done, of))

    def work():
        return adapt_model(
            volume, grid=largest.grid, model=engine.model, options=options, device=engine.device,
            modality=request.modality, progress=step, cancel=cancel,
        )

    model, report = _with_cpu_fallback(work, engine, result, Step("fallback", device="cpu"), progress)
    result.adaptation = report
    _tell(progress, Step("adapted", detail=report))
    raise_if_cancelled(cancel)
    if settings.save_model:
        from napari_cycleinr.model.checkpoint import save_model

        inputs = [request.source, request.reference, request.weights, request.output]
        save_model(model, settings.save_model, getattr(model, "info", {}), protected=inputs)
    return model


def _super_resolve(
    request: Request, volume: Volume, target: Target, index: int, engine: Engine, result: Result, progress, cancel, out
) -> Volume:
    from napari_cycleinr.model import infer

    def blocks(done: int, total: int) -> None:
        _tell(progress, Step("blocks", done, total, target=index))

    def work() -> Volume:
        return infer.super_resolve(
            volume, grid=target.grid, method=request.method, model=engine.model, device=engine.device,
            modality=request.modality, keep_dtype=request.keep_dtype, options=_options(request, engine.device),
            progress=blocks, cancel=cancel, out=out, ensemble=request.ensemble,
        )

    return _with_cpu_fallback(work, engine, result, Step("fallback", target=index, device="cpu"), progress)


def _options(request: Request, device: torch.device) -> Any:
    """Inference settings for the device with the request's threads and precision; None (the device's own)
    when the request leaves both at their defaults."""
    if not request.threads and request.precision == "auto":
        return None
    from napari_cycleinr.runtime.tuning import InferenceOptions

    return replace(InferenceOptions.for_device(device), threads=request.threads, amp=request.precision == "auto")


def _acquired_noise(request: Request, volume: Volume) -> tuple[NoiseSpectrum, float] | None:
    """The input's noise spectrum and body threshold, when the request adds texture (texture.py)."""
    if not request.texture:
        return None
    from napari_cycleinr.texture import body_level, measure_noise

    threshold = body_level(volume.data, _modality(request, volume))
    noise = measure_noise(volume.data, threshold)
    if noise is None:
        raise CycleINRError(
            "the noise texture is measured on flat tissue (squares of 16-32 pixels inside the body), and this "
            "scan has too little: run without the noise texture"
        )
    return noise, threshold


def _finish_target(
    request: Request, volume: Volume, reference: Volume | None, done: TargetResult, index: int, progress, cancel,
    noise: tuple[NoiseSpectrum, float] | None = None,
) -> TargetResult:
    """The steps after super-resolution: exact data consistency, noise texture, scores, residual image."""
    sr = done.volume
    if request.consistency:
        from napari_cycleinr.model.consistency import make_consistent

        _tell(progress, Step("consistency", target=index))
        done.consistency = make_consistent(
            sr, volume, request.slice_profile, request.thickness, cancel=cancel,
            smoothing=request.consistency_smoothing,
        )
        _tell(progress, Step("consistent", target=index, detail=done.consistency))
        raise_if_cancelled(cancel)
    if noise is not None:
        from napari_cycleinr.model.consistency import output_degradation
        from napari_cycleinr.texture import add_texture

        _tell(progress, Step("texture", target=index))
        # drawn where the acquired slices cannot see it: the output still degrades back onto the input
        unseen = output_degradation(volume.shape[0], sr.shape[0], request.slice_profile, request.thickness)
        done.texture = add_texture(
            sr.data, noise[0], strength=request.texture, threshold=noise[1],
            cancel=lambda: raise_if_cancelled(cancel), unseen=unseen.numpy(),
        )
        sr.metadata["super_resolution"]["noise_texture"] = done.texture.to_record()
        _tell(progress, Step("textured", target=index, detail=done.texture))
    if reference is not None and reference.metadata.get("source_path"):  # writers refuse it (_layers.py)
        sr.metadata["reference_path"] = str(reference.metadata["source_path"])
    if reference is not None and reference.shape == sr.shape:
        from napari_cycleinr.model.evaluate import reference_scores

        _tell(progress, Step("compare", target=index))
        modality = sr.metadata["super_resolution"].get("modality")
        done.scores = reference_scores(reference.data, sr.data, modality, factor=done.target.factor)
        _tell(progress, Step("scored", target=index, detail=done))
    if request.residual_image:
        from napari_cycleinr.model.degrade import degrade

        _tell(progress, Step("residual", target=index))
        n_in, n_out = volume.shape[0], sr.shape[0]
        degraded = degrade(np.asarray(sr.data, dtype=np.float32), n_out / n_in, "average", n_thick=n_in)
        done.residual = np.subtract(volume.data, degraded, dtype=np.float32)
    raise_if_cancelled(cancel)
    return done
