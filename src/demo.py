"""The README's main job: two networks from different seeds, their layers, a stitch between them, one table.

Uses the committed Fashion-MNIST models in ``model_weights/`` (seeds 0 and 1) or, when they are
missing or ``train=True``, trains two from scratch first. Then stitches them at a middle layer with
the least-squares initialisation, trains the stitch on cached front activations and prints: end
model accuracy, least-squares stitch accuracy, trained stitch accuracy, relative accuracy, and CKA
between the representations before (front layer vs end layer) and after stitching (stitch output
vs end layer).
"""
from pathlib import Path
from typing import Dict, List, Optional

import pandas as pd

from src.config import REPO_ROOT, get_config
from src.models import model_display_name
from src.models.checkpoint import read_checkpoint
from src.models.describe import describe_layers
from src.stitching.job import StitchJob
from src.stitching.results import load_result
from src.stitching.run import stitch_from_args
from src.training.eval_checkpoint import evaluate_checkpoint
from src.training.run import TrainJob, run_folder, train_from_args
from src.training.trainer import final_checkpoint

MIDDLE_LAYER = {"tiny10": "bn3", "lenet": "pool1"}
SEEDS = (0, 1)
WEIGHTS = REPO_ROOT / "model_weights"


def committed_checkpoint(model: str, seed: int) -> Optional[Path]:
    folder = run_folder(WEIGHTS, model, "fashion", seed, seed)
    try:
        path = final_checkpoint(folder)
    except FileNotFoundError:
        return None
    return path if read_checkpoint(path)[1] else None


def get_checkpoints(model: str, train: bool, train_epochs: int) -> List[Path]:
    paths = [None if train else committed_checkpoint(model, seed) for seed in SEEDS]
    for i, seed in enumerate(SEEDS):
        if paths[i] is None:
            print(f"training {model_display_name(model)} seed {seed} for {train_epochs} epochs ...")
            # The demo's own folder, emptied first: its final checkpoint is always the run just trained.
            job = TrainJob(model=model, dataset="fashion", init_noise=seed, gradient_noise=seed, epochs=train_epochs,
                           save_frequency=None, out_dir=str(get_config().snapshots_dir / "demo"), overwrite=True)
            paths[i] = final_checkpoint(train_from_args(job, ["demo.py"]))
    return paths


def run_demo(model: str = "tiny10", epochs: int = 3, train: bool = False, train_epochs: int = 3) -> pd.DataFrame:
    front, end = get_checkpoints(model, train, train_epochs)
    for seed, path in zip(SEEDS, (front, end)):
        result = evaluate_checkpoint(path)
        print(f"seed {seed}: {path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path} "
              f"test accuracy {result['acc']:.4f}")
    title, table = describe_layers(str(front))
    print(f"\n{title}\n{table.to_string()}\n")
    layer = MIDDLE_LAYER[model]
    job = StitchJob(front_model=str(front), end_model=str(end), front_layer=layer, end_layer=layer, dataset="fashion",
                    epochs=epochs, init="ps_inv", cache_front=True, run_name=f"demo-{model}", overwrite=True)
    print(f"stitching seed 0 -> seed 1 at {layer} (least-squares init, {epochs} epochs on cached front activations)")
    path = stitch_from_args(job, ["demo.py"])
    summary = demo_table(load_result(path)["summary"])
    print("\n" + summary.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(f"\nfull result: {path} (open it with src.stitching.results.load_result)")
    return summary


def demo_table(s: Dict) -> pd.DataFrame:
    return pd.DataFrame([{
        "layer": f"{s['front_layer']} -> {s['end_layer']}",
        "end acc": s["end_acc"], "least-squares acc": s["ps_inv_acc"], "stitch acc": s["trans_acc"],
        "relative acc": s["rel_acc"], "CKA before": s["cka"], "CKA after": s["cka_frank"],
    }])
