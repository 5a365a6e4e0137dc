"""Shared fixtures: repository paths and the data folder beside the repo (``../shared``)."""
import os
from pathlib import Path

import pytest
import torch

from src.allocator import keep_freed_memory

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
REFERENCE_CHECKPOINTS = SHARED / "reference-checkpoints"
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")

# The scripts keep freed memory in their process (src/allocator.py); the tests that call their code
# in-process do the same, so that they run as the scripts do and the suite's many forward passes do not
# fault in fresh pages at every batch.
keep_freed_memory()


# With pytest-xdist (make test runs two workers on two cores) each worker keeps to one thread.
TEST_THREADS = 1 if os.environ.get("PYTEST_XDIST_WORKER") else 2


@pytest.fixture(autouse=True)
def _few_threads():
    """Tests run on 2 cores next to other work: keep torch from oversubscribing them."""
    threads = torch.get_num_threads()
    torch.set_num_threads(min(threads, TEST_THREADS))
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def one_thread():
    """For tests of many small tensor ops: one thread avoids OpenMP barrier stalls on a loaded machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def reference_checkpoints() -> Path:
    if not REFERENCE_CHECKPOINTS.is_dir():
        pytest.skip(f"{REFERENCE_CHECKPOINTS} is absent (the shared data folder beside the repo)")
    return REFERENCE_CHECKPOINTS


@pytest.fixture
def fashion_available():
    if not (FASHION_DIR / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip("Fashion-MNIST (Debian package dataset-fashion-mnist) is not installed")
    return FASHION_DIR


@pytest.fixture
def fake_mnist(tmp_path, monkeypatch) -> Path:
    """A 300/60-image fake MNIST in torchvision's layout; DATASET_ROOT and the output folders point into tmp."""
    from tests.data_fixtures import fake_mnist_arrays, write_mnist_folder

    root = tmp_path / "datasets"
    write_mnist_folder(root / "MNIST" / "raw", fake_mnist_arrays(n_train=300, n_test=60), gz=True)
    monkeypatch.setenv("DATASET_ROOT", str(root))
    monkeypatch.setenv("RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.setenv("SNAPSHOTS_DIR", str(tmp_path / "snapshots"))
    monkeypatch.setenv("DEVICE", "cpu")
    return root
