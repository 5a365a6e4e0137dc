"""Checkpoints: the state_dict plus the metadata needed to rebuild the model from the file alone.

A checkpoint written by this project is a dict::

    {"format": "drfrank-checkpoint", "version": 1,
     "state_dict": {...},
     "meta": {"model": "tiny10", "dataset": "fashion", "n_channels": 1, "n_classes": 10,
              "input_size": [32, 32], "init_seed": 0, "gradient_seed": 0, "epoch": 10,
              "iteration": 4290, "val_acc": 0.91, "val_loss": 0.25, "provenance": {...}}}

It holds only tensors and plain Python values, so ``torch.load(path, weights_only=True)`` reads it.
A bare state_dict (as the reference repository published) loads too, when the model name and
dataset are given, because nothing in such a file says what it is.
"""
import pickle
import zipfile
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch
from torch import nn

from src.data import dataset_info
from src.errors import UserError
from src.models import canonical_model_name, create_model
from src.results_io import atomic_write

FORMAT = "drfrank-checkpoint"
VERSION = 1


def save_checkpoint(path, model: nn.Module, meta: Dict[str, Any]) -> Path:
    """Write ``model``'s weights and ``meta`` atomically (CPU tensors, so it loads anywhere)."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    payload = {"format": FORMAT, "version": VERSION, "state_dict": state, "meta": dict(meta)}
    return atomic_write(path, lambda f: torch.save(payload, f))


def read_checkpoint(path) -> Tuple[Dict[str, torch.Tensor], Optional[Dict[str, Any]]]:
    """``(state_dict, meta)``; ``meta`` is ``None`` for a bare state_dict."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist; check the path (train_model.py writes snapshots/<Model>/<Dataset>/in<i>-gn<g>/<iteration>.pt)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, EOFError, RuntimeError, zipfile.BadZipFile, ValueError, OSError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"{path} is not a readable PyTorch checkpoint ({first_line})") from err
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        return obj["state_dict"], obj["meta"]
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj, None
    raise UserError(f"{path} holds neither a checkpoint of this project nor a state_dict")


def _meta_for_plain(model_name: Optional[str], dataset: Optional[str], path: Path) -> Dict[str, Any]:
    if not model_name or not dataset:
        raise UserError(f"{path} is a bare state_dict without metadata; give the model name and dataset "
                        f"(e.g. --model tiny10 --dataset cifar10) to load it")
    info = dataset_info(dataset)
    return {"model": canonical_model_name(model_name), "dataset": info.name, "n_channels": info.n_channels,
            "n_classes": info.n_classes, "input_size": list(info.input_size), "source": "bare state_dict"}


def load_checkpoint(path, model_name: Optional[str] = None, dataset: Optional[str] = None,
                    device="cpu") -> Tuple[nn.Module, Dict[str, Any]]:
    """Rebuild the model of a checkpoint, load its weights strictly and return ``(model, meta)``.

    The model is returned in ``eval()`` mode on ``device``. For a bare state_dict ``model_name``
    and ``dataset`` (the one it was trained on) are required; for a project checkpoint they are
    optional (a ``model_name`` that disagrees with the metadata is an error, ``dataset`` is ignored).
    No dataset is touched: channels, classes and input size come from the metadata.
    """
    path = Path(path)
    state, meta = read_checkpoint(path)
    if meta is None:
        meta = _meta_for_plain(model_name, dataset, path)
    elif model_name and canonical_model_name(model_name) != meta["model"]:
        raise UserError(f"{path} holds a {meta['model']} model, not {model_name}")
    model = create_model(meta["model"], n_classes=meta["n_classes"], n_channels=meta["n_channels"])
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        detail = " ".join(str(err).split())[:300]
        raise UserError(f"the weights in {path} do not fit a {meta['model']} for {meta['dataset']} "
                        f"({meta['n_channels']} channels, {meta['n_classes']} classes): {detail}") from err
    model.to(device).eval()
    return model, meta


def load_model(path, model_name: Optional[str] = None, dataset: Optional[str] = None, device="cpu") -> nn.Module:
    """:func:`load_checkpoint` without the metadata (the model's ``meta`` attribute holds it)."""
    model, meta = load_checkpoint(path, model_name, dataset, device)
    model.meta = meta
    return model
