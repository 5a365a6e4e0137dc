"""Writing result files atomically, claiming outputs, and reading results back safely.

A result is written to a temporary file in the target folder and renamed into place, so a
crash or Ctrl-C never leaves a half-written file under the final name; files get the permissions
the umask gives (as ``open()`` would), not ``mkstemp``'s 0600. :func:`claim_output` lets only one
run at a time write an output, and :func:`staged_folder` replaces a folder of outputs as a whole.
Pickles are read with :func:`src.safe_pickle.restricted_load`, which refuses anything but the
plain values, numpy arrays and pandas frames results hold, and any file that would take more memory
to load than its size accounts for.
"""
import fcntl
import json
import os
import pickle
import shutil
import socket
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, Optional, Union

import pandas as pd

from src.errors import UserError
from src.safe_pickle import Refused, restricted_load

PathLike = Union[str, Path]


def current_umask() -> int:
    """The process's umask, read without changing it where the OS allows (Linux: /proc/self/status)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore (not thread-safe, but only scripts get here)
    os.umask(mask)
    return mask


def honour_umask(path: PathLike, directory: bool = False) -> None:
    """Give ``path`` the mode ``open()`` / ``mkdir()`` would have: 0o666 (0o777 for folders) minus the umask."""
    os.chmod(path, (0o777 if directory else 0o666) & ~current_umask())


def dangling_link(path: PathLike) -> Optional[Path]:
    """The first of ``path`` and its parent folders that is a symbolic link to nothing, else None."""
    path = Path(path)
    for candidate in (path, *path.parents):
        if candidate.is_symlink() and not candidate.exists():
            return candidate
    return None


def refuse_dangling_link(path: PathLike) -> None:
    """A :class:`UserError` when ``path``, or a folder above it, is a symbolic link whose target does not exist.

    Writing there would fail with a bare "File exists" (creating the folder) or silently replace the link
    by a file; the message says which link it is, where it points, and what to do.
    """
    link = dangling_link(path)
    if link is None:
        return
    try:
        target = os.readlink(link)
    except OSError:
        target = "?"
    where = "" if link == Path(path) else f" (a folder above {path})"
    raise UserError(f"{link}{where} is a dangling symbolic link: it points to {target}, which does not exist; "
                    f"make {target} exist (e.g. mount its drive), remove the link, or choose another output path")


def refuse_directory(path: PathLike) -> None:
    """A :class:`UserError` when ``path``, which is to be written as a file, is a folder."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path} is a folder, not a file; give the path of a file to write (a new name inside "
                        f"that folder, or beside it)")


def atomic_write(path: PathLike, write: Callable[[Any], None], mode: str = "wb") -> Path:
    """Call ``write(fileobj)`` on a temporary file next to ``path``, then rename it to ``path``.

    A ``path`` that is a folder, or under a dangling symbolic link, is a one-line :class:`UserError`.
    """
    path = Path(path)
    refuse_dangling_link(path)
    refuse_directory(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot write {path} ({err.strerror or err}); choose a folder you can write to") from err
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        honour_umask(tmp)  # mkstemp makes 0600; a result is meant to be shared like any other file
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


def refuse_overwrite(path: PathLike, overwrite: bool, flag: str = "--overwrite",
                     instead: str = "choose another --run-name") -> None:
    """Raise a :class:`UserError` if ``path`` exists and overwriting was not asked for (check before any work)."""
    path = Path(path)
    refuse_dangling_link(path)
    if path.exists() and not overwrite:
        raise UserError(f"{path} already exists; pass {flag} to replace it or {instead}")


class OutputClaim:
    """The exclusive right of this process to write one output (a result file or a run folder).

    Held as a ``flock`` on ``.<name>.claim`` beside the output: the lock is the claim, so a run killed
    with SIGKILL loses it with its process and never blocks a rerun; the file records who holds it.
    Release it with :meth:`release` or by leaving the ``with`` block.
    """

    def __init__(self, path: Path, lock_path: Path, fd: int, created_folder: Optional[Path]):
        self.path, self.lock_path, self._fd, self._created_folder = path, lock_path, fd, created_folder

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.unlink(self.lock_path)  # while still locked: a waiting run then sees a fresh file (see try_claim)
        except FileNotFoundError:
            pass
        os.close(self._fd)
        self._fd = None
        if self._created_folder is not None:  # a run that wrote nothing leaves no empty folder behind
            try:
                self._created_folder.rmdir()
            except OSError:
                pass

    def __enter__(self) -> "OutputClaim":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def try_claim(path: PathLike) -> Optional[OutputClaim]:
    """Claim ``path`` for this process (create-if-absent), or ``None`` when another live process holds it.

    For sweeps that skip outputs another worker is busy with; scripts use :func:`claim_output`.
    Creates ``path``'s folder; an unwritable folder is a :class:`UserError`.
    """
    path = Path(path)
    refuse_dangling_link(path)  # else mkdir fails with a bare "File exists"
    folder = path.parent
    created = None if folder.is_dir() else folder
    lock_path = folder / f".{path.name}.claim"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return None
            try:  # the holder we waited for may have unlinked the file between our open and our lock
                if os.stat(lock_path).st_ino == os.fstat(fd).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
    except OSError as err:
        raise UserError(f"cannot write to {folder} ({err.strerror}); choose a folder you can write to") from err
    return OutputClaim(path, lock_path, fd, created)


def claim_output(path: PathLike) -> OutputClaim:
    """Claim ``path`` (a result file or a run folder) for this run before any work starts.

    Use as ``with claim_output(path): refuse_overwrite(path, overwrite); ...``: checked while the claim
    is held, two runs with the same output cannot both pass the existence check; the second is told
    that another run is writing it.
    """
    path = Path(path)
    claim = try_claim(path)
    if claim is None:
        holder = _read_holder(path.parent / f".{path.name}.claim")
        raise UserError(f"another run ({holder}) is writing {path} right now; wait for it to finish "
                        f"or choose another output name")
    return claim


def _read_holder(lock_path: Path) -> str:
    try:
        return lock_path.read_text().strip() or "unknown process"
    except OSError:
        return "unknown process"


@contextmanager
def staged_folder(directory: PathLike, owned: Iterable[str], marker: Optional[str] = None) -> Iterator[Path]:
    """A fresh folder to write a run into; when the ``with`` block succeeds, its files replace ``directory``'s.

    ``owned`` names every file a run of this kind writes: those of the previous run in ``directory``
    are removed, so none outlives the run that replaced it (other files there are left alone).
    ``marker`` (one of ``owned``, e.g. the pickle) is removed first and moved in last, so a folder
    holding it holds a complete run. An absent ``directory`` is the staged folder renamed into place.
    If the block fails, ``directory`` is untouched and the staged folder removed.
    """
    directory = Path(directory)
    refuse_dangling_link(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=".tmp", dir=directory.parent))
    try:
        honour_umask(staging, directory=True)  # mkdtemp makes 0700
        yield staging
        if not directory.exists():
            os.replace(staging, directory)
            return
        owned = list(owned)
        last = [marker] if marker in owned else []
        for name in last + [n for n in owned if n not in last]:
            (directory / name).unlink(missing_ok=True)
        new = sorted(p.name for p in staging.iterdir())
        for name in [n for n in new if n not in last] + [n for n in new if n in last]:
            os.replace(staging / name, directory / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


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
            return restricted_load(handle)
    except Refused as err:  # a foreign global, a use no result makes, or a pickle bomb
        raise UserError(f"refusing to load {path}: {err}; only open pickles from trusted sources") from err
    except MemoryError:  # within the budget, yet more than this machine has: still one line, never a traceback
        raise UserError(f"cannot load {path}: it needs more memory than is free here; close other programs "
                        f"or load it on a machine with more memory") from None
    except RecursionError as err:
        raise UserError(f"{path} is not a readable result pickle (it nests too deep); re-run the job that wrote it") from err
    except OSError as err:
        raise UserError(f"cannot read {path} ({err.strerror or err}); check that it is a readable file") from err
    except Exception as err:  # truncated, corrupt, or refused by numpy / pandas while rebuilding: not a result
        reason = " ".join(str(err).split())  # one line, whatever numpy or pandas said
        raise UserError(f"{path} is not a readable result pickle ({type(err).__name__}: {reason}); re-run the job that wrote it") from err


def write_figure(path, fig, software: str, provenance: Optional[Dict[str, Any]] = None, dpi: int = 130):
    """A matplotlib figure as a PNG, atomically, with the software and the run's provenance in its metadata."""
    metadata = {"Software": software}
    if provenance is not None:
        metadata["Description"] = json.dumps(provenance, default=str)
    return atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=dpi, metadata=metadata))
