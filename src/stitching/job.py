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
from typing import Optional

from src.errors import UserError

SCHEDULES = ("step", "cosine")
TRAINING_DEFAULTS = {"epochs": 30, "batch_size": 128, "lr": 1e-3, "weight_decay": 0.0, "optimizer": "adam",
                     "schedule": "step", "warmup_epochs": 0.0}
PRESETS = {
    "hernandez": {"optimizer": "sgd", "batch_size": 256, "weight_decay": 0.01, "lr": 0.01, "epochs": 4,
                  "schedule": "cosine", "warmup_epochs": 1.0},
}


@dataclass
class StitchJob:
    front_model: str
    end_model: str
    front_layer: str
    end_layer: str
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
    val_size: int = 5000
    max_samples: Optional[int] = None
    front_arch: Optional[str] = None
    end_arch: Optional[str] = None
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
        check_schedule(self.schedule, self.warmup_epochs, self.epochs)


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
