"""`cycleinr benchmark`: how fast CycleINR super-resolves real CT next to the interpolations people fall back
to, and how much memory each run takes.

Each case (a method on a volume size) runs in a fresh process by default, so its peak RSS is its own. The
volumes are real CT: the bundled chest sample (or a scan the user names) cropped or mirror-tiled to the size.
A scaling series runs CycleINR on 30 to 240 input slices with input and output memory-mapped on disk, so the
process's anonymous memory is its working memory, which should stay flat while time grows linearly.
"""

from __future__ import annotations

import os
import platform
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from importlib import resources
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable

import numpy as np

from napari_cycleinr.bench.report import case_line, scaling_summary, size_label
from napari_cycleinr.errors import CycleINRError

SIZES: tuple[tuple[int, int, int], ...] = ((60, 256, 256), (60, 512, 512))
"""(slices, rows, columns) of the input volumes."""
SCALING_SLICES: tuple[int, ...] = (30, 60, 120, 240)
METHODS: tuple[str, ...] = ("cycleinr", "tricubic", "trilinear")
FACTOR = 5.0
MB = 2**20


def sample_path() -> Path:
    return Path(str(resources.files("napari_cycleinr") / "sample_data" / "chest_ct_5mm.nii.gz"))


def fit_shape(data: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Centre-crop the axes that are too long and mirror-tile the ones that are too short."""
    out = data
    for axis, size in enumerate(shape):
        have = out.shape[axis]
        if have > size:
            start = (have - size) // 2
            out = np.take(out, np.arange(start, start + size), axis=axis)
        elif have < size:
            pad = [(0, 0)] * 3
            pad[axis] = ((size - have) // 2, size - have - (size - have) // 2)
            out = np.pad(out, pad, mode="symmetric")
    return np.ascontiguousarray(out)


def benchmark_volume(shape: tuple[int, int, int], source: str | Path | None = None):
    """A Volume of real CT with exactly `shape` voxels, with the source scan's spacing."""
    from napari_cycleinr.io import read_volume
    from napari_cycleinr.volume import Volume

    scan = read_volume(source or sample_path())
    data = fit_shape(scan.data, shape)
    metadata = {"modality": scan.metadata.get("modality"), "benchmark_source": str(source or sample_path())}
    return Volume.from_spacing(data, scan.spacing, metadata=metadata)


def _statm_mb() -> tuple[float, float]:
    """(resident, anonymous resident) memory of this process in MB, from /proc/self/statm."""
    with open("/proc/self/statm") as handle:
        fields = handle.read().split()
    page = os.sysconf("SC_PAGE_SIZE")
    resident, shared = int(fields[1]) * page, int(fields[2]) * page
    return resident / MB, (resident - shared) / MB


def _max_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


class PeakMemory:
    """Samples this process's resident memory in a thread while the block runs (every few milliseconds)."""

    def __init__(self, interval: float = 0.003) -> None:
        self.interval = interval
        self.start = self.peak = (0.0, 0.0)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        while True:
            now = _statm_mb()
            self.peak = (max(self.peak[0], now[0]), max(self.peak[1], now[1]))
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> PeakMemory:
        self.start = self.peak = _statm_mb()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join()
        now = _statm_mb()
        self.peak = (max(self.peak[0], now[0]), max(self.peak[1], now[1]))


@dataclass(frozen=True)
class Case:
    method: str
    shape: tuple[int, int, int]
    factor: float = FACTOR
    device: str = "auto"
    threads: int = 0
    model: str | None = None
    source: str | None = None
    memmap: bool = False
    """Input and output as memory-mapped files (the scaling series), so they are not anonymous memory."""
    warmup: bool = True
    precision: str = "auto"


def run_case(case: Case) -> dict[str, Any]:
    """Time one super-resolution (the pipeline's, with the weights already loaded) in this process and
    measure its memory."""
    import torch

    from napari_cycleinr import pipeline
    from napari_cycleinr.request import Request, target
    from napari_cycleinr.runtime.devices import resolve_device
    from napari_cycleinr.volume import Volume

    device = resolve_device(case.device)
    compute = case.device if case.method == "cycleinr" else "cpu"  # the interpolations run on the CPU
    # the profile is named, so the figures are inference alone (finding it costs about a second more)
    request = Request(method=case.method, weights=case.model, device=compute, threads=case.threads,
                      profile_source="user", precision=case.precision)
    engine = pipeline.prepare(request)
    volume = benchmark_volume(case.shape, case.source)

    def job(volume: Volume, out: np.ndarray | None = None) -> Volume:
        planned = request.with_targets([target(volume.shape[0], volume.spacing[0], "factor", case.factor)])
        return pipeline.run(planned, volume, engine=engine, out=out).outputs[0].volume

    if case.warmup:  # one-off costs (thread pools, kernels, CUDA context) are not what is being measured
        job(volume.replace(data=volume.data[: min(volume.shape[0], 12), :64, :64]))
    with tempfile.TemporaryDirectory(prefix="cycleinr-benchmark-") as folder:
        out = None
        if case.memmap:
            np.save(Path(folder) / "input.npy", volume.data)
            data = np.load(Path(folder) / "input.npy", mmap_mode="r")
            volume = Volume(data, volume.affine, volume.file_axes, volume.metadata)
            shape = (target(volume.shape[0], volume.spacing[0], "factor", case.factor).n_out, *volume.shape[1:])
            out = np.lib.format.open_memmap(Path(folder) / "output.npy", "w+", volume.data.dtype, shape)
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats(device)
        with PeakMemory() as memory:
            started = time.perf_counter()
            result = job(volume, out)
            if device.type == "cuda":
                torch.cuda.synchronize()
            seconds = time.perf_counter() - started
        record = result.metadata["super_resolution"]
        voxels, output_bytes = int(np.prod(result.shape)), result.data.nbytes
        del result, out
    peak_cuda = torch.cuda.max_memory_allocated(device) / MB if device.type == "cuda" else None
    return _figures(case, record, seconds, voxels, output_bytes, memory, peak_cuda, engine.device)


def _figures(case: Case, record: dict, seconds: float, voxels: int, output_bytes: int, memory, peak_cuda, device):
    """One case's row of the report."""
    return {
        "method": case.method,
        "size": size_label(case.shape),
        "input_shape": list(case.shape),
        "output_shape": [int(round(case.shape[0] * case.factor)), *case.shape[1:]],
        "factor": case.factor,
        "device": record["device"],
        "threads": _threads_used(case.method, record, device),
        "precision": _precision_used(case, device),
        "seconds": round(seconds, 4),
        "output_voxels": voxels,
        "output_mb": round(output_bytes / MB, 1),
        "voxels_per_second": round(voxels / max(seconds, 1e-9)),
        "peak_rss_mb": round(max(memory.peak[0], _max_rss_mb()), 1),
        "rss_increase_mb": round(memory.peak[0] - memory.start[0], 1),
        "working_memory_mb": round(memory.peak[1] - memory.start[1], 1),
        "peak_cuda_mb": None if peak_cuda is None else round(peak_cuda, 1),
        "memmap": case.memmap,
    }


def _precision_used(case: Case, device: Any) -> str:
    """What the network computed in: 'bf16 encoder' on a CPU with native bf16, 'bf16' on CUDA, else float32."""
    from napari_cycleinr.model.fast_path import encoder_dtype
    from napari_cycleinr.runtime.tuning import InferenceOptions

    if case.method != "cycleinr":
        return "float32"
    import torch

    bf16 = encoder_dtype(device, InferenceOptions(amp=case.precision == "auto")) == torch.bfloat16
    return ("bf16" if device.type == "cuda" else "bf16 encoder") if bf16 else "float32"


def _threads_used(method: str, record: dict[str, Any], device: Any) -> int | None:
    if device.type != "cpu":
        return None
    if method == "tricubic":
        return 1  # scipy.ndimage runs on one thread
    import torch

    return int(record.get("threads", torch.get_num_threads()))


def run_isolated(case: Case) -> dict[str, Any]:
    """run_case in a fresh (spawned) process, so that its peak RSS is its own."""
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(run_case, case).result()


def machine_info(device: str) -> dict[str, Any]:
    import torch

    from napari_cycleinr.runtime.devices import cpu_computes_bfloat16, resolve_device
    from napari_cycleinr.runtime.threads import available_cores, busy_elsewhere

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            names = [line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu": cpu,
        "cores_available": available_cores(),
        "logical_cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "load_average_start": [round(v, 2) for v in os.getloadavg()],
        "cores_busy_elsewhere_start": round(busy_elsewhere(0.5), 2),
        "cpu_native_bf16": cpu_computes_bfloat16(),
    }
    torch_device = resolve_device(device)
    if torch_device.type == "cuda":
        properties = torch.cuda.get_device_properties(torch_device)
        info["gpu"] = properties.name
        info["gpu_memory_gb"] = round(properties.total_memory / 2**30, 1)
    return info


def run_benchmark(
    sizes: tuple[tuple[int, int, int], ...] = SIZES,
    scaling: tuple[int, ...] = SCALING_SLICES,
    methods: tuple[str, ...] = METHODS,
    factor: float = FACTOR,
    device: str = "auto",
    threads: int = 0,
    model: str | None = None,
    source: str | None = None,
    isolate: bool = True,
    log: Callable[[str], None] = print,
    precision: str = "auto",
) -> dict[str, Any]:
    """Every method on every size, then the CycleINR scaling series; a JSON-ready report."""
    from napari_cycleinr import __version__
    from napari_cycleinr.options import METHODS as KNOWN

    unknown = [m for m in methods if m not in KNOWN]
    if unknown:
        raise CycleINRError(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(KNOWN)}")
    if not sizes and not scaling:
        raise CycleINRError("nothing to benchmark: give at least one size or one scaling slice count")
    run = run_isolated if isolate else run_case
    base = Case("cycleinr", (1, 1, 1), factor, device, threads, model, source, precision=precision)
    report: dict[str, Any] = {"version": __version__, "factor": factor, "isolated": isolate}
    report["machine"] = machine_info(device)
    results = []
    for shape in sizes:
        for method in methods:
            result = run(replace(base, method=method, shape=shape))
            results.append(result)
            log(case_line(result))
    report["results"] = results
    ratios = {}
    for shape in sizes:
        by_method = {r["method"]: r for r in results if r["size"] == size_label(shape)}
        if "cycleinr" in by_method and "tricubic" in by_method:
            ratio = by_method["cycleinr"]["seconds"] / by_method["tricubic"]["seconds"]
            ratios[size_label(shape)] = round(ratio, 2)
    report["cycleinr_over_tricubic"] = ratios
    if scaling:
        rows, cols = sizes[0][1:] if sizes else SIZES[0][1:]
        points = []
        for n in scaling:
            result = run(replace(base, shape=(n, rows, cols), memmap=True))
            points.append(result)
            log(case_line(result, "scaling"))
        summary = scaling_summary(
            [p["input_shape"][0] for p in points], [p["seconds"] for p in points],
            [p["working_memory_mb"] for p in points], [p["output_mb"] for p in points],
        )
        report["scaling"] = {"in_plane": [rows, cols], "points": points, **summary}
    report["machine"]["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
    return report


