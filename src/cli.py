"""Shared plumbing for the top-level scripts: one-line errors and the command line a run records (the data set
options the scripts share are in :mod:`src.data.options`)."""
import sys
from pathlib import Path
from typing import Callable, List, Optional, Sequence

from src.allocator import keep_freed_memory
from src.errors import UserError


def run_main(main: Callable[[Optional[Sequence[str]]], object], argv: Optional[Sequence[str]] = None) -> int:
    """Run a script's ``main``; a :class:`UserError` becomes ``error: ...`` on stderr and exit code 2.

    From a command line (``argv`` None) the process also keeps its freed memory (:mod:`src.allocator`)."""
    line_buffered_stdout()
    if argv is None:
        keep_freed_memory()
    try:
        main(argv)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into head & co.: not an error
        sys.stderr.close()
        return 0
    return 0


def line_buffered_stdout() -> None:
    """Flush stdout at every newline even when it is a file or a pipe (Python buffers those in blocks),
    so that the log of a run killed midway holds every progress line printed before."""
    try:
        sys.stdout.reconfigure(line_buffering=True)
    except (AttributeError, ValueError, OSError):  # replaced by something that is not a text stream, or closed
        pass


def script_argv(script_file: str, argv: Optional[Sequence[str]]) -> List[str]:
    """The command line to record: ``sys.argv`` when run from a shell, else the script name plus ``argv``."""
    return list(sys.argv) if argv is None else [Path(script_file).name, *argv]
