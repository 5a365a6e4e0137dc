"""Rebuilding a stitched network from a result pickle alone (``eval_stitch.py``, ``compare_frank_m2.py``).

``mode`` picks the stitch: ``before`` (its initial state), ``after`` (trained) or ``ps_inv`` (the
least-squares stitch). The stitch is of the kind recorded in the result (``result['stitch']['mode']``),
whatever kind the shapes would choose today. Low-rank factors and the mask are restored as they were.
"""
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from src.data import dataset_info
from src.errors import UserError
from src.models.checkpoint import check_unchanged, load_checkpoint
from src.stitching.build import build_frank
from src.stitching.frank import FrankensteinNet

MODES = ("before", "after", "ps_inv")


def _checkpoint(params: Dict[str, Any], role: str, override: Optional[str], allow_changed: bool = False) -> str:
    """The ``role`` checkpoint's path: ``override``, else the recorded one; refused if it is not the recorded file."""
    found = override or next((params[k] for k in (f"{role}_model", f"{role}_model_path")
                              if params.get(k) and Path(params[k]).is_file()), None)
    if found:
        check_unchanged(found, params.get(f"{role}_model_sha256"), role, allow_changed)
        return found
    raise UserError(f"the {role} checkpoint {params.get(f'{role}_model')} recorded in the result no longer exists; "
                    f"pass --{role}-model PATH")


def recorded_kind(result: Dict[str, Any]) -> Optional[str]:
    """The stitch kind of a result: ``result['stitch']['mode']``; for a result without it, flatten when
    ``params['flatten']`` is set, else None (the kind the shapes choose: conv1x1 or linear, as then)."""
    mode = result.get("stitch", {}).get("mode")
    return mode or ("flatten" if result["params"].get("flatten") else None)


def frank_from_result(result: Dict[str, Any], mode: str, device="cpu", front_model: Optional[str] = None,
                      end_model: Optional[str] = None, allow_changed_models: bool = False) -> Tuple[FrankensteinNet, str]:
    """``(stitched network, dataset name)`` with the ``mode`` weights loaded.

    A checkpoint whose SHA-256 differs from the one the result recorded is refused unless
    ``allow_changed_models`` (``--allow-changed-models``).
    """
    if mode not in MODES:
        raise UserError(f"unknown stitch {mode!r}; choose one of {', '.join(MODES)}")
    params, trans_m = result["params"], result["trans_m"]
    if mode not in trans_m:
        raise UserError(f"the result holds no {mode!r} stitch (it has {', '.join(k for k in trans_m if k in MODES)})")
    dataset = params["dataset"]
    info = dataset_info(dataset)
    front, _ = load_checkpoint(_checkpoint(params, "front", front_model, allow_changed_models), params.get("front_arch"), dataset, device)
    end, _ = load_checkpoint(_checkpoint(params, "end", end_model, allow_changed_models), params.get("end_arch"), dataset, device)
    frank = build_frank(front, end, params["front_layer"], params["end_layer"], (info.n_channels, *info.input_size),
                        rank=params.get("low_rank"), device=device, fold_batchnorm=params.get("fold_bn", False),
                        kind=recorded_kind(result))
    weights = trans_m[mode]
    frank.stitch.load_param_dict(weights)
    if mode != "ps_inv" and "mask" in trans_m:
        frank.stitch.set_mask(trans_m["mask"]["w"])
    return frank.eval(), dataset
