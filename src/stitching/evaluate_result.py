"""What ``eval_stitch.py`` and ``compare_frank_m2.py`` compute from a result pickle.

The saved stitch is checked before it is used: weights holding NaN or infinity are refused, as the
checkpoints' are (:func:`src.models.checkpoint.check_finite_weights`), and a weight the rebuilt stitch
cannot take (the wrong shape) is one line naming the result and the weight, never a torch traceback.
"""
import re
from typing import Any, Dict, Optional, Sequence

import numpy as np
import torch

from src.config import get_config, resolve_device
from src.data import dataset_info, get_loader
from src.data.options import default_val_size
from src.errors import UserError
from src.similarity import NEEDS_INPUTS, RETURNS, get_measure
from src.similarity.registry import measure_names
from src.stitching.rebuild import frank_from_result
from src.stitching.report import agreement
from src.stitching.results import load_result
from src.training.evaluate import predict, result_from_logits


def _stored_stitch(result: Dict[str, Any], weights: str, path) -> Dict[str, np.ndarray]:
    """The saved ``weights`` stitch of a result (and its mask, which the rebuild applies), each checked to be
    an array of finite numbers; NaN or infinity (a diverged stitch, a damaged file) is refused, naming the weight.

    An unknown ``weights`` or one the result lacks is left to the rebuild, which says which there are."""
    trans_m = result["trans_m"]
    stored = trans_m.get(weights) if isinstance(trans_m, dict) else None
    if not isinstance(stored, dict):
        return {}
    tensors = {f"{weights}.{key}": value for key, value in stored.items()}
    if weights != "ps_inv" and isinstance(trans_m.get("mask"), dict) and "w" in trans_m["mask"]:
        tensors["mask.w"] = trans_m["mask"]["w"]
    checked = {}
    for name, value in tensors.items():
        try:
            array = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError) as err:
            raise UserError(f"the stitch weight {name!r} in {path} is not an array of numbers "
                            f"({type(value).__name__}); the result is damaged, re-run the stitch") from err
        bad = int(array.size - np.isfinite(array).sum())
        if bad:
            raise UserError(f"the stitch weights in {path} are not finite: tensor {name!r} holds {bad} NaN or infinite "
                            f"value(s) of {array.size}; the stitch diverged or the file is damaged, re-run the stitch "
                            f"(e.g. with a lower --lr)")
        checked[name] = array
    return checked


def _misfit(path, weights: str, stored: Dict[str, np.ndarray], err: Exception) -> str:
    """The one line for a stored stitch the rebuilt stitch cannot take (a weight of the wrong shape)."""
    detail = " ".join(str(err).split())[:200]
    size = re.search(r"input of size (\d+)", detail)
    culprits = [name for name, array in stored.items() if size and array.size == int(size.group(1))] or list(stored)
    shapes = ", ".join(f"{name!r} of shape {tuple(stored[name].shape)}" for name in culprits)
    return (f"the {weights!r} stitch in {path} does not fit the stitch rebuilt from its networks and layers "
            f"({shapes or 'no weights'}: {detail}); the result is damaged or was written for other networks, "
            f"re-run the stitch")


def _stitch_and_data(path, weights, split, batch_size, max_samples, device, front_model, end_model,
                     allow_changed_models=False, front_weights=None, end_weights=None):
    """The rebuilt stitched network of a result and a loader of the split it is to be measured on."""
    result = load_result(path)
    config = get_config()
    device = resolve_device(device or config.device)
    stored = _stored_stitch(result, weights, path)
    try:
        frank, dataset = frank_from_result(result, weights, device, front_model, end_model, allow_changed_models,
                                           front_weights, end_weights)
    except (RuntimeError, ValueError, TypeError, KeyError, IndexError) as err:  # the stored stitch does not fit
        raise UserError(_misfit(path, weights, stored, err)) from err
    loader = get_loader(dataset, split, batch_size, max_samples=max_samples, config=config, device=device,
                        val_size=_val_size(result["params"], dataset))
    return frank, dataset, loader, device


def evaluate_stitch(path, weights: str, split: str = "test", batch_size: int = 1000, max_samples: Optional[int] = None,
                    device: Optional[str] = None, front_model: Optional[str] = None,
                    end_model: Optional[str] = None, allow_changed_models: bool = False,
                    front_weights: Optional[str] = None, end_weights: Optional[str] = None) -> Dict[str, Any]:
    """Loss, accuracy, relative accuracy and agreement with the end network of one stitch of a result."""
    frank, dataset, loader, device = _stitch_and_data(path, weights, split, batch_size, max_samples, device,
                                                      front_model, end_model, allow_changed_models,
                                                      front_weights, end_weights)
    multilabel = dataset_info(dataset).multilabel
    logits, targets = predict(frank, loader, device)
    end_logits, _ = predict(frank.end_model, loader, device)
    stitched, end = result_from_logits(logits, targets, multilabel), result_from_logits(end_logits, targets, multilabel)
    agree = agreement(logits, end_logits, stitched.acc, end.acc, multilabel)
    return {"result": str(path), "weights": weights, "dataset": dataset, "split": split, "n": stitched.n,
            "loss": stitched.loss, "acc": stitched.acc, "end_acc": end.acc, "rel_acc": agree["rel_acc"],
            "same_class_out": agree["same_class_out"], "crossentropy_to_end": agree["crossentropy"]}


def compare_stitch_to_end(path, weights: str, measures: Sequence[str], split: str = "test", batch_size: int = 500,
                          max_samples: Optional[int] = 2000, device: Optional[str] = None,
                          front_model: Optional[str] = None, end_model: Optional[str] = None,
                          allow_changed_models: bool = False, front_weights: Optional[str] = None,
                          end_weights: Optional[str] = None) -> Dict[str, Any]:
    """Similarity measures between the stitch output and the end network's own activation at the end layer."""
    measures = measure_names(measures)
    frank, dataset, loader, _ = _stitch_and_data(path, weights, split, batch_size, max_samples, device,
                                                 front_model, end_model, allow_changed_models,
                                                 front_weights, end_weights)
    keep_inputs = any(name in NEEDS_INPUTS for name in measures)
    stitched, target, inputs = [], [], []
    with torch.no_grad():
        for x, _ in loader:
            stitched.append(frank.stitch(frank.front(x)).cpu())
            target.append(frank.end_target(x).cpu())
            if keep_inputs:
                inputs.append(x.cpu())
    stitched, target = torch.cat(stitched), torch.cat(target)
    values = {name: get_measure(name)(stitched, target, **({"inputs": torch.cat(inputs)} if name in NEEDS_INPUTS else {}))
              for name in measures}
    return {"result": str(path), "weights": weights, "dataset": dataset, "split": split, "n": int(stitched.shape[0]),
            "results": values, "returns": {name: RETURNS[name] for name in measures}}


def _val_size(params: Dict[str, Any], dataset: str) -> int:
    """The validation hold-out the result was made with (results before it was recorded: 5000, as then)."""
    recorded = params.get("val_size", 5000)
    return default_val_size(dataset) if recorded is None else recorded

