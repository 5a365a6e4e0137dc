"""What produced a file: code version, command line, arguments, library versions.

Every result file the project writes embeds :func:`provenance` so it is self-describing.
Nothing here may raise: outside a git checkout the code version is simply ``None``.
"""
import datetime as _dt
import platform
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, Optional

from src.config import REPO_ROOT


def _git(*args: str) -> Optional[str]:
    try:
        out = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_info() -> Dict[str, Any]:
    """Commit, branch and whether the work tree had uncommitted changes (all ``None`` outside git)."""
    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {
        "commit": commit,
        "branch": _git("rev-parse", "--abbrev-ref", "HEAD") if commit else None,
        "dirty": (bool(status) if status is not None else None),
    }


def command_line(argv=None) -> str:
    argv = sys.argv if argv is None else argv
    script = Path(argv[0]).name if argv else ""
    return " ".join(["python", shlex.quote(script), *(shlex.quote(a) for a in argv[1:])]).strip()


def versions() -> Dict[str, str]:
    import numpy
    import torch

    info = {"python": platform.python_version(), "torch": str(torch.__version__), "numpy": str(numpy.__version__)}
    try:
        import torchvision

        info["torchvision"] = str(torchvision.__version__)
    except ImportError:  # pragma: no cover - torchvision is a requirement
        pass
    return info


def jsonable(value: Any) -> Any:
    """Plain Python for JSON and for pickles that need no project class to be read: dicts, lists, str, int,
    float, bool and None as they are; numpy arrays, numpy scalars and tensors as (nested) lists or numbers;
    anything else (paths, enums) as its ``str``."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if hasattr(value, "tolist"):  # numpy arrays and scalars, tensors
        return jsonable(value.tolist())
    return str(value)


def provenance(args: Any = None, argv=None) -> Dict[str, Any]:
    """The block stored under ``"provenance"`` in every result, checkpoint and export."""
    if args is not None and not isinstance(args, dict):
        args = vars(args)
    return {
        "git": git_info(),
        "command": command_line(argv),
        "args": jsonable(args) if args is not None else None,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "versions": versions(),
    }
