"""What ``stitch_nets.py`` does, callable from Python (e.g. by a sweep over many layer pairs)."""
import datetime as _dt
import time
from pathlib import Path
from typing import Any, Dict

import pandas as pd

from src.config import get_config, resolve_device, resolve_path
from src.data import dataset_info, get_loader
from src.models.checkpoint import load_checkpoint
from src.provenance import jsonable, provenance
from src.results_io import refuse_overwrite, write_csv, write_pickle
from src.seeding import generator, seed_everything
from src.stitching.batches import CachedBatches, LiveBatches
from src.stitching.build import build_frank, check_models_fit_dataset
from src.stitching.inits import build_mask, check_options, initialize, least_squares_weights
from src.stitching.job import StitchJob
from src.stitching.layers import AffineStitch
from src.stitching.losses import teachers_needed
from src.stitching.measure import collect_outputs, collect_statistics
from src.stitching.report import build_result
from src.stitching.train import StitchSettings, train_stitch

STATISTICS_BATCH = 500
EVAL_BATCH = 1000


def result_path(args, config) -> Path:
    """``<out>/<run-name>/<front_layer>-<end_layer>.pkl`` (run name: the date and time when not given)."""
    out_dir = resolve_path(args.out_dir) if args.out_dir else config.results_dir
    run_name = args.run_name or _dt.datetime.now().strftime("%Y-%m-%d_%H%M%S")
    return out_dir / run_name / f"{args.front_layer}-{args.end_layer}.pkl"


def least_squares_stitch(like: AffineStitch, weights: Dict[str, Any]) -> AffineStitch:
    """A stitch of the same kind and rank as ``like`` (no mask) holding the least-squares weights."""
    stitch = AffineStitch(like.front_shape, like.end_shape, like.mode, like.rank).to(like.bias.device)
    stitch.set_affine(weights["w"], weights["b"])
    return stitch.requires_grad_(False)


def stitch_from_args(args: StitchJob, argv=None) -> Path:
    """Build, initialise, train and evaluate one stitch; write the result pickle and CSV. Returns the pickle path."""
    config = get_config()
    path = result_path(args, config)
    refuse_overwrite(path, args.overwrite)  # before any work, so a finished result is never lost
    device = resolve_device(args.device or config.device)
    front_model, front_meta = load_checkpoint(args.front_model, args.front_arch, args.dataset, device)
    end_model, end_meta = load_checkpoint(args.end_model, args.end_arch, args.dataset, device)
    dataset = args.dataset or end_meta["dataset"]
    check_models_fit_dataset(front_meta, end_meta, dataset)
    info = dataset_info(dataset)
    augment = not (args.no_augment or args.cache_front)
    timing: Dict[str, float] = {}

    seed_everything(args.seed)
    frank = build_frank(front_model, end_model, args.front_layer, args.end_layer, (info.n_channels, *info.input_size),
                        flatten=args.flatten, rank=args.low_rank, device=device, fold_batchnorm=args.fold_bn)
    check_options(frank.stitch, args.init, args.mask)
    print(f"stitching {args.front_layer} {frank.stitch.front_shape} -> {args.end_layer} {frank.stitch.end_shape}: "
          f"{frank.stitch.mode} stitch ({frank.stitch.in_features} -> {frank.stitch.out_features}"
          f"{f', rank {args.low_rank}' if args.low_rank else ''}), device {device}")
    data = dict(val_size=args.val_size, max_samples=args.max_samples, download=args.download, config=config, device=device)

    started = time.perf_counter()
    plain_train = get_loader(dataset, "train", STATISTICS_BATCH, shuffle=False, augment=False, **data)
    fit = collect_statistics(frank, plain_train, args.flatten)
    timing["statistics_seconds"] = time.perf_counter() - started

    gen = generator(args.seed)
    initialize(frank.stitch, args.init, gen, fit)
    mask = build_mask(frank.stitch, args.mask, gen, fit)
    if mask is not None:
        frank.stitch.set_mask(mask)
    before = frank.stitch.param_dict()
    ls_weights = least_squares_weights(fit, args.low_rank)

    teachers = teachers_needed(args.target_type)
    started = time.perf_counter()
    if args.cache_front:
        cache_loader = get_loader(dataset, "train", STATISTICS_BATCH, shuffle=False, augment=False, **data)
        batches = CachedBatches(frank, cache_loader, teachers, bool(args.cka_reg), device, args.batch_size,
                                args.seed, drop_last=True, limit_gb=args.cache_limit_gb)
    else:
        train = get_loader(dataset, "train", args.batch_size, seed=args.seed, drop_last=True, augment=augment, **data)
        batches = LiveBatches(frank, train, teachers, bool(args.cka_reg), device)
    timing["cache_seconds"] = time.perf_counter() - started if args.cache_front else 0.0
    val = get_loader(dataset, "val", EVAL_BATCH, **data)
    curve, history = train_stitch(frank, batches, val, StitchSettings.from_job(args), info.multilabel)
    timing["epoch_seconds"] = [float(s) for s in curve["seconds"]] if len(curve) else []

    started = time.perf_counter()
    test = get_loader(dataset, "test", EVAL_BATCH, **data)
    ps_inv_stitch = least_squares_stitch(frank.stitch, ls_weights)
    outputs = collect_outputs(frank, ps_inv_stitch, test, args.measure_samples)
    timing["evaluation_seconds"] = time.perf_counter() - started

    params = dict(jsonable(vars(args)), dataset=dataset, augment=augment, out_dir=str(path.parent.parent),
                  run_name=path.parent.name, front_model_path=str(Path(args.front_model).resolve()),
                  end_model_path=str(Path(args.end_model).resolve()))
    trans_m = {"before": before, "after": frank.stitch.param_dict(), "ps_inv": ps_inv_stitch.param_dict()}
    if mask is not None:
        trans_m["mask"] = {"w": mask}
    extra = {
        "provenance": provenance(args, argv),
        "stitch": {"mode": frank.stitch.mode, "rank": frank.stitch.rank, "in_features": frank.stitch.in_features,
                   "out_features": frank.stitch.out_features, "masked": mask is not None,
                   "front_shape": list(frank.stitch.front_shape), "end_shape": list(frank.stitch.end_shape),
                   "training_data": "cached front activations" if args.cache_front else
                                    ("augmented" if augment else "unaugmented") + " training split"},
        "shapes": {"front": list(frank.stitch.front_shape), "end": list(frank.stitch.end_shape)},
        "models": {"front": {k: v for k, v in front_meta.items() if k != "provenance"},
                   "end": {k: v for k, v in end_meta.items() if k != "provenance"}},
        "least_squares": {"r2_train": fit.r2(), "fitted_on": f"train split ({fit.n} rows, no augmentation)",
                          "rank": args.low_rank},
        "timing": timing,
    }
    result = build_result(params=params, outputs=outputs, multilabel=info.multilabel, trans_m=trans_m,
                          history=history, curve=curve, extra=extra)
    write_pickle(path, result)
    write_csv(path.with_suffix(".csv"), pd.DataFrame([result["summary"]]))
    return path
