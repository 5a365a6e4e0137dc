"""Shared plumbing for the top-level scripts: one-line errors and the provenance of a run."""
import sys
from typing import Callable, Optional, Sequence

from src.errors import UserError


def run_main(main: Callable[[Optional[Sequence[str]]], object], argv: Optional[Sequence[str]] = None) -> int:
    """Run a script's ``main``; a :class:`UserError` becomes ``error: ...`` on stderr and exit code 2."""
    try:
        main(argv)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0
