"""What ``eval_net.py`` does: loss and accuracy of a checkpoint on a split."""
from typing import Any, Dict, Optional

from src.config import get_config, resolve_device
from src.data import dataset_info, get_loader
from src.errors import UserError
from src.models.checkpoint import load_checkpoint
from src.training.evaluate import evaluate


def check_compatible(meta: Dict[str, Any], dataset: str) -> None:
    """A model can be evaluated on another dataset only if channels and classes agree."""
    info = dataset_info(dataset)
    if (info.n_channels, info.n_classes) != (meta["n_channels"], meta["n_classes"]):
        raise UserError(f"the model was built for {meta['n_channels']} channels and {meta['n_classes']} classes "
                        f"({meta['dataset']}); {info.name} has {info.n_channels} and {info.n_classes}")


def evaluate_checkpoint(path, dataset: Optional[str] = None, split: str = "test", batch_size: int = 1000,
                        model_name: Optional[str] = None, device: Optional[str] = None,
                        max_samples: Optional[int] = None, val_size: int = 5000, download: bool = False) -> Dict[str, Any]:
    config = get_config()
    device = resolve_device(device or config.device)
    model, meta = load_checkpoint(path, model_name=model_name, dataset=dataset, device=device)
    dataset = dataset or meta["dataset"]
    check_compatible(meta, dataset)
    loader = get_loader(dataset, split, batch_size, val_size=val_size, max_samples=max_samples, config=config,
                        device=device, download=download)
    result = evaluate(model, loader, dataset_info(dataset).multilabel, device)
    return {"checkpoint": str(path), "model": meta["model"], "trained_on": meta["dataset"], "dataset": dataset,
            "split": split, "n": result.n, "loss": result.loss, "acc": result.acc,
            "iteration": meta.get("iteration"), "val_acc_at_save": meta.get("val_acc")}
