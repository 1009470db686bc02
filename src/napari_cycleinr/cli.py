"""The `cycleinr` command line: a thin shell over the model package.

One function per subcommand. Anything the user can fix (a CycleINRError) becomes one line on stderr and
exit code 2, with nothing written; Ctrl-C exits 130.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from napari_cycleinr import __version__
from napari_cycleinr.errors import Cancelled, CycleINRError

EXIT_USER_ERROR = 2


def _progress_printer(label: str):
    """A one-line text progress bar on stderr (redrawn in place on a terminal)."""
    started = time.perf_counter()
    tty = sys.stderr.isatty()
    last = [-1]

    def show(done: int, total: int) -> None:
        percent = int(100 * done / max(total, 1))
        if not tty and percent < 100 and percent - last[0] < 10:
            return
        last[0] = percent
        bar = "#" * (percent // 5) + "." * (20 - percent // 5)
        line = f"{label} [{bar}] {percent:3d}% {time.perf_counter() - started:6.1f} s"
        print(("\r" if tty else "") + line, end="" if tty and done < total else "\n", file=sys.stderr, flush=True)

    return show


def _parse_factors(text: str) -> list[float]:
    try:
        values = [float(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        raise CycleINRError(f"factors must be numbers like 2 or 2,2.5,4, got {text!r}") from None
    if not values:
        raise CycleINRError("give at least one factor")
    return values


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (b.exists() and a.samefile(b))
    except OSError:
        return False


def cmd_upsample(args: argparse.Namespace) -> int:
    if Path(args.input).is_dir():
        return _upsample_folder(args)
    return _upsample_file(args, adapt=False)


def cmd_adapt(args: argparse.Namespace) -> int:
    if Path(args.input).is_dir():
        raise CycleINRError("adapt works on one scan at a time (it learns from that scan); give a file")
    return _upsample_file(args, adapt=True)


def _upsample_file(args: argparse.Namespace, adapt: bool) -> int:
    """upsample and adapt on one file: check paths, read, (fine-tune,) super-resolve, (make consistent,) write."""
    from napari_cycleinr.io import is_supported, read_volume, write_volume
    from napari_cycleinr.io.atomic import check_destination
    from napari_cycleinr.model.checkpoint import load_model
    from napari_cycleinr.model.infer import check_ensemble, resolve_device, super_resolve

    source, target = Path(args.input), Path(args.output)
    if _same_file(source, target):
        raise CycleINRError(f"the output path is the input file {source}; choose another output path")
    if not is_supported(target):
        raise CycleINRError(f"cannot write {target.name}: use .nii, .nii.gz, .tif or .tiff")
    inputs = [source] + ([Path(args.reference)] if args.reference else [])
    check_destination(target, refuse=inputs)  # a bad output path fails now, not after the whole run
    saved_model = getattr(args, "save_model", None)
    if saved_model:
        if Path(saved_model).suffix.lower() != ".safetensors":
            raise CycleINRError(f"--save-model writes a .safetensors checkpoint; name it e.g. {Path(saved_model).stem}.safetensors")
        check_destination(Path(saved_model), refuse=[*inputs, target])
    method = getattr(args, "method", "cycleinr")
    check_ensemble(method, args.ensemble)
    _check_consistency_arguments(args)
    adapt_options = _adapt_options(args) if adapt else None  # bad values fail before any work
    device = resolve_device(args.device)
    volume = read_volume(source, axis=args.axis)
    reference = _read_reference(args, volume) if args.reference else None  # a mismatch fails before any work
    model = load_model(args.model, device, profile=args.profile) if method == "cycleinr" else None
    options = None
    if args.threads:
        from dataclasses import replace

        from napari_cycleinr.model.infer import InferenceOptions

        options = replace(InferenceOptions.for_device(device), threads=args.threads)
    if adapt:
        model = _adapt(args, adapt_options, volume, model, device)
        if saved_model:
            from napari_cycleinr.model.checkpoint import save_model

            save_model(model, saved_model, getattr(model, "info", {}))
    result = super_resolve(
        volume,
        factor=args.factor,
        spacing=args.spacing,
        method=method,
        model=model,
        device=device,
        modality=args.modality,
        keep_dtype=not args.float,
        options=options,
        progress=None if args.quiet else _progress_printer(f"{method} on {device}"),
        ensemble=args.ensemble,
    )
    if args.consistency:
        from napari_cycleinr.model.consistency import make_consistent

        report = make_consistent(result, volume, args.profile, args.thickness, smoothing=args.consistency_smoothing)
        if not args.quiet:
            print(report.summary())
    write_volume(result, target, refuse=inputs)
    if reference is not None:
        from napari_cycleinr.model.evaluate import reference_scores, scores_summary

        scores = reference_scores(reference.data, result.data, result.metadata["super_resolution"].get("modality"))
        print(f"against {args.reference}: {scores_summary(scores)}")
    record = result.metadata["super_resolution"]
    if not args.quiet:
        z_in, z_out = volume.shape[0], result.shape[0]
        how = ([Path(record["model"]).name] if record.get("model") else []) + (["z ensemble"] if args.ensemble else [])
        detail = f" ({', '.join(how)})" if how else ""
        print(
            f"wrote {target}: {z_in} -> {z_out} slices, spacing {record['spacing_in_mm']:.4g} -> "
            f"{record['spacing_out_mm']:.4g} mm, {record['method']}{detail} on "
            f"{record['device']} in {record['seconds']:.1f} s"
        )
    return 0


def _read_reference(args: argparse.Namespace, volume):
    """The thin reference of --reference, read and checked against the output grid before the run."""
    from napari_cycleinr.grid import z_grid
    from napari_cycleinr.io import read_volume

    grid = z_grid(volume.shape[0], volume.spacing[0], factor=args.factor, spacing=args.spacing)
    reference = read_volume(args.reference, axis=args.axis)
    expected = (grid.n_out, *volume.shape[1:])
    if reference.shape != expected:
        raise CycleINRError(
            f"the reference {Path(args.reference).name} has shape {reference.shape} (z, y, x) but the output "
            f"will have {expected}: give the factor or spacing that lands on its grid "
            f"(it has {reference.shape[0]} slices of {reference.spacing[0]:.4g} mm)"
        )
    return reference


def _check_consistency_arguments(args: argparse.Namespace) -> None:
    from napari_cycleinr.model.consistency import check_smoothing

    check_smoothing(args.consistency_smoothing)
    if args.consistency_smoothing and not args.consistency:
        raise CycleINRError("--consistency-smoothing changes the --consistency step: add --consistency")


def _adapt_options(args: argparse.Namespace):
    from napari_cycleinr.model.adapt import AdaptOptions

    chosen = {} if args.noise_weight is None else {"noise_weight": args.noise_weight}  # else AdaptOptions' own
    return AdaptOptions(
        minutes=args.minutes, steps=args.steps, profile=args.profile, thickness=args.thickness,
        seed=args.seed, threads=args.threads, **chosen,
    )


def _adapt(args: argparse.Namespace, options, volume, model, device):
    from napari_cycleinr.model.adapt import adapt_model

    label = f"adapting for {args.steps} steps" if args.steps else f"adapting for {args.minutes:g} min"
    adapted, report = adapt_model(
        volume, factor=args.factor, spacing=args.spacing, model=model, options=options, device=device,
        modality=args.modality, progress=None if args.quiet else _progress_printer(label),
    )
    if not args.quiet:
        print(report.summary())
    return adapted


def _upsample_folder(args: argparse.Namespace) -> int:
    """`upsample DIR -o OUTDIR`: every scan of DIR; exit 0 if all were written or skipped, 1 if any failed."""
    from napari_cycleinr.batch import process_folder
    from napari_cycleinr.model.consistency import ConsistencyOptions

    _check_consistency_arguments(args)
    if args.reference:
        raise CycleINRError("--reference compares one output with one thin scan: give a file, not a folder")

    report = process_folder(
        args.input,
        args.output,
        factor=args.factor,
        spacing=args.spacing,
        method=args.method,
        model=args.model,
        profile=args.profile,
        device=args.device,
        modality=args.modality,
        keep_dtype=not args.float,
        axis=args.axis,
        overwrite=args.overwrite,
        threads=args.threads,
        consistency=(
            ConsistencyOptions(args.profile, args.thickness, args.consistency_smoothing) if args.consistency else None
        ),
        ensemble=args.ensemble,
        log=(lambda line: None) if args.quiet else (lambda line: print(line, flush=True)),
    )
    if report.rank == 0:  # under torchrun the ranks have pooled their results; one summary is enough
        print(report.summary(), file=sys.stderr if report.failed else sys.stdout)
    return 1 if report.failed else 0


def cmd_train(args: argparse.Namespace) -> int:
    from napari_cycleinr.model.train import train
    from napari_cycleinr.model.train_config import load_train_config

    overrides = {"seed": args.seed, "steps": args.steps}
    if args.data:
        overrides["train_data"] = tuple(str(Path(p).resolve()) for p in args.data)
    if args.validation:
        overrides["validation_data"] = str(Path(args.validation).resolve())
    config = load_train_config(args.config, **overrides)
    summary = train(config, args.out, resume=args.resume, device=args.device)
    if summary.get("rank", 0) != 0:  # under torchrun only rank 0 reports
        return 0
    print(f"trained {summary['steps']} steps; best validation PSNR {summary['best_psnr']:.2f} dB; checkpoints in {args.out}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from napari_cycleinr.io import read_volume
    from napari_cycleinr.model.checkpoint import load_model
    from napari_cycleinr.model.degrade import KINDS
    from napari_cycleinr.model.evaluate import BASELINES, evaluate_volume, format_table, plot_snli
    from napari_cycleinr.model.infer import resolve_device

    if args.degradation not in KINDS:
        raise CycleINRError(f"unknown degradation {args.degradation!r}; choose one of {', '.join(KINDS)}")
    device = resolve_device(args.device)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    models = {}
    for spec in args.variant or []:
        name, _, path = spec.partition("=")
        if not name or not path:
            raise CycleINRError(f"--variant takes NAME=CHECKPOINT, got {spec!r}")
        models[name] = load_model(path, device)
    if "cycleinr" in methods and "cycleinr" not in models:
        models["cycleinr"] = load_model(args.model, device, profile=args.degradation)
    unknown = [m for m in methods if m not in BASELINES and m not in models]
    if unknown:
        raise CycleINRError(f"unknown method(s) {', '.join(unknown)}: use trilinear, tricubic, cycleinr or a --variant name")
    results = []
    for reference in args.references:
        volume = read_volume(reference, axis=args.axis)
        for factor in _parse_factors(args.factor):
            results.append(
                evaluate_volume(
                    volume, factor, args.degradation, models, methods, args.modality, device,
                    consistency=args.consistency, ensemble=args.ensemble,
                )
            )
    print(format_table(results))
    if args.json:
        from napari_cycleinr.io.atomic import prepare_destination, write_atomically

        text = json.dumps({"version": __version__, "results": results}, indent=2) + "\n"
        write_atomically(prepare_destination(args.json, refuse=args.references), lambda tmp: tmp.write_text(text))
    if args.plot:
        plot_snli(results, args.plot)
    return 0


def cmd_benchmark(args: argparse.Namespace) -> int:
    from napari_cycleinr.model.benchmark import format_report, parse_counts, parse_sizes, run_benchmark
    from napari_cycleinr.model.infer import resolve_device

    resolve_device(args.device)  # fail early on a device that is not there
    if args.factor is None or not (args.factor > 1):
        raise CycleINRError(f"the factor must be above 1, got {args.factor}")
    if args.input and not Path(args.input).is_file():
        raise CycleINRError(f"no such file: {args.input}")
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
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
        log=lambda line: print(line, file=sys.stderr, flush=True),
    )
    print(format_report(report))
    if args.json:
        from napari_cycleinr.io.atomic import prepare_destination, write_atomically

        text = json.dumps(report, indent=2) + "\n"
        write_atomically(prepare_destination(args.json), lambda tmp: tmp.write_text(text))
    return 0


def _volume_arguments(parser: argparse.ArgumentParser, what: str, or_folder: str) -> None:
    parser.add_argument("input", help=what)
    parser.add_argument("-o", "--output", required=True, help=f"output file (.nii, .nii.gz, .tif, .tiff){', ' + or_folder if or_folder else ''}")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--factor", type=float, help="slices per input slice, e.g. 2.5")
    target.add_argument("--spacing", type=float, help="target slice spacing in mm, e.g. 1")
    parser.add_argument(
        "--model", help="a .safetensors checkpoint, or bundled weights: default (those for --profile; the default), "
        "mixed (trained on every slice profile), average (contiguous slabs), gaussian or skip (thin slices with gaps)",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--float", action="store_true", help="write float32 instead of the input's integer type")
    parser.add_argument("--axis", choices=["x", "y", "z"], help="the through-plane axis of the file (default: largest spacing)")
    parser.add_argument("--modality", choices=["CT", "MR", "ct", "mr"], help="default: guessed from the intensities")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: the idle cores)")
    parser.add_argument(
        "--ensemble", action="store_true",
        help="also answer on the scan reversed along z and average the two (twice the time; a little more accurate)",
    )
    parser.add_argument(
        "--reference", metavar="THIN",
        help="a real thin-slice scan on the output grid: print PSNR, mean |error| and SNLI against it",
    )
    parser.add_argument("-q", "--quiet", action="store_true")


def _consistency_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--consistency", action="store_true",
        help="correct the output so that, degraded back with the slice profile, it reproduces the input exactly",
    )
    parser.add_argument(
        "--profile", default="average", choices=["average", "gaussian", "skip"],
        help="the scan's slice profile: it picks the bundled weights, and is used by --consistency and adapt "
        "(default: average, a contiguous slab; skip: thin slices with gaps between them)",
    )
    parser.add_argument(
        "--consistency-smoothing", type=float, default=0.0, metavar="PX",
        help="--consistency corrects only the in-plane low frequencies of the residual (Gaussian sigma in pixels): "
        "keeps the thick slices' noise out of the correction, for even noise at a small cost in PSNR (default 0: all)",
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
    _volume_arguments(up, "a .nii, .nii.gz, .tif or .tiff volume, or a folder of them", "or folder")
    up.add_argument("--method", default="cycleinr", choices=["cycleinr", "trilinear", "tricubic"])
    up.add_argument("--overwrite", action="store_true", help="folders: redo outputs that already exist")
    _consistency_arguments(up)
    up.set_defaults(run=cmd_upsample)

    ad = sub.add_parser("adapt", help="fine-tune the model on this scan's own in-plane data, then super-resolve z")
    _volume_arguments(ad, "a .nii, .nii.gz, .tif or .tiff volume", "")
    ad.add_argument("--minutes", type=float, default=3.0, help="time budget of the fine-tuning (default 3)")
    ad.add_argument("--steps", type=int, help="a fixed number of fine-tuning steps instead of a time budget")
    ad.add_argument("--seed", type=int, default=0)
    ad.add_argument(
        "--noise-weight", type=float,
        help="weight of the noise-level consistency loss while adapting (default 0.05; 0: PSNR over even texture)",
    )
    ad.add_argument("--save-model", help="also keep the adapted model as a .safetensors checkpoint")
    _consistency_arguments(ad)
    ad.set_defaults(run=cmd_adapt)

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

    ev = sub.add_parser("evaluate", help="simulate thick slices from thin references and score each method")
    ev.add_argument("references", nargs="+", help="thin-slice reference scans")
    ev.add_argument("--factor", required=True, help="one factor or several, e.g. 2,2.5,4,5")
    ev.add_argument("--degradation", default="average", help="average, gaussian or skip")
    ev.add_argument("--methods", default="trilinear,tricubic,cycleinr")
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
    bm.add_argument("--in-process", action="store_true", help="run all cases in this process, not one process each")
    bm.set_defaults(run=cmd_benchmark)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except CycleINRError as error:
        print(f"cycleinr: error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except Cancelled:
        print("cycleinr: cancelled; nothing was written", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("\ncycleinr: interrupted; nothing was written", file=sys.stderr)
        return 130
    except Exception as error:
        from napari_cycleinr._runner import out_of_memory

        if not out_of_memory(error):
            raise  # a bug in this package: keep the traceback
        print(
            "cycleinr: error: not enough memory for this volume and target; "
            "use --device cpu, a smaller factor, or crop the volume",
            file=sys.stderr,
        )
        return EXIT_USER_ERROR


def console() -> int:
    """The `cycleinr` executable: main() with warnings as one line each ("cycleinr: warning: ..."), the way
    errors are shown. Only the executable changes how warnings print; main() called from Python does not."""
    import warnings

    def one_line(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ARG001
        print(f"cycleinr: warning: {message}", file=file or sys.stderr)

    with warnings.catch_warnings():
        warnings.showwarning = one_line
        return main()


if __name__ == "__main__":
    sys.exit(console())
