"""What a training run leaves in its folder, and the state that lets a killed run continue.

After every checkpoint but the final one the trainer writes :data:`STATE_NAME` beside it: the
optimiser, the learning-rate schedule, the data order (the loader's generator and position), the
global RNG, the epoch's running totals and the log so far, and the settings that must not change.
It holds only tensors and plain Python values (``torch.load(..., weights_only=True)`` reads it),
names the checkpoint it belongs to (the weights stay in the checkpoint), and is deleted when the
run finishes. The checkpoint is written before the state, so a run killed between the two resumes
from the previous checkpoint and writes the newer one again, bit for bit.
"""
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any, Dict, List

import torch

from src.errors import UserError
from src.results_io import atomic_write

STATE_NAME = "resume_state.pt"
LOG_NAME = "training_log.csv"
STATE_VERSION = 1
_CHECKPOINT = re.compile(r"\d+\.pt")
# Temporary files of atomic_write (".<name>.<random>.tmp") left by a killed run.
_TEMPORARY = re.compile(r"\.(\d+\.pt|" + re.escape(LOG_NAME) + "|" + re.escape(STATE_NAME) + r")\..*\.tmp")


def run_files(run_dir) -> List[Path]:
    """The files a training run writes in its folder: checkpoints, the log, the resume state, temporaries."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    return sorted(p for p in run_dir.iterdir() if p.is_file() and (
        _CHECKPOINT.fullmatch(p.name) or p.name in (LOG_NAME, STATE_NAME) or _TEMPORARY.fullmatch(p.name)))


def clear_run(run_dir) -> None:
    """Delete what an earlier run wrote (``--overwrite``); files this project did not write stay."""
    for path in run_files(run_dir):
        path.unlink()


def remove_temporaries(run_dir) -> None:
    """Delete the half-written temporaries a killed run left behind (``--resume`` writes those files anew)."""
    for path in run_files(run_dir):
        if _TEMPORARY.fullmatch(path.name):
            path.unlink(missing_ok=True)


def write_state(run_dir, state: Dict[str, Any]) -> Path:
    return atomic_write(Path(run_dir) / STATE_NAME, lambda f: torch.save(dict(state, version=STATE_VERSION), f))


def remove_state(run_dir) -> None:
    (Path(run_dir) / STATE_NAME).unlink(missing_ok=True)


def read_state(run_dir) -> Dict[str, Any]:
    """The resume state of a run folder; a missing or unreadable one is a one-line UserError."""
    path = Path(run_dir) / STATE_NAME
    if not path.is_file():
        checkpoints = [p for p in run_files(run_dir) if _CHECKPOINT.fullmatch(p.name)]
        last = f" (its last checkpoint is {max(checkpoints, key=lambda p: int(p.stem)).name})" if checkpoints else ""
        raise UserError(f"{run_dir} holds no {STATE_NAME}{last}: the run finished, or stopped before its first "
                        f"checkpoint; pass --overwrite instead of --resume to train it again")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, EOFError, RuntimeError, zipfile.BadZipFile, ValueError, OSError) as err:
        raise UserError(f"{path} is not a readable resume state ({type(err).__name__}); "
                        f"pass --overwrite to train the run again") from err
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        raise UserError(f"{path} is not a resume state of this version; pass --overwrite to train the run again")
    return state


def check_same_run(saved: Dict[str, Any], now: Dict[str, Any], run_dir) -> None:
    """A run continues only with the settings it started with (the data order and schedule depend on them)."""
    changed = [f"{key} {saved.get(key)!r} -> {now[key]!r}" for key in now if saved.get(key) != now[key]]
    if changed:
        raise UserError(f"--resume continues the run in {run_dir} with its own settings, but these differ: "
                        f"{', '.join(changed)}; repeat its options or pass --overwrite to start again")
