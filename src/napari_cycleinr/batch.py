"""A folder of scans in, a folder of super-resolved scans out: resumable, one bad file never stops the rest.

Every readable scan (.nii, .nii.gz, .tif, .tiff; hidden files skipped) in the input folder is super-resolved
into the output folder under the same name. Outputs that already exist are skipped, so a run that crashed or
was stopped is resumed by starting it again; each output is written atomically (a hidden temporary renamed
into place), so an existing output is always complete. Started by torchrun with several processes, each rank
takes every WORLD_SIZE-th file (and, on CUDA, the GPU of its LOCAL_RANK); at the end the ranks meet once
(a gloo barrier) to add up their results, so every rank exits only after all files are done and reports the
same outcome.

No Qt and no napari here; torch is imported only when a folder is processed.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from napari_cycleinr.errors import Cancelled, CycleINRError
from napari_cycleinr.io import is_supported
from napari_cycleinr.options import check_factor, check_spacing
from napari_cycleinr.request import Request

if TYPE_CHECKING:  # torch is imported only when a folder is processed
    from napari_cycleinr.model.consistency import ConsistencyOptions

Log = Callable[[str], None]


@dataclass
class FileResult:
    source: Path
    target: Path
    status: str
    """'done', 'skipped' (the output existed) or 'failed'."""
    message: str = ""
    seconds: float = 0.0


@dataclass
class BatchReport:
    rank: int = 0
    world_size: int = 1
    results: list[FileResult] = field(default_factory=list)
    ignored: list[Path] = field(default_factory=list)
    """Files in the folder that are not scans this package reads (by suffix)."""
    everyone: list[dict[str, Any]] | None = None
    """Under torchrun: every rank's to_dict(), in rank order (None for a single process)."""

    def _files(self) -> list[dict[str, Any]]:
        if self.everyone is None:
            return self.to_dict()["files"]
        return [f for rank in self.everyone for f in rank["files"]]

    def count(self, status: str) -> int:
        """Files with this status, over all ranks."""
        return sum(1 for f in self._files() if f["status"] == status)

    @property
    def failed(self) -> list[dict[str, Any]]:
        """Failed files over all ranks."""
        return [f for f in self._files() if f["status"] == "failed"]

    def summary(self) -> str:
        where = f" by {self.world_size} processes" if self.world_size > 1 else ""
        line = (
            f"{self.count('done')} written, {self.count('skipped')} skipped (output exists), "
            f"{self.count('failed')} failed{where}"
        )
        return line + "".join(f"\n  failed: {Path(f['source']).name}: {f['message']}" for f in self.failed)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rank": self.rank,
            "world_size": self.world_size,
            "files": [
                {"source": str(r.source), "target": str(r.target), "status": r.status, "message": r.message,
                 "seconds": round(r.seconds, 3)}
                for r in self.results
            ],
        }


def find_scans(folder: Path) -> tuple[list[Path], list[Path]]:
    """(scans, ignored files) in a folder, sorted by name; hidden files (our temporaries too) are left out."""
    scans, ignored = [], []
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.is_file():
            continue
        (scans if is_supported(path) else ignored).append(path)
    return scans, ignored


def check_folders(input_dir: str | os.PathLike[str], output_dir: str | os.PathLike[str]) -> tuple[Path, Path]:
    source = Path(input_dir).expanduser()
    target = Path(output_dir).expanduser()
    if not source.is_dir():
        raise CycleINRError(f"{source} is not a folder")
    if is_supported(target):
        raise CycleINRError(f"for a folder of scans, -o names a folder, not a file like {target.name}")
    if target.exists() and not target.is_dir():
        raise CycleINRError(f"the output {target} exists and is not a folder")
    if target.exists() and target.resolve() == source.resolve():
        raise CycleINRError("the output folder is the input folder; choose another so no scan is overwritten")
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise CycleINRError(f"cannot create the output folder {target}: {error.strerror or error}") from None
    return source, target


def process_folder(
    input_dir: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    *,
    factor: float | None = None,
    spacing: float | None = None,
    method: str = "cycleinr",
    model: str | os.PathLike[str] | None = None,
    profile: str | None = None,
    device: str = "auto",
    modality: str | None = None,
    keep_dtype: bool = True,
    axis: str | None = None,
    overwrite: bool = False,
    threads: int = 0,
    consistency: ConsistencyOptions | None = None,
    ensemble: bool = False,
    precision: str = "auto",
    texture: float = 0.0,
    rank: int | None = None,
    world_size: int | None = None,
    log: Log = print,
    cancel: Callable[[], bool] | None = None,
) -> BatchReport:
    """Super-resolve every scan of input_dir into output_dir; see the module notes. Errors about the whole run
    (bad folders, model, device, parameters) raise CycleINRError before any file is touched; errors about one
    file are recorded in the report and the run goes on.

    rank and world_size default to torchrun's RANK and WORLD_SIZE (and then the ranks pool their reports at
    the end); given explicitly, this process just does its share and meets no one. consistency adds the
    data-consistency step to each output; profile (the scans' slice profile) picks the bundled weights when
    model is None or `default`; ensemble runs each scan twice, the second time reversed along z,
    and writes the mean (super_resolve); texture gives every output slice its own draw of the scan's noise,
    this many times the acquired level (texture.py).
    """
    from napari_cycleinr import pipeline
    from napari_cycleinr.model.distributed import rank_and_world, shard

    source_dir, target_dir = check_folders(input_dir, output_dir)
    from_torchrun = rank is None or world_size is None
    if from_torchrun:
        rank, world_size = rank_and_world()
    kind, value = _target_kind(factor, spacing)  # a bad factor is one error for the run, not one per file
    request = _folder_request(method, model, profile, device, modality, keep_dtype, threads, consistency, ensemble)
    request = replace(request, precision=precision, texture=texture)
    if world_size > 1:
        request = _rank_placement(request, rank, int(os.environ.get("LOCAL_WORLD_SIZE", world_size)))
    engine = pipeline.prepare(request)

    scans, ignored = find_scans(source_dir)
    mine = shard(scans, rank, world_size)
    report = BatchReport(rank=rank, world_size=world_size, ignored=ignored)
    prefix = f"[rank {rank}] " if world_size > 1 else ""
    if not scans:
        log(f"{prefix}no scans (.nii, .nii.gz, .tif, .tiff) in {source_dir}")
    for number, path in enumerate(mine, start=1):
        head = f"{prefix}[{number}/{len(mine)}] {path.name}"
        output = target_dir / path.name
        done, said = _process_one(path, output, request, engine, (kind, value), axis, overwrite, cancel)
        report.results.append(done)
        log(head + said)
    if from_torchrun and world_size > 1:
        report.everyone = _gather(report.to_dict(), rank, world_size)
    return report


def _process_one(
    path: Path,
    output: Path,
    request: Request,
    engine: Any,
    asked: tuple[str, float],
    axis: str | None,
    overwrite: bool,
    cancel: Callable[[], bool] | None,
) -> tuple[FileResult, str]:
    """One scan: skipped if its output exists, else read, super-resolved on its own grid and written; a
    failure is recorded, not raised (a cancel is). Returns the result and the end of its log line."""
    from napari_cycleinr import pipeline
    from napari_cycleinr.io import read_volume, write_volume
    from napari_cycleinr.request import target

    if output.exists() and not overwrite:
        return FileResult(path, output, "skipped", "the output exists"), f": skipped, {output} exists"
    started = time.perf_counter()
    try:
        volume = read_volume(path, axis=axis)
        planned = request.with_targets([target(volume.shape[0], volume.spacing[0], *asked)])
        result = pipeline.run(planned, volume, cancel=cancel, engine=engine).outputs[0].volume
        write_volume(result, output, refuse=[path])
    except (Cancelled, KeyboardInterrupt):
        raise
    except Exception as error:  # noqa: BLE001 - one bad file must not stop the others
        message = _one_line(error)
        return FileResult(path, output, "failed", message, time.perf_counter() - started), f": FAILED: {message}"
    seconds = time.perf_counter() - started
    said = f" -> {output}: {volume.shape[0]} -> {result.shape[0]} slices in {seconds:.1f} s"
    return FileResult(path, output, "done", "", seconds), said


def _target_kind(factor: float | None, spacing: float | None) -> tuple[str, float]:
    """('factor', f) or ('spacing', s), checked before any file is read."""
    if (factor is None) == (spacing is None):
        raise CycleINRError("give either a factor or a target spacing")
    if factor is not None:
        return "factor", check_factor(factor)
    return "spacing", check_spacing(spacing)  # type: ignore[arg-type]


def _folder_request(
    method: str,
    model: str | os.PathLike[str] | None,
    profile: str | None,
    device: str,
    modality: str | None,
    keep_dtype: bool,
    threads: int,
    consistency: ConsistencyOptions | None,
    ensemble: bool,
) -> Request:
    """One Request for every scan of the folder (each gets its own output grid when it is read)."""
    if consistency is not None and profile is not None and profile != consistency.profile:
        raise CycleINRError(
            f"the slice profile {profile} and the consistency step's {consistency.profile} differ; "
            "a folder's scans have one slice profile"
        )
    chosen = profile or (consistency.profile if consistency is not None else None)
    return Request(
        method=method, weights=None if model is None else str(model), profile=chosen,
        profile_source="user" if chosen else "default", device=device, modality=modality, keep_dtype=keep_dtype,
        threads=threads, ensemble=ensemble, consistency=consistency is not None,
        thickness=consistency.thickness if consistency is not None else 1.0,
        consistency_smoothing=consistency.smoothing if consistency is not None else 0.0,
    )


def _rank_placement(request: Request, rank: int, local_world: int) -> Request:
    """Under torchrun, each rank's device: on CUDA the GPU of its LOCAL_RANK; on the CPU its share of the
    cores (unless threads were given)."""
    import torch

    from napari_cycleinr.model.distributed import threads_per_process
    from napari_cycleinr.runtime.devices import resolve_device

    if resolve_device(request.device).type != "cuda":
        return replace(request, threads=request.threads or threads_per_process(local_world))
    if torch.cuda.device_count() < local_world:
        raise CycleINRError(
            f"{local_world} processes on this node but {torch.cuda.device_count()} CUDA GPU(s); "
            "use --nproc_per_node at most the number of GPUs, or --device cpu"
        )
    return replace(request, device=f"cuda:{int(os.environ.get('LOCAL_RANK', rank))}")


def _gather(mine: dict[str, Any], rank: int, world_size: int) -> list[dict[str, Any]]:
    """Every rank's report on every rank, over a CPU (gloo) group; also the one barrier of the run."""
    import torch.distributed as dist

    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        out: list[Any] = [None] * world_size
        dist.all_gather_object(out, mine)
        return out
    finally:
        if owns:
            dist.destroy_process_group()


def _one_line(error: BaseException) -> str:
    if isinstance(error, CycleINRError):
        text = str(error)
    else:
        text = f"{type(error).__name__}: {error}"
    return " ".join(text.split()) or type(error).__name__
