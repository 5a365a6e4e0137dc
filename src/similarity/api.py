"""Layer x layer similarity of two models, for notebooks and scripts: :func:`layer_similarity`.

Example::

    from src.similarity import layer_similarity
    sim = layer_similarity(model1, model2, loader, layers1="re:relu\\d|fc", layers2="re:relu\\d|fc")
    sim.to_frame(); sim.plot(); sim.save("results/compare/a_vs_b")

Any ``nn.Module`` works (the zoo, torchvision models, wrapped in DataParallel or not) and any
iterable of batches: tensors, ``(x, y)`` tuples (a ``torch.utils.data.DataLoader``) or dicts.
The models are called as ``model(x)`` under ``torch.no_grad()`` in eval mode (their training flags
are restored afterwards) and the hooks are removed when done, also after an error.

How each measure is computed:

- ``cka_minibatch`` (default) streams: per batch one Gram matrix per layer, all layer pairs from
  one matrix product (:mod:`src.similarity.layer_pairs`); the loader's batches are the minibatches (a
  final batch of fewer than 4 samples joins the one before). Memory does not grow with N.
- ``cka`` and ``cka_debiased`` need the whole data set: the activations are kept (float32, CPU;
  checked against the available memory), then all pairs come from stacked N x N Grams.
- every other float measure of :data:`src.similarity.MEASURES` (``cca``, ``procrustes``, ``lr``,
  ``cka_rbf``, ``dcka``, ...) keeps the activations too and is computed one pair at a time.

A layer pair on which the measure is degenerate (fewer samples than its ``min_samples``, a constant
layer, CCA or lr with more features than samples; :class:`src.similarity._prep.DegenerateMeasure`)
is NaN with the reason in ``SimilarityMatrix.degenerate``, and a
:class:`src.similarity._prep.DegenerateWarning` names those pairs.
"""
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from src.config import resolve_device
from src.errors import UserError
from src.features import (ActivationStore, capture, evaluating, input_batches, layer_outputs, loader_size,
                          model_device, paired_batches, select_layers, unwrap_model)
from src.similarity.gram import gram_precision
from src.similarity.hsic import HSICMatrix
from src.similarity.layer_pairs import all_degenerate, check_stats_options, cka_matrix, estimate, pairwise_matrix
from src.similarity._prep import degenerate_reason
from src.similarity.registry import get_record
from src.similarity.result import SimilarityMatrix

Patterns = Union[None, str, Sequence[str]]


def _patterns(patterns: Patterns) -> Optional[List[str]]:
    if patterns is None:
        return None
    return [patterns] if isinstance(patterns, str) else list(patterns)


def _check_measure(measure: str, permutations: int, bootstrap: int, ci: float, precision):
    record = get_record(measure)  # unknown name -> UserError listing the valid ones
    gram_precision(precision)
    if record.returns != "float":
        raise UserError(f"{measure} returns {record.returns.replace('_', ' ')}, not one number per layer pair; "
                        f"a layer matrix needs a float measure (compare_nets.py computes {measure} for one pair)")
    check_stats_options(measure, permutations, bootstrap, ci)
    return record


class _Side:
    """One model's hooks; ``outputs(x)`` gives the selected layers' outputs for a batch."""

    def __init__(self, model: nn.Module, layers: List[str], name: str, transform=None):
        self.model = model
        self.layers = layers
        self.name = name
        self.device = model_device(model)
        self.recorder = capture(model, layers, transform=transform)

    def outputs(self, x: torch.Tensor) -> List[torch.Tensor]:
        return layer_outputs(self.model, x.to(self.device), self.recorder, self.layers, self.name)


def _batches(loader1: Iterable, loader2: Optional[Iterable], max_samples: Optional[int], input_key: Optional[str],
             min_batch: int) -> Iterable[Tuple[torch.Tensor, Optional[torch.Tensor]]]:
    if loader2 is None:
        return ((x, None) for x in input_batches(loader1, max_samples, input_key, min_batch))
    return paired_batches(loader1, loader2, max_samples, input_key, min_batch)


def _expected_samples(loader1, loader2, max_samples) -> Optional[int]:
    sizes = [s for s in (loader_size(loader1), None if loader2 is None else loader_size(loader2)) if s is not None]
    if max_samples is not None:
        sizes.append(max_samples)
    return min(sizes) if sizes else None


def layer_similarity(model1: nn.Module, model2: nn.Module, loader1: Iterable, loader2: Optional[Iterable] = None, *,
                     layers1: Patterns = None, layers2: Patterns = None, measure: str = "cka_minibatch",
                     max_samples: Optional[int] = None, device=None, permutations: int = 0, bootstrap: int = 0,
                     ci: float = 0.95, seed: int = 0, precision: str = "float32", names: Optional[Sequence[str]] = None,
                     input_key: Optional[str] = None, measure_options: Optional[Dict[str, Any]] = None,
                     meta: Optional[Dict[str, Any]] = None, progress: bool = False) -> SimilarityMatrix:
    """The ``measure`` of every selected layer of ``model1`` with every selected layer of ``model2``.

    ``loader1`` feeds both models; with ``loader2`` model 2 sees ``loader2`` instead (one model's
    representations of two data sets, when ``model2 is model1``). Both must give batches of the
    same sizes and, unless ``max_samples`` cuts them, the same number of samples.
    ``layers1``/``layers2``: exact names, globs or ``re:`` regexes (default: every leaf layer in
    forward order). ``max_samples``: use the first N samples. ``device``: where the similarity
    arithmetic runs (default model 1's device; each model runs on its own device).
    ``permutations``/``bootstrap``/``ci``/``seed``: permutation p-values and a percentile bootstrap
    interval for the CKA measures (:mod:`src.similarity.stats`). ``precision``: Gram precision,
    ``"float32"`` or ``"float64"`` (:mod:`src.similarity.gram`). ``names``: the two models' names
    for titles. ``measure_options``: keyword arguments of a pairwise measure (e.g. ``keep`` of svcca).
    Example (two random-initialised torchvision networks on random images)::

        import torch, torchvision
        from src import layer_similarity
        images = torch.utils.data.TensorDataset(torch.randn(64, 3, 32, 32), torch.zeros(64, dtype=torch.long))
        loader = torch.utils.data.DataLoader(images, batch_size=32)
        a, b = torchvision.models.resnet18(), torchvision.models.resnet18()
        sim = layer_similarity(a, b, loader, layers1=r"re:layer\\d$", layers2=r"re:layer\\d$", measure="cka")
        print(sim.to_frame().round(3))   # rows: a's layer1..layer4, columns: b's
    """
    record = _check_measure(measure, permutations, bootstrap, ci, precision)
    model1, model2 = unwrap_model(model1), unwrap_model(model2)
    same_model = model1 is model2
    if loader2 is loader1:
        loader2 = None
    shared = same_model and loader2 is None
    if record.needs_inputs and loader2 is not None:
        raise UserError(f"{measure} regresses out the similarity of the inputs, which is undefined for two data sets")
    streaming = record.streams
    names = list(names) if names else ([type(model1).__name__] * 2 if same_model else
                                       [type(model1).__name__, type(model2).__name__])
    if len(names) != 2:
        raise UserError(f"names must hold two model names, got {names!r}")

    stream = iter(_batches(loader1, loader2, max_samples, input_key, record.min_samples if streaming else 1))
    first = next(stream, None)
    if first is None:
        raise UserError("the loader yielded no batches")
    x1, x2 = first
    layers1 = select_layers(model1, _patterns(layers1), x1.to(model_device(model1)))
    layers2 = select_layers(model2, _patterns(layers2), (x1 if x2 is None else x2).to(model_device(model2)))
    union = layers1 + [name for name in layers2 if name not in layers1]
    index1 = [union.index(name) for name in layers1]
    index2 = [union.index(name) for name in layers2]
    same_layers = shared and layers1 == layers2
    device = model_device(model1) if device is None else (
        resolve_device(device) if isinstance(device, str) else torch.device(device))

    expected = _expected_samples(loader1, loader2, max_samples)
    generator = torch.Generator().manual_seed(int(seed))
    acc = HSICMatrix(record.gram, precision, permutations, keep_batches=bool(bootstrap), generator=generator,
                     device=device) if streaming else None
    # streaming: each layer's Gram is formed inside its forward hook (the activation still cached)
    to_gram = acc.gram if streaming else None
    side1 = _Side(model1, union if same_model else layers1, names[0], to_gram)
    side2 = side1 if same_model else _Side(model2, layers2, names[1], to_gram)
    store1 = store2 = inputs = None
    if not streaming:
        store1 = ActivationStore(union if shared else layers1, expected)
        store2 = None if shared else ActivationStore(layers2, expected)
        inputs = ActivationStore(["input"], expected) if record.needs_inputs else None

    def batches():
        yield first
        yield from stream

    progress_bar = _progress(batches(), loader1, progress)
    with torch.no_grad(), evaluating(model1, model2), side1.recorder, \
            (side2.recorder if side2 is not side1 else _null()):
        for x1, x2 in progress_bar:
            out1 = side1.outputs(x1)
            if shared:
                if streaming:
                    f = acc.prepared_grams(out1)
                    f1 = f[index1]
                    acc.update_prepared(f1, None if same_layers else f[index2], int(x1.shape[0]))
                else:
                    store1.add(out1)
                    if inputs is not None:
                        inputs.add([x1])
                continue
            acts1 = [out1[i] for i in index1] if same_model else out1
            out2 = side2.outputs(x1 if x2 is None else x2)
            acts2 = [out2[i] for i in index2] if same_model else out2
            if streaming:
                acc.update(acts1, acts2, grams=True)
            else:
                store1.add(acts1)
                store2.add(acts2)
                if inputs is not None:
                    inputs.add([x1])

    info: Dict[str, Any] = {"model1": names[0], "model2": names[1], "precision": precision, "seed": int(seed),
                            "batch_size": int(first[0].shape[0]), **(meta or {})}
    if streaming:
        if bootstrap and acc.n_batches < 2:
            raise UserError(f"the bootstrap over batches needs at least 2 batches, got {acc.n_batches}: "
                            f"use a smaller batch size or more samples")
        info["estimator"] = f"{record.gram.name} HSIC, summed over batches"
        sim = estimate(acc, measure, layers1, layers2, bootstrap, ci, meta=info)
        sim.warn_degenerate()
        return sim

    acts_all1 = store1.tensors()
    if shared:
        acts1 = [acts_all1[i] for i in index1]
        acts2 = None if same_layers else [acts_all1[i] for i in index2]
    else:
        acts1, acts2 = acts_all1, store2.tensors()
    n = store1.n
    if record.gram is not None:
        sim = cka_matrix(acts1, acts2, measure=measure, rows=layers1, cols=layers2, precision=precision,
                         permutations=permutations, bootstrap=bootstrap, ci=ci, seed=seed, device=device)
        sim.meta = {**info, **sim.meta}
        return sim
    options = dict(measure_options or {})
    if inputs is not None:
        options["inputs"] = inputs.tensors()[0]
    info["estimator"] = "one layer pair at a time, on all samples"
    info["measure_options"] = {k: v for k, v in options.items() if k != "inputs"}
    if n < record.min_samples:  # every pair: the same reason, no need to compute them
        sim = all_degenerate(measure, n, layers1, layers2, degenerate_reason(measure, n)[0], meta=info)
    else:
        degenerate = {}
        values = pairwise_matrix(acts1, acts2, record.function, layers1, layers2, degenerate=degenerate, **options)
        sim = SimilarityMatrix(values, layers1, layers2, measure, n, 1, meta=info, degenerate=degenerate)
    sim.warn_degenerate()
    return sim


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def _progress(batches, loader, enabled: bool):
    if not enabled:
        return batches
    from tqdm import tqdm

    try:
        total = len(loader)
    except TypeError:
        total = None
    return tqdm(batches, total=total, desc="comparing layers", unit="batch", leave=False)
