"""Checks of user-given options, made before any work: one line saying what is wrong and what to do.

Every script refuses a bad number, name or output folder before it loads a model, touches data or
writes a file, so a run never trains for hours on ``-lr nan`` or fails at its last write.

- :func:`check_int`, :func:`check_float`: bounds of one value (floats must also be finite);
  :func:`int_option` / :func:`float_option` wrap them as argparse ``type=`` callables.
- :func:`check_run_name`: a subfolder name that cannot leave its output folder (nor hold a newline).
- :func:`check_writable_dir`: the output folder can be created and written to (nothing is left behind).
- :func:`check_train_job`: every option of a training job; :func:`check_optimisation`: the options training
  and stitching share (a stitching job checks itself: :meth:`src.stitching.job.StitchJob.check`).

All of them raise :class:`src.errors.UserError`, which the scripts print as ``error: ...`` (exit 2).
"""
import math
import os
import tempfile
import unicodedata
from numbers import Integral, Real
from pathlib import Path
from typing import Callable, Optional

from src.errors import UserError


def check_int(value, option: str, minimum: int = 1, maximum: Optional[int] = None) -> int:
    """``value`` as an int; UserError unless it is an integer (not a bool) in ``minimum..maximum``."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise UserError(f"{option} must be an integer >= {minimum}, got {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        bounds = f">= {minimum}" if maximum is None else f"between {minimum} and {maximum}"
        raise UserError(f"{option} must be an integer {bounds}, got {value}")
    return int(value)


def check_float(value, option: str, minimum: Optional[float] = None, *, above: Optional[float] = None,
                below: Optional[float] = None) -> float:
    """``value`` as a float; UserError unless it is a finite number ``>= minimum``, ``> above``, ``< below``."""
    bounds = [f">= {minimum:g}" if minimum is not None else "", f"> {above:g}" if above is not None else "",
              f"< {below:g}" if below is not None else ""]
    wanted = " and ".join(b for b in bounds if b)
    what = f"a finite number {wanted}".rstrip()
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
        raise UserError(f"{option} must be {what}, got {value!r}")
    if ((minimum is not None and value < minimum) or (above is not None and value <= above)
            or (below is not None and value >= below)):
        raise UserError(f"{option} must be {what}, got {value:g}")
    return float(value)


def int_option(option: str, minimum: int = 1) -> Callable[[str], int]:
    """An argparse ``type=`` for an integer option of at least ``minimum`` (a UserError, not a usage dump)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise UserError(f"{option} must be an integer >= {minimum}, got {text!r}") from None
        return check_int(value, option, minimum)
    parse.__name__ = "int"
    return parse


def float_option(option: str, minimum: Optional[float] = None, *, above: Optional[float] = None,
                 below: Optional[float] = None) -> Callable[[str], float]:
    """An argparse ``type=`` for a finite float option within the given bounds."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = text
        return check_float(value, option, minimum, above=above, below=below)
    parse.__name__ = "float"
    return parse


def check_run_name(name: Optional[str], option: str = "--run-name") -> Optional[str]:
    """A run name is one plain folder name: not empty, no path separator, not ``.`` or ``..``, and no control
    characters (a newline or tab in a folder name breaks every listing, log line and shell loop over results)."""
    if name is None:
        return None
    separators = [s for s in (os.sep, os.altsep, "/") if s]
    if (not isinstance(name, str) or not name.strip() or name in (".", "..") or "\0" in name
            or any(s in name for s in separators)):
        raise UserError(f"{option} must be a plain folder name (no '/', not empty, '.' or '..'), got {name!r}; "
                        f"use -o/--out-dir to choose where the run folder goes")
    control = sorted({c for c in name if unicodedata.category(c) in _CONTROL_CATEGORIES})
    if control:
        shown = ", ".join(repr(c) for c in control)
        raise UserError(f"{option} must be a plain folder name without control characters (newlines, tabs, ...), "
                        f"got {name!r} (it holds {shown}); use letters, digits, '-', '_' or '.'")
    return name


#: Unicode categories refused in run names: control characters (C0, DEL, C1) and line / paragraph separators.
_CONTROL_CATEGORIES = ("Cc", "Zl", "Zp")


def check_writable_dir(folder, option: str = "-o/--out-dir") -> Path:
    """UserError unless ``folder`` exists as a writable folder or can be created.

    Tries a temporary file in the nearest existing ancestor (removed at once), so nothing is
    created: a run that fails later leaves no empty folders behind.
    """
    folder = Path(folder)
    existing = folder
    while not existing.exists() and existing != existing.parent:
        if existing.is_symlink():  # a link to nothing: creating the folder would fail with a bare "File exists"
            raise UserError(f"cannot write to {folder}: {existing} is a dangling symbolic link (it points to "
                            f"{os.readlink(existing)}, which does not exist); create that folder, remove the link, "
                            f"or choose another {option}")
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"cannot write to {folder}: {existing} is a file, not a folder; choose another {option}")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        raise UserError(f"cannot write to {folder}: {err.strerror or err} in {existing}; "
                        f"choose another {option} or make it writable") from err
    return folder


def check_batch_fits(batch_size: int, num_samples: int) -> None:
    """Training drops the last partial batch: a batch larger than the data would train on nothing."""
    if batch_size > num_samples:
        raise UserError(f"-b/--batch-size {batch_size} is larger than the {num_samples} training samples, so an epoch "
                        f"has no full batch (the last partial batch is dropped): use a smaller batch size")


def check_optimisation(job) -> None:
    """The options training and stitching share (same flags in both scripts)."""
    check_int(job.epochs, "-e/--epochs")
    check_int(job.batch_size, "-b/--batch-size")
    check_float(job.lr, "-lr/--lr", above=0)
    check_float(job.weight_decay, "-wd/--weight-decay", 0)
    if job.val_size is not None:  # None: the data set's default
        check_int(job.val_size, "--val-size", 0)
    if job.max_samples is not None:
        check_int(job.max_samples, "--max-samples")
        check_batch_fits(job.batch_size, job.max_samples)


def check_train_job(job) -> None:
    """Every option of a :class:`src.training.run.TrainJob` (None save frequency: first and last only)."""
    check_optimisation(job)
    check_int(job.init_noise, "-i/--init-noise", 0)
    check_int(job.gradient_noise, "-g/--gradient-noise", 0)
    if job.save_frequency is not None:
        check_int(job.save_frequency, "-s/--save-frequency")
    if job.overwrite and job.resume:
        raise UserError("--overwrite starts the run again and --resume continues it: pass one of them")
