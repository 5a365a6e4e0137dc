"""One stitching run's settings: what ``stitch_nets.py`` parses, what a sweep or notebook builds directly.

The defaults are the reference's (``stitch_nets.py`` takes its argparse defaults from here).
"""
from dataclasses import dataclass
from typing import Optional


@dataclass
class StitchJob:
    front_model: str
    end_model: str
    front_layer: str
    end_layer: str
    dataset: Optional[str] = None  # default: the end model's dataset
    epochs: int = 30
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    optimizer: str = "adam"
    schedule: str = "step"  # step (x0.1 at 1/3 and 2/3 of the epochs) or cosine (after a linear warm-up)
    warmup_epochs: float = 0.0  # linear warm-up before the cosine schedule
    preset: Optional[str] = None  # a named training set-up (src.stitching.presets); explicit values override it
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
