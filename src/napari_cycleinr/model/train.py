"""The training loop: random pairs, L1 + lambda * cycle loss, periodic validation, safe checkpoints, resume.

Randomness is drawn from a generator seeded by (seed, step), so a resumed run sees exactly the batches the
uninterrupted run would have seen, without storing any RNG state.

Started by torchrun with several processes, each rank draws its own crops from (seed, step, rank) (the
random-crop sampler's equivalent of a DistributedSampler), the model is wrapped in DistributedDataParallel
so that gradients are averaged across ranks, and only rank 0 validates, logs and writes checkpoints; the
effective batch is batch x world size.
"""

from __future__ import annotations

import gc
import math
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from napari_cycleinr.errors import CycleINRError
from napari_cycleinr.intensity import intensity_map
from napari_cycleinr.io.guard import make_folder, with_sidecar
from napari_cycleinr.jsonsafe import loads_bounded, write_json
from napari_cycleinr.model import distributed
from napari_cycleinr.model.averaging import WeightAverage
from napari_cycleinr.model.checkpoint import load_model, load_resume_state, save_model, save_resume_state
from napari_cycleinr.model.cycleinr import CycleINR
from napari_cycleinr.model.grow import grow_model
from napari_cycleinr.model.losses import (
    banding_loss,
    cycle_loss,
    even_change_loss,
    fit_loss,
    noise_consistency_loss,
    z_gradient_loss,
)
from napari_cycleinr.model.metrics import slab_pair_classes
from napari_cycleinr.model.pair_model import PairPredictor, pair_queries, predict_pair
from napari_cycleinr.model.pairs import Pair, TrainingVolume, sample_pair
from napari_cycleinr.model.schedule import cosine_decay, make_optimizer, optimizer_step
from napari_cycleinr.model.train_config import TrainConfig
from napari_cycleinr.runtime.blocks import CancelCheck, raise_if_cancelled
from napari_cycleinr.runtime.devices import cpu_computes_bfloat16, resolve_device

VALIDATION_SCALES = (2.0, 2.5, 4.0, 5.0)
VALIDATION_SEED = 12345
Log = Callable[[str], None]


def load_training_volume(path: str, inplane_only: bool = False) -> TrainingVolume:
    from napari_cycleinr.io import read_volume

    volume = read_volume(path)
    return TrainingVolume(intensity_map(volume.data, volume.metadata.get("modality")).normalise(volume.data), inplane_only)


def split_validation(config: TrainConfig) -> tuple[list[TrainingVolume], TrainingVolume]:
    """Train and validation volumes; with no validation scan named, hold back the last training scan (or,
    with only one, its last 30 % of slices), so validation never sees training voxels."""
    if not config.train_data:
        raise CycleINRError("no training data: give --data PATHS or [data] train in the config")
    train = [load_training_volume(p) for p in config.train_data]
    train += [load_training_volume(p, inplane_only=True) for p in config.inplane_data]
    if config.validation_data:
        return train, load_training_volume(config.validation_data)
    if len(config.train_data) > 1:
        return train[:-1] + train[len(config.train_data) :], train[len(config.train_data) - 1]
    whole = train[0].data
    cut = int(round(whole.shape[0] * 0.7))
    train[0] = TrainingVolume(whole[:cut])
    return train, TrainingVolume(whole[cut:])


def validation_pairs(volume: TrainingVolume, config: TrainConfig) -> list[Pair]:
    """A fixed set of pairs (slab average unless configured) at the scales users ask for most, drawn once per run."""
    rng = np.random.default_rng(VALIDATION_SEED)
    z, h, w = volume.data.shape
    size = min(96, h, w)
    kind = config.validation_degradation
    pairs = []
    for ratio in VALIDATION_SCALES:
        n_thick = min(config.thick_slices, int(z / ratio))
        if n_thick >= 2:
            pairs.append(sample_pair([volume], rng, 2, n_thick, size, (ratio, ratio), (kind,), ratio=ratio, kind=kind))
    if not pairs:
        raise CycleINRError(f"the validation volume ({z} slices) is too short for validation at x2")
    return pairs


def validate(model: CycleINR, pairs: list[Pair], device: torch.device) -> dict[str, float]:
    """Mean L1 and PSNR (normalised units, peak 1 = the whole 4096 HU CT range) over the fixed pairs."""
    model.eval()
    l1, psnr = [], []
    with torch.inference_mode():
        for pair in pairs:
            target = pair.thin.to(device).flatten(2).transpose(1, 2)  # (B, P, L)
            prediction = predict_pair(model, pair, device).float()
            l1.append(float((prediction - target).abs().mean()))
            mse = float(((prediction.clamp(0, 1) - target.clamp(0, 1)) ** 2).mean())
            psnr.append(10 * math.log10(1.0 / max(mse, 1e-12)))
    model.train()
    return {"l1": float(np.mean(l1)), "psnr": float(np.mean(psnr))}


def learning_rate(config: TrainConfig, step: int) -> float:
    """Linear warm-up, then cosine decay to 5 %: a function of the step, so resuming needs no scheduler."""
    if step < config.warmup_steps:
        return config.learning_rate * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return config.learning_rate * cosine_decay(progress)


def training_step(
    model: CycleINR,
    pair: Pair,
    config: TrainConfig,
    device: torch.device,
    rng: np.random.Generator,
    predictor: torch.nn.Module | None = None,
):
    """One loss; `predictor` (the DDP-wrapped PairPredictor) replaces the plain model under torchrun."""
    columns, window = query_columns(pair.thin.shape[2], pair.thin.shape[3], config, rng)
    columns = columns.to(device)
    positions, cell = pair_queries(pair, device)
    encoder_dtype = torch.bfloat16 if device.type == "cpu" and config.amp and cpu_computes_bfloat16() else None
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda" and config.amp):
        predict = predictor or PairPredictor(model)
        prediction = predict(pair.thick.to(device), positions, cell, columns, encoder_dtype).float()  # (B, cols, L)
    target = pair.thin.to(device).flatten(2)[:, :, columns].transpose(1, 2)
    thick = pair.thick.to(device).flatten(2)[:, :, columns].transpose(1, 2)  # (B, cols, n_thick)
    fit = fit_loss(prediction, target, config.fit)
    cycle = cycle_loss(prediction, thick, pair.degradation.to(device))
    loss = fit + config.cycle_weight * cycle
    if config.gradient_weight > 0:
        loss = loss + config.gradient_weight * z_gradient_loss(prediction, target)
    if config.banding_weight > 0:
        loss = loss + config.banding_weight * _banding_term(prediction, target, pair, config.banding_classes)
    if config.noise_weight > 0 and window is not None and min(window) >= 3:  # a Laplacian needs 3 x 3
        as_window = lambda t: t.reshape(t.shape[0], *window, t.shape[-1])  # noqa: E731
        loss = loss + config.noise_weight * noise_consistency_loss(as_window(prediction), as_window(target))
    return loss, fit, cycle


def _banding_term(prediction: torch.Tensor, target: torch.Tensor, pair: Pair, classes: str) -> torch.Tensor:
    """The loss on the lines at the slab period; 0 where a ratio under 2 leaves no pair inside a slab."""
    where = slab_pair_classes(target.shape[-1], pair.ratio, pair.thick.shape[1])
    where = torch.from_numpy(where).to(prediction.device)
    border = where == 0  # class 0: across a slab border (metrics.slab_border_pairs)
    if not border.any() or border.all():
        return prediction.new_zeros(())
    if classes == "phase":
        return even_change_loss(prediction, target, where)
    loss = banding_loss(prediction, target, border)
    # "ends": class 3, beyond the outermost acquired centres, must change as much as everywhere else
    if classes == "ends" and (ends := where == 3).any():
        loss = loss + banding_loss(prediction, target, ends)
    return loss


def query_columns(
    height: int, width: int, config: TrainConfig, rng: np.random.Generator
) -> tuple[torch.Tensor, tuple[int, int] | None]:
    """Flat indices of the pixels decoded in a step: a random sample, or, when the noise-consistency loss is
    on, a random window of about query_pixels (squarish; as wide as needed where the crop is short), returned
    with its (rows, columns) so the prediction can be reshaped into planes."""
    pixels = height * width
    if config.noise_weight <= 0:
        return torch.from_numpy(rng.choice(pixels, size=min(pixels, config.query_pixels), replace=False)), None
    rows = max(1, min(height, math.isqrt(config.query_pixels)))
    cols = max(1, min(width, config.query_pixels // rows))
    y0, x0 = int(rng.integers(0, height - rows + 1)), int(rng.integers(0, width - cols + 1))
    flat = torch.arange(y0, y0 + rows)[:, None] * width + torch.arange(x0, x0 + cols)[None, :]
    return flat.flatten(), (rows, cols)


def _progress_line(step: int, total: int, loss: float, fit: float, cycle: float, rate: float, eta: float) -> str:
    filled = int(20 * step / total)
    bar = "#" * filled + "." * (20 - filled)
    return (
        f"[{bar}] {step}/{total} loss {loss:.4f} (fit {fit:.4f}, cycle {cycle:.4f}) "
        f"{rate:.2f} steps/s, eta {eta / 60:.1f} min"
    )


def train(
    config: TrainConfig,
    out_dir: str | Path,
    resume: bool = False,
    device: str = "auto",
    log: Log = print,
    cancel: CancelCheck | None = None,
) -> dict[str, float]:
    """Train, writing last.safetensors, best.safetensors, state.pt and history.json into out_dir.

    Under torchrun (WORLD_SIZE > 1) this is one rank of a DistributedDataParallel job; see the module notes.
    """
    torch_device = resolve_device(device)
    rank = distributed.from_environment(torch_device)
    try:
        return _train(config, Path(out_dir), resume, rank.device if rank else torch_device, log, cancel, rank)
    finally:
        if rank is not None:
            # the DistributedDataParallel wrapper sits in reference cycles: free it while its process group
            # is still alive, or its C++ threads may abort the interpreter at exit
            gc.collect()
            rank.close()


def _train(
    config: TrainConfig,
    out: Path,
    resume: bool,
    torch_device: torch.device,
    log: Log,
    cancel: CancelCheck | None,
    rank: distributed.Rank | None,
) -> dict[str, float]:
    """The run behind train(). Longer than most functions here on purpose: setup, resume, the step loop and
    its validation and checkpoints share one state (model, optimizer, weight average, history, best score,
    rank), which split across functions would travel through every call."""
    main = rank is None or rank.is_main
    if not main:
        log = _silent
    inputs = training_inputs(config)
    make_folder(out, protected=inputs)  # never a scan, a model being read, a file or the package
    _set_threads(config, rank, torch_device)
    torch.manual_seed(config.seed)
    train_volumes, validation_volume = split_validation(config)
    validation = validation_pairs(validation_volume, config) if main else []
    model, config = _initial_model(config, torch_device)
    optimizer = make_optimizer(model, config)
    start, best, history = 0, -math.inf, []
    state_path = out / "state.pt"
    if resume:
        if not state_path.is_file():
            raise CycleINRError(f"nothing to resume in {out}: state.pt is missing")
        state = load_resume_state(state_path, torch_device)
        model = load_model(out / "last.safetensors", torch_device).train()
        optimizer = make_optimizer(model, config)
        optimizer.load_state_dict(state["optimizer"])
        start, best = int(state["step"]), float(state["best_psnr"])
        history = _read_history(out / "history.json")
        log(f"resuming at step {start}")
    average = WeightAverage(model, config.average_decay) if config.average_decay > 0 else None
    if resume and average is not None:
        if "average" not in state:
            raise CycleINRError(f"cannot resume {out} with average_decay: it was trained without averaging")
        average.load_state_dict(state["average"])

    def kept() -> CycleINR:
        """What is validated and saved as best: the weight average when there is one."""
        return average.model if average is not None else model

    if main:
        write_json(out / "train_config.json", config.to_dict(), protected=inputs)
    info = {"train_config": config.to_dict()}
    if rank is not None:
        info["world_size"] = rank.world_size
    if start == 0 and main:
        first = validate(kept(), validation, torch_device)
        history.append({"step": 0, **first})
        log(f"validation before training: PSNR {first['psnr']:.2f} dB, L1 {first['l1']:.5f}")
    model.train()
    predictor = _distributed_predictor(model, rank, torch_device, config, log)
    started, shown = time.perf_counter(), start
    is_tty = sys.stderr.isatty() and main
    for step in range(start, config.steps):
        raise_if_cancelled(cancel)
        rng = np.random.default_rng([config.seed, step] if rank is None else [config.seed, step, rank.rank])
        pair = sample_pair(
            train_volumes, rng, config.batch, config.thick_slices, config.crop,
            (config.scale_min, config.scale_max), config.degradations, config.inplane_fraction,
        )
        loss, fit, cycle = optimizer_step(
            model, optimizer, learning_rate(config, step),
            lambda: training_step(model, pair, config, torch_device, rng, predictor),  # noqa: B023 - called now
        )
        if average is not None:
            average.update(model)
        done = step + 1
        if main and (done % config.log_every == 0 or done == config.steps):
            rate = (done - shown) / max(time.perf_counter() - started, 1e-9)
            line = _progress_line(done, config.steps, loss.item(), fit.item(), cycle.item(), rate, (config.steps - done) / max(rate, 1e-9))
            if is_tty:
                print("\r" + line, end="", file=sys.stderr, flush=True)
            else:
                log(line)
        if main and (done % config.validation_every == 0 or done == config.steps):
            scores = validate(kept(), validation, torch_device)
            history.append({"step": done, **scores, "loss": loss.item()})
            if is_tty:
                print(file=sys.stderr)
            log(f"step {done}: validation PSNR {scores['psnr']:.2f} dB, L1 {scores['l1']:.5f}")
            if scores["psnr"] > best:
                best = scores["psnr"]
                best_info = {**info, "step": done, "validation": scores}
                save_model(kept(), out / "best.safetensors", best_info, protected=inputs)
        if done % config.checkpoint_every == 0 or done == config.steps:
            if main:
                save_model(model, out / "last.safetensors", {**info, "step": done}, protected=inputs)
                state = {"step": done, "best_psnr": best, "optimizer": optimizer.state_dict()}
                if average is not None:
                    state["average"] = average.state_dict()
                save_resume_state(state, state_path, protected=inputs)
                write_json(out / "history.json", history, protected=inputs)
            if rank is not None:  # no rank runs ahead of a checkpoint it may have to resume from
                rank.barrier()
    return _summary(history, best, config, model, rank, log)


def _set_threads(config: TrainConfig, rank: distributed.Rank | None, device: torch.device) -> None:
    if config.threads:
        torch.set_num_threads(config.threads)
    elif rank is not None and device.type == "cpu":
        torch.set_num_threads(distributed.threads_per_process(rank.local_world_size))


def _initial_model(config: TrainConfig, device: torch.device) -> tuple[CycleINR, TrainConfig]:
    """The model training starts from, and the config with the architecture actually trained."""
    if config.init and config.grow:  # fine-tuning a larger model that starts as the checkpoint's function
        return grow_model(load_model(config.init, device), config.model).train(), config
    if config.init:  # fine-tuning: the checkpoint's architecture is the one trained
        model = load_model(config.init, device).train()
        return model, replace(config, model=model.config)
    return CycleINR(config.model).to(device), config


def _distributed_predictor(
    model: CycleINR, rank: distributed.Rank | None, device: torch.device, config: TrainConfig, log: Log
) -> torch.nn.Module | None:
    """Under torchrun, the DDP-wrapped PairPredictor: it broadcasts rank 0's weights, then averages gradients
    in every backward. None for a single process."""
    if rank is None:
        return None
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [device.index] if device.type == "cuda" else None
    predictor = DistributedDataParallel(PairPredictor(model), device_ids=device_ids)
    log(f"distributed training on {rank.world_size} processes ({device.type}); effective batch "
        f"{config.batch * rank.world_size}")
    return predictor


def _summary(
    history: list[dict], best: float, config: TrainConfig, model: CycleINR, rank: distributed.Rank | None, log: Log
) -> dict:
    """What train returns: the last validation and the best PSNR; under torchrun, every rank's agreement."""
    final = history[-1] if history else {}
    summary = {"steps": config.steps, "best_psnr": best, **{k: v for k, v in final.items() if k != "step"}}
    if rank is not None:
        summary = rank.broadcast(summary)
        digests = rank.gather(distributed.weights_digest(model))
        summary.update(world_size=rank.world_size, rank=rank.rank, weights_digest=digests[rank.rank])
        summary["ranks_agree"] = len(set(digests)) == 1
        if not summary["ranks_agree"]:
            log("warning: the ranks' weights differ after training; the checkpoint holds rank 0's")
    return summary


def _silent(line: str) -> None:
    pass


def training_inputs(config: TrainConfig) -> list[str]:
    """Every file a run reads (scans, the initial checkpoint and its sidecar): none is ever written over."""
    scans = [*config.train_data, *config.inplane_data, config.validation_data]
    return [str(p) for p in scans if p] + with_sidecar(config.init)


def _read_history(path: Path) -> list[dict]:
    """The validation history a resumed run continues (bounded: a damaged file is one message)."""
    if not path.is_file():
        return []
    history = loads_bounded(path.read_text(encoding="utf-8", errors="replace"), what=str(path))
    if not isinstance(history, list):
        raise CycleINRError(f"{path} is not a training history (a JSON list); delete it to start it over")
    return history

