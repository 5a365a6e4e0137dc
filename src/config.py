"""Project configuration: ``config/default.env`` read with python-dotenv, overridden by the environment.

``get_config()`` returns a :class:`Config` whose paths are absolute: relative entries are resolved
against the repository root, so scripts behave the same from any working directory.
"""
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from dotenv import dotenv_values

from src.errors import UserError

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG_FILE = REPO_ROOT / "config" / "default.env"
CONFIG_FILE_VARIABLE = "DRFRANK_CONFIG"

KEYS = ("DATASET_ROOT", "CELEBA_ROOT", "FASHION_MNIST_DIR", "RESULTS_DIR", "SNAPSHOTS_DIR", "DEVICE")


@dataclass(frozen=True)
class Config:
    dataset_root: Path
    celeba_root: Path
    fashion_mnist_dir: Path
    results_dir: Path
    snapshots_dir: Path
    device: str
    source: Path

    def torch_device(self) -> torch.device:
        return resolve_device(self.device)


def resolve_path(value: str) -> Path:
    path = Path(os.path.expanduser(value))
    return path if path.is_absolute() else REPO_ROOT / path


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when available; anything else must be a device torch understands."""
    name = (name or "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise UserError(f"DEVICE={name!r} is not a device name; use auto, cpu, cuda or cuda:N") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"DEVICE={name!r} but CUDA is not available here; set DEVICE=auto or DEVICE=cpu")
    return device


def get_config() -> Config:
    """Read the config file (``$DRFRANK_CONFIG`` or config/default.env), then apply environment overrides."""
    source = resolve_path(os.environ.get(CONFIG_FILE_VARIABLE, str(DEFAULT_CONFIG_FILE)))
    if not source.is_file():
        raise UserError(f"config file {source} does not exist; unset {CONFIG_FILE_VARIABLE} or point it at a .env file")
    values = {k: v for k, v in dotenv_values(source).items() if v is not None}
    unknown = sorted(set(values) - set(KEYS))
    if unknown:
        raise UserError(f"unknown key(s) {', '.join(unknown)} in {source}; known keys: {', '.join(KEYS)}")
    for key in KEYS:
        if key in os.environ:
            values[key] = os.environ[key]
    missing = [k for k in KEYS if k not in values]
    if missing:
        raise UserError(f"{source} lacks {', '.join(missing)}; copy them from {DEFAULT_CONFIG_FILE}")
    return Config(
        dataset_root=resolve_path(values["DATASET_ROOT"]),
        celeba_root=resolve_path(values["CELEBA_ROOT"]),
        fashion_mnist_dir=resolve_path(values["FASHION_MNIST_DIR"]),
        results_dir=resolve_path(values["RESULTS_DIR"]),
        snapshots_dir=resolve_path(values["SNAPSHOTS_DIR"]),
        device=values["DEVICE"],
        source=source,
    )
