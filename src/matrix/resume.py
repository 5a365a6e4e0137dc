"""Which cells of a matrix are finished: their pickle loads completely and was computed with this cell's parameters."""
from pathlib import Path
from typing import Any, Dict, Optional

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


def finished_result(path: Path, job, digests: Optional[Dict[str, str]]) -> Optional[Dict[str, Any]]:
    """The cell's result if its pickle is complete and matches ``job`` (and the checkpoints' digests), else None."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        result = load_result(path)
    except Exception:  # unreadable or incomplete: not finished, run it again
        return None
    return result if cell_difference(result, job, digests) is None else None


def remove_leftovers(path: Path) -> None:
    """Temporary files a killed writer of this cell left beside it (its claim is ours now)."""
    path = Path(path)
    for pattern in (f".{path.name}.*.tmp", f".{path.with_suffix('.csv').name}.*.tmp"):
        for leftover in path.parent.glob(pattern):
            leftover.unlink(missing_ok=True)
