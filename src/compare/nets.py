"""What ``compare_nets.py`` does: the asked-for measures between one layer of each of two networks.

A measure that is degenerate on the data (too few samples, a constant layer, CCA or lr with more
features than samples; :class:`src.similarity.DegenerateMeasure`) is refused, never printed: the sample
count is checked against every measure's minimum before any forward pass, the data-dependent rules
after the measures ran, and every degenerate measure is named in one error line that says why and
what to do (``--max-samples``, svcca with a smaller keep, a pooled layer).
"""
from typing import Any, Dict, Optional, Sequence

import numpy as np
import pandas as pd
import torch

from src.compare.common import check_input_fits, eval_loader, load_models
from src.config import get_config, resolve_device
from src.errors import UserError
from src.features import ActivationStore, capture, evaluating, get_module, input_batches, layer_outputs
from src.models.describe import display_name
from src.similarity import NEEDS_INPUTS, RETURNS, get_measure
from src.similarity._prep import DegenerateMeasure, combine_degenerate
from src.similarity.registry import check_sample_count, measure_names

#: The option of compare_nets.py (and compare_frank_m2.py) that sets the number of samples.
SAMPLES_OPTION = "--max-samples"






def collect(model1, model2, layer1: str, layer2: str, loader, need_inputs: bool, expected: Optional[int]):
    """The two layers' activations on every sample of ``loader`` (float32, CPU, shapes kept)."""
    store1 = ActivationStore([layer1], expected, what=f"storing the activations of {layer1}")
    store2 = ActivationStore([layer2], expected, what=f"storing the activations of {layer2}")
    inputs = ActivationStore(["input"], expected, what="storing the inputs") if need_inputs else None
    same = model1 is model2
    layers = [layer1] if (same and layer1 == layer2) else ([layer1, layer2] if same else [layer1])
    rec1 = capture(model1, layers)
    rec2 = rec1 if same else capture(model2, [layer2])
    with torch.no_grad(), evaluating(model1, model2), rec1, (rec2 if rec2 is not rec1 else _Nothing()):
        for x in input_batches(loader):
            out1 = layer_outputs(model1, x, rec1, layers, "model 1")
            store1.add([out1[0]])
            store2.add([out1[-1]] if same else layer_outputs(model2, x, rec2, [layer2], "model 2"))
            if inputs is not None:
                inputs.add([x])
    return store1.tensors()[0], store2.tensors()[0], (inputs.tensors()[0] if inputs is not None else None)


class _Nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def compare_nets(path1, path2, layer1: str, layer2: str, dataset: str, measures: Sequence[str], split: str = "test",
                 batch_size: int = 500, max_samples: Optional[int] = None, arch1: Optional[str] = None,
                 arch2: Optional[str] = None, device: Optional[str] = None, download: bool = False,
                 val_size: int = 5000, keep: Optional[float] = None, weights1: Optional[str] = None,
                 weights2: Optional[str] = None) -> Dict[str, Any]:
    """Each measure of ``measures`` (registry names, or ``all``) between ``layer1`` of the first
    checkpoint and ``layer2`` of the second, on ``split`` of ``dataset``.

    Returns a dict with the models, layers, data, the activation shapes and ``results``
    (measure -> float, numpy matrix, or weights dict, as the measure returns; see :data:`RETURNS`).
    Degenerate measures are a :class:`src.similarity.DegenerateMeasure` naming all of them. ``keep``:
    the fraction of variance svcca keeps per side (its default when None).
    """
    names = measure_names(measures)
    options = {"svcca": {"keep": keep}} if keep is not None else {}
    if keep is not None and "svcca" not in names:
        raise UserError("--keep (keep=) is the fraction of variance svcca keeps; add svcca to the measures")
    config = get_config()
    device = resolve_device(device or config.device)
    (model1, meta1), (model2, meta2) = load_models(path1, path2, arch1, arch2, dataset, device, weights1, weights2)
    check_input_fits(meta1, dataset, "model 1")
    check_input_fits(meta2, dataset, "model 2")
    get_module(model1, layer1)  # unknown names: UserError listing the valid layers
    get_module(model2, layer2)
    loader = eval_loader(dataset, split, batch_size, max_samples, device, download, val_size, config)
    check_samples(names, loader.num_samples)
    x, y, inputs = collect(model1, model2, layer1, layer2, loader, any(n in NEEDS_INPUTS for n in names),
                           loader.num_samples)
    results = measure_all(names, x, y, inputs, options=options)
    return {"model1": display_name(meta1, path1), "model2": display_name(meta2, path2),
            "checkpoint1": str(path1), "checkpoint2": str(path2), "layer1": layer1, "layer2": layer2,
            "dataset": dataset, "split": split, "n": int(x.shape[0]),
            "shape1": list(x.shape[1:]), "shape2": list(y.shape[1:]), "results": results,
            "returns": {name: RETURNS[name] for name in names}}


def check_samples(names: Sequence[str], n: int, option: str = SAMPLES_OPTION) -> None:
    """Every measure of ``names`` that ``n`` samples are too few for, in one DegenerateMeasure (before any work)."""
    failed = []
    for name in names:
        try:
            check_sample_count(name, n, option)
        except DegenerateMeasure as err:
            failed.append(err)
    if failed:
        raise combine_degenerate(failed, option)


def measure_all(names: Sequence[str], x, y, inputs=None, option: str = SAMPLES_OPTION,
                options: Optional[Dict[str, Dict[str, Any]]] = None) -> Dict[str, Any]:
    """measure -> value of each measure of ``names`` between ``x`` and ``y`` (``options``: measure -> its keyword
    arguments); the degenerate ones are refused together, in one :class:`src.similarity.DegenerateMeasure`
    (``option``, the script's sample-count option, named in its advice)."""
    results: Dict[str, Any] = {}
    failed = []
    for name in names:
        options_of = dict((options or {}).get(name, {}))
        if name in NEEDS_INPUTS:
            options_of["inputs"] = inputs
        try:
            results[name] = get_measure(name)(x, y, **options_of)
        except DegenerateMeasure as err:
            failed.append(err)
        except UserError as err:
            raise UserError(f"{name}: {err}") from err
    if failed:
        raise combine_degenerate(failed, option)
    return results


def summary(value: Any, kind: str) -> str:
    """A one-line description of a measure's value for the table."""
    if kind == "float":
        return f"{value:.6f}"
    if kind == "matrix":
        a = np.asarray(value)
        return f"matrix {'x'.join(map(str, a.shape))} (mean {a.mean():.4f}, min {a.min():.4f}, max {a.max():.4f})"
    if kind == "weights":
        return f"weights w {'x'.join(map(str, np.shape(value['w'])))}, b {'x'.join(map(str, np.shape(value['b'])))}"
    ranks = ", ".join(str(r) for r in value)
    return f"weights for ranks {ranks}"


def table(result: Dict[str, Any]) -> pd.DataFrame:
    """measure -> value (or summary) as a one-column DataFrame."""
    rows = {name: summary(value, result["returns"][name]) for name, value in result["results"].items()}
    return pd.DataFrame({"value": pd.Series(rows)}).rename_axis("measure")
