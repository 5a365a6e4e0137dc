"""Writing result files atomically and reading them back with clear errors.

A result is written to a temporary file in the target folder and renamed into place, so a
crash or Ctrl-C never leaves a half-written file under the final name.
"""
import json
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any, Callable, Union

import pandas as pd

from src.errors import UserError

PathLike = Union[str, Path]


def atomic_write(path: PathLike, write: Callable[[Any], None], mode: str = "wb") -> Path:
    """Call ``write(fileobj)`` on a temporary file next to ``path``, then rename it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def refuse_overwrite(path: PathLike, overwrite: bool, flag: str = "--overwrite") -> None:
    """Raise a :class:`UserError` if ``path`` exists and overwriting was not asked for."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise UserError(f"{path} already exists; pass {flag} to replace it or choose another --run-name")


def write_pickle(path: PathLike, obj: Any) -> Path:
    return atomic_write(path, lambda f: pickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL))


def write_csv(path: PathLike, frame: pd.DataFrame, index: bool = False) -> Path:
    return atomic_write(path, lambda f: frame.to_csv(f, index=index), mode="w")


def write_json(path: PathLike, obj: Any) -> Path:
    return atomic_write(path, lambda f: json.dump(obj, f, indent=2, default=str), mode="w")


def read_pickle(path: PathLike) -> Any:
    """Load a result pickle; a missing, truncated or foreign file is a one-line :class:`UserError`."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"result file {path} does not exist; check the path (results are under results/<run-name>/)")
    try:
        with open(path, "rb") as handle:
            return pickle.load(handle)
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, IndexError, ValueError, TypeError) as err:
        raise UserError(f"{path} is not a readable result pickle ({type(err).__name__}: {err}); re-run the job that wrote it") from err
