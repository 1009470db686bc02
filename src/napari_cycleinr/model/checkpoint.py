"""Checkpoints are data, never code: safetensors weights with the config and a format version in the header.

A pickle (.pt, .pth, .ckpt) is never unpickled as a model. The optimiser state for resuming training is the
one torch file we read, and only with weights_only=True.
"""

from __future__ import annotations

import json
import os
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from napari_cycleinr.errors import CycleINRError
from napari_cycleinr.model.config import ModelConfig
from napari_cycleinr.model.cycleinr import CycleINR

FORMAT = "napari-cycleinr"
FORMAT_VERSION = 1
DEFAULT_MODEL_NAME = "default.safetensors"


def default_model_path() -> Path:
    return Path(str(resources.files("napari_cycleinr") / "weights" / DEFAULT_MODEL_NAME))


def save_model(model: CycleINR, path: str | Path, info: dict[str, Any] | None = None) -> Path:
    """Write weights + config atomically, with a readable JSON copy of the header beside them."""
    path = Path(path)
    header = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "model_config": json.dumps(model.config.to_dict()),
        "info": json.dumps(info or {}),
    }
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    os.close(fd)
    try:
        save_file(state, tmp, metadata=header)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    sidecar = {key: json.loads(value) if key in ("model_config", "info") else value for key, value in header.items()}
    path.with_suffix(".json").write_text(json.dumps(sidecar, indent=2) + "\n")
    return path


def read_header(path: str | Path) -> dict[str, Any]:
    """The checkpoint's header, checked: ours, a version we read, a config we can build."""
    path = Path(path)
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
        config = ModelConfig.from_dict(json.loads(metadata["model_config"]))
        info = json.loads(metadata.get("info", "{}"))
    except (KeyError, TypeError, json.JSONDecodeError) as error:
        raise CycleINRError(f"{path.name} has a damaged model config ({error})") from None
    return {"format_version": int(version), "config": config, "info": info}


def load_model(path: str | Path | None = None, device: str | torch.device = "cpu") -> CycleINR:
    """Build the model from its header and load its weights strictly; the default model when path is None."""
    path = Path(path) if path is not None else default_model_path()
    header = read_header(path)
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
    model.info = header["info"]  # type: ignore[attr-defined]
    model.source = str(path)  # type: ignore[attr-defined]
    return model.to(device).eval()
