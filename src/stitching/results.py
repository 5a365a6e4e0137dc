"""Reading stitching results back (for notebooks, ``eval_stitch.py`` and ``compare_frank_m2.py``).

>>> from src.stitching.results import load_result, load_summaries
>>> r = load_result("results/my-run/bn3-bn3.pkl")
>>> r["model_results"]["trans"]["acc"], r["cka_frank"]
>>> table = load_summaries("results/")   # one row per result pickle below the folder
"""
import warnings
from pathlib import Path
from typing import Any, Dict

import pandas as pd

from src.errors import UserError
from src.results_io import read_pickle
from src.stitching.report import FORMAT

REQUIRED_KEYS = ("params", "model_results", "trans_m")


class NotAStitchResult(UserError):
    """A pickle that loads safely but holds something else (a matrix summary, a similarity matrix, ...)."""


def load_result(path) -> Dict[str, Any]:
    """The result dict of one stitching run (see :mod:`src.stitching.report` for the keys), read with the restricted
    loader and checked against its SHA-256 sidecar when it has one. Example::

        import tempfile, torch, torchvision
        from src import load_result, stitch
        x, y = torch.randn(64, 3, 32, 32), torch.arange(64) % 10
        batches = [(x[:32], y[:32]), (x[32:], y[32:])]
        a, b = torchvision.models.resnet18(num_classes=10), torchvision.models.resnet18(num_classes=10)
        out = tempfile.mkdtemp()
        stitch(a, b, "layer2", "layer2", train=batches, test=batches, epochs=1, batch_size=16, out_dir=out,
               run_name="demo")
        result = load_result(f"{out}/demo/layer2-layer2.pkl")
        print(result["model_results"]["trans"]["acc"], result["params"]["front_layer"])
    """
    result = read_pickle(path)
    if not isinstance(result, dict) or any(k not in result for k in REQUIRED_KEYS):
        raise NotAStitchResult(f"{path} is not a stitching result (it lacks {', '.join(k for k in REQUIRED_KEYS if not isinstance(result, dict) or k not in result)})")
    if result.get("format", FORMAT) != FORMAT:
        raise NotAStitchResult(f"{path} is a {result.get('format')} file, not a stitching result")
    return result


def load_summaries(folder) -> pd.DataFrame:
    """The summary rows of every stitching result pickle below ``folder``, with their paths.

    Other kinds of pickle (a matrix's ``matrix.pkl``, similarity matrices) are passed over; a pickle that
    cannot be read (corrupt, truncated, refused by the safe loader, a pickle bomb asking for more memory than
    its size allows, or more than this machine has) or that was changed after it was written (its bytes differ
    from the SHA-256 recorded in ``<name>.pkl.sha256`` beside it) is passed over with a warning naming it. A
    pickle without a digest file (written before digests were recorded) is read unverified.
    """
    rows, skipped = [], []
    for path in sorted(Path(folder).rglob("*.pkl")):
        try:
            result = load_result(path)
        except NotAStitchResult:
            continue
        except UserError as err:
            skipped.append(f"{path} ({err})")
            continue
        rows.append({"path": str(path), **result.get("summary", {})})
    if skipped:
        warnings.warn(f"load_summaries skipped {len(skipped)} unreadable pickle(s): {'; '.join(skipped)}", stacklevel=2)
    return pd.DataFrame(rows)
