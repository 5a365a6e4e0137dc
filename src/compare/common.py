"""Loading the two checkpoints of a comparison, their data, and the names they are shown under."""
from typing import Any, Dict, Optional, Tuple

from torch import nn

from src.data.options import default_val_size
from src.data import dataset_info, get_loader
from src.errors import UserError
from src.models.networks import load_network, network_path
from src.models.describe import resize_hint


def check_input_fits(meta: Dict[str, Any], dataset: str, which: str) -> None:
    """Representations are compared on images of the channels and size the model was trained on (its metadata's).

    Anything else is one line; for an image folder of another size it names the ``--image-size`` to give.
    """
    info = dataset_info(dataset)
    channels = meta.get("n_channels")
    size = tuple(meta.get("input_size") or info.input_size)
    if channels != info.n_channels or size != tuple(info.input_size):
        hint = resize_hint(info.name, size) if channels == info.n_channels else ""
        raise UserError(f"{which} was built for {channels}-channel {size[0]}x{size[1]} images ({meta.get('dataset')}); "
                        f"{info.name} has {info.n_channels}-channel {info.input_size[0]}x{info.input_size[1]} images"
                        f"{hint}")


def load_models(path1, path2, arch1: Optional[str], arch2: Optional[str], dataset: Optional[str],
                device, weights1: Optional[str] = None,
                weights2: Optional[str] = None) -> Tuple[Tuple[nn.Module, Dict[str, Any]], Tuple[nn.Module, Dict[str, Any]]]:
    """Both networks (checkpoints, or model specs with their weights files: :func:`src.models.networks.load_network`);
    the same network twice gives the same model object (one forward pass per batch)."""
    info = dataset_info(dataset) if dataset else None
    first = load_network(path1, weights1, arch1, dataset, info, device)
    if network_path(path1) == network_path(path2) and (arch2 or arch1) == arch1 and weights1 == weights2:
        return first, first
    return first, load_network(path2, weights2, arch2, dataset, info, device)


def eval_loader(dataset: str, split: str, batch_size: int, max_samples: Optional[int], device, download: bool,
                val_size: Optional[int] = None, config=None):
    """Batches of a split in order, without shuffling or augmentation; ``val_size`` None: the dataset's default
    (:func:`src.data.options.default_val_size`: 5000 for the built-in datasets)."""
    val_size = default_val_size(dataset) if val_size is None else val_size
    return get_loader(dataset, split, batch_size, shuffle=False, augment=False, max_samples=max_samples,
                      device=device, download=download, val_size=val_size, config=config)
