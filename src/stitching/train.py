"""Training the stitch layer (the frozen networks never change)."""
import time
from dataclasses import dataclass
from typing import Dict, Tuple

import pandas as pd
import torch
from tqdm import tqdm

from src.stitching.batches import FrontCache
from src.stitching.frank import FrankensteinNet
from src.stitching.losses import batch_cka
from src.stitching.objectives import objective_loss
from src.training.evaluate import EvalResult, evaluate, predictions_of, result_from_logits
from src.training.optim import make_optimizer, step_schedule, warmup_cosine_schedule


@dataclass
class StitchSettings:
    """The training part of a :class:`~src.stitching.job.StitchJob` (whose defaults are the reference's)."""

    epochs: int
    lr: float
    weight_decay: float
    optimizer: str
    schedule: str  # step (per epoch) or cosine (per iteration, after warmup_epochs of linear warm-up)
    warmup_epochs: float
    l1: float
    cka_reg: float
    target_type: str
    temperature: float
    objective: str  # task or mse (src.stitching.objectives)
    save_frequency: int  # the stitch is recorded every save_frequency * epochs iterations

    @classmethod
    def from_job(cls, job) -> "StitchSettings":
        return cls(**{name: getattr(job, name) for name in cls.__dataclass_fields__})


def validate(frank: FrankensteinNet, val, multilabel: bool = False) -> EvalResult:
    """The stitched network's loss and accuracy on the validation split: ``val`` is its loader, or a
    :class:`~src.stitching.batches.FrontCache` of the front layer on it (the same batches, so the same numbers)."""
    if not isinstance(val, FrontCache):
        return evaluate(frank, val, multilabel)
    was_training = frank.training
    frank.eval()
    try:
        with torch.no_grad():
            logits = [frank.forward_from(x, front).float().cpu() for x, front in val.batches()]
    finally:
        frank.train(was_training)
    return result_from_logits(torch.cat(logits), val.labels.cpu(), multilabel)


def train_stitch(frank: FrankensteinNet, batches, val_loader, settings: StitchSettings, multilabel: bool = False,
                 progress=None) -> Tuple[pd.DataFrame, Dict[int, dict]]:
    """Train ``frank.stitch``; returns the per-epoch learning curve and the weight history {iteration: weights}.

    The learning rate follows ``settings.schedule``: ``step`` is the reference's (x0.1 at 1/3 and 2/3
    of the epochs, changed between epochs); ``cosine`` changes it every iteration: a linear warm-up
    over the first ``warmup_epochs`` x (batches per epoch) iterations, then half a cosine to zero at
    the end of training (:func:`src.training.optim.warmup_cosine_factor`). The curve's ``lr`` column is
    the rate of each epoch's first iteration.
    """
    stitch = frank.stitch
    optimizer = make_optimizer(stitch.parameters(), settings.optimizer, settings.lr, settings.weight_decay)
    per_iteration = settings.schedule == "cosine"
    if per_iteration:
        steps = len(batches)
        scheduler = warmup_cosine_schedule(optimizer, settings.epochs * steps, round(settings.warmup_epochs * steps))
    else:
        scheduler = step_schedule(optimizer, settings.epochs)
    record_every = max(1, settings.save_frequency * settings.epochs)
    history = {0: stitch.param_dict()}
    rows, iteration = [], 0
    for epoch in range(1, settings.epochs + 1):
        started = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        frank.train()
        total_loss = total_hits = seen = 0.0
        bar = tqdm(batches, desc=f"stitch epoch {epoch}/{settings.epochs}", leave=False,
                   disable=None if progress is None else not progress)
        for batch in bar:
            stitched = stitch(batch["front"])
            logits = frank.end(batch["x"], stitched)
            labels = batch["labels"]
            loss = objective_loss(settings.objective, logits, stitched, batch, settings.target_type,
                                  settings.temperature, multilabel)
            if settings.l1:
                loss = loss + settings.l1 * stitch.matrix().abs().mean()
            if settings.cka_reg:
                loss = loss + settings.cka_reg * batch_cka(batch["end_target"], stitched)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if per_iteration:
                scheduler.step()
            iteration += 1
            if iteration % record_every == 0:
                history[iteration] = stitch.param_dict()
            with torch.no_grad():
                n = labels.shape[0]
                total_loss += loss.item() * n
                total_hits += (predictions_of(logits, multilabel) == labels.long()).float().mean().item() * n
                seen += n
            bar.set_postfix(loss=f"{total_loss / seen:.3f}", acc=f"{total_hits / seen:.3f}")
        if not per_iteration:
            scheduler.step()
        val = validate(frank, val_loader, multilabel)
        rows.append({"epoch": epoch, "iteration": iteration, "train_loss": total_loss / max(seen, 1),
                     "train_accuracy": total_hits / max(seen, 1), "val_loss": val.loss, "val_accuracy": val.acc,
                     "lr": lr, "seconds": time.perf_counter() - started})
        tqdm.write(f"stitch epoch {epoch}/{settings.epochs}: train loss {rows[-1]['train_loss']:.4f} "
                   f"acc {rows[-1]['train_accuracy']:.4f} | val acc {val.acc:.4f} | {rows[-1]['seconds']:.1f}s")
    history[iteration] = stitch.param_dict()
    return pd.DataFrame(rows), history
