"""What ``layer_info.py`` prints: the layer table of a zoo model or of a checkpoint, for a dataset's input."""
from pathlib import Path
import re
from typing import Any, Dict, Optional, Tuple

import pandas as pd
import torch
from torch import nn

from src.data import dataset_info, is_imagefolder_name
from src.errors import UserError
from src.models.checkpoint import load_checkpoint
from src.models.networks import load_network
from src.models.specs import is_model_spec
from src.models.layer_table import layer_table
from src.models.registry import canonical_model_name, create_model, model_display_name

DEFAULT_DATASET = "cifar10"


def looks_like_path(spec: str) -> bool:
    return spec.endswith((".pt", ".pth")) or Path(spec).exists() or "/" in spec


def describe_layers(spec: str, dataset: Optional[str] = None, model_name: Optional[str] = None,
                    weights: Optional[str] = None) -> Tuple[str, pd.DataFrame]:
    """``(title, table)`` for a model name, a checkpoint path or a model spec (``torchvision:NAME``, ``timm:NAME``,
    ``MODULE:FUNCTION``; with its ``weights`` file, else randomly initialised).

    A checkpoint is described for the input it was trained on (channels and size from its metadata;
    the data are not read) unless ``dataset`` is given; then for that dataset's images, refused in
    one line when the model cannot take them (:func:`check_takes_input`). A model name is described
    for ``dataset`` (default CIFAR-10: 3 channels, 10 classes, 32x32).
    """
    if is_model_spec(spec):
        info = dataset_info(dataset) if dataset else None
        model, meta = load_network(spec, weights, info=info)
        size = list(info.input_size) if info else meta.get("input_size")
        if not size:
            raise UserError(f"{spec} does not say its input size; give a data set with -d (e.g. -d cifar10)")
        shape = (info.n_channels if info else meta["n_channels"] or 3, *size)
        if info is not None:
            check_takes_input(model, meta, info, spec)
        title = f"{display_name(meta, spec)} ({meta['n_classes']} classes)"
    elif weights is not None:
        raise UserError(f"--weights is for a model spec (torchvision:NAME, timm:NAME, MODULE:FUNCTION), not for {spec}")
    elif looks_like_path(spec):
        model, meta = load_checkpoint(spec, model_name=model_name, dataset=dataset)
        title = f"{model_display_name(meta['model'])} from {spec} (trained on {meta['dataset']})"
        if dataset is None and meta.get("input_size"):
            shape = (meta["n_channels"], *meta["input_size"])
        else:
            info = dataset_info(dataset or meta["dataset"])
            if info.n_channels != meta["n_channels"]:
                raise UserError(f"{spec} takes {meta['n_channels']}-channel input; {info.name} has {info.n_channels} channels")
            check_takes_input(model, meta, info, spec)
            shape = (info.n_channels, *info.input_size)
    else:
        info = dataset_info(dataset or DEFAULT_DATASET)
        name = canonical_model_name(spec)
        model = create_model(name, n_classes=info.n_classes, n_channels=info.n_channels)
        title = f"{model_display_name(name)} for {info.display_name}"
        shape = (info.n_channels, *info.input_size)
    table = layer_table(model, shape)
    return f"{title}, input {'x'.join(map(str, shape))}", table


def size_text(size) -> str:
    """``32x32`` for (32, 32)."""
    return "x".join(str(int(v)) for v in size)


def resize_hint(dataset: str, size) -> str:
    """How to give a dataset images of ``size``: --image-size for an image folder, nothing for a built-in one."""
    if is_imagefolder_name(dataset):
        return f"; resize the folder's images to the model's with --image-size {size_text(size)}"
    return ""


@torch.no_grad()
def check_takes_input(model: nn.Module, meta: Dict[str, Any], info, what: str = "the model") -> None:
    """A UserError (one line) when ``model``, trained on ``meta['input_size']`` images, cannot run on ``info``'s.

    Nothing is checked when the sizes agree (or the metadata records none). Otherwise one forward
    pass on two zero images of the dataset's shape decides: a network with a global pool before its
    classifier (Tiny10, ResNets) takes other sizes, one with a fixed flatten + linear (LeNet) does not.
    """
    trained = tuple(meta.get("input_size") or ())
    size = tuple(info.input_size)
    if not trained or trained == size:
        return
    parameter = next(model.parameters(), None)
    example = torch.zeros(2, info.n_channels, *size, device=None if parameter is None else parameter.device)
    was_training = model.training
    model.eval()
    try:
        model(example)
    except RuntimeError as err:
        detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"{what} was trained on {size_text(trained)} images ({meta.get('dataset')}) and cannot take "
                        f"the {size_text(size)} images of {info.name} ({detail}){resize_hint(info.name, trained)}") from err
    finally:
        model.train(was_training)


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
    """``Tiny10 in0-gn0-4290``: the model's display name and the checkpoint label; for a model spec the spec and its
    weights file's label (``timm:resnet18 run3-best``, or ``random init``), for a module from Python its class."""
    if meta.get("network") == "module":
        return _family(meta)
    if meta.get("spec"):
        return f"{meta['spec']} {checkpoint_label(meta['weights']) if meta.get('weights') else 'random init'}"
    return f"{_family(meta)} {checkpoint_label(path)}"


def model_label(meta: Dict[str, Any], path) -> str:
    """``Tiny10-in0-gn0-4290``: :func:`display_name` as one part of a file name."""
    return file_safe(display_name(meta, path))


def file_safe(text: str) -> str:
    """``text`` as one part of a file name: every run of other characters than letters, digits, ``.``, ``_`` and
    ``-`` becomes one ``-``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text)
