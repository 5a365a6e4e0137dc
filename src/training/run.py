"""What ``train_model.py`` does, callable from Python: build everything from the arguments and train."""
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from src.config import get_config, resolve_device, resolve_path
from src.data import dataset_info, get_loader
from src.models import canonical_model_name, create_model, model_display_name
from src.provenance import provenance
from src.training.trainer import ClassifierTrainer, TrainSettings


@dataclass
class TrainJob:
    """One training run's settings (``train_model.py`` takes its defaults from here: the reference's)."""

    model: str = "tiny10"
    dataset: str = "cifar10"
    init_noise: int = 0
    gradient_noise: int = 0
    out_dir: Optional[str] = None  # default: SNAPSHOTS_DIR of the config
    epochs: int = 300
    batch_size: int = 128
    lr: float = 0.1
    weight_decay: float = 1e-4
    optimizer: str = "sgd"
    save_frequency: int = 10000
    val_size: int = 5000
    max_samples: Optional[int] = None
    no_augment: bool = False
    download: bool = False
    device: Optional[str] = None


def run_folder(out_dir, model: str, dataset: str, init_seed: int, gradient_seed: int) -> Path:
    """``<out>/<Model>/<Dataset>/in<i>-gn<g>``: the reference's layout (display names, e.g. Tiny10/FashionMNIST)."""
    return Path(out_dir) / model_display_name(model) / dataset_info(dataset).display_name / f"in{init_seed}-gn{gradient_seed}"


def train_from_args(args: TrainJob, argv=None) -> Path:
    """Train ``args.model`` on ``args.dataset``; returns the run folder with the checkpoints and the log."""
    config = get_config()
    info = dataset_info(args.dataset)
    device = resolve_device(args.device or config.device)
    name = canonical_model_name(args.model)
    model = create_model(name, n_classes=info.n_classes, n_channels=info.n_channels, seed=args.init_noise)
    common = dict(val_size=args.val_size, max_samples=args.max_samples, download=args.download, config=config, device=device)
    train = get_loader(info.name, "train", args.batch_size, seed=args.gradient_noise, drop_last=True,
                       augment=not args.no_augment, **common)
    val = get_loader(info.name, "val", max(args.batch_size, 512), **common)
    out_dir = resolve_path(args.out_dir) if args.out_dir else config.snapshots_dir
    run_dir = run_folder(out_dir, name, info.name, args.init_noise, args.gradient_noise)
    meta = {"model": name, "dataset": info.name, "n_channels": info.n_channels, "n_classes": info.n_classes,
            "input_size": list(info.input_size), "init_seed": args.init_noise, "gradient_seed": args.gradient_noise,
            "val_size": args.val_size, "provenance": provenance(args, argv)}
    settings = TrainSettings(epochs=args.epochs, lr=args.lr, weight_decay=args.weight_decay,
                             optimizer=args.optimizer, save_frequency=args.save_frequency)
    print(f"training {model_display_name(name)} on {info.display_name}: {train.num_samples} train / "
          f"{val.num_samples} val samples, {len(train)} iterations per epoch, device {device} -> {run_dir}")
    ClassifierTrainer(model, train, val, settings, run_dir, meta, multilabel=info.multilabel, device=device).run()
    return run_dir


