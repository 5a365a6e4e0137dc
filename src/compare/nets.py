"""What ``compare_nets.py`` does: the asked-for measures between one layer of each of two networks."""
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
from src.similarity.registry import measure_names






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
                 val_size: int = 5000) -> Dict[str, Any]:
    """Each measure of ``measures`` (registry names, or ``all``) between ``layer1`` of the first
    checkpoint and ``layer2`` of the second, on ``split`` of ``dataset``.

    Returns a dict with the models, layers, data, the activation shapes and ``results``
    (measure -> float, numpy matrix, or weights dict, as the measure returns; see :data:`RETURNS`).
    """
    names = measure_names(measures)
    config = get_config()
    device = resolve_device(device or config.device)
    (model1, meta1), (model2, meta2) = load_models(path1, path2, arch1, arch2, dataset, device)
    check_input_fits(meta1, dataset, "model 1")
    check_input_fits(meta2, dataset, "model 2")
    get_module(model1, layer1)  # unknown names: UserError listing the valid layers
    get_module(model2, layer2)
    loader = eval_loader(dataset, split, batch_size, max_samples, device, download, val_size, config)
    x, y, inputs = collect(model1, model2, layer1, layer2, loader, any(n in NEEDS_INPUTS for n in names),
                           loader.num_samples)
    results: Dict[str, Any] = {}
    for name in names:
        options = {"inputs": inputs} if name in NEEDS_INPUTS else {}
        try:
            results[name] = get_measure(name)(x, y, **options)
        except UserError as err:
            raise UserError(f"{name}: {err}") from err
    return {"model1": display_name(meta1, path1), "model2": display_name(meta2, path2),
            "checkpoint1": str(path1), "checkpoint2": str(path2), "layer1": layer1, "layer2": layer2,
            "dataset": dataset, "split": split, "n": int(x.shape[0]),
            "shape1": list(x.shape[1:]), "shape2": list(y.shape[1:]), "results": results,
            "returns": {name: RETURNS[name] for name in names}}


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
