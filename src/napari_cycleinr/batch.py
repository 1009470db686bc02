"""A folder of scans in, a folder of super-resolved scans out: resumable, one bad file never stops the rest.

Every readable scan in the input folder is super-resolved into the output folder: NIfTI and TIFF files
(hidden files skipped) under the same name, every DICOM series of a study (folder_scans.py) as
series_NUMBER_DESCRIPTION.nii.gz (.tif, or a new series folder of that name, by output_format). Outputs that
already exist are skipped, so a run that crashed or was stopped is resumed by starting it again; each output
is written atomically (a hidden temporary renamed into place), so an existing output is always complete.
Started by torchrun with several processes, each rank takes every WORLD_SIZE-th scan (and, on CUDA, the GPU of
its LOCAL_RANK); at the end the ranks meet once (a gloo barrier) to add up their results, so every rank exits
only after all scans are done and reports the same outcome.

No Qt and no napari here; torch is imported only when a folder is processed.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from napari_cycleinr.errors import Cancelled, CycleINRError
from napari_cycleinr.folder_scans import InputScan, find_scans, holds_dicom, inside
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
    """'done', 'skipped' (the output existed), 'fine' (already at the target spacing) or 'failed'."""
    message: str = ""
    seconds: float = 0.0
    name: str = ""
    """What the log calls it: the file name, or the DICOM series."""


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
        fine = f"{self.count('fine')} already at the target spacing, " if self.count("fine") else ""
        line = (
            f"{self.count('done')} written, {self.count('skipped')} skipped (output exists), {fine}"
            f"{self.count('failed')} failed{where}"
        )
        return line + "".join(f"\n  failed: {f['name']}: {f['message']}" for f in self.failed)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rank": self.rank,
            "world_size": self.world_size,
            "files": [
                {
                    "source": str(r.source),
                    "name": r.name or r.source.name,
                    "target": str(r.target),
                    "status": r.status,
                    "message": r.message,
                    "seconds": round(r.seconds, 3),
                }
                for r in self.results
            ],
        }


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
    if inside(target, source) and holds_dicom(source):  # its series are looked for in every sub-folder
        raise CycleINRError(
            f"the output folder {target} is inside the DICOM folder {source}; choose one outside it"
        )
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
    output_format: str | None = None,
    found: tuple[list[InputScan], list[Path]] | None = None,
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
    this many times the acquired level (texture.py); output_format 'dicom' writes every output as a new DICOM
    series (a folder; a NIfTI or TIFF input's joins a new study, as write_dicom_series says), 'tiff' a DICOM
    series' as TIFF (default NIfTI; NIfTI and TIFF inputs keep their format). found: what
    find_scans(input_dir, output_format) returned, where the caller has already read the folder's headers.
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

    scans, ignored = found if found is not None else find_scans(source_dir, output_format)
    mine = shard(scans, rank, world_size)
    report = BatchReport(rank=rank, world_size=world_size, ignored=ignored)
    prefix = f"[rank {rank}] " if world_size > 1 else ""
    if not scans:
        log(f"{prefix}no scans (.nii, .nii.gz, .tif, .tiff or DICOM series) in {source_dir}")
    try:
        for number, scan in enumerate(mine, start=1):
            head = f"{prefix}[{number}/{len(mine)}] {scan.label}"
            output = target_dir / scan.output_name
            as_series = output_format == "dicom"
            done, said = _process_one(
                scan, output, request, engine, (kind, value), axis, overwrite, as_series, cancel
            )
            report.results.append(done)
            log(head + said)
    except (Cancelled, KeyboardInterrupt) as stop:
        written = sum(result.status == "done" for result in report.results)
        if written:  # the boundary's line must not say "nothing was written" over finished scans
            stop.kept = (
                f"{written} scan{'s were' if written > 1 else ' was'} finished and written to {target_dir}, the "
                "one in progress left nothing; run the same command again to go on (finished scans are skipped)"
            )
        raise
    if from_torchrun and world_size > 1:
        report.everyone = _gather(report.to_dict(), rank, world_size)
    return report


def _process_one(
    scan: InputScan,
    output: Path,
    request: Request,
    engine: Any,
    asked: tuple[str, float],
    axis: str | None,
    overwrite: bool,
    as_series: bool,
    cancel: Callable[[], bool] | None,
) -> tuple[FileResult, str]:
    """One scan: skipped if its output exists, else read, super-resolved on its own grid and written; a
    failure is recorded, not raised (a cancel is). Returns the result and the end of its log line."""
    from napari_cycleinr import pipeline
    from napari_cycleinr.request import target

    if output.exists() and not overwrite:
        return FileResult(scan.source, output, "skipped", "the output exists", name=scan.label), (
            f": skipped, {output} exists"
        )
    started = time.perf_counter()
    try:
        volume = scan.read(axis)
        if asked[0] == "spacing" and asked[1] >= volume.spacing[0]:  # nothing to do, not a failure
            said = f"its slices are {volume.spacing[0]:g} mm apart already, not coarser than {asked[1]:g} mm"
            return FileResult(scan.source, output, "fine", said, name=scan.label), f": left out, {said}"
        if as_series:  # a bad destination is reported before the work
            from napari_cycleinr.io.dicom import check_series_destination

            check_series_destination(volume, output, refuse=[scan.source], overwrite=overwrite)
        planned = request.with_targets([target(volume.shape[0], volume.spacing[0], *asked)])
        done = pipeline.run(planned, volume, cancel=cancel, engine=engine)
        result = done.outputs[0].volume
        _write(result, output, scan.source, as_series, overwrite)
    except (Cancelled, KeyboardInterrupt):
        raise
    except Exception as error:  # noqa: BLE001 - one bad file must not stop the others
        message = _one_line(error).removeprefix(f"{scan.source}: {scan.label}: ")  # the log line names it
        seconds = time.perf_counter() - started
        return FileResult(scan.source, output, "failed", message, seconds, scan.label), f": FAILED: {message}"
    seconds = time.perf_counter() - started
    said = f" -> {output}: {volume.shape[0]} -> {result.shape[0]} slices in {seconds:.1f} s"
    if done.slice_profile is not None:
        said += f"; {done.slice_profile.describe()}"
    return FileResult(scan.source, output, "done", "", seconds, scan.label), said


def _write(result: Any, output: Path, source: Path, as_series: bool, overwrite: bool) -> None:
    if as_series:
        from napari_cycleinr.io.dicom import write_dicom_series

        write_dicom_series(result, output, refuse=[source], overwrite=overwrite)
    else:
        from napari_cycleinr.io import write_volume

        write_volume(result, output, refuse=[source])


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
