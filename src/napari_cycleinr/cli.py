"""The `cycleinr` command line: a thin shell over the pipeline (upsample, adapt: cli_upsample.py) and the
model package (train, evaluate) and the benchmark (bench/).

One function per subcommand. Whatever happens inside a command is one line on stderr and an exit code
(boundary.py: 2 for what the user can fix, with nothing written; 130 for Ctrl-C, 143 for SIGTERM). Every
file a command writes goes through the output guard (io/guard.py) with the command's inputs as `protected`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from napari_cycleinr import __version__
from napari_cycleinr.boundary import one_line_parser_errors, one_line_warnings, run_guarded
from napari_cycleinr.cli_upsample import cmd_adapt, cmd_upsample
from napari_cycleinr.errors import CycleINRError
from napari_cycleinr.io.guard import resolve_path, with_sidecar
from napari_cycleinr.options import ADAPT_MINUTES, METHODS, PRECISIONS, PROFILES


def _parse_factors(text: str) -> list[float]:
    try:
        values = [float(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        raise CycleINRError(f"factors must be numbers like 2 or 2,2.5,4, got {text!r}") from None
    if not values:
        raise CycleINRError("give at least one factor")
    return values


def cmd_train(args: argparse.Namespace) -> int:
    from napari_cycleinr.model.train import train
    from napari_cycleinr.model.train_config import load_train_config

    overrides = {"seed": args.seed, "steps": args.steps}
    if args.data:
        overrides["train_data"] = tuple(str(resolve_path(p)) for p in args.data)
    if args.validation:
        overrides["validation_data"] = str(resolve_path(args.validation))
    config = load_train_config(args.config, **overrides)
    summary = train(config, args.out, resume=args.resume, device=args.device)
    if summary.get("rank", 0) != 0:  # under torchrun only rank 0 reports
        return 0
    print(f"trained {summary['steps']} steps; best validation PSNR {summary['best_psnr']:.2f} dB; checkpoints in {args.out}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from napari_cycleinr.io import read_volume
    from napari_cycleinr.model.checkpoint import BUNDLED_MODELS, load_model
    from napari_cycleinr.model.evaluate import AUTO, BASELINES, evaluate_volume, format_table
    from napari_cycleinr.runtime.devices import resolve_device

    if args.degradation not in PROFILES:
        raise CycleINRError(f"unknown degradation {args.degradation!r}; choose one of {', '.join(PROFILES)}")
    device = resolve_device(args.device)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    variants = [spec.partition("=")[2] for spec in args.variant or []]
    inputs = [*args.references, *(f for model in (args.model, *variants) for f in with_sidecar(model))]
    _check_destinations([args.json, args.plot], inputs)  # a bad output path fails now, not after the run
    models = {}
    for spec in args.variant or []:
        name, _, path = spec.partition("=")
        if not name or not path:
            raise CycleINRError(f"--variant takes NAME=CHECKPOINT, got {spec!r}")
        models[name] = load_model(path, device)
    if "cycleinr" in methods and "cycleinr" not in models:
        models["cycleinr"] = load_model(args.model, device, profile=args.degradation)
    for name in methods:  # a bundled weights' name is a method of its own (e.g. average_mr)
        if name in BUNDLED_MODELS and name not in models:
            models[name] = load_model(name, device)
    unknown = [m for m in methods if m not in BASELINES and m not in models and m != AUTO]
    if unknown:
        raise CycleINRError(
            f"unknown method(s) {', '.join(unknown)}: use trilinear, tricubic, cycleinr, auto, the name of "
            f"bundled weights ({', '.join(BUNDLED_MODELS)}) or a --variant name"
        )
    results, choose = [], weights_chooser(args.modality, device)
    for reference in args.references:
        volume = read_volume(reference, axis=args.axis)
        for factor in _parse_factors(args.factor):
            scored = evaluate_volume(
                volume, factor, args.degradation, models, methods, args.modality, device,
                consistency=args.consistency, ensemble=args.ensemble, choose=choose,
            )
            scored["reference"] = str(reference)  # as typed: committed JSON names no one's home folder
            results.append(scored)
    print(format_table(results))
    if args.json:
        from napari_cycleinr.jsonsafe import write_json

        write_json(args.json, {"version": __version__, "results": results}, protected=inputs)
    if args.plot:
        from napari_cycleinr.bench.plots import plot_snli

        plot_snli(results, args.plot, protected=inputs)
    return 0


def weights_chooser(modality: str | None, device):
    """For evaluate's method auto: the weights `upsample` takes for a scan with no profile given (the
    pipeline's settle_profile), loaded once per name, and a record of the choice."""
    from napari_cycleinr.model.checkpoint import load_model
    from napari_cycleinr.pipeline import settle_profile
    from napari_cycleinr.request import Request, target

    loaded: dict[str, object] = {}

    def choose(thick, factor):
        grid = target(thick.shape[0], thick.spacing[0], "factor", factor)
        request, found = settle_profile(Request(modality=modality, targets=(grid,)), thick, ask_model=True)
        name = request.weights or request.slice_profile
        if name not in loaded:
            loaded[name] = load_model(request.weights, device, profile=request.slice_profile)
        return loaded[name], {"weights": name, "slice_profile": found.to_record() if found else None}

    return choose


def cmd_benchmark(args: argparse.Namespace) -> int:
    from napari_cycleinr.bench import format_report, parse_counts, parse_sizes, run_benchmark
    from napari_cycleinr.runtime.devices import resolve_device

    resolve_device(args.device)  # fail early on a device that is not there
    if args.factor is None or not (args.factor > 1):
        raise CycleINRError(f"the factor must be above 1, got {args.factor}")
    if args.input and not Path(args.input).is_file():
        raise CycleINRError(f"no such file: {args.input}")
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    inputs = [args.input, *with_sidecar(args.model)]
    _check_destinations([args.json], inputs)
    report = run_benchmark(
        sizes=parse_sizes(args.sizes),
        scaling=parse_counts(args.scaling),
        methods=methods,
        factor=args.factor,
        device=args.device,
        threads=args.threads,
        model=args.model,
        source=args.input,
        isolate=not args.in_process,
        precision=args.precision,
        log=lambda line: print(line, file=sys.stderr, flush=True),
    )
    print(format_report(report))
    if args.json:
        from napari_cycleinr.jsonsafe import write_json

        write_json(args.json, report, protected=inputs)
    return 0


def _check_destinations(outputs: list[str | None], inputs: list[str | None]) -> None:
    """Refuse, before any work, an output path that is an input, a folder, or in a missing folder."""
    from napari_cycleinr.io.guard import guard_output

    for output in outputs:
        if output:
            guard_output(output, protected=inputs, probe=True)


def _volume_arguments(parser: argparse.ArgumentParser, what: str, or_folder: str) -> None:
    parser.add_argument("input", help=what)
    parser.add_argument("-o", "--output", required=True, help=f"output file (.nii, .nii.gz, .tif, .tiff){', ' + or_folder if or_folder else ''}")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--factor", type=float, help="slices per input slice, e.g. 2.5")
    target.add_argument("--spacing", type=float, help="target slice spacing in mm, e.g. 1")
    parser.add_argument(
        "--model", help="a .safetensors checkpoint, or bundled weights: default (those for the slice profile; the default), "
        "mixed (trained on every slice profile), average (contiguous slabs), gaussian or skip (thin slices with gaps), "
        "mr (mixed fine-tuned with an MR: the default for an MR of unknown profile)",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--float", action="store_true", help="write float32 instead of the input's integer type")
    parser.add_argument("--axis", choices=["x", "y", "z"], help="the through-plane axis of the file (default: largest spacing)")
    parser.add_argument("--modality", choices=["CT", "MR", "ct", "mr"], help="default: guessed from the intensities")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: the idle cores)")
    parser.add_argument(
        "--precision", choices=PRECISIONS, default="auto",
        help="auto: bfloat16 where the CPU or GPU computes it natively (faster; ~0.3 HU apart); float32: the same "
        "numbers on every machine",
    )
    parser.add_argument(
        "--ensemble", action="store_true",
        help="also answer on the scan reversed along z and average the two (twice the time; a little more accurate)",
    )
    parser.add_argument(
        "--reference", metavar="THIN",
        help="a real thin-slice scan on the output grid: print PSNR, mean |error| and SNLI against it",
    )
    parser.add_argument(
        "--series", help="a DICOM folder holding several series: the one to read (its number, SeriesInstanceUID, "
        "or key such as 5:echo=2 or 2:slices=1-14, as the error message lists them)",
    )
    parser.add_argument(
        "--format", choices=["nifti", "tiff", "dicom"],
        help="dicom: write OUTPUT as a folder holding a new DICOM series of the input's study (default: from the "
        "output's suffix). A folder of scans: what its DICOM series become (default nifti; dicom: every output "
        "a new series)",
    )
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="print no progress bar and no lines about what was written; "
        "errors, --reference scores and a folder's closing summary still print",
    )


def _consistency_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--consistency", action="store_true",
        help="correct the output so that, degraded back with the slice profile, it reproduces the input exactly",
    )
    parser.add_argument(
        "--profile", choices=PROFILES,
        help="the scan's slice profile: it picks the bundled weights, and is used by --consistency and adapt "
        "(average: a contiguous slab; skip: thin slices with gaps between them). Default: found from the scan, "
        "its DICOM record (slice thickness against spacing), else an estimate from the image; when that is "
        "not confident, the mixed-profile weights",
    )
    parser.add_argument(
        "--consistency-smoothing", type=float, default=0.0, metavar="PX",
        help="--consistency corrects only the in-plane low frequencies of the residual (Gaussian sigma in pixels): "
        "keeps the thick slices' noise out of the correction, for even noise at a small cost in PSNR (default 0: all)",
    )
    parser.add_argument(
        "--texture", type=float, default=0.0, metavar="STRENGTH",
        help="give every new slice its own draw of the scan's noise texture, 0 to 2 times the acquired slices' "
        "noise level, where the acquired slices cannot see it: the lines at the acquired slice period fade and "
        "the slices look less smooth, for some accuracy (little on CT, much on MR: docs/results.md). Default "
        "0: none",
    )
    parser.add_argument(
        "--thickness", type=float, default=1.0,
        help="slice thickness over slice spacing (default 1: contiguous slices; 1.5 for 3 mm slices every 2 mm)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cycleinr", description="Arbitrary-scale through-plane super-resolution of CT and MRI (CycleINR).")
    parser.add_argument("--version", action="version", version=f"napari-cycleinr {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("upsample", help="super-resolve a volume along z")
    _volume_arguments(up, "a .nii, .nii.gz, .tif or .tiff volume, a DICOM series (its folder or a file of it), "
                      "or a folder of scans: NIfTI and TIFF files, DICOM series (a study), or both", "or folder")
    up.add_argument(
        "--method", default="cycleinr", choices=METHODS, help="cycleinr (the model, the default), or trilinear or "
        "tricubic interpolation onto the same output grid, as a baseline to compare with",
    )
    up.add_argument("--overwrite", action="store_true", help="folders: redo outputs that already exist")
    _consistency_arguments(up)
    up.set_defaults(run=cmd_upsample)

    ad = sub.add_parser("adapt", help="fine-tune the model on this scan's own in-plane data, then super-resolve z")
    _volume_arguments(ad, "a .nii, .nii.gz, .tif or .tiff volume, or a DICOM series (its folder or a file of it)", "")
    ad.add_argument(
        "--minutes", type=float, default=ADAPT_MINUTES, help=f"time budget of the fine-tuning (default {ADAPT_MINUTES:g})"
    )
    ad.add_argument("--steps", type=int, help="a fixed number of fine-tuning steps instead of a time budget")
    ad.add_argument("--seed", type=int, default=0)
    ad.add_argument(
        "--noise-weight", type=float,
        help="weight of the noise-level consistency loss while adapting (default 0.05; 0: PSNR over even texture)",
    )
    ad.add_argument("--save-model", help="also keep the adapted model as a .safetensors checkpoint")
    _consistency_arguments(ad)
    ad.set_defaults(run=cmd_adapt)

    _train_parser(sub)
    _evaluate_parser(sub)
    _benchmark_parser(sub)
    return parser


def _train_parser(sub) -> None:
    tr = sub.add_parser("train", help="train a CycleINR model on thin-slice scans")
    tr.add_argument("--data", nargs="+", help="thin-slice training scans (override the config's [data] train)")
    tr.add_argument("--out", required=True, help="folder for checkpoints and logs")
    tr.add_argument("--config", help="a TOML config (see configs/)")
    tr.add_argument("--validation", help="a held-back scan for validation (default: the last --data scan)")
    tr.add_argument("--seed", type=int)
    tr.add_argument("--steps", type=int)
    tr.add_argument("--resume", action="store_true", help="continue from OUT/state.pt")
    tr.add_argument("--device", default="auto")
    tr.set_defaults(run=cmd_train)


def _evaluate_parser(sub) -> None:
    ev = sub.add_parser("evaluate", help="simulate thick slices from thin references and score each method")
    ev.add_argument("references", nargs="+", help="thin-slice reference scans")
    ev.add_argument("--factor", required=True, help="one factor or several, e.g. 2,2.5,4,5")
    ev.add_argument("--degradation", default="average", help="average, gaussian or skip")
    ev.add_argument(
        "--methods", default="trilinear,tricubic,cycleinr",
        help="comma-separated: trilinear, tricubic, cycleinr (--model, else the CT-trained weights for "
        "--degradation), auto (the weights upsample takes with no profile given), bundled weights by name (e.g. "
        "mixed, average_mr) and --variant names",
    )
    ev.add_argument(
        "--model", help="checkpoint or bundled weights for the cycleinr method (default: the bundled weights for --degradation)"
    )
    ev.add_argument("--variant", action="append", help="NAME=CHECKPOINT: another model to compare, used as a method name")
    ev.add_argument("--json", help="write all results as JSON")
    ev.add_argument("--plot", help="write the per-sample SNLI scatterplot (PNG)")
    ev.add_argument("--device", default="auto")
    ev.add_argument("--consistency", action="store_true", help="also score each model after the exact data-consistency step (METHOD+dc)")
    ev.add_argument("--ensemble", action="store_true", help="also score each model with the z self-ensemble (METHOD+ens)")
    ev.add_argument("--axis", choices=["x", "y", "z"])
    ev.add_argument("--modality", choices=["CT", "MR", "ct", "mr"])
    ev.set_defaults(run=cmd_evaluate)


def _benchmark_parser(sub) -> None:
    bm = sub.add_parser("benchmark", help="time CycleINR against tricubic and trilinear interpolation")
    bm.add_argument("--device", default="auto", help="auto, cpu or cuda (for CycleINR; interpolations use the CPU)")
    bm.add_argument("--json", help="also write the figures as JSON")
    bm.add_argument("--model", help="checkpoint (default: the bundled model)")
    bm.add_argument("--input", help="a real CT scan to crop or mirror-tile (default: the bundled chest CT)")
    bm.add_argument("--sizes", default="256x256x60,512x512x60", help="columns x rows x slices, comma-separated")
    bm.add_argument("--scaling", default="30,60,120,240", help="slice counts of the scaling series ('' skips it)")
    bm.add_argument("--methods", default="cycleinr,tricubic,trilinear")
    bm.add_argument("--factor", type=float, default=5.0)
    bm.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: the idle cores)")
    bm.add_argument(
        "--precision", choices=PRECISIONS, default="auto",
        help="CycleINR's: auto (bf16 where native) or float32",
    )
    bm.add_argument("--in-process", action="store_true", help="run all cases in this process, not one process each")
    bm.set_defaults(run=cmd_benchmark)


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand inside the error boundary (boundary.py): whatever happens, one line and an exit
    code (0; 2: the user can fix it; 130/143: interrupted; 1: a bug, traceback under CYCLEINR_DEBUG=1)."""
    args = one_line_parser_errors(build_parser()).parse_args(argv)
    return run_guarded(lambda: args.run(args), command=args.command, warnings_as_lines=False)


def console() -> int:
    """The `cycleinr` executable: main() with warnings as one line each ("cycleinr: warning: ..."), the way
    errors are shown. Only the executable changes how warnings print; main() called from Python does not."""
    with one_line_warnings(sys.stderr):
        return main()


if __name__ == "__main__":
    sys.exit(console())
