"""Training a zoo classifier from scratch, as ``train_model.py`` does.

Writes ``<run_dir>/<iteration>.pt`` every ``save_frequency`` iterations, at iteration 0 (the random
initialisation, a ready-made random-network control) and always at the final iteration, plus
``<run_dir>/training_log.csv`` with one row per epoch. Each checkpoint records the validation loss
and accuracy of its own weights. Beside the latest checkpoint lies the state that lets a killed run
continue (:mod:`src.training.resume`); a resumed run ends with the same weights, bit for bit.

Under torchrun (``world``, :mod:`src.distributed`) every rank trains the same model wrapped in
``DistributedDataParallel`` on its slice of each global batch (the loader's ``shard``); the
gradients are averaged over the ranks, so a step equals the one-process step on the whole batch
up to float rounding (BatchNorm aside: plain BatchNorm normalises by each rank's own slice). The
epoch's training loss and accuracy are summed over all ranks; every rank validates on the whole
validation split with rank 0's BatchNorm statistics, so all agree; only rank 0 writes files.
"""
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, Optional

import pandas as pd
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from src.distributed import World, all_reduce_sum, broadcast_buffers
from src.models.checkpoint import save_checkpoint
from src.results_io import write_csv
from src.training.evaluate import EvalResult, evaluate, predictions_of, task_loss
from src.training.optim import make_optimizer, step_schedule
from src.training.resume import LOG_NAME, remove_state, write_state

__all__ = ["LOG_NAME", "TrainSettings", "ClassifierTrainer", "final_checkpoint"]


@dataclass
class TrainSettings:
    epochs: int = 300
    lr: float = 0.1
    weight_decay: float = 1e-4
    optimizer: str = "sgd"
    save_frequency: Optional[int] = 10000  # iterations between checkpoints; None: only first and last


def _zero_totals() -> Dict[str, float]:
    return {"loss": 0.0, "hits": 0.0, "seen": 0}


class ClassifierTrainer:
    """One training run: model, loaders, optimiser, schedule, checkpoints and the epoch log.

    ``run_state`` (plain values) is stored in every resume state and compared on resume. ``world``:
    this process's place under torchrun (default: one process); ``train_loader`` must then yield
    this rank's shard of each batch.
    """

    def __init__(self, model: nn.Module, train_loader, val_loader, settings: TrainSettings, run_dir,
                 meta: Dict[str, Any], multilabel: bool = False, device="cpu", progress: Optional[bool] = None,
                 run_state: Optional[Dict[str, Any]] = None, world: Optional[World] = None):
        self.model = model.to(device)
        self.world = world or World()
        # What the training steps call: under torchrun DDP averages the gradients over the ranks.
        self.network = self.model
        if self.world.distributed:
            ids = [torch.device(device)] if torch.device(device).type == "cuda" else None
            self.network = DistributedDataParallel(self.model, device_ids=ids)
        self.train_loader = train_loader
        self.val_loader = val_loader
        self.settings = settings
        self.run_dir = Path(run_dir)
        self.meta = dict(meta)
        self.multilabel = multilabel
        self.device = torch.device(device)
        self.progress = progress
        self.run_state = dict(run_state or {})
        self.optimizer = make_optimizer(model.parameters(), settings.optimizer, settings.lr, settings.weight_decay)
        self.scheduler = step_schedule(self.optimizer, settings.epochs)
        self.iteration = 0
        self.epoch = 0
        self.last_val: Optional[EvalResult] = None
        self.val_iteration: Optional[int] = None  # the iteration whose weights last_val measured
        self.totals = _zero_totals()  # running sums of the current epoch
        self.log_rows = []
        self.resumed = False

    # -- checkpoints and resume state ---------------------------------------------------------
    def checkpoint_path(self, iteration: int) -> Path:
        return self.run_dir / f"{iteration}.pt"

    def save(self, final: bool = False) -> Path:
        """Checkpoint of the current weights with their validation numbers, then the resume state (or, at the end, none)."""
        if self.val_iteration != self.iteration:
            self.validate()
        meta = dict(self.meta, epoch=self.epoch, iteration=self.iteration, val_acc=self.last_val.acc,
                    val_loss=self.last_val.loss, settings=asdict(self.settings))
        path = self.checkpoint_path(self.iteration)
        if not self.world.is_main:  # only rank 0 writes; the others hold the same weights and state
            return path
        save_checkpoint(path, self.model, meta)
        if final:
            remove_state(self.run_dir)
        else:
            write_state(self.run_dir, self.state_dict())
        return path

    def state_dict(self) -> Dict[str, Any]:
        """Everything but the weights (which are in the checkpoint of the same iteration) to continue the run."""
        cuda = self.device.type == "cuda"
        state = {"run": self.run_state, "iteration": self.iteration, "epoch": self.epoch,
                 "checkpoint": self.checkpoint_path(self.iteration).name,
                 "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                 "train_loader": self.train_loader.state_dict(), "torch_rng": torch.get_rng_state(),
                 "cuda_rng": torch.cuda.get_rng_state_all() if cuda else [],
                 "totals": dict(self.totals), "log_rows": list(self.log_rows)}
        if self.world.distributed:  # a resume must use as many processes; each rank owns one GPU only
            state["world_size"] = self.world.size
            state["cuda_rng"] = [torch.cuda.get_rng_state(self.device)] if cuda else []
        return state

    def load_state_dict(self, state: Dict[str, Any], weights: Dict[str, torch.Tensor]) -> None:
        """Continue from a resume state and the weights of its checkpoint."""
        self.model.load_state_dict(weights, strict=True)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.train_loader.load_state_dict(state["train_loader"])
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"] and self.device.type == "cuda":
            if self.world.distributed:
                torch.cuda.set_rng_state(state["cuda_rng"][0], self.device)
            else:
                torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.iteration, self.epoch = int(state["iteration"]), int(state["epoch"])
        self.totals = dict(state["totals"])
        self.log_rows = [dict(row) for row in state["log_rows"]]
        self.resumed = True

    def _due(self) -> bool:
        freq = self.settings.save_frequency
        return bool(freq) and self.iteration % freq == 0

    # -- loop --------------------------------------------------------------------------------
    def validate(self) -> EvalResult:
        broadcast_buffers(self.model)  # under torchrun: rank 0's BatchNorm statistics on every rank
        self.last_val = evaluate(self.model, self.val_loader, self.multilabel, self.device)
        self.val_iteration = self.iteration
        return self.last_val

    def train_epoch(self) -> Dict[str, float]:
        """The (rest of the) current epoch; the running totals carry over a resume."""
        self.network.train()
        totals = self.totals
        bar = tqdm(self.train_loader, desc=f"epoch {self.epoch + 1}/{self.settings.epochs}", leave=False,
                   disable=self._quiet())
        for inputs, targets in bar:
            inputs, targets = inputs.to(self.device, non_blocking=True), targets.to(self.device, non_blocking=True)
            logits = self.network(inputs)
            loss = task_loss(logits, targets, self.multilabel)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.iteration += 1
            with torch.no_grad():
                batch = targets.shape[0]
                hits = (predictions_of(logits, self.multilabel) == targets.long()).float().mean().item()
                if self.world.distributed:  # the whole global batch, summed over the ranks
                    loss_sum, hits_sum, batch = all_reduce_sum([loss.item() * batch, hits * batch, batch])
                    totals["loss"] += loss_sum
                    totals["hits"] += hits_sum
                    totals["seen"] += int(batch)
                else:
                    totals["loss"] += loss.item() * batch
                    totals["hits"] += hits * batch
                    totals["seen"] += batch
            bar.set_postfix(loss=f"{totals['loss'] / totals['seen']:.3f}", acc=f"{totals['hits'] / totals['seen']:.3f}")
            if self._due():
                self.save()
        seen = max(totals["seen"], 1)
        return {"train_loss": totals["loss"] / seen, "train_accuracy": totals["hits"] / seen}

    def _quiet(self) -> Optional[bool]:
        """tqdm's ``disable``: None (only on a terminal) unless ``progress`` says; ranks other than 0 stay silent."""
        if not self.world.is_main:
            return True
        return None if self.progress is None else not self.progress

    def run(self) -> pd.DataFrame:
        if self.world.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        if not self.resumed:
            self.save()  # iteration 0: the untrained network
        while self.epoch < self.settings.epochs:
            started = time.perf_counter()
            lr = self.optimizer.param_groups[0]["lr"]
            stats = self.train_epoch()
            self.epoch += 1
            self.totals = _zero_totals()
            self.scheduler.step()
            val = self.validate()
            row = {"epoch": self.epoch, "iteration": self.iteration, **stats, "val_loss": val.loss,
                   "val_accuracy": val.acc, "lr": lr, "seconds": time.perf_counter() - started}
            self.log_rows.append(row)
            if not self.world.is_main:
                continue
            write_csv(self.run_dir / LOG_NAME, pd.DataFrame(self.log_rows))
            tqdm.write(f"epoch {self.epoch}/{self.settings.epochs}: train loss {stats['train_loss']:.4f} "
                       f"acc {stats['train_accuracy']:.4f} | val loss {val.loss:.4f} acc {val.acc:.4f} | "
                       f"lr {lr:g} | {row['seconds']:.1f}s")
        self.save(final=True)  # the final iteration, always, with the validation numbers of the last epoch
        return pd.DataFrame(self.log_rows)


def final_checkpoint(run_dir) -> Path:
    """The checkpoint with the highest iteration in a run folder."""
    paths = [p for p in Path(run_dir).glob("*.pt") if p.stem.isdigit()]
    if not paths:
        raise FileNotFoundError(run_dir)
    return max(paths, key=lambda p: int(p.stem))
