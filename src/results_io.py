"""Writing result files atomically, claiming outputs, and reading results back safely.

A result is written to a temporary file in the target folder and renamed into place, so a
crash or Ctrl-C never leaves a half-written file under the final name; files get the permissions
the umask gives (as ``open()`` would), not ``mkstemp``'s 0600. :func:`claim_output` lets only one
run at a time write an output, and :func:`staged_folder` replaces a folder of outputs as a whole.
Pickles are read with :func:`src.safe_pickle.restricted_load`, which refuses anything but the
plain values, numpy arrays and pandas frames results hold, and any file that would take more memory
to load than its size accounts for.

Integrity: :func:`write_pickle` with ``digest=True`` (stitching results, matrix cells, ``matrix.pkl``) records the
SHA-256 of the pickle's bytes in a sidecar ``<name>.sha256`` (``sha256sum`` format, so ``sha256sum -c`` checks it
too). The sidecar is written *before* the pickle is renamed into place: a writer killed at any point leaves either
no pickle under the final name, or a pickle whose sidecar matches it; a pickle beside a sidecar it does not match
was changed or damaged afterwards (or is an older pickle whose replacement never arrived). :func:`read_pickle`
checks the sidecar when there is one and refuses a mismatch (:class:`ChangedFile`); a pickle without one (written
before digests were recorded) loads unverified.

Room: :func:`check_free_space` refuses a run before its work when the output folder has less free space than the
run's rough output size; a write that still runs out of room (no space, over the file-size limit, over quota)
is a one-line :class:`NoRoom` naming the file, and leaves no partial file under any name.
"""
import errno
import fcntl
import hashlib
import json
import os
import pickle
import shutil
import socket
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Callable, Dict, Iterable, Iterator, Optional, Union

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


def atomic_write(path: PathLike, write: Callable[[Any], None], mode: str = "wb",
                 before_replace: Optional[Callable[[Path], None]] = None) -> Path:
    """Call ``write(fileobj)`` on a temporary file next to ``path``, then rename it to ``path``.

    ``before_replace(tmp)`` runs once the temporary file is complete, just before the rename (if it raises,
    nothing is renamed). Running out of room (ENOSPC, EFBIG, EDQUOT) is a one-line :class:`NoRoom` naming
    ``path``; the temporary file is removed whatever fails.

    A ``path`` that is a folder, or under a dangling symbolic link, is a one-line :class:`UserError`.
    """
    path = Path(path)
    refuse_dangling_link(path)
    refuse_directory(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot write {path} ({err.strerror or err}); choose a folder you can write to") from err
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise no_room(path, err) or err
    try:
        honour_umask(tmp)  # mkstemp makes 0600; a result is meant to be shared like any other file
        with os.fdopen(fd, mode) as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        if before_replace is not None:
            before_replace(Path(tmp))
        os.replace(tmp, path)
    except BaseException as err:
        try:
            os.unlink(tmp)  # never a partial file: not under the final name, not under the temporary one
        except FileNotFoundError:
            pass
        if isinstance(err, OSError):
            raise no_room(path, err) or err
        raise
    return path


#: The errors of a write that ran out of room, with what they mean and what to do.
NO_ROOM = {
    errno.ENOSPC: ("no space left on the device", "free some space there or write elsewhere (-o/--out-dir)"),
    errno.EFBIG: ("file too large: over the file-size limit (ulimit -f) or the file system's largest file",
                  "raise the limit (ulimit -f unlimited) or write elsewhere (-o/--out-dir)"),
    errno.EDQUOT: ("disk quota exceeded", "free some of your files there or write elsewhere (-o/--out-dir)"),
}


class NoRoom(UserError):
    """A write that failed for want of room (ENOSPC, EFBIG, EDQUOT); ``path``: the file that was not written."""

    def __init__(self, message: str, path: Path, errno_: int):
        super().__init__(message)
        self.path, self.errno = Path(path), errno_


def no_room(path: PathLike, err: OSError) -> Optional[NoRoom]:
    """``err`` as a one-line :class:`NoRoom` naming ``path`` when it is a lack of room, else None."""
    if err.errno not in NO_ROOM:
        return None
    meaning, advice = NO_ROOM[err.errno]
    name = errno.errorcode.get(err.errno, str(err.errno))
    return NoRoom(f"cannot write {path}: {meaning} ({name}); nothing was written under that name; {advice}",
                  Path(path), err.errno)


def _size(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def check_free_space(folder: PathLike, needed_bytes: int, what: str) -> None:
    """A one-line :class:`UserError`, before any work, when ``folder`` (or the nearest folder above it that exists)
    has less free space than ``needed_bytes``, the rough size of what the run will write (``what`` names it).

    Rough on purpose: a quota or another process filling the disk meanwhile is still caught at write time
    (:class:`NoRoom`). A file system whose free space cannot be read is not refused.
    """
    folder = Path(folder)
    probe = folder
    while not probe.is_dir() and probe != probe.parent:
        probe = probe.parent
    try:
        free = shutil.disk_usage(probe).free
    except OSError:
        return
    if free < needed_bytes:
        raise UserError(f"{folder} has {_size(free)} free, less than the {_size(needed_bytes)} or so needed for "
                        f"{what}; free some space there or write elsewhere (-o/--out-dir)")


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


DIGEST_SUFFIX = ".sha256"


def digest_path(path: PathLike) -> Path:
    """The sidecar holding the SHA-256 of ``path``'s bytes: ``<name>.sha256`` beside it."""
    path = Path(path)
    return path.with_name(path.name + DIGEST_SUFFIX)


class ChangedFile(UserError):
    """A file whose bytes are not those its digest sidecar records: changed or damaged after it was written."""

    def __init__(self, message: str, path: Path):
        super().__init__(message)
        self.path = Path(path)


class _Hashing:
    """A binary file that hashes what is written through it."""

    def __init__(self, handle: BinaryIO):
        self.handle, self.hasher = handle, hashlib.sha256()

    def write(self, data) -> int:
        self.hasher.update(data)
        return self.handle.write(data)


def recorded_digest(path: PathLike) -> Optional[str]:
    """The SHA-256 (hex) that ``path``'s sidecar records; None without a sidecar; :class:`ChangedFile` if unreadable."""
    path = Path(path)
    sidecar = digest_path(path)
    try:
        text = sidecar.read_text(encoding="ascii", errors="replace")
    except FileNotFoundError:
        return None
    except OSError as err:
        raise ChangedFile(f"cannot read {sidecar}, the digest of {path} ({err.strerror or err}); check that it "
                          f"is a readable file", path) from err
    words = text.split()
    digest = words[0].lower() if words else ""
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise ChangedFile(f"{sidecar}, the digest of {path}, is damaged (not a SHA-256 line); re-run the job "
                          f"that wrote {path.name}", path)
    return digest


def sha256_of(handle: BinaryIO) -> str:
    """The SHA-256 (hex) of what is left to read from ``handle``, read in blocks."""
    hasher = hashlib.sha256()
    for block in iter(lambda: handle.read(1 << 20), b""):
        hasher.update(block)
    return hasher.hexdigest()


def check_digest(path: PathLike, handle: Optional[BinaryIO] = None) -> bool:
    """True when ``path``'s bytes (read from ``handle``, an open binary file of it, when given: then rewound) match
    its sidecar, False when it has none (unverified); a mismatch is a one-line :class:`ChangedFile` naming the file."""
    path = Path(path)
    recorded = recorded_digest(path)
    if recorded is None:
        return False
    if handle is None:
        with open(path, "rb") as own:
            actual = sha256_of(own)
    else:
        actual = sha256_of(handle)
        handle.seek(0)
    if actual != recorded:
        raise ChangedFile(f"{path} was changed or damaged after it was written: its SHA-256 {actual[:12]}... differs "
                          f"from {recorded[:12]}... recorded in {digest_path(path).name}; re-run the job that wrote "
                          f"it (a matrix: stitch_matrix.py --resume reruns such cells)", path)
    return True


def write_digest(path: PathLike, digest: str) -> Path:
    """Record ``digest`` as the SHA-256 of ``path`` in its sidecar (atomically)."""
    path = Path(path)
    return atomic_write(digest_path(path), lambda f: f.write(f"{digest}  {path.name}\n"), mode="w")


def write_pickle(path: PathLike, obj: Any, digest: bool = False) -> Path:
    """``obj`` pickled to ``path`` atomically; with ``digest`` the SHA-256 of the bytes in ``<name>.sha256``.

    The order makes the pickle under its final name the mark of a finished file: the pickle is written to a
    temporary name, then its digest is written, then the pickle is renamed into place. Killed before the rename,
    a writer leaves no pickle (a sidecar alone means nothing), or the previous pickle beside a digest it does not
    match (refused as changed, so rerun); if the pickle cannot be written the previous sidecar is put back.
    """
    path = Path(path)
    if not digest:
        return atomic_write(path, lambda f: pickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL))
    sidecar = digest_path(path)
    hashing: Dict[str, _Hashing] = {}
    try:
        previous = sidecar.read_text() if sidecar.is_file() else None
    except OSError:
        previous = None

    def dump(handle) -> None:
        hashing["writer"] = _Hashing(handle)
        pickle.dump(obj, hashing["writer"], protocol=pickle.HIGHEST_PROTOCOL)

    recorded = []

    def record(_tmp: Path) -> None:
        write_digest(path, hashing["writer"].hasher.hexdigest())
        recorded.append(True)

    try:
        return atomic_write(path, dump, before_replace=record)
    except BaseException:
        if recorded:  # the new digest is in place but the pickle is not: the previous sidecar back (or none)
            try:
                if previous is None:
                    sidecar.unlink(missing_ok=True)
                else:
                    atomic_write(sidecar, lambda f: f.write(previous), mode="w")
            except (OSError, UserError):
                sidecar.unlink(missing_ok=True)
        raise


def write_csv(path: PathLike, frame: pd.DataFrame, index: bool = False) -> Path:
    return atomic_write(path, lambda f: frame.to_csv(f, index=index), mode="w")


def write_json(path: PathLike, obj: Any) -> Path:
    return atomic_write(path, lambda f: json.dump(obj, f, indent=2, default=str), mode="w")


def read_pickle(path: PathLike) -> Any:
    """Load a result pickle; a missing, truncated or foreign file is a one-line :class:`UserError`, and so is one
    that does not match the digest recorded beside it (:class:`ChangedFile`; see :func:`write_pickle`)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"result file {path} does not exist; check the path (results are under results/<run-name>/)")
    try:
        with open(path, "rb") as handle:
            check_digest(path, handle)  # the very file loaded next; a file without a digest loads unverified
            return restricted_load(handle)
    except UserError:  # changed since it was written (ChangedFile), or its digest file unreadable
        raise
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
