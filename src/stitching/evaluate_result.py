"""What ``eval_stitch.py`` and ``compare_frank_m2.py`` compute from a result pickle."""
from typing import Any, Dict, Optional, Sequence

import torch

from src.config import get_config, resolve_device
from src.data import dataset_info, get_loader
from src.similarity import NEEDS_INPUTS, RETURNS, get_measure
from src.similarity.registry import measure_names
from src.stitching.rebuild import frank_from_result
from src.stitching.report import agreement
from src.stitching.results import load_result
from src.training.evaluate import predict, result_from_logits


def _stitch_and_data(path, weights, split, batch_size, max_samples, device, front_model, end_model,
                     allow_changed_models=False, front_weights=None, end_weights=None):
    """The rebuilt stitched network of a result and a loader of the split it is to be measured on."""
    result = load_result(path)
    config = get_config()
    device = resolve_device(device or config.device)
    frank, dataset = frank_from_result(result, weights, device, front_model, end_model, allow_changed_models,
                                       front_weights, end_weights)
    loader = get_loader(dataset, split, batch_size, max_samples=max_samples, config=config, device=device,
                        val_size=result["params"].get("val_size", 5000))
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
