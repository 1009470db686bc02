"""Checkpoints are data, never code: safetensors weights with the config and a format version in the header.

A pickle (.pt, .pth, .ckpt) is never unpickled as a model. The optimiser state for resuming training is the
one torch file we read, and only with weights_only=True.
"""

from __future__ import annotations

import json
import os
import pickle
import warnings
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from napari_cycleinr.errors import CycleINRError
from napari_cycleinr.io.guard import write_guarded
from napari_cycleinr.jsonsafe import loads_bounded, strict_json
from napari_cycleinr.model.config import ModelConfig
from napari_cycleinr.model.cycleinr import CycleINR

FORMAT = "napari-cycleinr"
FORMAT_VERSION = 1
BUNDLED_MODELS = {
    "mixed": "mixed.safetensors",
    "average": "average.safetensors",
    "gaussian": "gaussian.safetensors",
    "skip": "skip.safetensors",
    "mr": "mr.safetensors",
    "average_mr": "average_mr.safetensors",
    "gaussian_mr": "gaussian_mr.safetensors",
    "skip_mr": "skip_mr.safetensors",
}
"""Weights shipped in the package, by the name `--model` and load_model accept. `mixed` is trained on every
slice profile (slab average, Gaussian, skipped slices); `average`, `gaussian` and `skip` are it fine-tuned on
one profile each (docs/model.md); `mr` is it fine-tuned with an MR among the training scans, what an MR of
unknown profile gets; `<profile>_mr` are the profile's weights plus `mr` - `mixed`, what an MR of known profile
gets (pipeline.settle_profile)."""
PROFILE_MODELS = {"average": "average", "gaussian": "gaussian", "skip": "skip"}
"""The bundled weights for each slice profile: the default model is the one for the scan's profile."""
DEFAULT_PROFILE = "average"
"""A thick slice integrates its whole thickness (thick CT reconstructions, 2D MRI without gaps)."""
DEFAULT_MODEL = "default"
"""The name (and None) that means: the bundled weights for the slice profile."""
PLAUSIBLE_LIMITS = {
    "channels": 4096,
    "blocks": 256,
    "neighbours": 64,
    "heads": 256,
    "decoder_width": 8192,
    "decoder_depth": 256,
    "position_frequencies": 64,
}
"""Far beyond any model this package trains; a header beyond them is tampered with, and building (or running)
such a model would take hours or terabytes before its weights could be compared."""


def bundled_model_path(name: str) -> Path:
    """The file of a bundled model (see BUNDLED_MODELS)."""
    return Path(str(resources.files("napari_cycleinr") / "weights" / BUNDLED_MODELS[name]))


def default_model_path(profile: str | None = None) -> Path:
    """The file of the default model for a slice profile (None: DEFAULT_PROFILE)."""
    profile = profile or DEFAULT_PROFILE
    if profile not in PROFILE_MODELS:
        raise CycleINRError(f"unknown slice profile {profile!r}; choose one of {', '.join(PROFILE_MODELS)}")
    return bundled_model_path(PROFILE_MODELS[profile])


def resolve_model_path(path: str | Path | None, profile: str | None = None) -> Path:
    """A checkpoint file, or a bundled model's by name (an existing file of that name wins); None or
    `default`: the bundled weights for the slice profile."""
    if path is None or (str(path) == DEFAULT_MODEL and not Path(path).exists()):
        return default_model_path(profile)
    if str(path) in BUNDLED_MODELS and not Path(path).exists():
        return bundled_model_path(str(path))
    return Path(path)


def save_model(
    model: CycleINR, path: str | Path, info: dict[str, Any] | None = None, *, protected: Iterable[Any] = ()
) -> Path:
    """Write weights + config atomically, with a readable JSON copy of the header beside them; both through
    the output guard, so neither lands on an input (`protected`: the run's scans, models) or the package."""
    path = Path(path)
    protected = list(protected)
    header = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "model_config": strict_json(model.config.to_dict(), indent=None).strip(),
        "info": strict_json(info or {}, indent=None).strip(),  # undefined scores as null, never NaN
    }
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    parsed = ("model_config", "info")
    sidecar = {key: json.loads(value) if key in parsed else value for key, value in header.items()}
    text = strict_json(sidecar)
    write_guarded(path, lambda tmp: _save_readable(state, tmp, header), protected=protected)
    write_guarded(path.with_suffix(".json"), lambda tmp: tmp.write_text(text), protected=protected)
    return path


def save_resume_state(state: dict[str, Any], path: str | Path, *, protected: Iterable[Any] = ()) -> Path:
    """The optimiser state for `train --resume` (tensors and numbers only), guarded and atomic."""
    return write_guarded(path, lambda tmp: torch.save(state, tmp), protected=protected)


def load_resume_state(path: str | Path, device: str | torch.device = "cpu") -> dict[str, Any]:
    """What save_resume_state wrote, read with weights_only=True (a pickle that would run code is refused),
    every failure one message naming the file."""
    path = Path(path)
    if not path.is_file():
        raise CycleINRError(f"nothing to resume: {path} is missing")
    advice = "delete it to start over, or train into a new --out folder"
    try:
        with warnings.catch_warnings():  # torch's notes on the pickle protocol: the outcome is said below
            warnings.simplefilter("ignore", UserWarning)
            state = torch.load(path, map_location=device, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, TypeError, AttributeError) as error:
        first = " ".join(str(error).split())[:160]
        reason = f"{path.name} is not a resume state this package wrote ({first}); {advice}"
        raise CycleINRError(reason) from None
    if not isinstance(state, dict) or not {"step", "best_psnr", "optimizer"} <= set(state):
        raise CycleINRError(f"{path.name} is not a resume state this package wrote (keys missing); {advice}")
    return state


def _save_readable(state: dict[str, torch.Tensor], tmp: Path, header: dict[str, str]) -> None:
    """safetensors creates its file 0600; a model is meant to be shared, so give it the usual umask mode."""
    save_file(state, str(tmp), metadata=header)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)


def read_header(path: str | Path) -> dict[str, Any]:
    """The checkpoint's header, checked: ours, a version we read, a config we can build."""
    path = Path(path)
    if path.is_dir():
        raise CycleINRError(f"{path} is a folder, not a checkpoint file (.safetensors)")
    if not path.is_file():
        raise CycleINRError(f"checkpoint not found: {path}")
    if path.suffix.lower() != ".safetensors":
        raise CycleINRError(
            f"{path.name} is not a napari-cycleinr checkpoint: only .safetensors files are loaded "
            "(pickled .pt/.pth files can run code and are refused)"
        )
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError, json.JSONDecodeError) as error:
        raise CycleINRError(f"{path.name} is not a readable safetensors checkpoint ({error})") from None
    if metadata.get("format") != FORMAT:
        raise CycleINRError(f"{path.name} is a safetensors file but not a napari-cycleinr checkpoint")
    version = metadata.get("format_version", "?")
    if version != str(FORMAT_VERSION):
        raise CycleINRError(
            f"{path.name} has checkpoint format version {version}; this napari-cycleinr reads version {FORMAT_VERSION}"
        )
    try:
        values = loads_bounded(metadata["model_config"], what="its model_config field")
        if not isinstance(values, dict):
            raise TypeError(f"a JSON {type(values).__name__} instead of an object")
        config = ModelConfig.from_dict(values)
        info = loads_bounded(metadata.get("info", "{}"), what="its info field")
        for option, limit in PLAUSIBLE_LIMITS.items():
            if getattr(config, option) > limit:
                raise CycleINRError(f"{option} = {getattr(config, option)} is implausible (at most {limit})")
    except CycleINRError as error:  # a config this code cannot build, or JSON too deep: name the file
        reason = str(error).removeprefix("model config: ")
        damage = "a damaged" if reason.startswith("its ") else "an invalid"
        raise CycleINRError(f"{path.name} has {damage} model config ({reason})") from None
    except (KeyError, TypeError, ValueError) as error:  # json.JSONDecodeError is a ValueError
        raise CycleINRError(f"{path.name} has a damaged model config ({error})") from None
    return {"format_version": int(version), "config": config, "info": info}


def load_model(
    path: str | Path | None = None, device: str | torch.device = "cpu", profile: str | None = None
) -> CycleINR:
    """Build the model from its header and load its weights strictly: a checkpoint file, a bundled model's
    name (BUNDLED_MODELS), or, for None or `default`, the bundled weights for the slice profile."""
    path = resolve_model_path(path, profile)
    header = read_header(path)
    _check_tensor_shapes(path, header["config"])  # before building: a lying config could ask for terabytes
    model = CycleINR(header["config"])
    try:
        state: dict[str, torch.Tensor] = {}
        with safe_open(str(path), framework="pt") as handle:
            for name in handle.keys():
                state[name] = handle.get_tensor(name)
        model.load_state_dict(state, strict=True)
    except (SafetensorError, RuntimeError, OSError) as error:
        reason = str(error).splitlines()[0]
        raise CycleINRError(f"{path.name} does not fit the CycleINR architecture it declares ({reason})") from None
    non_finite = [n for n, t in state.items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if non_finite:
        damaged = non_finite[0]
        raise CycleINRError(f"{path.name} is damaged: its weights hold NaN or infinite values (in {damaged})")
    model.info = header["info"]  # type: ignore[attr-defined]
    model.source = str(path)  # type: ignore[attr-defined]
    return model.to(device).eval()


def _check_tensor_shapes(path: Path, config: ModelConfig) -> None:
    """Compare the tensors the config needs with those in the file, from the file's header and a model built
    on the meta device (no memory), so a checkpoint of another architecture or a tampered config is refused
    before anything is allocated."""
    try:
        with torch.device("meta"):
            skeleton = CycleINR(config)
        expected = {name: tuple(t.shape) for name, t in skeleton.state_dict().items()}
        with safe_open(str(path), framework="pt") as handle:
            found = {name: tuple(handle.get_slice(name).get_shape()) for name in handle.keys()}
            types = {name: str(handle.get_slice(name).get_dtype()) for name in handle.keys()}
    except (SafetensorError, OSError, ValueError) as error:
        raise CycleINRError(f"{path.name} is not a readable safetensors checkpoint ({error})") from None
    if found == expected:
        _check_tensor_types(path, types)
        return
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    wrong = [name for name in expected if name in found and found[name] != expected[name]]
    if wrong:
        name = wrong[0]
        reason = f"{name} has shape {list(found[name])}, the declared config needs {list(expected[name])}"
    elif missing:
        reason = f"{len(missing)} tensor(s) missing, e.g. {missing[0]}"
    else:
        reason = f"{len(unexpected)} unexpected tensor(s), e.g. {unexpected[0]}"
    raise CycleINRError(f"{path.name} does not fit the CycleINR architecture it declares ({reason})")


WEIGHT_TYPES = {"F16", "BF16", "F32", "F64"}
"""safetensors' names of the floating-point types weights may be stored in (loading converts to float32)."""


def _check_tensor_types(path: Path, types: dict[str, str]) -> None:
    """Every tensor of CycleINR is floating point: a bool or integer tensor of the right shape is a damaged
    or crafted file (loading would silently turn it into 0/1 weights)."""
    wrong = {name: kind for name, kind in types.items() if kind not in WEIGHT_TYPES}
    if wrong:
        name, kind = next(iter(wrong.items()))
        raise CycleINRError(
            f"{path.name} holds {len(wrong)} tensor(s) of type {kind} (e.g. {name}); CycleINR weights are "
            "floating point: the file is damaged or not a CycleINR checkpoint"
        )
