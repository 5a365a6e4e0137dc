"""Where the stitch's training batches come from.

:class:`LiveBatches` runs the frozen front network on every batch of the loader (augmentation
applies). :class:`FrontCache` runs it once over the (unaugmented) training split and :class:`CachedBatches`
serves shuffled batches of the stored activations every epoch - the front network's cost is paid
once instead of once per epoch (and, in a stitch matrix, once for all end layers). Each batch
is a dict: ``x`` (input, or None when the end part does not need it), ``front`` (front activation),
``labels``, ``teachers`` (logits of the networks the target type needs) and ``end_target`` (the end
network's own activation, when CKA regularisation needs it).
"""
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Tuple

import torch

from src.errors import UserError
from src.seeding import generator
from src.stitching.frank import FrankensteinNet


def _extras(frank: FrankensteinNet, x: torch.Tensor, teachers: List[str], need_end_target: bool) -> Dict:
    with torch.no_grad():
        models = {"front": frank.front_model, "end": frank.end_model}
        out = {"teachers": {name: models[name](x) for name in teachers}}
        out["end_target"] = frank.end_target(x) if need_end_target else None
    return out


class LiveBatches:
    def __init__(self, frank: FrankensteinNet, loader, teachers: List[str], need_end_target: bool, device):
        self.frank, self.loader, self.teachers = frank, loader, teachers
        self.need_end_target, self.device = need_end_target, device

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Dict]:
        for x, labels in self.loader:
            x, labels = x.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)
            batch = {"x": x, "front": self.frank.front_activation(x), "labels": labels}
            batch.update(_extras(self.frank, x, self.teachers, self.need_end_target))
            yield batch


class FrontCache:
    """One front part's activations on a whole split, computed once, in the loader's order.

    ``--cache-front`` reuses them (on the training split) every epoch; a stitch matrix reuses them
    for every end layer as well (least-squares statistics and training), and caches the other
    splits and the end network's side the same way (:mod:`src.matrix.caches`). ``loader`` must serve
    the split unaugmented and unshuffled: its batches are also the batches of the live passes they
    replace, so a cell of a matrix sees exactly the numbers a single cached stitch sees.
    """

    def __init__(self, front, loader, device, limit_gb: float = 8.0):
        if getattr(loader, "augment", False) or getattr(loader, "shuffle", False):
            raise UserError("cannot cache front activations of augmented or shuffled data; pass --no-augment with --cache-front")
        self.loader, self.device = loader, device
        self._check_size(front, loader, limit_gb)
        fronts, labels = [], []
        with torch.no_grad():
            for x, y in loader:
                fronts.append(front(x.to(device, non_blocking=True)))
                labels.append(y.to(device))
        self.front, self.labels = torch.cat(fronts), torch.cat(labels)
        self.n = self.front.shape[0]
        self._inputs = None

    @classmethod
    def _check_size(cls, front, loader, limit_gb: float) -> None:
        total = cls.size_gb(front, loader)
        if total > limit_gb:
            raise UserError(f"caching the front activations needs {total:.1f} GiB (limit {limit_gb:g} GiB); "
                            f"raise --cache-limit-gb or drop --cache-front")

    @classmethod
    def of(cls, loader, device, front: torch.Tensor, labels: torch.Tensor) -> "FrontCache":
        """A cache of activations computed elsewhere (in ``loader``'s order, e.g. by one pass for several layers)."""
        cache = cls.__new__(cls)
        cache.loader, cache.device, cache.front, cache.labels = loader, device, front, labels
        cache.n, cache._inputs = front.shape[0], None
        return cache

    @staticmethod
    def size_gb(front, loader) -> float:
        """GiB the activations of ``front`` on ``loader``'s split take (float32)."""
        x, _ = next(iter(loader))
        with torch.no_grad():
            per_sample = front(x[:1]).numel() * 4
        return per_sample * loader.num_samples / 2**30

    def batches(self) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        """``(input batch, its cached front activations)`` in the loader's order."""
        for x, _, front in self.items():
            yield x, front

    def items(self) -> Iterator[Tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """``(input batch, its labels, its cached front activations)`` in the loader's order."""
        start = 0
        for x, _ in self.loader:
            x = x.to(self.device, non_blocking=True)
            stop = start + x.shape[0]
            yield x, self.labels[start:stop], self.front[start:stop]
            start = stop

    def inputs(self) -> torch.Tensor:
        """The whole split's inputs (kept, once asked for, for end parts that need the network input)."""
        if self._inputs is None:
            self._inputs = torch.cat([x for x, _ in self.batches()])
        return self._inputs


class CachedBatches:
    """Shuffled batches of a :class:`FrontCache` every epoch, with what this stitch's end part and targets need."""

    def __init__(self, frank: FrankensteinNet, cache: FrontCache, teachers: List[str], need_end_target: bool,
                 batch_size: int, seed: int, drop_last: bool = True):
        self.batch_size, self.drop_last = batch_size, drop_last
        self.generator = generator(seed)
        store: Dict[str, List] = {"end_target": []}
        teacher_store: Dict[str, List] = {name: [] for name in teachers}
        if teachers or need_end_target:
            for x, _ in cache.batches():
                extra = _extras(frank, x, teachers, need_end_target)
                for name, logits in extra["teachers"].items():
                    teacher_store[name].append(logits)
                if need_end_target:
                    store["end_target"].append(extra["end_target"])
        self.tensors = {"front": cache.front, "labels": cache.labels,
                        "x": cache.inputs() if frank.end.needs_input else None,
                        "end_target": torch.cat(store["end_target"]) if need_end_target else None}
        self.teachers = {k: torch.cat(v) for k, v in teacher_store.items()}
        self.n = cache.n

    def __len__(self) -> int:
        return self.n // self.batch_size if self.drop_last else -(-self.n // self.batch_size)

    def __iter__(self) -> Iterator[Dict]:
        order = torch.randperm(self.n, generator=self.generator).to(self.tensors["front"].device)
        for i in range(len(self)):
            idx = order[i * self.batch_size:(i + 1) * self.batch_size]
            pick = {k: (v[idx] if v is not None else None) for k, v in self.tensors.items()}
            pick["teachers"] = {k: v[idx] for k, v in self.teachers.items()}
            yield pick


@dataclass
class CellCaches:
    """What one cell may read instead of computing (None: compute it live)."""

    train: Optional[FrontCache] = None  # front activations, unaugmented training split (statistics, training)
    val: Optional[FrontCache] = None  # front activations, validation split (the per-epoch validation pass)
    test: Optional[FrontCache] = None  # front activations, test split (evaluation)
    targets: Optional[FrontCache] = None  # end activations at the end layer, training split (least squares)
    measured: Optional[torch.Tensor] = None  # end activations, the measured test samples (flattened, CPU)
