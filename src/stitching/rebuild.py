"""Rebuilding a stitched network from a result pickle alone (``eval_stitch.py``, ``compare_frank_m2.py``).

``weights`` picks which of the result's saved stitch weights to load: ``before`` (the initial state),
``after`` (trained) or ``ps_inv`` (the least-squares stitch). The stitch is of the kind recorded in the
result (``result['stitch']['kind']``; results written before that name kept it under ``'mode'``),
whatever kind the shapes would choose today. Low-rank factors and the mask are restored as they were.
"""
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from src.data import dataset_info
from src.errors import UserError
from src.data import USER_DATA
from src.models.checkpoint import check_unchanged
from src.models.networks import load_network, network_digest, network_kind
from src.stitching.build import build_frank
from src.stitching.frank import FrankensteinNet

#: The saved weights of a result (its ``trans_m``) that a stitch can be rebuilt with.
WEIGHTS = ("before", "after", "ps_inv")


def _checkpoint(params: Dict[str, Any], role: str, override: Optional[str], allow_changed: bool = False) -> str:
    """The ``role`` checkpoint's path: ``override``, else the recorded one; refused if it is not the recorded file."""
    found = override or next((params[k] for k in (f"{role}_model", f"{role}_model_path")
                              if params.get(k) and Path(params[k]).is_file()), None)
    if found:
        check_unchanged(found, params.get(f"{role}_model_sha256"), role, allow_changed)
        return found
    raise UserError(f"the {role} checkpoint {params.get(f'{role}_model')} recorded in the result no longer exists; "
                    f"pass --{role}-model PATH")


def _network(params: Dict[str, Any], role: str, model: Optional[str], weights: Optional[str], allow_changed: bool,
             info, device):
    """The ``role`` network of a result: the recorded (or overriding) checkpoint, or model spec with its weights."""
    ref = model or params.get(f"{role}_model")
    if ref is None or network_kind(ref) == "checkpoint":
        return load_network(_checkpoint(params, role, model, allow_changed), None, params.get(f"{role}_arch"),
                            params["dataset"], None, device)[0]
    if network_kind(ref) == "module":
        raise UserError(f"the {role} network of this result was a module given from Python ({ref}); pass "
                        f"--{role}-model with its checkpoint, or a model spec and --{role}-weights FILE")
    weights = weights or params.get(f"{role}_weights")
    if weights is not None and not Path(weights).is_file():
        raise UserError(f"the {role} weights {weights} recorded in the result no longer exist; pass --{role}-weights FILE")
    net, meta = load_network(ref, weights, None, params["dataset"], info, device, seed=params.get("seed", 0))
    recorded = params.get(f"{role}_model_sha256")
    if recorded and not allow_changed and network_digest(ref, weights, net, meta) != recorded:
        raise UserError(f"the {role} network {ref} ({weights or 'random initialisation'}) is not the one the stitch "
                        f"was trained with (SHA-256 differs); give the original --{role}-weights, or pass "
                        f"--allow-changed-models to use it anyway")
    return net


def recorded_kind(result: Dict[str, Any]) -> Optional[str]:
    """The stitch kind of a result: ``result['stitch']['kind']`` (``'mode'`` in results written before the rename,
    whose ``'kind'`` was a description); for a result without either, flatten when ``params['flatten']`` is set,
    else None (the kind the shapes choose: conv1x1 or linear, as then)."""
    stitch = result.get("stitch", {})
    name = stitch["mode"] if "mode" in stitch else stitch.get("kind")
    return name or ("flatten" if result["params"].get("flatten") else None)


def frank_from_result(result: Dict[str, Any], weights: str, device="cpu", front_model: Optional[str] = None,
                      end_model: Optional[str] = None, allow_changed_models: bool = False,
                      front_weights: Optional[str] = None, end_weights: Optional[str] = None
                      ) -> Tuple[FrankensteinNet, str]:
    """``(stitched network, dataset name)`` with the saved stitch ``weights`` (one of :data:`WEIGHTS`) loaded.

    A checkpoint whose SHA-256 differs from the one the result recorded is refused unless
    ``allow_changed_models`` (``--allow-changed-models``).
    """
    if weights not in WEIGHTS:
        raise UserError(f"unknown stitch {weights!r}; choose one of {', '.join(WEIGHTS)}")
    params, trans_m = result["params"], result["trans_m"]
    if weights not in trans_m:
        raise UserError(f"the result holds no {weights!r} stitch (it has {', '.join(k for k in trans_m if k in WEIGHTS)})")
    dataset = params["dataset"]
    if dataset == USER_DATA:
        raise UserError("this result was made on data given from Python; rebuild it in Python "
                        "(src.stitching.rebuild.frank_from_result) and evaluate it on that data")
    info = dataset_info(dataset)
    front = _network(params, "front", front_model, front_weights, allow_changed_models, info, device)
    end = _network(params, "end", end_model, end_weights, allow_changed_models, info, device)
    frank = build_frank(front, end, params["front_layer"], params["end_layer"], (info.n_channels, *info.input_size),
                        rank=params.get("low_rank"), device=device, fold_batchnorm=params.get("fold_bn", False),
                        kind=recorded_kind(result))
    frank.stitch.load_param_dict(trans_m[weights])
    if weights != "ps_inv" and "mask" in trans_m:
        frank.stitch.set_mask(trans_m["mask"]["w"])
    return frank.eval(), dataset
