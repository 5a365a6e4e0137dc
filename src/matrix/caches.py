"""Activations a stitch matrix computes once per layer instead of once per cell.

A single stitch (``stitch_nets.py``) runs, besides its training, four passes through the frozen
networks' early layers: the end network's front part over the training split (the least-squares
targets), the front network's front part over the validation split (every epoch) and over the test split
(the evaluation), and the end network's front part over the measured test samples (CKA and MSE of the
stitch against the end). In a matrix each of these depends on one layer only, so
:class:`MatrixCaches` computes each once: the front network's splits per front layer (kept while that
layer's end layers run, like the training-split :class:`~src.stitching.batches.FrontCache`)
and the end network's per end layer (kept for the whole matrix). Every cache is filled with the
same loader and batches as the live pass it replaces, so a cell's numbers are exactly those of a
single stitch with the same job.

One pass for all layers: :meth:`MatrixCaches.prefill` runs each network once per split with forward
hooks on all of the matrix's layers of that network (instead of one truncated network per layer,
each repeating the expensive early layers), when every layer's activations of that split fit the
budget together and BatchNorm folding is off (a folded front part computes other numbers).

Memory: each cache is only made while the caches of that side stay within the job's
``cache_limit_gb`` (float32 activations); past it the cell computes that pass live, as a single
stitch does.
"""
from contextlib import contextmanager
from dataclasses import replace
from typing import Dict, List, Optional, Sequence

import torch

from src.features.hooks import capture
from src.features.stream import FirstSamples, layer_outputs
from src.stitching.batches import CellCaches, FrontCache
from src.stitching.cut import INPUT_LAYER, FrontPart
from src.stitching.job import StitchJob
from src.stitching.measure import measured_targets



class MatrixCaches:
    """The caches of one pair of networks (one variant of a matrix); see the module docstring."""

    def __init__(self, pair, job: StitchJob, eval_batch: int):
        self.pair, self.job, self.eval_batch = pair, job, eval_batch
        self.limit_gb = float(job.cache_limit_gb)
        self.end: Dict[str, Dict[str, object]] = {}
        self.end_gb = 0.0
        self.front_layers: Dict[str, CellCaches] = {}  # prefilled front layers
        self.front_gb = 0.0

    def prefill(self, front_layers: Sequence[str], end_layers: Sequence[str]) -> None:
        """Fill the front layers' and the end layers' caches with one pass per network and split (see the
        module docstring); a split whose layers do not fit the budget together is left to the per-layer path."""
        pair, job = self.pair, self.job
        if job.fold_bn:
            return
        front_layers = [s for s in front_layers if s != INPUT_LAYER]
        end_layers = [r for r in end_layers if r != INPUT_LAYER]
        splits = {"train": pair.plain_train(job), "val": pair.fixed_loader(job, "val", self.eval_batch),
                  "test": pair.fixed_loader(job, "test", self.eval_batch)}
        front_logits: List[torch.Tensor] = []  # the front network's own test logits, from its test pass
        train = self._one_pass(pair.front_model, front_layers, splits["train"], "front") if front_layers else None
        if train:  # the other splits only where the training split's caches (which the matrix needs) fit
            found = {split: (self._one_pass(pair.front_model, front_layers, loader, "front",
                                            front_logits if split == "test" else None) if loader.num_samples else None)
                     for split, loader in splits.items() if split != "train"}
            for s in front_layers:
                self.front_layers[s] = CellCaches(train=train[s], **{split: caches[s] if caches else None
                                                                 for split, caches in found.items()})
        if end_layers:
            targets = self._one_pass(pair.end_model, end_layers, splits["train"], "end")
            if targets:
                end_logits: Optional[List[torch.Tensor]] = [] if front_logits else None  # then the whole test split
                measured = _test_pass(pair.end_model, end_layers, splits["test"], job.measure_samples, end_logits)
                for r in end_layers:
                    self.end[r] = {"targets": targets[r], "measured": measured[r]}
                    self.end_gb += _gib(measured[r])
                if end_logits:  # both networks' own test logits came with the passes: none of its own
                    pair.remember_test_logits(job, {"front": torch.cat(front_logits), "end": torch.cat(end_logits)})

    def _one_pass(self, model, layers: Sequence[str], loader, side: str,
                  logits: Optional[List[torch.Tensor]] = None) -> Optional[Dict[str, FrontCache]]:
        """Every layer's activations on ``loader`` from one forward pass per batch, or None past the budget;
        ``logits``: a list to extend with the network's own outputs of the same passes."""
        x, _ = next(iter(loader))
        sizes = [_gib(o[0]) * loader.num_samples for o in _outputs(model, layers, x[:1].to(self.pair.device))]
        used = self.front_gb if side == "front" else self.end_gb
        if used + sum(sizes) > self.limit_gb:
            return None
        per_layer, labels = {name: [] for name in layers}, []
        recorder = capture(model, layers)
        with torch.no_grad(), recorder, _network_output(model) as last:
            for x, y in loader:
                outputs = layer_outputs(model, x.to(self.pair.device, non_blocking=True), recorder, layers)
                for name, out in zip(layers, outputs):
                    per_layer[name].append(out)
                labels.append(y.to(self.pair.device))
                if logits is not None:
                    logits.append(last["output"].float().cpu())
        labels = torch.cat(labels)
        caches = {name: FrontCache.of(loader, self.pair.device, torch.cat(outs), labels) for name, outs in per_layer.items()}
        if side == "front":
            self.front_gb += sum(sizes)
        else:
            self.end_gb += sum(sizes)
        return caches

    def _cache(self, front, loader, used_gb: float) -> Optional[FrontCache]:
        if used_gb + FrontCache.size_gb(front, loader) > self.limit_gb:
            return None
        return FrontCache(front, loader, self.pair.device, limit_gb=self.limit_gb)

    def front(self, layer: str) -> CellCaches:
        """The front layer's activations on the training, validation and test splits (the training one always:
        the matrix requires it, as ``--cache-front`` does)."""
        if layer in self.front_layers:
            return self.front_layers[layer]
        pair, job = self.pair, self.job
        front = FrontPart(pair.front_model, layer, job.fold_bn)
        train = FrontCache(front, pair.plain_train(job), pair.device, limit_gb=self.limit_gb)
        used = _gib(train.front)
        val_loader = pair.fixed_loader(job, "val", self.eval_batch)
        val = self._cache(front, val_loader, used) if val_loader.num_samples else None
        used += _gib(val.front) if val is not None else 0.0
        test = self._cache(front, pair.fixed_loader(job, "test", self.eval_batch), used)
        return CellCaches(train=train, val=val, test=test)

    def cell(self, front: CellCaches, end_layer: str) -> CellCaches:
        """``front``'s caches with the end layer's (made on first use, then kept)."""
        if end_layer not in self.end:
            self.end[end_layer] = self._end(end_layer)
        return replace(front, **self.end[end_layer])

    def _end(self, layer: str) -> Dict[str, object]:
        pair, job = self.pair, self.job
        end_front = FrontPart(pair.end_model, layer, job.fold_bn)
        targets = self._cache(end_front, pair.plain_train(job), self.end_gb)
        if targets is not None:
            self.end_gb += _gib(targets.front)
        measured = measured_targets(end_front, pair.fixed_loader(job, "test", self.eval_batch), job.measure_samples)
        self.end_gb += _gib(measured)
        return {"targets": targets, "measured": measured}


def _gib(t: torch.Tensor) -> float:
    """GiB ``t`` takes as float32 (the caches' dtype)."""
    return t.numel() * 4 / 2**30


def _outputs(model, layers: Sequence[str], x: torch.Tensor) -> List[torch.Tensor]:
    recorder = capture(model, layers)
    with torch.no_grad(), recorder:
        return layer_outputs(model, x, recorder, layers)


@contextmanager
def _network_output(model):
    """``{"output": ...}``: the model's own output of its latest forward pass (a hook on the whole network)."""
    last: Dict[str, torch.Tensor] = {}
    handle = model.register_forward_hook(lambda module, inputs, output: last.__setitem__("output", output))
    try:
        yield last
    finally:
        handle.remove()


@torch.no_grad()
def _test_pass(model, layers: Sequence[str], loader, measure_samples: int,
               logits: Optional[List[torch.Tensor]] = None) -> Dict[str, torch.Tensor]:
    """:func:`~src.stitching.measure.measured_targets` of every layer from one pass (whole batches, then cut,
    as the single stitch computes them); with ``logits`` (a list to extend) the pass covers the whole split
    and collects the network's own outputs too, as :func:`~src.stitching.measure.network_logits` does."""
    per_layer: Dict[str, List[torch.Tensor]] = {name: [] for name in layers}
    first = FirstSamples(measure_samples)
    recorder = capture(model, layers)
    with recorder, _network_output(model) as last:
        for x, _ in loader:
            if first.done and logits is None:
                break
            take = first.take(x.shape[0])
            outputs = layer_outputs(model, x, recorder, layers)
            if logits is not None:
                logits.append(last["output"].float().cpu())
            if take > 0:
                for name, out in zip(layers, outputs):
                    per_layer[name].append(out[:take].flatten(1).float().cpu())
    return {name: torch.cat(outs) if outs else torch.empty(0) for name, outs in per_layer.items()}
