"""The one error boundary of the command line: whatever happens inside a command, the user gets one line.

    parser = one_line_parser_errors(build_parser())
    args = parser.parse_args(argv)                     # a bad argument: one line, exit 2
    return run_guarded(lambda: args.run(args), command=args.command)

| what escapes the command        | stderr (one line)                                       | exit |
|---------------------------------|---------------------------------------------------------|------|
| CycleINRError (the user can fix)| `cycleinr: error: <message>`                            | 2    |
| not enough memory               | `cycleinr: error: not enough memory ...`                | 2    |
| OSError (disk, permissions)     | `cycleinr: error: <file>: <system reason>`              | 2    |
| Cancelled, Ctrl-C (SIGINT)      | `cycleinr: interrupted; nothing was written`            | 130  |
| SIGTERM                         | `cycleinr: terminated; nothing was written`             | 143  |
| anything else (a bug)           | `cycleinr: internal error in <command> (<where>) ...`   | 1    |

A folder run stopped after some scans are finished says so instead of "nothing was written" (the exception's
`kept` note): those outputs are complete, the one in progress left no file.

The traceback of a bug is printed only with `debug=True` or CYCLEINR_DEBUG=1. SIGTERM is turned into an
exception (Terminated, a KeyboardInterrupt) while the command runs, so atomic writes remove their temporary
files exactly as they do on Ctrl-C instead of the process dying with a `.part` file on disk.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
import traceback
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn, TextIO

from napari_cycleinr.errors import Cancelled, CycleINRError
from napari_cycleinr.runtime.memory import out_of_memory

PROGRAM = "cycleinr"
DEBUG_VARIABLE = "CYCLEINR_DEBUG"
EXIT_OK, EXIT_BUG, EXIT_USER_ERROR, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 2, 130, 143
OUT_OF_MEMORY = (
    "not enough memory for this volume and target; use --device cpu, a smaller factor, or crop the volume "
    "(CYCLEINR_MAX_MEMORY_GB sets the reading limit)"
)


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived: unwind like Ctrl-C (temporary files removed), then exit 143."""


def debug_requested() -> bool:
    return os.environ.get(DEBUG_VARIABLE, "").strip().lower() in ("1", "true", "yes")


def run_guarded(
    run: Callable[[], int | None],
    *,
    command: str = "",
    debug: bool | None = None,
    stderr: TextIO | None = None,
    warnings_as_lines: bool = True,
) -> int:
    """Run `run()` and return its exit code, or the table's code after one line on `stderr`.

    `command` names the subcommand in the line a bug produces. Warnings print as one line each
    ('cycleinr: warning: ...') while the command runs, unless `warnings_as_lines` is False (the caller
    decides how warnings show: `cli.main` called from Python leaves them to Python).
    """
    stream = stderr if stderr is not None else sys.stderr
    debug = debug_requested() if debug is None else debug
    lines = one_line_warnings(stream) if warnings_as_lines else contextlib.nullcontext()
    with sigterm_as_interrupt(), lines:
        try:
            return int(run() or 0)
        except CycleINRError as error:
            return _say(stream, f"error: {one_line(error)}", EXIT_USER_ERROR)
        except Cancelled as stop:
            return _say(stream, f"cancelled; {_kept(stop)}", EXIT_INTERRUPTED)
        except Terminated as stop:
            return _say(stream, f"terminated; {_kept(stop)}", EXIT_TERMINATED)
        except KeyboardInterrupt as stop:
            print(file=stream)  # off the ^C echo
            return _say(stream, f"interrupted; {_kept(stop)}", EXIT_INTERRUPTED)
        except Exception as error:  # noqa: BLE001 - the one place every failure is turned into a line
            if debug:
                traceback.print_exc(file=stream)
            return _unexpected(error, command, stream)


def _kept(stop: BaseException) -> str:
    """What a stopped command leaves: its `kept` note where it finished some outputs (a folder run), else
    nothing (every write is atomic)."""
    return getattr(stop, "kept", None) or "nothing was written"


def one_line(error: BaseException | str) -> str:
    """A message on one line, whatever a library put into it."""
    return " ".join(str(error).split()) or type(error).__name__


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """While the block runs, SIGTERM raises Terminated in the main thread (elsewhere: no change)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum: int, frame: object) -> NoReturn:  # noqa: ARG001
        raise Terminated

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def one_line_warnings(stream: TextIO) -> Iterator[None]:
    """Warnings as 'cycleinr: warning: ...', one line each, instead of Python's two lines with source."""

    def show(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ARG001
        print(f"{PROGRAM}: warning: {one_line(str(message))}", file=stream)

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


def one_line_parser_errors(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Make `parser` and its subcommands' parsers report a bad argument as one line (exit 2), pointing to
    --help instead of printing the whole usage."""
    for each in _parsers(parser):
        each.error = _one_line_error(each)  # type: ignore[method-assign]
    return parser


def _one_line_error(parser: argparse.ArgumentParser) -> Callable[[str], NoReturn]:
    def error(message: str) -> NoReturn:
        parser.exit(EXIT_USER_ERROR, f"{PROGRAM}: error: {one_line(message)} (see {parser.prog} --help)\n")

    return error


def _parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    yield parser
    for action in parser._actions:  # argparse keeps subparsers here; there is no public accessor
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):
                yield from _parsers(child)


def _unexpected(error: Exception, command: str, stream: TextIO) -> int:
    if out_of_memory(error):
        return _say(stream, f"error: {OUT_OF_MEMORY}", EXIT_USER_ERROR)
    if isinstance(error, OSError):  # full disk, permissions, a file vanishing: the system's reason
        name = error.filename or "a file"
        return _say(stream, f"error: {name}: {error.strerror or one_line(error)}", EXIT_USER_ERROR)
    where = _where(error)
    running = f" in '{PROGRAM} {command}'" if command else ""
    return _say(
        stream,
        f"internal error{running} ({type(error).__name__}: {one_line(error)[:200]}{where}); no file was left "
        f"half-written. Run again with {DEBUG_VARIABLE}=1 for the traceback and report it",
        EXIT_BUG,
    )


def _where(error: BaseException) -> str:
    """' at file.py:line': the innermost frame in this package, else the innermost frame at all."""
    here = Path(__file__).resolve()
    frames = [f for f in traceback.extract_tb(error.__traceback__) if Path(f.filename).resolve() != here]
    if not frames:
        return ""
    package = str(Path(__file__).resolve().parent)
    ours = [f for f in frames if str(Path(f.filename).resolve()).startswith(package)]
    frame = (ours or frames)[-1]
    return f" at {Path(frame.filename).name}:{frame.lineno}"


def _say(stream: TextIO, text: str, code: int) -> int:
    print(f"{PROGRAM}: {text}", file=stream)
    return code
