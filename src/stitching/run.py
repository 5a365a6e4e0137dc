"""What ``stitch_nets.py`` does, in steps that ``stitch_matrix.py`` runs for every cell of a matrix.

One stitch is: load the two networks (:func:`load_pair`), build the stitched network
(:func:`build_cell`), fit the least-squares statistics on the unaugmented training split
(:func:`fit_statistics`, from a :class:`~src.stitching.batches.FrontCache` when there is one),
initialise (:func:`initialise`), train (:func:`train_cell`), evaluate on the test split and build
the result dict (:func:`run_stitch` does all of these after loading). :func:`stitch_job` is one
stitch, written to ``<out>/<run-name>/<front_layer>-<end_layer>.pkl`` unless asked not to; a matrix
(:mod:`src.matrix`) loads the networks once, caches each front layer's activations once
and calls :func:`run_stitch` per end layer, so a cell is exactly a cached single stitch.
"""
import datetime as _dt
import tempfile
import time
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import pandas as pd
import torch

from src.config import get_config, resolve_device, resolve_path
from src.data import DataSource, NamedData, dataset_info
from src.errors import UserError
from src.models.checkpoint import read_checkpoint
from src.models.describe import display_name
from src.models.networks import load_network, network_digest, network_kind
from src.provenance import provenance
from src.results_io import NO_ROOM, NoRoom, check_free_space, claim_output, digest_path, refuse_overwrite, write_csv, write_pickle
from src.seeding import generator, seed_everything
from src.similarity import LeastSquaresFit
from src.stitching.batches import CachedBatches, CellCaches, FrontCache, LiveBatches
from src.stitching.build import build_frank, check_models_fit_dataset
from src.stitching.cut import INPUT_LAYER
from src.stitching.frank import FrankensteinNet
from src.stitching.images import check_input_stitch, grid_of, sample_images, save_image_grid
from src.stitching.inits import build_mask, check_options, initialize, least_squares_weights
from src.stitching.job import StitchJob, result_params
from src.stitching.affine import AffineStitch
from src.stitching.losses import teachers_needed
from src.stitching.objectives import needs_end_target
from src.stitching.measure import collect_outputs, network_logits
from src.stitching.report import build_result
from src.stitching.train import StitchSettings, train_stitch
from src.validation import check_batch_fits, check_writable_dir

STATISTICS_BATCH = 500
EVAL_BATCH = 1000


@dataclass
class Pair:
    """Two loaded networks and the data settings every stitch between them shares."""

    front_model: torch.nn.Module
    end_model: torch.nn.Module
    front_meta: Dict[str, Any]
    end_meta: Dict[str, Any]
    data: DataSource  # a named data set or the user's own (src.data.source)
    device: torch.device
    digests: Optional[Dict[str, str]] = None  # SHA-256 of the front and end networks (src.models.networks)
    _memo: Dict[Any, Any] = field(default_factory=dict, repr=False)  # fixed-order loaders and logits, made once

    @property
    def dataset(self) -> str:
        """The data set's name, as results record it."""
        return self.data.name

    @property
    def info(self):
        return self.data.info

    @property
    def input_shape(self):
        return (self.info.n_channels, *self.info.input_size)

    def loader(self, job: StitchJob, split: str, batch_size: int, **options):
        return self.data.loader(split, batch_size, max_samples=job.max_samples, device=self.device, **options)

    def fixed_loader(self, job: StitchJob, split: str, batch_size: int):
        """An unshuffled, unaugmented loader of ``split``, made once per pair (it serves the same batches every pass)."""
        key = (split, batch_size, job.val_size, job.max_samples)
        if key not in self._memo:
            self._memo[key] = self.loader(job, split, batch_size, shuffle=False, augment=False)
        return self._memo[key]

    @property
    def parts(self) -> Dict[Any, Any]:
        """The networks' cut parts and activation shapes, traced once for every stitch between them."""
        return self._memo.setdefault("parts", {})

    def plain_train(self, job: StitchJob):
        """The training split in order, unaugmented: the least-squares fit's (and the cache's) batches."""
        return self.fixed_loader(job, "train", STATISTICS_BATCH)

    def remember_test_logits(self, job: StitchJob, logits: Dict[str, torch.Tensor]) -> None:
        """What :meth:`test_logits` returns, computed by passes that ran anyway (a matrix's caches)."""
        self._memo[self._logits_key(job)] = logits

    @staticmethod
    def _logits_key(job: StitchJob):
        return ("test logits", job.val_size, job.max_samples)

    def test_logits(self, job: StitchJob) -> Dict[str, torch.Tensor]:
        """The front and end networks' own logits on the test split, computed once per pair."""
        key = self._logits_key(job)
        if key not in self._memo:
            self._memo[key] = network_logits(self.front_model.eval(), self.end_model.eval(),
                                             self.fixed_loader(job, "test", EVAL_BATCH))
        return self._memo[key]


def load_pair(job: StitchJob, config=None, data: Optional[DataSource] = None) -> Pair:
    """Load the job's two networks (checkpoints, model specs with their weights, or modules from Python:
    :func:`src.models.networks.load_network`); the data are ``data``, else the job's data set, else the one
    the end checkpoint was trained on."""
    config = config or get_config()
    device = resolve_device(job.device or config.device)
    if data is None:
        dataset = job.dataset or (_checkpoint_dataset(job.end_model) or _checkpoint_dataset(job.front_model))
        if dataset is None:
            raise UserError("neither network is a checkpoint that names its data set; pass -d/--dataset")
        data = NamedData(dataset_info(dataset).name, job.val_size, job.download, config)  # an image folder's full name
    info = data.info
    front_model, front_meta = load_network(job.front_model, job.front_weights, job.front_arch, data.name, info, device)
    end_model, end_meta = load_network(job.end_model, job.end_weights, job.end_arch, data.name, info, device)
    digests = {"front": network_digest(job.front_model, job.front_weights, front_model, front_meta),
               "end": network_digest(job.end_model, job.end_weights, end_model, end_meta)}
    check_models_fit_dataset(front_meta, end_meta, info)
    return Pair(front_model, end_model, front_meta, end_meta, data, device, digests)


def _checkpoint_dataset(ref: str) -> Optional[str]:
    """The data set a project checkpoint was trained on (None for specs, modules and bare state_dicts)."""
    if network_kind(ref) != "checkpoint":
        return None
    _, meta = read_checkpoint(ref)
    return meta.get("dataset") if meta else None


def augments(job: StitchJob) -> bool:
    return not (job.no_augment or job.cache_front)


def result_path(args, config) -> Path:
    """``<out>/<run-name>/<front_layer>-<end_layer>.pkl`` (run name: the date and time when not given)."""
    return run_dir(args, config) / f"{args.front_layer}-{args.end_layer}.pkl"


def run_dir(args, config) -> Path:
    """``<out>/<run-name>`` (run name: the date and time when not given)."""
    out_dir = resolve_path(args.out_dir) if args.out_dir else config.results_dir
    return out_dir / (args.run_name or _dt.datetime.now().strftime("%Y-%m-%d_%H%M%S"))


def least_squares_stitch(like: AffineStitch, weights: Dict[str, Any]) -> AffineStitch:
    """A stitch of the same kind and rank as ``like`` (no mask) holding the least-squares weights."""
    stitch = like.fresh()
    stitch.set_affine(weights["w"], weights["b"])
    return stitch.requires_grad_(False)


def build_cell(pair: Pair, job: StitchJob) -> FrankensteinNet:
    """The stitched network with the stitch initialised under the job's seed; refuses options the stitch cannot take."""
    seed_everything(job.seed)
    frank = build_frank(pair.front_model, pair.end_model, job.front_layer, job.end_layer, pair.input_shape,
                        flatten=job.flatten, rank=job.low_rank, device=pair.device, fold_batchnorm=job.fold_bn,
                        pool=job.pool, parts=pair.parts)
    check_options(frank.stitch, job.init, job.mask)
    return frank


def describe(frank: FrankensteinNet, job: StitchJob) -> str:
    s = frank.stitch
    return (f"stitching {job.front_layer} {s.front_shape} -> {job.end_layer} {s.end_shape}: {s.kind.describe()} stitch "
            f"({s.in_features} -> {s.out_features}{f', rank {job.low_rank}' if job.low_rank else ''})")


def front_cache(pair: Pair, job: StitchJob, front) -> FrontCache:
    """The front part's activations on the unaugmented training split (``front``: a FrontPart of the front model)."""
    return FrontCache(front, pair.plain_train(job), pair.device, limit_gb=job.cache_limit_gb)


def fit_statistics(frank: FrankensteinNet, pair: Pair, job: StitchJob, cache: Optional[FrontCache] = None,
                   targets: Optional[FrontCache] = None) -> LeastSquaresFit:
    """Least-squares co-moments (front activation -> end activation) over the unaugmented training split.

    From the cache when given (no second front pass), else from a live pass; the batches are the same,
    so both give the same numbers. The rows are the stitch kind's design (:meth:`AffineStitch.design`: pixels for
    a 1x1 stitch, k x k patches for a strided one, resampled front pixels for the resample kinds, samples otherwise).
    ``targets``: the end network's activations at the end layer on the same split (a matrix's cache), else live.
    """
    if cache is not None:
        fronts = cache.batches()
    else:
        fronts = ((x, frank.front_activation(x)) for x, _ in pair.plain_train(job))
    ends = (end for _, end in targets.batches()) if targets is not None else None
    fit = LeastSquaresFit()
    for x, front in fronts:
        end = next(ends) if ends is not None else frank.end_target(x)
        fit.update(*frank.stitch.design(front, end))
    return fit


@dataclass
class Start:
    """The stitch's initial state and the least-squares weights."""

    before: Dict[str, Any]
    mask: Any
    least_squares: Dict[str, Any]


def initialise(frank: FrankensteinNet, job: StitchJob, fit: LeastSquaresFit) -> Start:
    gen = generator(job.seed)
    initialize(frank.stitch, job.init, gen, fit)
    mask = build_mask(frank.stitch, job.mask, gen, fit)
    if mask is not None:
        frank.stitch.set_mask(mask)
    return Start(frank.stitch.param_dict(), mask, least_squares_weights(fit, job.low_rank))


def train_cell(frank: FrankensteinNet, pair: Pair, job: StitchJob, cache: Optional[FrontCache] = None,
               val_cache: Optional[FrontCache] = None):
    """Train the stitch (on the cache's activations when given; validation on ``val_cache``'s when given);
    returns the learning curve and weight history."""
    teachers = teachers_needed(job.target_type) if job.objective == "task" else []
    end_target = needs_end_target(job.objective, job.cka_reg)
    if cache is not None:
        batches = CachedBatches(frank, cache, teachers, end_target, job.batch_size, job.seed, drop_last=True)
    else:
        train = pair.loader(job, "train", job.batch_size, seed=job.seed, drop_last=True, augment=augments(job))
        batches = LiveBatches(frank, train, teachers, end_target, pair.device)
    val = val_cache if val_cache is not None else pair.fixed_loader(job, "val", EVAL_BATCH)
    return train_stitch(frank, batches, val, StitchSettings.from_job(job), pair.info.multilabel)


def run_stitch(pair: Pair, job: StitchJob, run_folder: Path, argv=None, cache: Optional[FrontCache] = None,
               frank: Optional[FrankensteinNet] = None, timing: Optional[Dict[str, float]] = None,
               shared: Optional[CellCaches] = None) -> Dict[str, Any]:
    """Everything after loading: build (unless ``frank`` is given), fit, initialise, train, evaluate; the result dict.

    ``cache``: the front layer's :class:`FrontCache` (the job must have ``cache_front``); ``shared``: what a
    stitch matrix has cached for this cell's layers (:mod:`src.matrix.caches`; the same numbers as the
    live passes); ``run_folder``: ``<out>/<run-name>``, recorded in ``params``.
    """
    timing = dict(timing or {})
    shared = shared or CellCaches()
    frank = frank or build_cell(pair, job)
    started = time.perf_counter()
    fit = fit_statistics(frank, pair, job, cache, shared.targets)
    timing["statistics_seconds"] = time.perf_counter() - started
    start = initialise(frank, job, fit)
    timing.setdefault("cache_seconds", 0.0)
    curve, history = train_cell(frank, pair, job, cache, shared.val)
    timing["epoch_seconds"] = [float(s) for s in curve["seconds"]] if len(curve) else []

    started = time.perf_counter()
    ps_inv_stitch = least_squares_stitch(frank.stitch, start.least_squares)
    outputs = collect_outputs(frank, ps_inv_stitch, pair.fixed_loader(job, "test", EVAL_BATCH), job.measure_samples,
                              network_logits=pair.test_logits(job), fronts=shared.test, measured=shared.measured)
    timing["evaluation_seconds"] = time.perf_counter() - started

    augment = augments(job)
    params = result_params(job, pair.digests, dataset=pair.dataset, augment=augment, out_dir=str(run_folder.parent),
                           run_name=run_folder.name)
    trans_m = {"before": start.before, "after": frank.stitch.param_dict(), "ps_inv": ps_inv_stitch.param_dict()}
    if start.mask is not None:
        trans_m["mask"] = {"w": start.mask}
    s = frank.stitch
    extra = {
        "provenance": provenance(job, argv),
        "stitch": {"kind": s.kind.name, "description": s.kind.describe(), "rank": s.rank, "in_features": s.in_features, "out_features": s.out_features,
                   "masked": start.mask is not None, "front_shape": list(s.front_shape), "end_shape": list(s.end_shape),
                   "training_data": "cached front activations" if job.cache_front else
                                    ("augmented" if augment else "unaugmented") + " training split"},
        "shapes": {"front": list(s.front_shape), "end": list(s.end_shape)},
        "models": {"front": {k: v for k, v in pair.front_meta.items() if k != "provenance"},
                   "end": {k: v for k, v in pair.end_meta.items() if k != "provenance"}},
        "least_squares": {"r2_train": fit.r2(), "fitted_on": f"train split ({fit.n} rows, no augmentation)",
                          "rank": job.low_rank},
        "timing": timing,
    }
    if job.end_layer == INPUT_LAYER:  # the generated images of a few fixed test samples
        extra["images"] = sample_images(frank, ps_inv_stitch, pair.fixed_loader(job, "test", EVAL_BATCH), pair.dataset)
    return build_result(params=params, outputs=outputs, multilabel=pair.info.multilabel, trans_m=trans_m,
                        history=history, curve=curve, extra=extra)


#: What a result holds beside its stitch's weights (the test-split tables, learning curve, provenance, the CSV
#: and, for a stitch into the input, sample images): a rough allowance, generous for the networks of the zoo.
RESULT_OVERHEAD_BYTES = 1 << 20


def expected_result_bytes(frank: FrankensteinNet, job: StitchJob, train_samples: int) -> int:
    """The rough size of a result (what :func:`src.results_io.check_free_space` asks for before training): the
    stitch's weights once per copy a result holds (before, after, least squares, their two differences, a mask, and
    the history: a snapshot every ``save_frequency`` x ``epochs`` iterations, first and last) plus
    :data:`RESULT_OVERHEAD_BYTES`."""
    snapshot = sum(int(a.nbytes) for a in frank.stitch.param_dict().values())
    history = max(1, train_samples // max(1, job.batch_size)) // max(1, job.save_frequency) + 2
    return RESULT_OVERHEAD_BYTES + snapshot * (6 + history)


def write_result(path: Path, result: Dict[str, Any]) -> Path:
    """The CSV summary first, then the pickle with its digest ``<name>.pkl.sha256`` (the digest before the pickle is
    renamed into place: a pickle under its name means a complete result, checked against the digest on reading)."""
    write_csv(path.with_suffix(".csv"), pd.DataFrame([result["summary"]]))
    write_pickle(path, result, True)  # digest=True
    return path


def rescue_result(path: Path, result: Dict[str, Any]) -> Tuple[Optional[Path], List[str]]:
    """Write ``result``, which could not be written to ``path``, with its digest to the first of the system's
    temporary folder and the home folder where it fits: ``(where, [])``, else ``(None, [why each failed])``."""
    name = f"{path.parent.name}--{path.stem}-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}.pkl"
    folders = list(dict.fromkeys(p for p in (Path(tempfile.gettempdir()), Path.home()) if p != path.parent))
    failures = []
    for folder in folders:
        try:
            return write_pickle(folder / name, result, digest=True), []
        except NoRoom as err:
            failures.append(f"{folder}: {NO_ROOM[err.errno][0]}")
        except (OSError, UserError) as err:
            failures.append(f"{folder}: {getattr(err, 'strerror', None) or ' '.join(str(err).split())}")
    return None, failures


def write_or_rescue(path: Path, result: Dict[str, Any], write: Callable[[], Path]) -> Path:
    """``write()`` (the result's files at ``path``); when there is no room there (:class:`NoRoom`), the pickle goes to
    :func:`rescue_result` so the training is not lost, and the one-line error says where it is."""
    try:
        return write()
    except NoRoom as err:
        saved, failures = rescue_result(path, result)
        if saved is None:
            raise NoRoom(f"{err}; saving the result elsewhere failed too ({'; '.join(failures)}): the trained stitch "
                         f"is lost", err.path, err.errno) from err
        raise NoRoom(f"{err}; the result was saved to {saved} instead (with its digest {digest_path(saved).name}): "
                     f"move both beside {path} as {path.name} and {digest_path(path).name} once there is room, "
                     f"or load it from there with load_result", err.path, err.errno) from err


def stitch_job(args: StitchJob, argv=None, data: Optional[DataSource] = None,
               save: bool = True) -> Tuple[Optional[Path], Dict[str, Any]]:
    """Build, initialise, train and evaluate one stitch: ``(pickle path, result)``. With ``save`` the result pickle,
    its CSV (and image grid) are written to ``<out>/<run-name>/<front_layer>-<end_layer>.pkl``, else nothing is
    written (path None). ``data``: the user's own data (:class:`~src.data.source.UserData`), else the job's data set."""
    args.check()  # every option, before anything is loaded or written
    config = get_config()
    path = result_path(args, config)
    if save:
        check_writable_dir(path.parent)
    with claim_output(path) if save else nullcontext():  # no concurrent run writes it too, a result is never lost
        if save:
            refuse_overwrite(path, args.overwrite)  # the pickle marks a finished result; a CSV alone does not count
        pair = load_pair(args, config, data)
        if args.val_size is None and isinstance(pair.data, NamedData):  # record the default the data set chose
            args = replace(args, val_size=pair.data.val_size)
        check_input_stitch(pair.dataset, [args.front_layer], [args.end_layer])
        check_batch_fits(args.batch_size, pair.plain_train(args).num_samples)
        frank = build_cell(pair, args)
        print(f"{describe(frank, args)}, device {pair.device}")
        if save:  # before the work: room for the result (a full disk found after training would cost the training)
            check_free_space(path.parent, expected_result_bytes(frank, args, pair.plain_train(args).num_samples),
                             f"the result of this stitch ({path.name})")
        timing: Dict[str, float] = {}
        cache = None
        if args.cache_front:
            started = time.perf_counter()
            cache = front_cache(pair, args, frank.front)
            timing["cache_seconds"] = time.perf_counter() - started
        result = run_stitch(pair, args, path.parent, argv, cache=cache, frank=frank, timing=timing)
        if not save:
            return None, result

        def write() -> Path:
            if "images" in result:
                save_image_grid(path.with_suffix(".png"), [grid_of(args.front_layer, result["images"], objective=args.objective)],
                                suptitle=f"{args.front_layer} stitched into the input of {display_name(pair.end_meta, args.end_model)}",
                                provenance=result["provenance"])
            return write_result(path, result)

        return write_or_rescue(path, result, write), result


def stitch_from_args(args: StitchJob, argv=None) -> Path:
    """What ``stitch_nets.py`` runs: :func:`stitch_job` with the result written; returns the pickle's path."""
    return stitch_job(args, argv)[0]

