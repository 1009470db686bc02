"""Where the time of one CycleINR super-resolution goes: encoder, projection of the codes, decoder, the rest.

    python scripts/profile_inference.py [--size 256x256x60] [--factor 5] [--precision auto|float32]
                                        [--ops 12]

Times the fast path's stages in process on the benchmark's volume (the bundled 5 mm chest CT mirror-tiled),
then lists the torch operators that took longest (torch.profiler, on a third of the slices: the profiler
slows small operations down). The decoder runs on worker threads, so its seconds are summed over them.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import torch

from napari_cycleinr.bench.harness import benchmark_volume
from napari_cycleinr.bench.report import parse_sizes
from napari_cycleinr.model import fast_path
from napari_cycleinr.model.checkpoint import bundled_model_path, load_model
from napari_cycleinr.model.fused import FusedModel
from napari_cycleinr.model.infer import InferenceOptions, super_resolve
from napari_cycleinr.model.streaming_encoder import StreamingEncoder

SECONDS: dict[str, float] = defaultdict(float)


def _timed(name, function):
    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            SECONDS[name] += time.perf_counter() - started

    return wrapper


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="256x256x60")
    parser.add_argument("--factor", type=float, default=5.0)
    parser.add_argument("--precision", choices=("auto", "float32"), default="auto")
    parser.add_argument("--ops", type=int, default=12)
    args = parser.parse_args()
    shape = parse_sizes(args.size)[0]
    model = load_model(bundled_model_path("mixed"))
    options = InferenceOptions(amp=args.precision == "auto")
    run = lambda volume: super_resolve(volume, factor=args.factor, model=model, device="cpu", options=options)  # noqa: E731
    run(benchmark_volume((8, 64, 64)))  # warm-up

    StreamingEncoder.push = _timed("encoder", StreamingEncoder.push)
    FusedModel.project = _timed("projection", FusedModel.project)
    FusedModel.slice_terms = _timed("per-slice terms", FusedModel.slice_terms)
    FusedModel.decode = _timed("decoder (summed over threads)", FusedModel.decode)
    volume = benchmark_volume(shape)
    started = time.perf_counter()
    run(volume)
    total = time.perf_counter() - started
    encoder = fast_path.encoder_dtype(torch.device("cpu"), options)
    print(f"{args.size} at x{args.factor:g}, {torch.get_num_threads()} threads, encoder {encoder}: {total:.2f} s")
    for name, seconds in SECONDS.items():
        print(f"  {name:<32} {seconds:6.2f} s")

    from torch.profiler import ProfilerActivity, profile

    small = benchmark_volume((max(8, shape[0] // 3), *shape[1:]))
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run(small)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.ops))


if __name__ == "__main__":
    main()
