"""The `cycleinr upsample` and `cycleinr adapt` commands: a file or a folder in, translated into a pipeline
Request; the Result out, as files and lines of text. Progress bars go to stderr, results to stdout."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from napari_cycleinr.errors import CycleINRError
from napari_cycleinr.options import DEFAULT_PROFILE


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


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (b.exists() and a.samefile(b))
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop, refused by the output guard next
        return False


def _folder_of_scans(path: str) -> bool:
    """A folder to process scan by scan, as opposed to one DICOM series (which is one scan)."""
    from napari_cycleinr.io.dicom import looks_like_dicom

    return Path(path).is_dir() and not looks_like_dicom(path)


def _study(args: argparse.Namespace):
    """A DICOM folder to process series by series: no --series, -o a folder, and more than one scan in it
    (several series, or series beside NIfTI or TIFF files); its scans as find_scans found them (the folder run
    takes them, so the headers are read once), else None. One series stays one scan, written where -o says."""
    from napari_cycleinr.folder_scans import find_scans
    from napari_cycleinr.io import is_supported

    if args.series or is_supported(args.output) or not Path(args.input).is_dir():
        return None
    found = find_scans(Path(args.input), args.format)
    return found if len(found[0]) > 1 else None


def cmd_upsample(args: argparse.Namespace) -> int:
    if _folder_of_scans(args.input):
        return _upsample_folder(args)
    study = _study(args)
    if study is not None:
        return _upsample_folder(args, study)
    return _upsample_file(args, adapt=False)


def cmd_adapt(args: argparse.Namespace) -> int:
    if _folder_of_scans(args.input):
        raise CycleINRError("adapt works on one scan at a time (it learns from that scan); give a file")
    return _upsample_file(args, adapt=True)


def _upsample_file(args: argparse.Namespace, adapt: bool) -> int:
    """upsample and adapt on one file: check paths, read, (fine-tune,) super-resolve, (make consistent,) write."""
    from napari_cycleinr import pipeline
    from napari_cycleinr.io import is_supported, read_volume, write_volume
    from napari_cycleinr.io.guard import guard_output, resolve_path, with_sidecar

    source, target = Path(args.input), Path(args.output)
    as_dicom = args.format == "dicom"
    resolve_path(source)  # a symlink loop is one line, here
    if _same_file(source, target):
        raise CycleINRError(f"the output path is the input file {source}; choose another output path")
    if not as_dicom and not is_supported(target):
        raise CycleINRError(f"cannot write {target.name}: use .nii, .nii.gz, .tif or .tiff, or --format dicom")
    inputs = [source] + ([Path(args.reference)] if args.reference else []) + with_sidecar(args.model)
    if not as_dicom:  # a bad output path fails now, not after the whole run
        guard_output(target, protected=inputs, probe=True)
    saved_model = getattr(args, "save_model", None)
    if saved_model:
        if Path(saved_model).suffix.lower() != ".safetensors":
            raise CycleINRError(f"--save-model writes a .safetensors checkpoint; name it e.g. {Path(saved_model).stem}.safetensors")
        for each in (Path(saved_model), Path(saved_model).with_suffix(".json")):  # weights and sidecar
            guard_output(each, protected=[*inputs, target], probe=True)
    request = _request(args, adapt)  # bad values fail before any work
    volume = read_volume(source, axis=args.axis, series=args.series)
    if as_dicom:
        from napari_cycleinr.io.dicom import check_series_destination

        check_series_destination(volume, target, refuse=inputs)
    request = request.with_targets([_target(args, volume)])
    reference = _read_reference(args, request, volume) if args.reference else None  # before any work
    result = pipeline.run(request, volume, _Reporter(args, request), reference=reference)
    (done,) = result.outputs
    if as_dicom:
        from napari_cycleinr.io.dicom import write_dicom_series

        write_dicom_series(done.volume, target, refuse=inputs)
    else:
        write_volume(done.volume, target, refuse=inputs)
    if done.scores is not None:
        from napari_cycleinr.model.evaluate import scores_summary

        print(f"against {args.reference}: {scores_summary(done.scores)}")
    if not args.quiet:
        print(_wrote_line(target, volume, done.volume, args.ensemble, result.slice_profile))
    return 0


def _wrote_line(target: Path, volume, result, ensemble: bool, profile=None) -> str:
    record = result.metadata["super_resolution"]
    z_in, z_out = volume.shape[0], result.shape[0]
    how = ([Path(record["model"]).name] if record.get("model") else []) + (["z ensemble"] if ensemble else [])
    detail = f" ({', '.join(how)})" if how else ""
    return (
        f"wrote {target}: {z_in} -> {z_out} slices, spacing {record['spacing_in_mm']:.4g} -> "
        f"{record['spacing_out_mm']:.4g} mm, {record['method']}{detail} on "
        f"{record['device']} in {record['seconds']:.1f} s" + (f"; {profile.describe()}" if profile else "")
    )


def _request(args: argparse.Namespace, adapt: bool):
    """The pipeline's Request for upsample or adapt, without its output grid (that needs the volume)."""
    from napari_cycleinr.request import AdaptSettings, Request

    _check_consistency_arguments(args)
    settings = None
    if adapt:
        settings = AdaptSettings(
            minutes=args.minutes, steps=args.steps, seed=args.seed, noise_weight=args.noise_weight,
            save_model=getattr(args, "save_model", None),
        )
    return Request(
        method=getattr(args, "method", "cycleinr"), weights=args.model, profile=args.profile,
        profile_source="user" if args.profile else "default", thickness=args.thickness, adapt=settings,
        ensemble=args.ensemble, consistency=args.consistency, consistency_smoothing=args.consistency_smoothing,
        reference=args.reference, source=args.input, output=args.output, device=args.device,
        modality=args.modality, keep_dtype=not args.float, threads=args.threads, precision=args.precision,
        texture=args.texture,
    )


def _target(args: argparse.Namespace, volume):
    """The output grid of --factor or --spacing for this volume: resolved here, once."""
    from napari_cycleinr.request import target

    kind = "factor" if args.factor is not None else "spacing"
    return target(volume.shape[0], volume.spacing[0], kind, args.factor if args.factor is not None else args.spacing)


def _read_reference(args: argparse.Namespace, request, volume):
    """The thin reference of --reference, read and checked against the output grid before the run."""
    from napari_cycleinr.io import read_volume
    from napari_cycleinr.request import reference_mismatch

    reference = read_volume(args.reference, axis=args.axis)
    expected = (request.targets[0].n_out, *volume.shape[1:])
    problem = reference_mismatch(Path(args.reference).name, reference.shape, reference.spacing[0], expected)
    if problem:
        raise CycleINRError(problem)
    return reference


class _Reporter:
    """The pipeline's steps on the terminal: progress bars on stderr, the adaptation's and the consistency
    step's summaries on stdout as they finish."""

    def __init__(self, args: argparse.Namespace, request) -> None:
        self.args, self.request = args, request
        self.device = args.device
        self.bar = None

    def __call__(self, step) -> None:
        quiet = self.args.quiet
        if step.phase == "device":
            self.device = step.device
        elif step.phase == "fallback":
            self.device = step.device
            print("cycleinr: warning: the GPU ran out of memory; going on on the CPU (slower)", file=sys.stderr)
        elif step.phase == "adapt" and not quiet:
            steps, minutes = self.args.steps, self.args.minutes
            self.bar = _progress_printer(f"adapting for {steps} steps" if steps else f"adapting for {minutes:g} min")
        elif step.phase == "target" and not quiet:
            self.bar = _progress_printer(f"{self.request.method} on {self.device}")
        elif step.phase in ("adapting", "blocks") and self.bar is not None:
            self.bar(step.done, step.total)
        elif step.phase in ("adapted", "consistent", "textured") and not quiet:
            print(step.detail.summary())


def _check_consistency_arguments(args: argparse.Namespace) -> None:
    from napari_cycleinr.options import check_smoothing, check_texture

    check_smoothing(args.consistency_smoothing)
    check_texture(args.texture)
    if args.consistency_smoothing and not args.consistency:
        raise CycleINRError("--consistency-smoothing changes the --consistency step: add --consistency")


def _upsample_folder(args: argparse.Namespace, found=None) -> int:
    """`upsample DIR -o OUTDIR`: every scan of DIR; exit 0 if all were written or skipped, 1 if any failed."""
    from napari_cycleinr.batch import process_folder
    from napari_cycleinr.model.consistency import ConsistencyOptions

    _check_consistency_arguments(args)
    if args.reference:
        raise CycleINRError("--reference compares one output with one thin scan: give a file, not a folder")
    if args.series:
        raise CycleINRError("--series picks one DICOM series: give the folder that holds it, not a folder of scans")

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
        precision=args.precision,
        consistency=(
            ConsistencyOptions(args.profile or DEFAULT_PROFILE, args.thickness, args.consistency_smoothing)
            if args.consistency
            else None
        ),
        ensemble=args.ensemble,
        texture=args.texture,
        output_format=args.format,
        found=found,
        log=(lambda line: None) if args.quiet else (lambda line: print(line, flush=True)),
    )
    if report.rank == 0:  # under torchrun the ranks have pooled their results; one summary is enough
        print(report.summary(), file=sys.stderr if report.failed else sys.stdout)
    return 1 if report.failed else 0
