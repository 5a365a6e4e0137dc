"""What ``layer_info.py`` prints: the layer table of a zoo model or of a checkpoint, for a dataset's input."""
from pathlib import Path
import re
from typing import Any, Dict, Optional, Tuple

import pandas as pd

from src.data import dataset_info
from src.errors import UserError
from src.models.checkpoint import load_checkpoint
from src.models.layer_table import layer_table
from src.models.registry import canonical_model_name, create_model, model_display_name

DEFAULT_DATASET = "cifar10"


def looks_like_path(spec: str) -> bool:
    return spec.endswith((".pt", ".pth")) or Path(spec).exists() or "/" in spec


def describe_layers(spec: str, dataset: Optional[str] = None, model_name: Optional[str] = None) -> Tuple[str, pd.DataFrame]:
    """``(title, table)`` for a model name or a checkpoint path.

    A checkpoint is described for the input of the dataset it was trained on unless ``dataset`` is
    given; a model name for ``dataset`` (default CIFAR-10: 3 channels, 10 classes, 32x32).
    """
    if looks_like_path(spec):
        model, meta = load_checkpoint(spec, model_name=model_name, dataset=dataset)
        info = dataset_info(dataset or meta["dataset"])
        if info.n_channels != meta["n_channels"]:
            raise UserError(f"{spec} takes {meta['n_channels']}-channel input; {info.name} has {info.n_channels} channels")
        title = f"{model_display_name(meta['model'])} from {spec} (trained on {meta['dataset']})"
    else:
        info = dataset_info(dataset or DEFAULT_DATASET)
        name = canonical_model_name(spec)
        model = create_model(name, n_classes=info.n_classes, n_channels=info.n_channels)
        title = f"{model_display_name(name)} for {info.display_name}"
    shape = (info.n_channels, *info.input_size)
    table = layer_table(model, shape)
    return f"{title}, input {'x'.join(map(str, shape))}", table


def checkpoint_label(path) -> str:
    """A short name for a checkpoint file: ``<folder>-<stem>`` (``in0-gn0-4290`` for .../in0-gn0/4290.pt)."""
    path = Path(path)
    parent = path.parent.name
    return f"{parent}-{path.stem}" if parent not in ("", ".") else path.stem


def _family(meta: Dict[str, Any]) -> str:
    try:
        return model_display_name(meta["model"])
    except (UserError, KeyError):
        return str(meta.get("model", "model"))


def display_name(meta: Dict[str, Any], path) -> str:
    """``Tiny10 in0-gn0-4290``: the model's display name and the checkpoint label."""
    return f"{_family(meta)} {checkpoint_label(path)}"


def model_label(meta: Dict[str, Any], path) -> str:
    """``Tiny10-in0-gn0-4290``: :func:`display_name` as one part of a file name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", f"{_family(meta)}-{checkpoint_label(path)}")
