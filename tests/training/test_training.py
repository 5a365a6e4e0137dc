"""Training runs: files written, schedule, determinism, evaluation against a direct computation."""
import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import train_model
from src.models.checkpoint import read_checkpoint
from src.training import evaluate, step_milestones
from src.training.run import train_from_args


def _train(tmp_path, *extra):
    argv = ["-m", "lenet", "-d", "mnist", "-e", "3", "-b", "32", "-s", "5", "--val-size", "50",
            "-o", str(tmp_path / "snap"), *extra]
    return train_from_args(train_model.parse_args(argv), ["train_model.py", *argv])


def test_run_folder_checkpoints_and_log(tmp_path, fake_mnist):
    run_dir = _train(tmp_path, "-i", "3", "-g", "4")
    assert run_dir == tmp_path / "snap" / "LeNet" / "MNIST" / "in3-gn4"
    iterations_per_epoch = 250 // 32  # 300 - 50 validation samples, last partial batch dropped
    final = 3 * iterations_per_epoch
    saved = sorted(int(p.stem) for p in run_dir.glob("*.pt"))
    assert saved == sorted(set(range(0, final + 1, 5)) | {final})
    log = pd.read_csv(run_dir / "training_log.csv")
    assert list(log["epoch"]) == [1, 2, 3] and list(log["iteration"]) == [7, 14, 21]
    assert {"train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "seconds"} <= set(log.columns)
    # Step schedule: x0.1 at epochs 1 and 2 of 3 (1/3 and 2/3 of training).
    assert np.allclose(log["lr"], [0.1, 0.01, 0.001])
    state, meta = read_checkpoint(run_dir / f"{final}.pt")
    assert meta["model"] == "lenet" and meta["dataset"] == "mnist" and meta["iteration"] == final
    assert meta["init_seed"] == 3 and meta["gradient_seed"] == 4 and meta["epoch"] == 3
    assert meta["val_acc"] == pytest.approx(log["val_accuracy"].iloc[-1])
    assert meta["provenance"]["args"]["epochs"] == 3
    assert meta["provenance"]["command"].startswith("python train_model.py -m lenet -d mnist")
    # The checkpoint is plain data: PyTorch's safe loader reads it.
    assert torch.load(run_dir / f"{final}.pt", weights_only=True)["format"] == "drfrank-checkpoint"


def test_same_seeds_same_weights_other_seed_other_weights(tmp_path, fake_mnist):
    first = read_checkpoint(_train(tmp_path / "a") / "21.pt")[0]
    again = read_checkpoint(_train(tmp_path / "b") / "21.pt")[0]
    other = read_checkpoint(_train(tmp_path / "c", "-g", "1") / "21.pt")[0]
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not torch.equal(first["conv1.weight"], other["conv1.weight"])
    # Same init seed: iteration 0 is identical whatever the gradient seed.
    init_a = read_checkpoint(tmp_path / "a" / "snap" / "LeNet" / "MNIST" / "in0-gn0" / "0.pt")[0]
    init_c = read_checkpoint(tmp_path / "c" / "snap" / "LeNet" / "MNIST" / "in0-gn1" / "0.pt")[0]
    assert torch.equal(init_a["conv1.weight"], init_c["conv1.weight"])


@pytest.mark.parametrize("epochs", [1, 2, 3, 10, 30, 300])
def test_step_milestones_follow_the_reference_rule(epochs):
    # The reference multiplies the lr at the first epoch i with i / epochs >= 0.333, then >= 0.666.
    expected = []
    for threshold in (0.333, 0.666):
        first = next((i for i in range(epochs) if i / epochs >= threshold), None)
        if first is not None and first > 0:
            expected.append(first)
    assert step_milestones(epochs) == expected
    assert step_milestones(30) == [10, 20]


class FixedLogits(nn.Module):
    """Returns stored logits for the inputs' sample index (stored in pixel [0, 0, 0])."""

    def __init__(self, logits):
        super().__init__()
        self.register_buffer("logits", logits)
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return self.logits[x[:, 0, 0, 0].long()]


def test_evaluate_matches_direct_computation():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(50, 4, generator=gen)
    labels = torch.randint(0, 4, (50,), generator=gen)
    x = torch.zeros(50, 1, 2, 2)
    x[:, 0, 0, 0] = torch.arange(50)
    loader = [(x[i:i + 16], labels[i:i + 16]) for i in range(0, 50, 16)]  # uneven last batch
    result = evaluate(FixedLogits(logits), loader)
    probs = np.exp(logits.double().numpy())
    probs /= probs.sum(1, keepdims=True)
    expected_loss = -np.mean(np.log(probs[np.arange(50), labels.numpy()]))
    assert result.loss == pytest.approx(expected_loss, rel=1e-5)
    assert result.acc == pytest.approx(np.mean(logits.numpy().argmax(1) == labels.numpy()))
    assert result.hits.shape == (50,) and result.n == 50


def test_evaluate_multilabel_counts_attributes():
    logits = torch.tensor([[2.0, -1.0], [-3.0, 0.5]])
    targets = torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    x = torch.zeros(2, 1, 2, 2)
    x[:, 0, 0, 0] = torch.arange(2)
    result = evaluate(FixedLogits(logits), [(x, targets)], multilabel=True)
    assert result.acc == pytest.approx(3 / 4)
    sig = 1 / (1 + np.exp(-logits.numpy().astype(np.float64)))
    bce = -(targets.numpy() * np.log(sig) + (1 - targets.numpy()) * np.log(1 - sig)).mean()
    assert result.loss == pytest.approx(bce, rel=1e-5)
    assert math.isfinite(result.loss)
