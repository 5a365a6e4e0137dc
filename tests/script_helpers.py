"""Helpers for the tests of the scripts: checkpoints of random networks, and the one-line error check."""
import torch

from src.models import create_model
from src.models.checkpoint import save_checkpoint


def random_checkpoint(path, name: str = "tiny10", seed: int = 0, dataset: str = "mnist"):
    """A checkpoint of a randomly initialised 1-channel 32x32 network with non-trivial BatchNorm statistics."""
    model = create_model(name, n_classes=10, n_channels=1, seed=seed)
    with torch.no_grad():
        model.train()(torch.randn(64, 1, 32, 32))
    meta = {"model": name, "dataset": dataset, "n_channels": 1, "n_classes": 10, "input_size": [32, 32]}
    return save_checkpoint(path, model.eval(), meta)


def assert_one_line_error(stderr: str, message: str):
    """What a script prints for bad input: one ``error:`` line containing ``message``, no traceback."""
    assert stderr.startswith("error: ") and message in stderr, stderr
    assert stderr.count("\n") == 1 and "Traceback" not in stderr
