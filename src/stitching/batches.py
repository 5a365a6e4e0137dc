"""Where the stitch's training batches come from.

:class:`LiveBatches` runs the frozen front network on every batch of the loader (augmentation
applies). :class:`CachedBatches` runs it once over the (unaugmented) training split and then serves
shuffled batches of the stored activations every epoch - the front network's cost is paid once
instead of once per epoch. Each batch is a dict: ``x`` (input, or None when the end part does not
need it), ``front`` (front activation), ``labels``, ``teachers`` (logits of the networks the target
type needs) and ``end_target`` (the end network's own activation, when CKA regularisation needs it).
"""
from typing import Dict, Iterator, List

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


class CachedBatches:
    """Front activations of the whole (unaugmented) training split, computed once and reshuffled every epoch."""

    def __init__(self, frank: FrankensteinNet, loader, teachers: List[str], need_end_target: bool, device,
                 batch_size: int, seed: int, drop_last: bool = True, limit_gb: float = 8.0):
        if getattr(loader, "augment", False):
            raise UserError("cannot cache front activations of augmented data; pass --no-augment with --cache-front")
        self.batch_size, self.drop_last, self.device = batch_size, drop_last, device
        self.generator = generator(seed)
        self._check_size(frank, loader, limit_gb)
        keep_x = frank.end.needs_input
        store: Dict[str, List] = {"x": [], "front": [], "labels": [], "end_target": []}
        teacher_store: Dict[str, List] = {name: [] for name in teachers}
        for x, labels in loader:
            x = x.to(device, non_blocking=True)
            store["front"].append(frank.front_activation(x))
            store["labels"].append(labels.to(device))
            if keep_x:
                store["x"].append(x)
            extra = _extras(frank, x, teachers, need_end_target)
            for name, logits in extra["teachers"].items():
                teacher_store[name].append(logits)
            if need_end_target:
                store["end_target"].append(extra["end_target"])
        self.tensors = {k: torch.cat(v) if v else None for k, v in store.items()}
        self.teachers = {k: torch.cat(v) for k, v in teacher_store.items()}
        self.n = self.tensors["front"].shape[0]

    @staticmethod
    def _check_size(frank: FrankensteinNet, loader, limit_gb: float) -> None:
        x, _ = next(iter(loader))
        per_sample = frank.front_activation(x[:1].to(next(frank.stitch.parameters()).device)).numel() * 4
        total = per_sample * loader.num_samples / 2**30
        if total > limit_gb:
            raise UserError(f"caching the front activations needs {total:.1f} GiB (limit {limit_gb:g} GiB); "
                            f"raise --cache-limit-gb or drop --cache-front")

    def __len__(self) -> int:
        return self.n // self.batch_size if self.drop_last else -(-self.n // self.batch_size)

    def __iter__(self) -> Iterator[Dict]:
        order = torch.randperm(self.n, generator=self.generator).to(self.tensors["front"].device)
        for i in range(len(self)):
            idx = order[i * self.batch_size:(i + 1) * self.batch_size]
            pick = {k: (v[idx] if v is not None else None) for k, v in self.tensors.items()}
            pick["teachers"] = {k: v[idx] for k, v in self.teachers.items()}
            yield pick
