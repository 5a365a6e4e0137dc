"""compare_nets.py, compare_layers.py and compare_frank_m2.py never print a degenerate value.

compare_nets.py and compare_frank_m2.py refuse with one ``error:`` line containing "degenerate", why
(features, samples) and what to do; compare_layers.py writes NaN for the degenerate layer pairs, lists them
with the reason in degenerate.csv and warns in one line. Both scripts use one minimum sample count per measure.
"""
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from src.cli import run_main
from tests.conftest import REPO
from tests.script_helpers import assert_one_line_error, random_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def checkpoints(tmp_path, fake_mnist):
    """Two random Tiny10s for the fake 1-channel MNIST (60 test images)."""
    return [random_checkpoint(tmp_path / f"in{seed}-gn0" / "0.pt", seed=seed) for seed in (0, 1)]


def in_process(script, *args):
    return run_main(__import__(script).main, [str(a) for a in args])


@pytest.mark.slow
def test_compare_nets_refuses_cca_of_a_wide_layer_in_one_line(checkpoints, fake_mnist):
    """relu4 of Tiny10: 32x11x11 = 3872 features on 50 samples; every canonical correlation is 1 by dimension."""
    done = subprocess.run([sys.executable, "compare_nets.py", *map(str, checkpoints), "relu4", "relu4", "mnist", "cka",
                           "cca", "--max-samples", "50"], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert done.returncode == 2 and done.stdout == ""
    assert_one_line_error(done.stderr, "cca is degenerate here: x has 3872 features (centred rank 49) and y 3872 "
                                       "features (centred rank 49) on 50 samples")
    assert "all 49 canonical correlations are 1 whatever the data; use --max-samples 7745 or more" in done.stderr
    assert "a pooled one" in done.stderr and "svcca with a smaller keep" in done.stderr


def test_compare_nets_names_every_degenerate_measure_and_computes_the_rest(checkpoints, capsys):
    assert in_process("compare_nets", *checkpoints, "relu4", "relu4", "mnist", "cka", "cca", "cca_mean_rho",
                      "pwcca", "lr", "svcca", "--max-samples", "40") == 2
    err = capsys.readouterr().err
    assert_one_line_error(err, "cca, cca_mean_rho and pwcca are degenerate here")
    assert "lr is degenerate here" in err and "every y is predicted exactly" in err and "svcca" in err
    assert in_process("compare_nets", *checkpoints, "fc", "fc", "mnist", "cca", "lr", "procrustes",
                      "--max-samples", "40") == 0  # 10 features << 40 samples
    assert "degenerate" not in capsys.readouterr().err


@pytest.mark.parametrize("measure,samples,needed", [("cka", 2, 3), ("procrustes", 2, 3), ("cka_debiased", 3, 4)])
def test_compare_nets_and_compare_layers_agree_on_the_minimum_samples(checkpoints, capsys, measure, samples, needed,
                                                                      tmp_path):
    message = f"{measure} is degenerate here: {samples} samples are too few (at least {needed} samples are needed"
    assert in_process("compare_nets", *checkpoints, "relu1", "relu1", "mnist", measure,
                      "--max-samples", samples) == 2
    assert_one_line_error(capsys.readouterr().err, message)
    if measure != "procrustes":
        assert in_process("compare_layers", *checkpoints, "-d", "mnist", "--layers1", "relu1", "--layers2", "relu1",
                          "--measure", measure, "--samples", samples, "-o", tmp_path / "m") == 2
        assert_one_line_error(capsys.readouterr().err, message)
    assert in_process("compare_nets", *checkpoints, "relu1", "relu1", "mnist", measure, "--max-samples", needed) == 0


def test_compare_layers_writes_nan_and_the_reasons_of_degenerate_pairs(checkpoints, capsys, tmp_path):
    out = tmp_path / "m"
    assert in_process("compare_layers", *checkpoints, "-d", "mnist", "--layers1", "relu4", "fc",
                      "--layers2", "relu4", "fc", "--measure", "cca", "--samples", "40", "-o", out) == 0
    captured = capsys.readouterr()
    frame = pd.read_csv(out / "matrix.csv", index_col=0)
    assert np.isnan(frame.loc["relu4"]).all() and np.isnan(frame.loc["fc", "relu4"])
    assert 0 < frame.loc["fc", "fc"] <= 1 + 1e-9
    reasons = pd.read_csv(out / "degenerate.csv")
    assert set(zip(reasons["layer1"], reasons["layer2"])) == {("relu4", "relu4"), ("relu4", "fc"), ("fc", "relu4")}
    assert captured.err.count("\n") == 1 and captured.err.startswith("warning: cca is degenerate for 3 of 4 layer pairs")
    assert "degenerate.csv" in captured.err
    saved = pd.read_pickle(out / "matrix.pkl")
    assert saved["degenerate"][("relu4", "fc")].startswith("x has 3872 features")


def test_compare_frank_m2_refuses_degenerate_measures_in_one_line(monkeypatch, capsys, tmp_path):
    """The stitch is not rebuilt here: the comparison is replaced by the measures on wide random activations."""
    import src.stitching.evaluate_result as evaluate_result
    from src.similarity import get_measure

    def fake_compare(path, weights, measures, *args, **kwargs):
        g = np.random.default_rng(0)
        x, y = g.standard_normal((30, 64)), g.standard_normal((30, 64))
        return {name: get_measure(name)(x, y) for name in measures}

    monkeypatch.setattr(evaluate_result, "compare_stitch_to_end", fake_compare)
    assert in_process("compare_frank_m2", tmp_path / "r.pkl", "after", "pwcca") == 2
    err = capsys.readouterr().err
    assert_one_line_error(err, "pwcca is degenerate here: x has 64 features (centred rank 29)")
    assert "use --max-samples 129 or more" in err
    assert in_process("compare_frank_m2", tmp_path / "r.pkl", "after", "cka", "--max-samples", "2") == 2
    assert_one_line_error(capsys.readouterr().err, "cka is degenerate here: 2 samples are too few")


def test_svcca_with_a_smaller_keep_is_the_way_out_for_wide_layers(checkpoints, capsys, tmp_path):
    """relu4 (3872 features) on 40 samples: every direction kept is degenerate; a few kept directions are not."""
    assert in_process("compare_nets", *checkpoints, "relu4", "relu4", "mnist", "svcca", "--max-samples", "40",
                      "--keep", "1") == 2
    assert_one_line_error(capsys.readouterr().err, "svcca is degenerate here")
    assert in_process("compare_nets", *checkpoints, "relu4", "relu4", "mnist", "svcca", "--max-samples", "40",
                      "--keep", "0.3", "--json") == 0
    assert 0 < __import__("json").loads(capsys.readouterr().out)["results"]["svcca"] <= 1 + 1e-9
    assert in_process("compare_layers", *checkpoints, "-d", "mnist", "--layers1", "relu4", "--layers2", "relu4",
                      "--measure", "svcca", "--keep", "0.3", "--samples", "40", "-o", tmp_path / "m") == 0
    assert np.isfinite(pd.read_csv(tmp_path / "m" / "matrix.csv", index_col=0).values).all()
    capsys.readouterr()
    assert in_process("compare_layers", *checkpoints, "-d", "mnist", "--measure", "cka", "--keep", "0.3") == 2
    assert_one_line_error(capsys.readouterr().err, "--keep is the fraction of variance svcca keeps")
    assert in_process("compare_nets", *checkpoints, "fc", "fc", "mnist", "svcca", "--keep", "1.5") == 2
    assert_one_line_error(capsys.readouterr().err, "--keep must be a finite number > 0 and <= 1")
