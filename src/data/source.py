"""Where a stitch or a comparison takes its batches from: a named data set, or the user's own data.

Both kinds of :class:`DataSource` answer the same three questions, so the stitching and matrix code
never asks which one it has:

- ``name``: what results record as their data set (``fashion``, ``imagefolder:/abs/dir?size=32``, or
  ``user data`` for data given from Python);
- ``info``: a :class:`~src.data.registry.DatasetInfo` (classes, channels, input size, normalisation);
- ``loader(split, batch_size, shuffle=..., augment=..., seed=..., drop_last=..., max_samples=..., device=...)``:
  a re-iterable :class:`~src.data.loader.BatchLoader` of ``(x, y)`` batches with ``len()`` and ``num_samples``.

:class:`NamedData` serves the built-in data sets and image folders through :func:`~src.data.loader.get_loader`.
:class:`UserData` takes what a researcher has in Python: a ``torch.utils.data.Dataset``, a ``DataLoader`` or
any re-iterable of ``(inputs, labels)`` batches for each of train and test (and val). It reads each of
them once into memory as float32 tensors, exactly as given (the user's own transforms and normalisation
applied, none added: no augmentation), and then batches them like the built-in data sets: seeded
shuffling from a private generator, the same batches for the same seed. Without ``val`` a seeded
hold-out of the training data is the validation split, as for the built-in data sets.
"""
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, Iterator, Optional, Sequence, Tuple, Union

import torch
from torch.utils.data import DataLoader, Dataset

from src.config import Config
from src.data.loader import Batch, BatchLoader, get_loader
from src.data.options import default_val_size
from src.data.registry import DatasetInfo, dataset_info, describe_dataset
from src.data.splits import train_val_indices
from src.errors import UserError

#: What results record as the data set of data given from Python.
USER_DATA = "user data"
#: The most samples a hold-out validation split of user data takes (a tenth of the training data at most).
DEFAULT_VAL_SIZE = 5000


@dataclass
class NamedData:
    """A built-in data set or ``imagefolder:DIR``, with the options every loader of a run shares."""

    name: str
    val_size: Optional[int] = None  # None: the data set's default (src.data.options.default_val_size)
    download: bool = False
    config: Optional[Config] = None

    def __post_init__(self):
        if self.val_size is None:
            self.val_size = default_val_size(self.name)

    @property
    def info(self) -> DatasetInfo:
        return dataset_info(self.name)

    def loader(self, split: str, batch_size: int, **options) -> BatchLoader:
        return get_loader(self.name, split, batch_size, val_size=self.val_size, download=self.download,
                          config=self.config, **options)

    def describe(self) -> Dict[str, Any]:
        return describe_dataset(self.name)


def _batches(data: Any, what: str) -> Iterable:
    """Batches of ``data``: a Dataset is read through a plain, unshuffled DataLoader; anything else as it iterates."""
    if isinstance(data, Dataset) and not isinstance(data, torch.utils.data.IterableDataset):
        return DataLoader(data, batch_size=256, shuffle=False)
    if isinstance(data, (str, bytes)) or not isinstance(data, Iterable):
        raise UserError(f"{what} must be a torch Dataset, a DataLoader or an iterable of (inputs, labels) batches, "
                        f"not {type(data).__name__}")
    return data


def read_tensors(data: Any, what: str) -> Tuple[torch.Tensor, torch.Tensor]:
    """All of ``data`` as ``(inputs float32 N x ..., labels int64 N)`` on the CPU, in its own order."""
    xs, ys = [], []
    for index, batch in enumerate(_batches(data, what)):
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            raise UserError(f"{what}: batch {index} is a {type(batch).__name__}, not an (inputs, labels) pair; "
                            f"give batches of (inputs, labels) or a Dataset of (input, label) samples")
        x, y = torch.as_tensor(batch[0]), torch.as_tensor(batch[1])
        if x.dim() < 2 or y.dim() != 1 or len(x) != len(y):
            raise UserError(f"{what}: batch {index} has inputs of shape {tuple(x.shape)} and labels of shape "
                            f"{tuple(y.shape)}; give N inputs with N integer class labels")
        if y.is_floating_point() and not torch.equal(y, y.round()):
            raise UserError(f"{what}: the labels of batch {index} are not whole numbers; give integer class labels")
        xs.append(x.detach().float().cpu())
        ys.append(y.detach().long().cpu())
    if not xs:
        raise UserError(f"{what} holds no samples; give a non-empty Dataset, DataLoader or list of batches")
    shapes = {tuple(x.shape[1:]) for x in xs}
    if len(shapes) > 1:
        raise UserError(f"{what}: the inputs have different shapes {sorted(shapes)}; resize them to one shape")
    x, y = torch.cat(xs), torch.cat(ys)
    if not torch.isfinite(x).all():
        raise UserError(f"{what}: the inputs hold NaN or infinite values; clean or normalise them first")
    if int(y.min()) < 0:
        raise UserError(f"{what}: class labels must be >= 0, got {int(y.min())}")
    return x, y


class TensorLoader(BatchLoader):
    """Batches sliced from float32 tensors on ``device``, in order or in a seeded random order (no augmentation)."""

    def __init__(self, info: DatasetInfo, x: torch.Tensor, y: torch.Tensor, batch_size: int, shuffle: bool,
                 seed: int, device: torch.device, drop_last: bool):
        super().__init__(info, len(y), batch_size, shuffle, False, seed, device, drop_last)
        self._x, self._y = x.to(device), y.to(device)

    def __iter__(self) -> Iterator[Batch]:
        order, first, _ = self._begin_pass()
        order = None if order is None else order.to(self.device)
        for b in range(first, len(self)):
            start, stop = b * self.batch_size, min((b + 1) * self.batch_size, self.num_samples)
            index = slice(start, stop) if order is None else order[start:stop]
            self._position = b + 1
            yield self._x[index], self._y[index]


@dataclass
class UserData:
    """The user's own train / test (/ val) data; see the module docstring. ``n_classes`` defaults to the largest
    label + 1; ``mean`` / ``std`` (per channel, of pixels in [0, 1]) are only needed to show images stitched into
    a network's input."""

    train: Any
    test: Any
    val: Any = None
    val_size: Optional[int] = None
    n_classes: Optional[int] = None
    mean: Optional[Sequence[float]] = None
    std: Optional[Sequence[float]] = None
    name: str = USER_DATA
    _splits: Dict[str, Tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict, repr=False)

    def __post_init__(self):
        x, y = read_tensors(self.train, "train")
        self._splits["test"] = read_tensors(self.test, "test")
        if self.val is not None:
            self._splits["train"], self._splits["val"] = (x, y), read_tensors(self.val, "val")
        else:
            size = min(DEFAULT_VAL_SIZE, len(y) // 10) if self.val_size is None else self.val_size
            train, val = train_val_indices(len(y), size)
            self._splits["train"], self._splits["val"] = (x[train], y[train]), (x[val], y[val])
        shapes = {name: tuple(x.shape[1:]) for name, (x, _) in self._splits.items()}
        if len(set(shapes.values())) > 1:
            raise UserError(f"the splits hold inputs of different shapes ({shapes}); give every split one shape")
        largest = max(int(y.max()) for _, y in self._splits.values() if len(y))
        if self.n_classes is None:
            self.n_classes = largest + 1
        elif largest >= self.n_classes:
            raise UserError(f"the data hold label {largest}, but n_classes is {self.n_classes}")
        shape = shapes["train"]
        self._info = DatasetInfo(self.name, self.name.replace(" ", "-"), int(self.n_classes), int(shape[0]),
                                 tuple(int(s) for s in shape[1:]),
                                 normalization=(tuple(self.mean), tuple(self.std)) if self.mean is not None else None)

    @property
    def info(self) -> DatasetInfo:
        return self._info

    def loader(self, split: str, batch_size: int, *, shuffle: Optional[bool] = None, augment: Optional[bool] = None,
               seed: int = 0, device: Union[str, torch.device] = "cpu", drop_last: bool = False,
               max_samples: Optional[int] = None, **_ignored) -> BatchLoader:
        if split not in self._splits:
            raise UserError(f"unknown split {split!r}; the user data has {', '.join(self._splits)}")
        if len(self._splits[split][1]) == 0:
            raise UserError(f"the user data's {split} split is empty; give more training data or val=")
        x, y = self._splits[split]
        if max_samples is not None:
            x, y = x[:max_samples], y[:max_samples]
        shuffle = split == "train" if shuffle is None else shuffle
        return TensorLoader(self._info, x, y, batch_size, shuffle, seed, torch.device(device), drop_last)

    def describe(self) -> Dict[str, Any]:
        return {"name": self.name, "samples": {k: int(len(y)) for k, (_, y) in self._splits.items()},
                "val": "given" if self.val is not None else "held out of train (seeded)",
                "input_shape": list(self._splits["train"][0].shape[1:]), "n_classes": int(self.n_classes)}


DataSource = Union[NamedData, UserData]
