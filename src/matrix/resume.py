"""Which cells of a matrix are finished: their pickle loads completely, matches its digest and was computed with
this cell's parameters.

A cell file counts as finished when the pickle is there (it is renamed into place last, after its
``<name>.pkl.sha256`` digest: :func:`src.results_io.write_pickle`), its bytes match that digest and its
parameters are the cell's. A pickle that does not match its digest was changed or damaged after it was written:
it is *damaged*, reported by name, and ``--resume`` runs the cell again. A pickle without a digest file was
written before digests were recorded (or its digest was deleted): it is accepted *unverified*, and the tables
say so in one note naming such cells; delete a cell's pickle to have ``--resume`` run it again.
"""
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional

from src.results_io import ChangedFile, digest_path
from src.stitching.job import result_params
from src.stitching.results import load_result
from src.matrix.runinfo import LOCAL_FIELDS


def cell_difference(result: Dict[str, Any], job, digests: Optional[Dict[str, str]]) -> Optional[str]:
    """The name of the first parameter in which a cell's stored result differs from ``job`` (None: none)."""
    params = result.get("params", {})
    expected = {k: v for k, v in result_params(job, digests).items() if k not in LOCAL_FIELDS or k.endswith("_layer")}
    for key, value in expected.items():
        if params.get(key) != value:
            return key
    return None


#: Why a cell's pickle that is there does not count: what the messages say.
CHANGED = "changed since it was written, its SHA-256 differs from its .sha256 file"
UNREADABLE = "unreadable, truncated or corrupt"


@dataclass
class CellFile:
    """One cell file's state: ``result`` when finished; else ``problem`` says why not. ``damaged``: the pickle is
    there but :data:`CHANGED` or :data:`UNREADABLE` (as opposed to missing or computed with other parameters)."""

    path: Path
    result: Optional[Dict[str, Any]] = None
    problem: Optional[str] = None
    verified: bool = False

    @property
    def damaged(self) -> bool:
        return self.problem in (CHANGED, UNREADABLE)

    @property
    def finished(self) -> bool:
        return self.result is not None


def cell_file(path: Path, job, digests: Optional[Dict[str, str]], needs: tuple = ()) -> CellFile:
    """The state of the cell file ``path`` for ``job`` (and the networks' ``digests``); ``needs``: keys its
    result must hold (a similarity twin's ``evess``)."""
    path = Path(path)
    if not path.is_file():
        return CellFile(path, problem="not finished")
    try:
        result = load_result(path)  # checks the bytes against the digest file first (read_pickle)
    except ChangedFile:
        return CellFile(path, problem=CHANGED)
    except Exception:  # truncated, corrupt, refused (a UserError) or anything the loader did not foresee
        return CellFile(path, problem=UNREADABLE)
    key = cell_difference(result, job, digests)
    if key is not None:
        return CellFile(path, problem=f"computed with another {key}")
    if any(k not in result for k in needs):
        return CellFile(path, problem="not finished")
    return CellFile(path, result=result, verified=digest_path(path).is_file())


def finished_result(path: Path, job, digests: Optional[Dict[str, str]]) -> Optional[Dict[str, Any]]:
    """The cell's result if its pickle is complete, matches its digest (or has none) and matches ``job`` (and the
    checkpoints' digests), else None."""
    return cell_file(path, job, digests).result


def remove_leftovers(path: Path) -> None:
    """Temporary files a killed writer of this cell left beside it (its claim is ours now)."""
    path = Path(path)
    for name in (path.name, digest_path(path).name, path.with_suffix(".csv").name):
        for leftover in path.parent.glob(f".{name}.*.tmp"):
            leftover.unlink(missing_ok=True)
