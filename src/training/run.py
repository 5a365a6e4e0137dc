"""What ``train_model.py`` does, callable from Python: build everything from the arguments and train.

A run folder belongs to one run: an existing one is refused unless ``overwrite`` (its checkpoints,
log and resume state are deleted first) or ``resume`` (the run continues from its last checkpoint).
Every option is checked before any data is loaded or any file written.

Under ``torchrun --nproc_per_node=N train_model.py ...`` the run is one run on N processes
(:mod:`src.distributed`): ``-b`` stays the global batch, each rank trains on its ``b / N`` slice
of it with DistributedDataParallel, rank 0 alone checks, claims and writes the run folder, and a
``--resume`` must use as many processes as the run it continues.
"""
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Dict, Optional

import torch

from src.data.options import dataset_provenance, default_val_size
from src.config import get_config, resolve_device, resolve_path
from src.data import dataset_info, get_loader, load_split
from src.distributed import World, main_does, session, world_from_env
from src.errors import UserError
from src.models import canonical_model_name, create_model, model_display_name
from src.models.checkpoint import read_checkpoint
from src.provenance import provenance
from src.training.resume import check_same_run, clear_run, read_state, remove_temporaries, run_files
from src.training.trainer import ClassifierTrainer, TrainSettings
from src.validation import check_batch_fits, check_train_job, check_writable_dir


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
    save_frequency: Optional[int] = 10000  # None: only iteration 0 and the last
    val_size: Optional[int] = None  # None: the dataset's default (src.data.options.default_val_size: 5000 for the built-in ones)
    max_samples: Optional[int] = None
    no_augment: bool = False
    download: bool = False
    device: Optional[str] = None
    overwrite: bool = False  # delete an existing run's checkpoints, log and resume state first
    resume: bool = False  # continue the run in the folder from its last checkpoint
    sync_bn: bool = False  # under torchrun: BatchNorm statistics over the global batch (SyncBatchNorm, CUDA only)


def run_folder(out_dir, model: str, dataset: str, init_seed: int, gradient_seed: int) -> Path:
    """``<out>/<Model>/<Dataset>/in<i>-gn<g>``: the reference's layout (display names, e.g. Tiny10/FashionMNIST)."""
    return Path(out_dir) / model_display_name(model) / dataset_info(dataset).display_name / f"in{init_seed}-gn{gradient_seed}"


def run_settings(args: TrainJob, model: str, dataset: str) -> Dict[str, Any]:
    """What must stay the same for ``--resume`` to continue a run (the data order and schedule depend on it)."""
    return {"model": model, "dataset": dataset, "init_seed": args.init_noise, "gradient_seed": args.gradient_noise,
            "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "weight_decay": args.weight_decay,
            "optimizer": args.optimizer, "val_size": args.val_size, "max_samples": args.max_samples,
            "augment": not args.no_augment, **({"sync_bn": True} if args.sync_bn else {})}


def check_run_folder(run_dir: Path, args: TrainJob, settings: Dict[str, Any],
                     world_size: int = 1) -> Optional[Dict[str, Any]]:
    """Refuse an existing run folder unless overwrite or resume; with resume, its state (checked against ``settings``)."""
    if args.resume:
        if not run_dir.is_dir():
            raise UserError(f"nothing to resume: {run_dir} does not exist; drop --resume to start the run")
        state = read_state(run_dir)
        check_same_world(state, world_size, args.sync_bn, run_dir)
        check_same_run(state["run"], settings, run_dir)
        return state
    if run_dir.exists() and not args.overwrite:
        held = run_files(run_dir)
        what = f"holds {len(held)} files of a training run" if held else "exists"
        raise UserError(f"{run_dir} {what}; pass --resume to continue that run or --overwrite to delete its "
                        f"checkpoints and train again (or choose another -o/--out-dir or seeds)")
    return None


def check_same_world(state: Dict[str, Any], world_size: int, sync_bn: bool, run_dir: Path) -> None:
    """A run continues with as many processes as it ran on (BatchNorm's per-rank statistics depend on it)."""
    saved = (int(state.get("world_size", 1)), bool(state["run"].get("sync_bn", False)))
    if saved != (world_size, sync_bn):
        def describe(size, sync):
            return (f"{size} processes (torchrun --nproc_per_node and --nnodes)" if size > 1 else "one process") + \
                (" with --sync-bn" if sync else "")
        raise UserError(f"--resume continues the run in {run_dir} as it ran, on {describe(*saved)}, but this is "
                        f"{describe(world_size, sync_bn)}; start it that way or pass --overwrite to start again")


def check_world(args: TrainJob, world: World, device) -> None:
    """What training on several processes needs: a divisible global batch; --sync-bn only there, on CUDA."""
    if world.distributed and args.batch_size % world.size:
        raise UserError(f"-b/--batch-size {args.batch_size} is the global batch, split evenly over the {world.size} "
                        f"processes of torchrun; it must be divisible by {world.size}")
    if args.sync_bn and not world.distributed:
        raise UserError("--sync-bn computes BatchNorm statistics over the processes of torchrun; one process has "
                        "nothing to synchronise: drop --sync-bn or start with torchrun --nproc_per_node=N")
    if args.sync_bn and device.type != "cuda":
        raise UserError("--sync-bn needs CUDA (PyTorch's SyncBatchNorm runs on GPUs only); drop it to train on the "
                        "CPU with per-process BatchNorm statistics")


def claim_run_folder(run_dir: Path, args: TrainJob) -> None:
    """Just before training: empty the folder (overwrite) or create it, failing if another run got there first;
    a resumed run's folder loses only the temporaries of the killed run."""
    if args.resume:
        remove_temporaries(run_dir)
        return
    if args.overwrite and run_dir.exists():
        clear_run(run_dir)
        return
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    try:
        run_dir.mkdir()
    except FileExistsError:
        raise UserError(f"{run_dir} was created by another run meanwhile; pass --overwrite or --resume, "
                        f"or choose other seeds") from None


def train_from_args(args: TrainJob, argv=None) -> Path:
    """Train ``args.model`` on ``args.dataset``; returns the run folder with the checkpoints and the log."""
    check_train_job(args if args.val_size is not None else replace(args, val_size=0))  # None: filled in below
    config = get_config()
    info = dataset_info(args.dataset)
    if args.val_size is None:  # recorded as a number (run settings, metadata, provenance)
        args = replace(args, val_size=default_val_size(info.name))
    name = canonical_model_name(args.model)
    out_dir = resolve_path(args.out_dir) if args.out_dir else config.snapshots_dir
    run_dir = run_folder(out_dir, name, info.name, args.init_noise, args.gradient_noise)
    settings_now = run_settings(args, name, info.name)
    device = resolve_device(args.device or config.device)
    check_world(args, world_from_env(), device)
    with session(device) as world:  # one process: nothing to open
        state = main_does(check_run_folder, run_dir, args, settings_now, world.size)
        main_does(check_writable_dir, run_dir)
        _train(args, argv, config, name, run_dir, settings_now, state, world)
    return run_dir


def _train(args: TrainJob, argv, config, name: str, run_dir: Path, settings_now: Dict[str, Any],
           state: Optional[Dict[str, Any]], world: World) -> None:
    """Build model, loaders and trainer on this rank's device, continue ``state`` if any, claim the folder, train."""
    info, device = dataset_info(args.dataset), world.device
    model = create_model(name, n_classes=info.n_classes, n_channels=info.n_channels, seed=args.init_noise)
    if args.sync_bn:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    common = dict(val_size=args.val_size, max_samples=args.max_samples, download=args.download, config=config, device=device)
    if args.download and world.distributed:  # rank 0 fetches the files, then every rank reads them
        main_does(_fetch, info.name, args.val_size, config)
    train = get_loader(info.name, "train", args.batch_size, seed=args.gradient_noise, drop_last=True,
                       augment=not args.no_augment, shard=(world.rank, world.size), **common)
    check_batch_fits(args.batch_size, train.num_samples)
    val = get_loader(info.name, "val", max(args.batch_size, 512), **common)
    meta = {"model": name, "dataset": info.name, "n_channels": info.n_channels, "n_classes": info.n_classes,
            "input_size": list(info.input_size), "init_seed": args.init_noise, "gradient_seed": args.gradient_noise,
            "val_size": args.val_size, **dataset_provenance(info.name), "provenance": provenance(args, argv)}
    if world.distributed:
        meta["world_size"] = world.size
    settings = TrainSettings(epochs=args.epochs, lr=args.lr, weight_decay=args.weight_decay,
                             optimizer=args.optimizer, save_frequency=args.save_frequency)
    trainer = ClassifierTrainer(model, train, val, settings, run_dir, meta, multilabel=info.multilabel, device=device,
                                run_state=settings_now, world=world)
    if state is not None:
        weights, _ = read_checkpoint(run_dir / state["checkpoint"])
        trainer.load_state_dict(state, weights)
    main_does(claim_run_folder, run_dir, args)
    if world.is_main:
        start = f"resuming at iteration {trainer.iteration} (epoch {trainer.epoch})" if state is not None else "training"
        where = f"device {device}"
        if world.distributed:
            where = (f"{world.size} processes on {device.type} (global batch {args.batch_size}, "
                     f"{args.batch_size // world.size} per process)")
        print(f"{start} {model_display_name(name)} on {info.display_name}: {train.num_samples} train / "
              f"{val.num_samples} val samples, {len(train)} iterations per epoch, {where} -> {run_dir}")
    trainer.run()


def _fetch(dataset: str, val_size: int, config) -> None:
    """Download the dataset's files (if missing) without keeping them in memory."""
    load_split(dataset, "train", val_size=val_size, download=True, config=config)


