"""Feeding data through models for comparisons: input batches from any loader, paired streams, eval mode.

- :func:`batch_input` takes the input tensor out of whatever a loader yields (a tensor, an
  ``(x, y)`` tuple/list, or a dict).
- :func:`input_batches` / :func:`paired_batches` iterate one loader, or two loaders in lockstep,
  stopping after ``max_samples`` samples and merging a final batch that is too small (fewer than
  ``min_batch`` samples, e.g. the 4 the unbiased HSIC needs) into the batch before it.
- :func:`evaluating` puts models in eval mode for a block and restores their training flags.
- :func:`layer_outputs` runs one forward pass and returns the captured outputs of the selected
  layers in the order of the selection, checking that every layer ran and kept the batch axis
  (and that no later in-place operation overwrote them).
"""
from contextlib import contextmanager
from typing import Any, Iterable, Iterator, List, Optional, Sequence, Tuple

import torch
from torch import nn

from src.errors import UserError
from src.features.hooks import capture, forward_order, unwrap_model
from src.features.select import resolve_layers

#: Keys looked up, in this order, when a loader yields dicts and no ``input_key`` is given.
INPUT_KEYS = ("x", "input", "inputs", "image", "images", "pixel_values", "data")


def batch_input(batch: Any, input_key: Optional[str] = None) -> torch.Tensor:
    """The input tensor of one loader batch: the batch itself, its first element, or a dict entry."""
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, dict):
        keys = [input_key] if input_key is not None else [k for k in INPUT_KEYS if k in batch]
        if not keys or keys[0] not in batch:
            raise UserError(f"cannot find the input in a batch dict with keys {', '.join(map(str, batch))}; "
                            f"name it with input_key=")
        value = batch[keys[0]]
    elif isinstance(batch, (tuple, list)) and batch:
        value = batch[0]
    else:
        raise UserError(f"a loader batch of type {type(batch).__name__} holds no input tensor; "
                        f"yield tensors, (x, y) pairs or dicts")
    if not isinstance(value, torch.Tensor):
        raise UserError(f"the input of a loader batch is a {type(value).__name__}, not a tensor")
    return value


def loader_size(loader: Any) -> Optional[int]:
    """The number of samples a loader yields, when it says so (``num_samples`` or ``len(dataset)``)."""
    for attribute in ("num_samples",):
        value = getattr(loader, attribute, None)
        if isinstance(value, int):
            return value
    dataset = getattr(loader, "dataset", None)
    if dataset is not None:
        try:
            return len(dataset)
        except TypeError:
            return None
    return None


class FirstSamples:
    """The first ``n`` samples of a stream of batches (all of them when ``n`` is None): :meth:`take` says how many
    samples of the next batch are among them. The one place that counts "the first N samples"."""

    def __init__(self, n: Optional[int]):
        self.n, self.kept = n, 0

    def take(self, batch_size: int) -> int:
        taken = batch_size if self.n is None else max(0, min(batch_size, self.n - self.kept))
        self.kept += taken
        return taken

    @property
    def done(self) -> bool:
        return self.n is not None and self.kept >= self.n


def _truncated(batches: Iterable[Tuple[torch.Tensor, ...]], max_samples: Optional[int]):
    first = FirstSamples(max_samples)
    for batch in batches:
        if first.done:
            return
        taken = first.take(len(batch[0]))
        if taken:
            yield tuple(t[:taken] for t in batch)


def _merge_short(batches: Iterable[Tuple[torch.Tensor, ...]], min_batch: int):
    """Hold each batch back by one so that a batch of fewer than ``min_batch`` samples can join the previous."""
    pending = None
    for batch in batches:
        if pending is not None and len(batch[0]) < min_batch:
            pending = tuple(torch.cat([p, b.to(p.device)]) for p, b in zip(pending, batch))
            continue
        if pending is not None:
            yield pending
        pending = batch
    if pending is not None:
        if len(pending[0]) < min_batch:
            raise UserError(f"the data hold only {len(pending[0])} samples; at least {min_batch} are needed")
        yield pending


def input_batches(loader: Iterable, max_samples: Optional[int] = None, input_key: Optional[str] = None,
                  min_batch: int = 1) -> Iterator[torch.Tensor]:
    """Input tensors of ``loader`` (first ``max_samples`` samples), short final batches merged."""
    check_max_samples(max_samples)
    stream = ((batch_input(b, input_key),) for b in loader)
    for (x,) in _merge_short(_truncated(stream, max_samples), min_batch):
        yield x


def _zip_checked(loader1: Iterable, loader2: Iterable, input_key: Optional[str], max_samples: Optional[int]):
    it1, it2 = iter(loader1), iter(loader2)
    seen, index = 0, 0
    done = object()
    while max_samples is None or seen < max_samples:
        b1, b2 = next(it1, done), next(it2, done)
        if b1 is done and b2 is done:
            return
        if b1 is done or b2 is done:
            shorter = "loader1" if b1 is done else "loader2"
            raise UserError(f"the two data sets hold different numbers of samples ({shorter} ended after {seen}); "
                            f"pass max_samples (--samples) to compare the first N samples of each")
        x1, x2 = batch_input(b1, input_key), batch_input(b2, input_key)
        if len(x1) != len(x2):
            raise UserError(f"batch {index} has {len(x1)} samples in loader1 but {len(x2)} in loader2; "
                            f"both loaders must use the same batch size")
        seen += len(x1)
        index += 1
        yield x1, x2


def paired_batches(loader1: Iterable, loader2: Iterable, max_samples: Optional[int] = None,
                   input_key: Optional[str] = None, min_batch: int = 1) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
    """Batches of two loaders in lockstep: same sizes batch by batch and the same number of samples."""
    check_max_samples(max_samples)
    yield from _merge_short(_truncated(_zip_checked(loader1, loader2, input_key, max_samples), max_samples),
                            min_batch)


def check_max_samples(max_samples: Optional[int]) -> None:
    if max_samples is not None and (isinstance(max_samples, bool) or not isinstance(max_samples, int)
                                    or max_samples < 1):
        raise UserError(f"max_samples must be a positive integer, got {max_samples!r}")


@contextmanager
def evaluating(*models: nn.Module):
    """``eval()`` the models for the block; their training flags (every submodule's) are restored after."""
    saved: List[Tuple[nn.Module, bool]] = []
    for model in models:
        saved.extend((m, m.training) for m in model.modules())
    try:
        for model in models:
            model.eval()
        yield
    finally:
        for module, training in saved:
            module.training = training


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a model without any)."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def select_layers(model: nn.Module, patterns: Optional[Sequence[str]], example: torch.Tensor) -> List[str]:
    """Layer names to compare: those matched by ``patterns`` (definition order), or, when ``patterns``
    is empty/None, every leaf module in the order a forward pass on ``example`` runs them."""
    model = unwrap_model(model)
    if patterns:
        return resolve_layers(model, list(patterns))
    with evaluating(model):
        names = forward_order(model, example[:2] if len(example) > 2 else example)
    if not names:
        raise UserError(f"{type(model).__name__} has no leaf layers to compare; name layers explicitly")
    return names


def layer_outputs(model: nn.Module, x: torch.Tensor, recorder: capture, layers: Sequence[str],
                  model_name: str = "model") -> List[torch.Tensor]:
    """Run ``model(x)`` and return the outputs ``recorder`` (an entered :class:`capture`) recorded
    for ``layers``, in that order.

    A layer whose recorded output was later modified in place (e.g. by ``ReLU(inplace=True)``) is
    switched to recording copies and the pass is repeated, so the values are always the layer's
    own output. A layer that did not run, or whose output lost the batch axis, is an error.
    """
    store = recorder.activations
    for _ in range(2):
        store.clear()
        recorder.overwritten()  # forget earlier passes
        model(x)
        changed = recorder.overwritten()
        if not changed:
            break
        recorder.clone.update(changed)
    missing = [name for name in layers if name not in store]
    if missing:
        raise UserError(f"layer(s) {', '.join(missing)} of {model_name} did not run in the forward pass "
                        f"(not called by forward()); choose layers the forward pass uses")
    outputs = [store[name] for name in layers]
    for name, out in zip(layers, outputs):
        if out.dim() == 0 or out.shape[0] != x.shape[0]:
            raise UserError(f"the output of layer {name} of {model_name} has shape {tuple(out.shape)}, "
                            f"not {x.shape[0]} x ... (one row per sample); it cannot be compared")
    return outputs
