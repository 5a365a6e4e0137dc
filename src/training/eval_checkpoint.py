"""What ``eval_net.py`` does: loss and accuracy of a checkpoint on a split.

The 'val' split is the one the checkpoint was trained with: its recorded ``val_size`` held-out
samples (a model trained with ``--val-size 1000`` is scored on its own 1000 held-out images, never on
training images). Checkpoints without a record (bare state_dicts), and image folders other than the
one the model was trained on, use the dataset's default (:func:`src.data.options.default_val_size`: 5000, for an
``imagefolder:DIR`` 5000 or a tenth of its training images, whichever is smaller).

A model is evaluated on another dataset of its channels and classes; on images of another size only
if it can take them (:func:`src.models.describe.check_takes_input`). The result of an image folder
holds its ``dataset_description`` (path, size, normalisation, digest of the file list).
"""
from typing import Any, Dict, Optional

from src.data.options import dataset_provenance, default_val_size
from src.config import get_config, resolve_device
from src.data import dataset_info, get_loader, is_imagefolder_name
from src.errors import UserError
from src.models.networks import load_network, network_kind
from src.models.describe import check_takes_input
from src.training.evaluate import evaluate


def check_compatible(meta: Dict[str, Any], dataset: str) -> None:
    """A model can be evaluated on another dataset only if channels and classes agree."""
    info = dataset_info(dataset)
    if (info.n_channels, info.n_classes) != (meta["n_channels"], meta["n_classes"]):
        raise UserError(f"the model was built for {meta['n_channels']} channels and {meta['n_classes']} classes "
                        f"({meta['dataset']}); {info.name} has {info.n_channels} and {info.n_classes}")


def held_out_size(meta: Dict[str, Any], dataset: str, split: str, val_size: Optional[int]) -> int:
    """The 'val' size to use: the recorded one by default; a larger one would score the model on its training data."""
    recorded = meta.get("val_size")
    if recorded is not None and is_imagefolder_name(dataset) and dataset != meta["dataset"]:
        recorded = None  # another folder's hold-out says nothing about this one
    if val_size is None:
        return default_val_size(dataset) if recorded is None else recorded
    if split == "val" and recorded is not None and dataset == meta["dataset"] and val_size > recorded:
        raise UserError(f"the model was trained with --val-size {recorded}: a 'val' split of {val_size} would hold "
                        f"{val_size - recorded} of its training images; use --val-size {recorded} or less")
    return val_size


def evaluate_checkpoint(path, dataset: Optional[str] = None, split: str = "test", batch_size: int = 1000,
                        model_name: Optional[str] = None, device: Optional[str] = None,
                        max_samples: Optional[int] = None, val_size: Optional[int] = None,
                        download: bool = False, weights: Optional[str] = None) -> Dict[str, Any]:
    """Loss and accuracy of the checkpoint at ``path`` (or of a model spec with its ``weights`` file, on ``dataset``);
    ``val_size`` None: the checkpoint's own (see the module)."""
    config = get_config()
    device = resolve_device(device or config.device)
    if network_kind(str(path)) == "spec" and dataset is None:
        raise UserError(f"{path} is a model spec, which names no data set; give one with -d")
    info = dataset_info(dataset) if dataset else None
    model, meta = load_network(str(path), weights, model_name, dataset, info, device)
    dataset = dataset_info(dataset or meta["dataset"]).name  # an image folder's canonical name, as recorded
    check_compatible(meta, dataset)
    check_takes_input(model, meta, dataset_info(dataset), f"the model in {path}")
    val_size = held_out_size(meta, dataset, split, val_size)
    loader = get_loader(dataset, split, batch_size, val_size=val_size, max_samples=max_samples, config=config,
                        device=device, download=download)
    result = evaluate(model, loader, dataset_info(dataset).multilabel, device)
    return {"checkpoint": str(path), "model": meta["model"], "trained_on": meta["dataset"], "dataset": dataset,
            "split": split, "val_size": val_size, "n": result.n, "loss": result.loss, "acc": result.acc,
            "iteration": meta.get("iteration"), "val_acc_at_save": meta.get("val_acc"), **dataset_provenance(dataset)}
