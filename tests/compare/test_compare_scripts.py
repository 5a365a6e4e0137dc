"""compare_layers.py and compare_nets.py: outputs on a fake MNIST, and one-line errors.

Two runs of each script go through a real subprocess (the shell interface); the other cases call
the scripts' ``main`` through :func:`src.cli.run_main` in-process, which is the same code path
without paying for a fresh interpreter each time.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from src.cli import run_main
from src.models import create_model
from src.models.checkpoint import save_checkpoint
from tests.conftest import REPO
from tests.script_helpers import assert_one_line_error

RELU_FC = "re:relu\\d|fc"
LAYERS = [f"relu{i}" for i in range(1, 9)] + ["fc"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def env(fake_mnist):
    return dict(os.environ, OMP_NUM_THREADS="1")


@pytest.fixture
def checkpoints(tmp_path, fake_mnist):
    """Two randomly initialised Tiny10s for 1-channel 32x32 images (no training needed)."""
    paths = []
    for seed in (0, 1):
        model = create_model("tiny10", n_classes=10, n_channels=1, seed=seed)
        meta = {"model": "tiny10", "dataset": "mnist", "n_channels": 1, "n_classes": 10, "input_size": [32, 32]}
        paths.append(save_checkpoint(tmp_path / f"in{seed}-gn0" / "0.pt", model, meta))
    return paths


def run(*args, env):
    return subprocess.run([sys.executable, *map(str, args)], cwd=REPO, capture_output=True, text=True, env=env,
                          timeout=300)


def in_process(script, *args):
    """Exit code of ``script``'s main run like from a shell (UserErrors become exit code 2)."""
    module = __import__(script)
    return run_main(module.main, [str(a) for a in args])


# --- compare_layers.py ----------------------------------------------------------------------------

@pytest.mark.slow
def test_compare_layers_writes_matrix_files(tmp_path, env, checkpoints, capsys):
    out = tmp_path / "matrix"
    done = run("compare_layers.py", *checkpoints, "-d", "mnist", "--layers1", RELU_FC, "--layers2", RELU_FC,
               "-b", "20", "--permutations", "9", "--bootstrap", "20", "-o", out, env=env)
    assert done.returncode == 0, done.stderr
    assert "cka_minibatch: Tiny10 in0-gn0-0 vs Tiny10 in1-gn0-0 on mnist (test, 60 samples)" in done.stdout
    frame = pd.read_csv(out / "matrix.csv", index_col=0)
    assert list(frame.index) == LAYERS and list(frame.columns) == LAYERS
    assert np.all(np.isfinite(frame.values)) and frame.values.max() <= 1 + 1e-9
    saved = pd.read_pickle(out / "matrix.pkl")
    assert saved["n_samples"] == 60 and saved["n_batches"] == 3 and saved["meta"]["dataset1"] == "mnist"
    assert saved["pvalues"].shape == (9, 9) and saved["bootstrap"] == 20
    assert saved["provenance"]["command"].startswith("python compare_layers.py")
    assert (out / "heatmap.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "pvalues.csv").is_file() and (out / "ci_low.csv").is_file()
    assert in_process("compare_layers", *checkpoints, "-d", "mnist", "--layers1", "relu1", "-o", out) == 2
    assert_one_line_error(capsys.readouterr().err, "already holds matrix.csv")


def test_compare_layers_model_against_itself_and_defaults(tmp_path, checkpoints, capsys):
    assert in_process("compare_layers", checkpoints[0], "--layers1", "conv*", "--measure", "cka",
                      "--samples", "40") == 0
    # default folder: family and checkpoint of each model, measure, data, layers ('conv*' plus a hash of it)
    (out,) = (tmp_path / "results" / "compare").glob("Tiny10-in0-gn0-0_vs_Tiny10-in0-gn0-0_cka_mnist_layers-conv-*_vs_all")
    frame = pd.read_csv(out / "matrix.csv", index_col=0)
    assert list(frame.index) == [f"conv{i}" for i in range(1, 9)] and len(frame.columns) == 26  # every leaf
    shared = frame.loc[:, [f"conv{i}" for i in range(1, 9)]].values
    np.testing.assert_allclose(np.diag(shared), 1.0, atol=1e-6)
    assert "wrote" in capsys.readouterr().out


def test_compare_layers_second_dataset(tmp_path, checkpoints, fashion_available):
    out = tmp_path / "two"
    assert in_process("compare_layers", checkpoints[0], "-d", "mnist", "--dataset2", "fashion", "--layers1", RELU_FC,
                      "--layers2", RELU_FC, "--samples", "48", "-b", "16", "-o", out) == 0
    saved = pd.read_pickle(out / "matrix.pkl")
    assert saved["meta"]["dataset1"] == "mnist" and saved["meta"]["dataset2"] == "fashion"
    assert saved["n_samples"] == 48
    assert np.abs(np.diag(saved["values"].values) - 1).max() > 1e-3  # other images: not the identity


@pytest.mark.parametrize("args,message", [
    (("--layers1", "relu9"), "layer pattern 'relu9' matches no layer of Tiny10; valid layers: conv1, bn1, relu1"),
    (("--measure", "cka_debiased", "--bootstrap", "5"), "no bootstrap for cka_debiased"),
    (("--dataset2", "cifar10"), "model 2 was built for 1-channel 32x32 images (mnist); cifar10 has 3-channel"),
])
def test_compare_layers_errors(checkpoints, capsys, args, message):
    assert in_process("compare_layers", *checkpoints, "-d", "mnist", "--samples", "20", *args) == 2
    assert_one_line_error(capsys.readouterr().err, message)


# --- compare_nets.py ------------------------------------------------------------------------------

@pytest.mark.slow
def test_compare_nets_table_and_json(tmp_path, env, checkpoints, capsys):
    path = tmp_path / "nets.json"
    done = run("compare_nets.py", *checkpoints, "relu4", "relu4", "mnist", "cka", "cka_debiased", "procrustes",
               "corr", "ps_inv", "--max-samples", "50", "--json", path, env=env)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == ("Tiny10 in0-gn0-0 relu4 (32x11x11) vs Tiny10 in1-gn0-0 relu4 (32x11x11) "
                        "on mnist (test split, 50 samples)")
    assert any(line.startswith("cka ") for line in lines) and any("matrix 32x32" in line for line in lines)
    assert any("weights w 32x32, b 32" in line for line in lines)
    document = json.loads(path.read_text())
    assert document["n"] == 50 and 0 < document["results"]["cka"] <= 1
    assert np.asarray(document["results"]["corr"]).shape == (32, 32)
    assert np.asarray(document["results"]["ps_inv"]["w"]).shape == (32, 32)
    assert document["provenance"]["command"].startswith("python compare_nets.py")
    assert in_process("compare_nets", *checkpoints, "relu3", "relu99", "mnist", "cka") == 2
    assert_one_line_error(capsys.readouterr().err, "layer 'relu99' does not exist in Tiny10; valid layers: conv1, bn1")


def test_compare_nets_same_model_json_to_stdout(checkpoints, capsys):
    assert in_process("compare_nets", checkpoints[0], checkpoints[0], "fc", "fc", "mnist", "cka", "cca", "l2",
                      "--max-samples", "30", "--json") == 0
    document = json.loads(capsys.readouterr().out)
    assert document["results"]["cka"] == pytest.approx(1.0) and document["results"]["l2"] == 0.0
    assert document["results"]["cca"] == pytest.approx(1.0)


@pytest.mark.parametrize("args,message", [
    (("fc", "fc", "mnist", "ckaa"), "unknown similarity measure 'ckaa'; choose one of cka"),
    (("fc", "fc", "cifar10", "cka"), "model 1 was built for 1-channel 32x32 images (mnist); cifar10 has"),
    (("relu3", "relu4", "mnist", "corr"), "corr: x and y must have the same number of rows (samples x pixels)"),
])
def test_compare_nets_errors(checkpoints, capsys, args, message):
    assert in_process("compare_nets", *checkpoints, *args) == 2
    assert_one_line_error(capsys.readouterr().err, message)
