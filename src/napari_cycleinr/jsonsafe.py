"""JSON in and out without surprises: strict JSON written (undefined numbers as null, never the NaN or
Infinity tokens other readers reject), JSON read with a bound on size and nesting (a crafted sidecar cannot
exhaust the stack).

    write_json(args.json, {"results": results}, protected=[*args.references])   # guarded and atomic
    info = loads_bounded(text, what=f"{path.name}'s header")                   # CycleINRError if hostile
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from napari_cycleinr.errors import CycleINRError

MAX_DEPTH = 64
"""Results, configs and sidecars nest a few levels; 64 leaves room and stays far below the stack's limit."""
MAX_CHARACTERS = 16 * 2**20
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)


def strict_json(value: Any, indent: int | None = 2) -> str:
    """`value` as strict JSON text (with a final newline): NaN and infinities become null; numpy numbers and
    arrays, tuples and paths become their JSON equivalents."""
    return json.dumps(plain(value), indent=indent, allow_nan=False) + "\n"


def plain(value: Any) -> Any:
    """`value` with only JSON types, undefined numbers as None."""
    if isinstance(value, Mapping):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, np.ndarray):
        return plain(value.tolist())
    if isinstance(value, (list, tuple, set, frozenset)):
        return [plain(item) for item in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        number = float(value)
        return number if math.isfinite(number) else None
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def write_json(path: str | os.PathLike[str], value: Any, *, protected: Iterable[Any] = ()) -> Path:
    """Write `value` as strict JSON through the output guard (never over an input), atomically."""
    from napari_cycleinr.io.guard import write_guarded

    text = strict_json(value)
    return write_guarded(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), protected=protected)


def loads_bounded(text: str | bytes, *, what: str, max_depth: int = MAX_DEPTH) -> Any:
    """Parse JSON, refusing text over MAX_CHARACTERS or nested deeper than `max_depth` with one message
    naming `what`, before the parser recurses."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    if len(text) > MAX_CHARACTERS:
        raise CycleINRError(f"{what} holds {len(text):,} characters of JSON, over {MAX_CHARACTERS:,}")
    depth = json_depth(text)
    if depth > max_depth:
        raise CycleINRError(f"{what} nests its JSON {depth} levels deep (at most {max_depth}): it is damaged")
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as error:
        raise CycleINRError(f"{what} is not valid JSON ({' '.join(str(error).split())[:200]})") from None


def json_depth(text: str) -> int:
    """The deepest nesting of [ and { outside strings."""
    skeleton = _STRING.sub("", text).encode("utf-8", errors="replace")
    codes = np.frombuffer(skeleton, dtype=np.uint8)
    steps = np.isin(codes, (ord("["), ord("{"))).astype(np.int64) - np.isin(codes, (ord("]"), ord("}")))
    return int(np.cumsum(steps).max(initial=0))
