"""Training a zoo classifier from scratch, as ``train_model.py`` does.

Writes ``<run_dir>/<iteration>.pt`` every ``save_frequency`` iterations, at iteration 0 (the random
initialisation, a ready-made random-network control) and always at the final iteration, plus
``<run_dir>/training_log.csv`` with one row per epoch.
"""
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, Optional

import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from src.models.checkpoint import save_checkpoint
from src.results_io import write_csv
from src.training.evaluate import EvalResult, evaluate, predictions_of, task_loss
from src.training.optim import make_optimizer, step_schedule

LOG_NAME = "training_log.csv"


@dataclass
class TrainSettings:
    epochs: int = 300
    lr: float = 0.1
    weight_decay: float = 1e-4
    optimizer: str = "sgd"
    save_frequency: Optional[int] = 10000  # iterations between checkpoints; None or 0: only first and last


class ClassifierTrainer:
    """One training run: model, loaders, optimiser, schedule, checkpoints and the epoch log."""

    def __init__(self, model: nn.Module, train_loader, val_loader, settings: TrainSettings, run_dir,
                 meta: Dict[str, Any], multilabel: bool = False, device="cpu", progress: Optional[bool] = None):
        self.model = model.to(device)
        self.train_loader = train_loader
        self.val_loader = val_loader
        self.settings = settings
        self.run_dir = Path(run_dir)
        self.meta = dict(meta)
        self.multilabel = multilabel
        self.device = torch.device(device)
        self.progress = progress
        self.optimizer = make_optimizer(model.parameters(), settings.optimizer, settings.lr, settings.weight_decay)
        self.scheduler = step_schedule(self.optimizer, settings.epochs)
        self.iteration = 0
        self.epoch = 0
        self.last_val: Optional[EvalResult] = None
        self.log_rows = []

    # -- checkpoints -------------------------------------------------------------------------
    def checkpoint_path(self, iteration: int) -> Path:
        return self.run_dir / f"{iteration}.pt"

    def save(self) -> Path:
        meta = dict(self.meta, epoch=self.epoch, iteration=self.iteration,
                    val_acc=self.last_val.acc if self.last_val else None,
                    val_loss=self.last_val.loss if self.last_val else None,
                    settings=asdict(self.settings))
        return save_checkpoint(self.checkpoint_path(self.iteration), self.model, meta)

    def _due(self) -> bool:
        freq = self.settings.save_frequency
        return bool(freq) and self.iteration % freq == 0

    # -- loop --------------------------------------------------------------------------------
    def validate(self) -> EvalResult:
        self.last_val = evaluate(self.model, self.val_loader, self.multilabel, self.device)
        return self.last_val

    def train_epoch(self) -> Dict[str, float]:
        self.model.train()
        total_loss, total_hits, total_seen = 0.0, 0.0, 0
        bar = tqdm(self.train_loader, desc=f"epoch {self.epoch + 1}/{self.settings.epochs}", leave=False,
                   disable=None if self.progress is None else not self.progress)
        for inputs, targets in bar:
            inputs, targets = inputs.to(self.device, non_blocking=True), targets.to(self.device, non_blocking=True)
            logits = self.model(inputs)
            loss = task_loss(logits, targets, self.multilabel)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.iteration += 1
            with torch.no_grad():
                batch = targets.shape[0]
                hits = (predictions_of(logits, self.multilabel) == targets.long()).float().mean().item()
                total_loss += loss.item() * batch
                total_hits += hits * batch
                total_seen += batch
            bar.set_postfix(loss=f"{total_loss / total_seen:.3f}", acc=f"{total_hits / total_seen:.3f}")
            if self._due():
                self.save()
        return {"train_loss": total_loss / max(total_seen, 1), "train_accuracy": total_hits / max(total_seen, 1)}

    def run(self) -> pd.DataFrame:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.validate()
        self.save()  # iteration 0: the untrained network
        for _ in range(self.settings.epochs):
            started = time.perf_counter()
            lr = self.optimizer.param_groups[0]["lr"]
            stats = self.train_epoch()
            self.epoch += 1
            self.scheduler.step()
            val = self.validate()
            row = {"epoch": self.epoch, "iteration": self.iteration, **stats, "val_loss": val.loss,
                   "val_accuracy": val.acc, "lr": lr, "seconds": time.perf_counter() - started}
            self.log_rows.append(row)
            write_csv(self.run_dir / LOG_NAME, pd.DataFrame(self.log_rows))
            tqdm.write(f"epoch {self.epoch}/{self.settings.epochs}: train loss {stats['train_loss']:.4f} "
                       f"acc {stats['train_accuracy']:.4f} | val loss {val.loss:.4f} acc {val.acc:.4f} | "
                       f"lr {lr:g} | {row['seconds']:.1f}s")
        self.save()  # the final iteration, always, with the validation numbers of the last epoch
        return pd.DataFrame(self.log_rows)


def final_checkpoint(run_dir) -> Path:
    """The checkpoint with the highest iteration in a run folder."""
    paths = [p for p in Path(run_dir).glob("*.pt") if p.stem.isdigit()]
    if not paths:
        raise FileNotFoundError(run_dir)
    return max(paths, key=lambda p: int(p.stem))


