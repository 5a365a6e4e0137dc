"""One stitching run's settings: what ``stitch_nets.py`` parses, what a sweep or notebook builds directly.

The defaults are the reference's. The training fields of ``TRAINING_DEFAULTS`` (epochs, batch size,
learning rate, weight decay, optimizer, schedule, warm-up) default to None, meaning "not given": on
construction a job fills them from its ``preset`` (see ``PRESETS``) where it names one, else from
``TRAINING_DEFAULTS``. So an explicit value always overrides a preset, in Python as on the command
line (the scripts pass None for a flag that was not given), and a built job holds plain values.

Presets:

- ``hernandez``: the stitch training of Hernandez et al. (2022): SGD with momentum 0.9 (this
  project's SGD, Nesterov), batch 256, weight decay 0.01, learning rate 0.01, 4 epochs, 1 epoch of
  linear warm-up then cosine decay to zero (stepped every iteration). The warm-up length is our choice
  (the paper's code warmed up for longer than it trained); 1 of 4 epochs keeps most of training at a
  high rate.
"""
import math
from dataclasses import dataclass
from numbers import Real
from pathlib import Path
from typing import Any, Dict, Optional

from src.errors import UserError
from src.models.networks import network_path
from src.provenance import jsonable
from src.stitching.objectives import check_objective
from src.validation import check_float, check_int, check_optimisation, check_run_name

SCHEDULES = ("step", "cosine")
TRAINING_DEFAULTS = {"epochs": 30, "batch_size": 128, "lr": 1e-3, "weight_decay": 0.0, "optimizer": "adam",
                     "schedule": "step", "warmup_epochs": 0.0}
PRESETS = {
    "hernandez": {"optimizer": "sgd", "batch_size": 256, "weight_decay": 0.01, "lr": 0.01, "epochs": 4,
                  "schedule": "cosine", "warmup_epochs": 1.0},
}


@dataclass
class StitchJob:
    """The options of one stitch; :meth:`check` refuses bad ones before anything is loaded or written.

    ``front_layer`` / ``end_layer`` are None in the base job of a stitch matrix, whose cells set them."""

    front_model: str
    end_model: str
    front_layer: Optional[str] = None
    end_layer: Optional[str] = None
    dataset: Optional[str] = None  # default: the end model's dataset
    epochs: Optional[int] = None  # None: the preset's, else TRAINING_DEFAULTS (for all fields down to warmup_epochs)
    batch_size: Optional[int] = None
    lr: Optional[float] = None
    weight_decay: Optional[float] = None
    optimizer: Optional[str] = None
    schedule: Optional[str] = None  # step (x0.1 at 1/3 and 2/3 of the epochs) or cosine (after a linear warm-up)
    warmup_epochs: Optional[float] = None  # linear warm-up before the cosine schedule
    preset: Optional[str] = None  # a named training set-up of PRESETS; explicit values override it
    seed: int = 0
    save_frequency: int = 10
    run_name: Optional[str] = None
    out_dir: Optional[str] = None
    l1: float = 0.0
    cka_reg: float = 0.0
    low_rank: Optional[int] = None
    temperature: float = 1.0
    flatten: bool = False
    pool: bool = False  # a feature map into a vector: global average pooling + linear instead of flatten + linear
    init: str = "random"
    mask: str = "identity"
    target_type: str = "hard"
    objective: str = "task"  # task, mse (similarity stitch) or, for a matrix, both (src.stitching.objectives)
    no_augment: bool = False
    cache_front: bool = False
    fold_bn: bool = False
    cache_limit_gb: float = 8.0
    measure_samples: int = 2000
    val_size: Optional[int] = None  # None: the data set's default (src.data.options.default_val_size)
    max_samples: Optional[int] = None
    front_arch: Optional[str] = None
    end_arch: Optional[str] = None
    front_weights: Optional[str] = None  # the weights file of a front network given as a model spec
    end_weights: Optional[str] = None
    download: bool = False
    device: Optional[str] = None
    overwrite: bool = False

    def __post_init__(self):
        if self.preset is not None and self.preset not in PRESETS:
            raise UserError(f"unknown preset {self.preset!r}; choose one of {', '.join(PRESETS)}")
        preset = PRESETS.get(self.preset, {})
        for name, default in TRAINING_DEFAULTS.items():
            if getattr(self, name) is None:
                setattr(self, name, preset.get(name, default))
        self.check(matrix=True)  # a job that exists is valid; a single stitch checks its layers and objective too

    def check(self, matrix: bool = False) -> None:
        """Every option whose bounds do not depend on the models (one line for the first bad one); ``matrix``:
        the job is a matrix's base job, which may ask for ``--objective both``."""
        if not matrix and (not self.front_layer or not self.end_layer):
            raise UserError("a stitch needs a front layer and an end layer (layer_info.py lists a network's layers)")
        check_optimisation(self)
        check_schedule(self.schedule, self.warmup_epochs, self.epochs)
        check_int(self.seed, "--seed", 0)
        check_int(self.save_frequency, "-s/--save-frequency")
        check_float(self.l1, "--l1", 0)
        check_float(self.cka_reg, "--cka-reg")
        check_float(self.temperature, "--temperature", above=0)
        check_float(self.cache_limit_gb, "--cache-limit-gb", above=0)
        # The CKA of the measurements uses the biased HSIC, which needs two samples.
        check_int(self.measure_samples, "--measure-samples", 2)
        if self.low_rank is not None:
            check_int(self.low_rank, "-r/--low-rank")
        check_run_name(self.run_name)
        check_objective(self.objective, matrix)


def check_schedule(schedule: str, warmup_epochs: float, epochs: int) -> None:
    """A known schedule; a warm-up only before cosine decay, and shorter than training."""
    if schedule not in SCHEDULES:
        raise UserError(f"unknown schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}")
    if isinstance(warmup_epochs, bool) or not isinstance(warmup_epochs, Real) or not math.isfinite(warmup_epochs) \
            or warmup_epochs < 0:
        raise UserError(f"--warmup-epochs must be a finite number >= 0, got {warmup_epochs!r}")
    if warmup_epochs > 0 and schedule != "cosine":
        raise UserError(f"--warmup-epochs {warmup_epochs:g} needs --schedule cosine (the step schedule has no warm-up)")
    if warmup_epochs > 0 and isinstance(epochs, Real) and warmup_epochs >= epochs:
        raise UserError(f"--warmup-epochs {warmup_epochs:g} must be shorter than training (--epochs {epochs}); "
                        f"lower it or train longer")


def result_params(job: StitchJob, digests: Optional[Dict[str, str]] = None, **derived: Any) -> Dict[str, Any]:
    """A result's ``params``: the job's fields as plain values, both checkpoints' absolute paths and SHA-256
    digests (``digests``: role -> digest), and values derived while running (``derived``, e.g. the dataset).
    The one definition: a matrix compares a finished cell's ``params`` with this to know it is still valid."""
    params = dict(jsonable(vars(job)), front_model_path=network_path(job.front_model),
                  end_model_path=network_path(job.end_model),
                  **{f"{role}_weights": str(Path(w).resolve()) for role, w in (("front", job.front_weights),
                                                                              ("end", job.end_weights)) if w},
                  **{f"{role}_model_sha256": digest for role, digest in (digests or {}).items()})
    params.update(derived)
    return params

