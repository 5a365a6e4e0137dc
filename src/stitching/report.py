"""The stitching result: a dict of plain Python, numpy and pandas objects, pickled with a CSV summary beside it.

The reference's key names are kept so existing notebooks keep working::

    params            the run's arguments (front_model, end_model, front_layer, end_layer, dataset, init, ...)
    model_results     {'front'|'end'|'trans'|'ps_inv': {'loss', 'acc'}} on the test split, acc as a fraction
    trans_m           {'before'|'after'|'ps_inv'|'diff'|'ps_frank': {'w', 'b'}, 'mask': {'w'}}
    trans_history     {iteration: {'w', 'b'}} every save_frequency x epochs iterations
    trans_fit         per-epoch learning curve (DataFrame)
    cka, cka_frank, cka_ps_inv   linear CKA with the end layer of: the front layer, the trained stitch
                      output, the least-squares stitch output
    l2, l2_frank, l2_ps_inv      mean squared difference to the end layer (None where shapes differ)
    hits              right/wrong overlap tables {'m2_frank', 'm2_ps_inv', 'frank_ps_inv'} -> {'rr','rw','wr','ww'}
    m2_sim            agreement with the end network {'after'|'ps_inv'|'m1': {'crossentropy','same_class_out','rel_acc'}}
    git, runner_code  code version and command line

New keys beside them: ``format``, ``provenance``, ``summary`` (the flat row of the CSV),
``relative_acc``, ``agreement``, ``stitch``, ``shapes``, ``models``, ``least_squares``, ``timing``,
``measure_samples``, ``degenerate``. ``hits`` tables count test samples: 'rw' = first right, second wrong.
``degenerate``: ``{key: reason}`` for the CKA values (``cka``, ``cka_frank``, ``cka_ps_inv``) that are
degenerate on the measured samples (fewer than CKA needs, a constant representation); those are NaN,
never a number, and a :class:`src.similarity.DegenerateWarning` names them.
``m2_sim[...]['crossentropy']`` is H(end, model) = mean over samples of -sum_c p_end log p_model
(the reference averaged over classes too, i.e. divided this by the number of classes).
"""
import warnings
from typing import Any, Dict, Optional

import numpy as np
import pandas as pd
import torch
from torch.nn import functional as F

from src.similarity import DegenerateWarning, cka_against_cells, l2
from src.stitching.measure import Outputs
from src.training.evaluate import result_from_logits

FORMAT = "drfrank-stitch"
VERSION = 1


def hits_overlap(first: np.ndarray, second: np.ndarray) -> Dict[str, int]:
    """Counts of samples that the first/second model got right (r) or wrong (w)."""
    first, second = first.astype(bool), second.astype(bool)
    return {"rr": int((first & second).sum()), "rw": int((first & ~second).sum()),
            "wr": int((~first & second).sum()), "ww": int((~first & ~second).sum())}


def agreement(logits: torch.Tensor, end_logits: torch.Tensor, acc: float, end_acc: float, multilabel: bool) -> Dict[str, float]:
    """How a model's outputs relate to the end network's on the same samples."""
    if multilabel:
        p_end = torch.sigmoid(end_logits.double())
        log_p, log_q = F.logsigmoid(logits.double()), F.logsigmoid(-logits.double())
        crossentropy = -(p_end * log_p + (1 - p_end) * log_q).mean()
        same = ((logits > 0) == (end_logits > 0)).double().mean()
    else:
        p_end = F.softmax(end_logits.double(), dim=1)
        crossentropy = -(p_end * F.log_softmax(logits.double(), dim=1)).sum(1).mean()
        same = (logits.argmax(1) == end_logits.argmax(1)).double().mean()
    return {"crossentropy": float(crossentropy), "same_class_out": float(same),
            "rel_acc": float(acc / end_acc) if end_acc > 0 else float("nan")}


def _diff(a: Dict[str, np.ndarray], b: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    return {"w": a["w"] - b["w"], "b": a["b"] - b["b"]}


def _l2_or_none(x: torch.Tensor, y: torch.Tensor) -> Optional[float]:
    return l2(x, y) if x.shape == y.shape else None


CKA_KEYS = {"cka": "front", "cka_frank": "trans", "cka_ps_inv": "ps_inv"}


def cka_values(acts: Dict[str, torch.Tensor], result: Dict[str, Any]) -> Dict[str, float]:
    """Linear CKA of the front layer, the trained and the least-squares stitch outputs with the end layer; a
    degenerate one is NaN with its reason in ``result["degenerate"]`` (and a warning naming it)."""
    cells = cka_against_cells([acts[k] for k in CKA_KEYS.values()], acts["end"])
    values = {key: value for key, (value, _) in zip(CKA_KEYS, cells)}
    degenerate = {key: reason for key, (_, reason) in zip(CKA_KEYS, cells) if reason is not None}
    result["degenerate"] = degenerate
    if degenerate:
        warnings.warn(f"CKA is degenerate for {', '.join(degenerate)} on {int(acts['end'].shape[0])} measured samples, "
                      f"stored as NaN: {next(iter(degenerate.values()))}", DegenerateWarning, stacklevel=3)
    return values


def build_result(*, params: Dict[str, Any], outputs: Outputs, multilabel: bool, trans_m: Dict[str, Any],
                 history: Dict[int, dict], curve: pd.DataFrame, extra: Dict[str, Any]) -> Dict[str, Any]:
    """Assemble the result dict (see the module docstring) from the test-split outputs and the training record."""
    evals = {k: result_from_logits(v, outputs.targets, multilabel) for k, v in outputs.logits.items()}
    end = evals["end"]
    result: Dict[str, Any] = {"format": FORMAT, "version": VERSION, "params": params}
    result["model_results"] = {k: {"loss": e.loss, "acc": e.acc} for k, e in evals.items()}
    result["relative_acc"] = {k: (evals[k].acc / end.acc if end.acc > 0 else float("nan")) for k in ("trans", "ps_inv", "front")}
    m2_sim = {name: agreement(outputs.logits[key], outputs.logits["end"], evals[key].acc, end.acc, multilabel)
              for name, key in (("after", "trans"), ("ps_inv", "ps_inv"), ("m1", "front"))}
    result["m2_sim"] = m2_sim
    result["agreement"] = {name: values["same_class_out"] for name, values in m2_sim.items()}
    result["hits"] = {"m2_frank": hits_overlap(end.hits, evals["trans"].hits),
                      "m2_ps_inv": hits_overlap(end.hits, evals["ps_inv"].hits),
                      "frank_ps_inv": hits_overlap(evals["trans"].hits, evals["ps_inv"].hits)}
    trans_m = dict(trans_m)
    trans_m["diff"] = _diff(trans_m["after"], trans_m["before"])
    trans_m["ps_frank"] = _diff(trans_m["ps_inv"], trans_m["after"])
    result["trans_m"] = trans_m
    result["trans_history"] = history
    result["trans_fit"] = curve
    acts = outputs.activations
    result["measure_samples"] = int(acts["end"].shape[0]) if acts else 0
    if acts:
        result.update(cka_values(acts, result))
        result["l2"], result["l2_frank"], result["l2_ps_inv"] = (_l2_or_none(acts[k], acts["end"]) for k in ("front", "trans", "ps_inv"))
    result.update(extra)
    result["git"] = {k: result["provenance"]["git"].get(k) for k in ("branch", "commit", "dirty")}
    result["runner_code"] = result["provenance"]["command"]
    result["summary"] = summary_row(result)
    return result


def summary_row(result: Dict[str, Any]) -> Dict[str, Any]:
    """The flat one-row view written to the CSV beside the pickle."""
    p, r = result["params"], result["model_results"]
    return {
        "front_model": p["front_model"], "end_model": p["end_model"], "front_layer": p["front_layer"],
        "end_layer": p["end_layer"], "dataset": p["dataset"], "init": p["init"], "mask": p["mask"],
        "low_rank": p["low_rank"], "flatten": p["flatten"], "target_type": p["target_type"],
        "objective": p.get("objective", "task"), "epochs": p["epochs"],
        "stitch_kind": result.get("stitch", {}).get("kind"), "pool": p.get("pool"), "schedule": p.get("schedule"),
        "warmup_epochs": p.get("warmup_epochs"), "lr": p.get("lr"), "batch_size": p.get("batch_size"),
        "seed": p.get("seed"), "max_samples": p.get("max_samples"),
        "front_acc": r["front"]["acc"], "end_acc": r["end"]["acc"], "trans_acc": r["trans"]["acc"],
        "ps_inv_acc": r["ps_inv"]["acc"], "trans_loss": r["trans"]["loss"], "ps_inv_loss": r["ps_inv"]["loss"],
        "rel_acc": result["relative_acc"]["trans"], "ps_inv_rel_acc": result["relative_acc"]["ps_inv"],
        "agreement_trans": result["agreement"]["after"], "agreement_ps_inv": result["agreement"]["ps_inv"],
        "cka": result.get("cka"), "cka_frank": result.get("cka_frank"), "cka_ps_inv": result.get("cka_ps_inv"),
        "l2": result.get("l2"), "l2_frank": result.get("l2_frank"), "l2_ps_inv": result.get("l2_ps_inv"),
        "least_squares_r2_train": result.get("least_squares", {}).get("r2_train"),
        "commit": result["git"]["commit"], "command": result["runner_code"],
    }
