"""Which volumes a folder of DICOM files holds, and picking one of them.

Frames are grouped by SeriesInstanceUID. Inside a series, localizers (ImageType LOCALIZER, or slices not
parallel to most of the series) are left out, and several echoes or temporal positions become separate
parts: never one stack; so do runs of different slice spacing (a head CT's 4 mm slices, then 7 mm ones).
Each part has a `key` ('5', or '5:echo=2', '5:slices=1-14' for a part) that `series=` accepts, as it
accepts the SeriesInstanceUID or the SeriesNumber.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

import numpy as np

from napari_cycleinr.errors import CycleINRError
from napari_cycleinr.io.dicom.frames import FolderScan, Frame
from napari_cycleinr.io.dicom.geometry import even_runs, slice_normal

PARALLEL_COSINE = 0.9999
"""Slice normals closer than this (about 0.8 degrees) count as one orientation."""


@dataclass(frozen=True)
class SeriesInfo:
    """One readable stack: a series, or one echo / temporal position of it."""

    uid: str
    number: int | None
    description: str
    modality: str
    slices: int
    part: str
    """'' for a whole series, else e.g. 'echo 2' or 'temporal position 3'."""
    key: str
    """What `series=` (the CLI's --series) takes to pick exactly this stack."""
    frames: tuple[Frame, ...] = field(repr=False, compare=False)

    def describe(self) -> str:
        """One line: 'series 5 "SAG MPRAGE" (MR, 48 slices) [5]'."""
        number = f"series {self.number}" if self.number is not None else "a series without number"
        description = f' "{self.description}"' if self.description else " (no description)"
        part = f", {self.part}" if self.part else ""
        return f"{number}{description} ({self.modality or '?'}{part}, {self.slices} slices) [{self.key}]"


def group_series(scan: FolderScan) -> list[SeriesInfo]:
    """Every stack in `scan`, in SeriesNumber order; localizers are counted in `scan.skipped`."""
    by_uid: dict[str, list[Frame]] = defaultdict(list)
    for frame in scan.frames:
        by_uid[frame.series_uid].append(frame)
    numbers = Counter(_series_number(frames[0]) for frames in by_uid.values())
    stacks: list[SeriesInfo] = []
    for uid, frames in by_uid.items():
        kept = _without_localizers(frames, scan)
        if not kept:
            continue
        number = _series_number(kept[0])
        base = str(number) if number is not None and numbers[number] == 1 else uid
        parts: dict[tuple[str, str], list[Frame]] = defaultdict(list)
        for frame in kept:
            parts[(frame.echo, frame.temporal)].append(frame)
        header = kept[0].header
        for (echo, temporal), part_frames in sorted(parts.items(), key=lambda item: _part_order(item[0])):
            name, suffix = _part_name(echo, temporal) if len(parts) > 1 else ("", "")
            runs = even_runs(part_frames)
            first = 1
            for run in runs:
                run_name, run_suffix = name, suffix
                if len(runs) > 1:  # slices numbered along the normal, as the spacing message numbers them
                    last = first + len(run) - 1
                    spacing = abs(float((run[1].position - run[0].position) @ slice_normal(run[0])))
                    run_name = f"slices {first}-{last} {spacing:.3g} mm apart"
                    run_name = f"{name}, {run_name}" if name else run_name
                    run_suffix = f"{suffix},slices={first}-{last}" if suffix else f":slices={first}-{last}"
                    first = last + 1
                stacks.append(
                    SeriesInfo(
                        uid=uid,
                        number=number,
                        description=" ".join(str(header.get("SeriesDescription", "") or "").split()),
                        modality=str(header.get("Modality", "") or "").upper(),
                        slices=len(run),
                        part=run_name,
                        key=base + run_suffix,
                        frames=tuple(run),
                    )
                )
    return sorted(stacks, key=lambda s: (s.number if s.number is not None else 1 << 62, s.uid, s.key))


def select_series(stacks: list[SeriesInfo], series: str | int | None, where: str) -> SeriesInfo:
    """The stack `series` names (key, UID or number), or the only one; else one error listing them."""
    if not stacks:
        raise CycleINRError(f"no DICOM image series in {where}")
    if series is None:
        if len(stacks) == 1:
            return stacks[0]
        raise CycleINRError(
            f"{where} holds {len(stacks)} image series: {listing(stacks)}; choose one with --series "
            "(or series=) and its number, UID or the key in brackets"
        )
    wanted = str(series).strip()
    exact = [
        s for s in stacks if wanted in (s.key, s.uid + s.key.partition(":")[1] + s.key.partition(":")[2])
    ]
    if len(exact) == 1:
        return exact[0]
    matches = [s for s in stacks if wanted in (s.uid, str(s.number))]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise CycleINRError(f"no series {wanted!r} in {where}; it holds {listing(stacks)}")
    if len({s.uid for s in matches}) > 1:
        reason = f"several series are numbered {wanted}; choose one by its UID"
    else:
        reason = (
            f"series {wanted} holds {len(matches)} stacks (echoes, temporal positions or runs of one slice "
            "spacing); choose one"
        )
    raise CycleINRError(f"{reason}: {listing(matches)}")


def listing(stacks: list[SeriesInfo]) -> str:
    return "; ".join(s.describe() for s in stacks)


def _series_number(frame: Frame) -> int | None:
    try:
        return int(frame.header.get("SeriesNumber"))
    except (TypeError, ValueError):
        return None


def _without_localizers(frames: list[Frame], scan: FolderScan) -> list[Frame]:
    """Frames of the series' main orientation; localizers and other orientations are counted as skipped."""
    images = [f for f in frames if not f.localizer]
    scan.skipped["localizer"] += len(frames) - len(images)
    if not images:
        return []
    normals = np.array([slice_normal(f) for f in images])
    parallel = np.abs(normals @ normals.T) >= PARALLEL_COSINE
    main = int(np.argmax(parallel.sum(axis=1)))  # the orientation most frames share
    kept = [f for f, same in zip(images, parallel[main], strict=True) if same]
    scan.skipped["other orientation (localizer?)"] += len(images) - len(kept)
    return kept


def _part_order(part: tuple[str, str]) -> tuple[float, float, str, str]:
    def as_number(text: str) -> float:
        try:
            return float(text)
        except ValueError:
            return float("inf")

    return as_number(part[0]), as_number(part[1]), part[0], part[1]


def _part_name(echo: str, temporal: str) -> tuple[str, str]:
    names, keys = [], []
    if echo:
        names.append(f"echo {echo}")
        keys.append(f"echo={echo}")
    if temporal:
        names.append(f"temporal position {temporal}")
        keys.append(f"t={temporal}")
    if not names:
        return "no echo/temporal number", ":other"
    return ", ".join(names), ":" + ",".join(keys)
