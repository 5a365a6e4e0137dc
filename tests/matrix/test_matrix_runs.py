"""Stitch matrices: the triangle statistic, the blocks preset, bad input, and the matrix end to end on the
committed Fashion-MNIST Tiny10s (each cell is exactly the single-stitch result of the same job)."""
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import scipy.stats
import torch

import stitch_matrix
from src.cli import run_main
from src.models.blocks import block_outputs
from src.models import create_model
from src.models.checkpoint import save_checkpoint
from src.stitching.evaluate_result import evaluate_stitch
from src.matrix import run_matrix
from src.matrix.stats import on_or_below_diagonal, proportional_depths, spearman, triangle_statistic
from src.stitching.results import load_result, load_summaries
from src.stitching.run import stitch_from_args
from tests.conftest import REPO

TINY = REPO / "model_weights" / "Tiny10" / "FashionMNIST"
SENDER, RECEIVER = str(TINY / "in0-gn0" / "8580.pt"), str(TINY / "in1-gn1" / "8580.pt")
QUICK = ["-d", "fashion", "-e", "1", "-b", "50", "--max-samples", "500", "--val-size", "500", "--measure-samples", "200"]


# --- numbers read off a matrix ------------------------------------------------------------------------------

def test_triangle_statistic_of_a_hand_made_matrix():
    # 3 front layers (depths 0, 1/2, 1) x 5 end layers (depths 0, 1/4, 1/2, 3/4, 1):
    # end depth <= front depth holds for columns {0}, {0, 1, 2} and all five.
    m = np.array([[10, 1, 1, 1, 1],
                  [10, 10, 10, 1, 1],
                  [10, 10, 10, 10, 10]], dtype=float)
    below = np.array([[1, 0, 0, 0, 0], [1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=bool)
    assert (on_or_below_diagonal(3, 5) == below).all()
    tri = triangle_statistic(m)
    assert tri == {"mean_on_or_below": 10.0, "mean_above": 1.0, "difference": 9.0, "cells_on_or_below": 9, "cells_above": 6}
    # the square case: on or below the diagonal is the lower triangle including it
    assert (on_or_below_diagonal(4, 4) == np.tril(np.ones((4, 4), dtype=bool))).all()
    assert proportional_depths(5).tolist() == [0, 0.25, 0.5, 0.75, 1]


def test_spearman_of_matrices_agrees_with_scipy_including_ties():
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 4, (5, 6)).astype(float), rng.normal(size=(5, 6))
    assert spearman(a, b) == pytest.approx(scipy.stats.spearmanr(a.ravel(), b.ravel())[0], abs=1e-12)
    assert spearman(b, 2 * b + 1) == pytest.approx(1.0)


# --- the blocks preset ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["resnet_1111", "resnet_2122", "resnet20_w1"])
def test_blocks_of_a_resnet_are_the_stem_and_every_block_in_order(name):
    model = create_model(name, n_classes=10, n_channels=1)
    per_stage = [int(d) for d in name.split("_")[1]] if name.startswith("resnet_") else [3, 3, 3]
    expected = ["relu1"] + [f"layer{i + 1}.{j}" for i, n in enumerate(per_stage) for j in range(n)]
    assert block_outputs(model, torch.zeros(2, 1, 32, 32)) == expected


def test_blocks_of_plain_networks_are_their_conv_stages():
    example = torch.zeros(2, 1, 32, 32)
    assert block_outputs(create_model("tiny10", 10, 1), example) == [f"bn{i}" for i in range(1, 9)]
    assert block_outputs(create_model("nbn_tiny10", 10, 1), example) == [f"conv{i}" for i in range(1, 9)]
    assert block_outputs(create_model("lenet", 10, 1), example) == ["conv1", "conv2"]


# --- bad input: one line, exit 2, before any training, nothing written -----------------------------------------

def _other_checkpoint(tmp_path, **meta_changes):
    model = create_model("tiny10", n_classes=meta_changes.get("n_classes", 10), n_channels=1, seed=3)
    meta = {"model": "tiny10", "dataset": "fashion", "n_channels": 1, "n_classes": 10, "input_size": [32, 32]}
    meta.update(meta_changes)
    return str(save_checkpoint(tmp_path / "other.pt", model.eval(), meta))


@pytest.mark.parametrize("case,message", [
    ("unknown layer", "layer pattern 'bn9' matches no layer of Tiny10; valid layers: conv1, bn1"),
    ("empty layer", "layer pattern '' matches no layer of Tiny10; valid layers"),
    ("class counts", "different class counts (5 vs 10)"),
    ("input sizes", "different input sizes ([28, 28] vs [32, 32])"),
    ("stitch not defined", "--init eye"),
    ("warm-up", "--warmup-epochs 1 must be shorter than training (--epochs 1)"),
    ("existing run", "already exists; pass --overwrite"),
])
def test_bad_matrix_input_is_one_line_before_any_work(tmp_path, capsys, case, message):
    out = tmp_path / "res"
    front, layers, extra = SENDER, ["bn7", "bn8"], []
    if case == "unknown layer":
        layers = ["bn9"]
    elif case == "empty layer":
        layers = [""]
    elif case == "class counts":
        front = _other_checkpoint(tmp_path, n_classes=5)
    elif case == "input sizes":
        front = _other_checkpoint(tmp_path, input_size=[28, 28])
    elif case == "stitch not defined":
        layers, extra = ["bn6"], ["-i", "eye"]  # 64x4x4 into 64x2x2: a strided stitch, which has no identity
    elif case == "warm-up":
        extra = ["--preset", "hernandez", "-e", "1"]
    elif case == "existing run":
        (out / "bad").mkdir(parents=True)
    argv = [front, RECEIVER, "--front-layers", *layers, "--end-layers", "bn7", "bn8", *QUICK, *extra,
            "-o", str(out), "--run-name", "bad"]
    assert run_main(stitch_matrix.main, argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    written = sorted(p.name for p in out.rglob("*")) if out.exists() else []
    assert written == (["bad"] if case == "existing run" else [])


@pytest.mark.slow
def test_bad_matrix_input_from_the_shell_exits_2(tmp_path):
    argv = [SENDER, RECEIVER, "--front-layers", "re:nothing\\d", "--end-layers", "bn8", "-o", str(tmp_path)]
    done = subprocess.run([sys.executable, "stitch_matrix.py", *argv], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "matches no layer" in done.stderr
    assert not list(tmp_path.iterdir())


# --- end to end on the committed Tiny10s ---------------------------------------------------------------------

@pytest.fixture
def fashion_results(tmp_path, monkeypatch, fashion_available):
    monkeypatch.setenv("DEVICE", "cpu")
    return tmp_path / "res"


def test_two_by_two_matrix_end_to_end_equals_single_stitches(fashion_results):
    # bn6 (64x4x4) and bn8 (64x2x2) into bn7 and bn8 (64x2x2): strided and 1x1 stitches.
    argv = [SENDER, RECEIVER, "--front-layers", "bn6", "bn8", "--end-layers", "re:bn[78]", *QUICK,
            "-o", str(fashion_results), "--run-name", "m"]
    path, summary = run_matrix(stitch_matrix.parse_args(argv), ["stitch_matrix.py", *argv], progress=False)
    run = fashion_results / "m"
    assert path == run / "matrix.pkl"
    for name in ("matrix", "relative", "ps_inv", "cka"):
        frame = pd.read_csv(run / f"{name}.csv", index_col=0)
        assert list(frame.index) == ["bn6", "bn8"] and list(frame.columns) == ["bn7", "bn8"]
    assert (run / "matrix.png").stat().st_size > 0
    matrix = pd.read_csv(run / "matrix.csv", index_col=0)
    relative = pd.read_csv(run / "relative.csv", index_col=0)
    cka = pd.read_csv(run / "cka.csv", index_col=0)
    for s in ("bn6", "bn8"):
        for r in ("bn7", "bn8"):
            cell = load_result(run / "cells" / f"{s}--{r}.pkl")
            acc = cell["model_results"]
            assert (cell["params"]["front_layer"], cell["params"]["end_layer"]) == (s, r)
            assert matrix.loc[s, r] == pytest.approx(acc["trans"]["acc"], abs=1e-12)
            assert relative.loc[s, r] == pytest.approx(acc["trans"]["acc"] / acc["end"]["acc"], rel=1e-12)
            # The matrix's CKA (all pairs in one pass) is each cell's own front/end CKA, on the same test images;
            # float32 Grams of <= 256 features: relative rounding far below 1e-4.
            assert cka.loc[s, r] == pytest.approx(cell["cka"], rel=1e-4)
    assert cell["stitch"]["kind"] == "conv1x1"
    assert load_result(run / "cells" / "bn6--bn7.pkl")["stitch"]["kind"] == "strided_conv"
    assert len(load_summaries(run)) == 4
    saved = pd.read_pickle(path)
    assert saved["matrix"].equals(summary["matrix"]) and set(saved["spearman"]) == {"trained"}
    assert saved["spearman"]["trained"] == pytest.approx(
        scipy.stats.spearmanr(matrix.to_numpy().ravel(), cka.to_numpy().ravel())[0], abs=1e-12)
    assert saved["triangle"]["trained"]["stitched"]["cells_on_or_below"] == 3  # bn6 -> bn7, bn8 -> bn7, bn8 -> bn8
    assert saved["timing"]["cell_seconds"]["trained"].shape == (2, 2)

    # The strongest proof that the sweep is the stitching path: stitch_nets.py --cache-front on one pair, same seed.
    job = replace(stitch_matrix.parse_args(argv).job, front_layer="bn6", end_layer="bn7", run_name="single")
    single = load_result(stitch_from_args(job, ["stitch_nets.py"]))
    cell = load_result(run / "cells" / "bn6--bn7.pkl")
    assert single["model_results"] == cell["model_results"]
    # the matrix caches the validation and test passes, the least-squares targets and the measured end
    # activations per layer: each equals the single stitch's live pass exactly
    for key in ("cka", "cka_frank", "cka_ps_inv", "l2", "l2_frank", "l2_ps_inv", "measure_samples"):
        assert single[key] == cell[key], key
    assert single["least_squares"]["r2_train"] == cell["least_squares"]["r2_train"]
    pd.testing.assert_frame_equal(single["trans_fit"].drop(columns="seconds"), cell["trans_fit"].drop(columns="seconds"))
    for key in ("before", "after", "ps_inv"):
        assert np.array_equal(single["trans_m"][key]["w"], cell["trans_m"][key]["w"])
    # A cache budget that holds bn6's training activations but not bn6's and bn8's together: no one-pass prefill
    # of the front_layers, bn6's validation and test passes run live, bn8's are cached per layer. Same numbers.
    limit = 1.1 * 64 * 4 * 4 * 4 * summary["train_samples"] / 2**30
    tight = [*argv[:-1], "tight", "--cache-limit-gb", f"{limit:.9f}"]
    run_matrix(stitch_matrix.parse_args(tight), ["stitch_matrix.py", *tight], progress=False)
    for s in ("bn6", "bn8"):
        for r in ("bn7", "bn8"):
            a, b = (load_result(folder / "cells" / f"{s}--{r}.pkl") for folder in (run, fashion_results / "tight"))
            assert a["model_results"] == b["model_results"] and a["cka_frank"] == b["cka_frank"]
            pd.testing.assert_frame_equal(a["trans_fit"].drop(columns="seconds"), b["trans_fit"].drop(columns="seconds"))
    # and eval_stitch.py rebuilds the cell from its pickle alone: the same 500 test images, the same predictions
    again = evaluate_stitch(run / "cells" / "bn6--bn7.pkl", "after", max_samples=500, device="cpu")
    assert again["n"] == 500 and again["acc"] == pytest.approx(cell["model_results"]["trans"]["acc"], abs=1e-9)


def test_self_stitch_with_the_identity_reproduces_the_network_exactly(fashion_results):
    """SENDER == RECEIVER, same layer, -i eye: the initial stitch is the identity, so the stitched network is the
    network itself - same predictions on every test image, hence exactly the same accuracy. Training moves the
    stitch (lr must be > 0), so the init is evaluated from the cell's pickle, as eval_stitch.py ... before does."""
    argv = [RECEIVER, RECEIVER, "--front-layers", "bn8", "--end-layers", "bn8", "-i", "eye", *QUICK,
            "-o", str(fashion_results), "--run-name", "self"]
    run_matrix(stitch_matrix.parse_args(argv), ["stitch_matrix.py", *argv], progress=False)
    cell = fashion_results / "self" / "cells" / "bn8--bn8.pkl"
    before = load_result(cell)["trans_m"]["before"]
    assert np.array_equal(before["w"][:, :, 0, 0], np.eye(64)) and not before["b"].any()
    init = evaluate_stitch(cell, "before", max_samples=2000, device="cpu")
    assert init["n"] == 2000 and init["acc"] == init["end_acc"] and init["same_class_out"] == 1.0


# --- controls and the picture -------------------------------------------------------------------------------

def test_random_controls_are_the_iteration_0_checkpoint_or_a_seeded_fresh_network(tmp_path):
    from src.models.checkpoint import load_checkpoint
    from src.matrix.plan import Plan, random_checkpoint
    from src.matrix.run import _write_random_networks
    from src.stitching.job import StitchJob

    assert random_checkpoint(SENDER, "front", tmp_path, 7)["checkpoint"] == str(TINY / "in0-gn0" / "0.pt")
    lonely = tmp_path / "lonely" / "final.pt"
    lonely.parent.mkdir()
    lonely.write_bytes((TINY / "in0-gn0" / "8580.pt").read_bytes())
    control = random_checkpoint(str(lonely), "front", tmp_path / "run", 7)
    assert control["seed"] == 7 and control["checkpoint"] == str(tmp_path / "run" / "controls" / "random_front.pt")
    _, meta = load_checkpoint(str(lonely))
    plan = Plan(tmp_path / "run", [], [], {}, {"random_front": control}, [], StitchJob(str(lonely), str(lonely)))
    pair = type("P", (), {"front_meta": meta, "end_meta": meta, "info": None})()
    _write_random_networks(plan, pair)
    model, saved = load_checkpoint(control["checkpoint"])
    fresh = create_model("tiny10", n_classes=10, n_channels=1, seed=7)
    assert saved["init_seed"] == 7 and saved["random_control"] is True
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), fresh.state_dict().values()))


def test_depth_axes_place_cells_at_proportional_depth_with_the_diagonal(tmp_path):
    from matplotlib.figure import Figure

    from src.matrix.plot import draw_matrix

    frame = pd.DataFrame(np.arange(15.0).reshape(3, 5), index=list("abc"), columns=list("vwxyz"))
    ax = Figure().add_subplot()
    draw_matrix(ax, frame, "t", depth_axes=True, vmin=None, vmax=None)
    assert np.allclose(ax.get_xticks(), [0, 0.25, 0.5, 0.75, 1]) and np.allclose(ax.get_yticks(), [0, 0.5, 1])
    (line,) = ax.get_lines()
    assert np.allclose(line.get_xydata(), [[0, 0], [1, 1]])
    mesh = ax.collections[0]
    assert np.array_equal(np.asarray(mesh.get_array()).reshape(3, 5), frame.to_numpy())
