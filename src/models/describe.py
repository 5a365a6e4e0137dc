"""What ``layer_info.py`` prints: the layer table of a zoo model or of a checkpoint, for a dataset's input."""
from pathlib import Path
from typing import Optional, Tuple

import pandas as pd

from src.data import dataset_info
from src.errors import UserError
from src.models.checkpoint import load_checkpoint
from src.models.layers import layer_table
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
