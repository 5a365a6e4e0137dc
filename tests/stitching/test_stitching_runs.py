"""stitch_nets.py end to end on a tiny fake MNIST: every option runs, the pickle is complete and rebuildable."""
import pickle
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import stitch_nets
from src.errors import UserError
from src.results_io import write_pickle
from src.stitching.evaluate_result import compare_stitch_to_end, evaluate_stitch
from src.stitching.results import load_result, load_summaries
from src.stitching.run import stitch_from_args
from tests.conftest import REPO
from tests.script_helpers import random_checkpoint

REFERENCE_KEYS = {"params", "model_results", "trans_m", "trans_history", "trans_fit", "cka", "cka_frank",
                  "cka_ps_inv", "l2", "l2_frank", "l2_ps_inv", "hits", "m2_sim", "git", "runner_code"}


@pytest.fixture
def nets(tmp_path, fake_mnist):
    return {f"tiny{s}": str(random_checkpoint(tmp_path / f"tiny{s}.pt", "tiny10", s)) for s in (0, 1)} | \
           {"lenet": str(random_checkpoint(tmp_path / "lenet.pt", "lenet", 5)),
            "wide": str(random_checkpoint(tmp_path / "wide.pt", "resnet20_w2", 6)),
            "narrow": str(random_checkpoint(tmp_path / "narrow.pt", "resnet20_w1", 7))}


def stitch(nets, tmp_path, front="tiny0", end="tiny1", layers=("bn3", "bn3"), *extra, run="r"):
    argv = [nets[front], nets[end], *layers, "-e", "1", "-b", "32", "--val-size", "40", "--measure-samples", "50",
            "-o", str(tmp_path / "res"), "--run-name", run, *extra]
    return stitch_from_args(stitch_nets.parse_args(argv), ["stitch_nets.py", *argv])


@pytest.mark.slow
def test_result_pickle_has_the_reference_keys_and_plain_values(nets, tmp_path):
    path = stitch(nets, tmp_path, "tiny0", "tiny1", ("bn3", "bn3"), "-i", "ps_inv", "-s", "1")
    assert path == tmp_path / "res" / "r" / "bn3-bn3.pkl"
    result = load_result(path)
    assert REFERENCE_KEYS <= set(result)
    for model in ("front", "end", "trans", "ps_inv"):
        assert set(result["model_results"][model]) == {"loss", "acc"} and 0 <= result["model_results"][model]["acc"] <= 1
    tm = result["trans_m"]
    assert tm["after"]["w"].shape == (32, 32, 1, 1) and tm["ps_inv"]["b"].shape == (32,)
    assert np.allclose(tm["diff"]["w"], tm["after"]["w"] - tm["before"]["w"])
    assert np.allclose(tm["before"]["w"], tm["ps_inv"]["w"], atol=1e-6)  # ps_inv init starts at least squares
    iterations = 260 // 32
    assert sorted(result["trans_history"]) == list(range(iterations + 1))
    assert isinstance(result["trans_fit"], pd.DataFrame) and list(result["trans_fit"]["epoch"]) == [1]
    hits = result["hits"]["m2_frank"]
    assert sum(hits.values()) == 60 and hits["rr"] + hits["rw"] == round(60 * result["model_results"]["end"]["acc"])
    assert result["relative_acc"]["trans"] == pytest.approx(
        result["model_results"]["trans"]["acc"] / result["model_results"]["end"]["acc"])
    assert result["runner_code"].startswith("python stitch_nets.py") and "commit" in result["git"]
    assert result["params"]["init"] == "ps_inv" and result["params"]["front_layer"] == "bn3"
    # Plain objects only: the pickle loads where this package cannot be imported (it is installed in
    # editable mode, so leaving the repository off sys.path is not enough; None in sys.modules blocks it).
    code = f"import pickle, sys; sys.modules['src'] = None; pickle.load(open({str(path)!r}, 'rb'))"
    env = {k: v for k, v in __import__("os").environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", code], cwd="/", capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    row = pd.read_csv(path.with_suffix(".csv")).loc[0]
    assert row["trans_acc"] == pytest.approx(result["model_results"]["trans"]["acc"])
    # the row says how the stitch was made, not only what it scored
    assert (row["stitch_kind"], row["schedule"], row["seed"]) == (result["stitch"]["kind"], result["params"]["schedule"],
                                                                  result["params"]["seed"])
    assert len(load_summaries(tmp_path / "res")) == 1


@pytest.mark.slow
def test_pickle_round_trips_through_eval_stitch(nets, tmp_path):
    path = stitch(nets, tmp_path, "tiny0", "tiny1", ("bn3", "bn3"), "-r", "5", "-m", "semi-match", "-i", "ps_inv")
    result = load_result(path)
    assert result["stitch"]["rank"] == 5 and result["trans_m"]["after"]["w1"].shape == (32, 5)
    for mode, key in (("after", "trans"), ("ps_inv", "ps_inv")):
        again = evaluate_stitch(path, mode)
        assert again["acc"] == pytest.approx(result["model_results"][key]["acc"])
        assert again["loss"] == pytest.approx(result["model_results"][key]["loss"], rel=1e-5)
    before = evaluate_stitch(path, "before")
    assert before["n"] == 60
    measured = compare_stitch_to_end(path, "after", ["cka", "l2"], max_samples=50)
    assert measured["results"]["cka"] == pytest.approx(result["cka_frank"], abs=1e-6)
    done = subprocess.run([sys.executable, "eval_stitch.py", str(path), "after", "--json"], cwd=REPO,
                          capture_output=True, text=True)
    assert done.returncode == 0 and '"weights": "after"' in done.stdout


@pytest.mark.parametrize("layers,options,kind", [
    (("bn6", "bn7"), ["-r", "3"], "strided_conv"),  # 64x4x4 -> 64x2x2
    (("bn7", "bn6"), ["-m", "semi-match"], "upsample_conv1x1"),  # 64x2x2 -> 64x4x4
    (("bn3", "bn5"), ["--schedule", "cosine", "--warmup-epochs", "0.5"], "resample_conv1x1"),  # 13x13 -> 9x9
    (("bn5", "pool"), ["--pool"], "pool_linear"),  # 32x9x9 -> 64
    (("pool", "bn7"), [], "flatten"),  # 64 -> 64x2x2: linear + reshape
])
def test_every_stitch_kind_runs_end_to_end_and_rebuilds_from_its_pickle(nets, tmp_path, layers, options, kind):
    path = stitch(nets, tmp_path, "tiny0", "tiny1", layers, "-i", "ps_inv", *options)
    result = load_result(path)
    assert result["stitch"]["kind"] == kind and kind in result["stitch"]["description"]
    for mode, key in (("after", "trans"), ("ps_inv", "ps_inv")):
        again = evaluate_stitch(path, mode)
        assert again["acc"] == pytest.approx(result["model_results"][key]["acc"])
        assert again["loss"] == pytest.approx(result["model_results"][key]["loss"], rel=1e-5)


def test_results_written_before_the_stitch_kinds_still_rebuild(nets, tmp_path):
    path = stitch(nets, tmp_path, "tiny0", "tiny1", ("relu4", "relu4"), "-i", "ps_inv")
    result = load_result(path)
    new_params = ("pool", "schedule", "warmup_epochs", "preset")
    for old_stitch in ({"mode": "conv1x1"}, None):  # the first format recorded the mode; older dicts may lack it
        old = {k: v for k, v in result.items() if k != "stitch"}
        old["params"] = {k: v for k, v in result["params"].items() if k not in new_params}
        if old_stitch is not None:
            old["stitch"] = old_stitch
        old_path = write_pickle(tmp_path / "old.pkl", old)
        assert evaluate_stitch(old_path, "after")["acc"] == pytest.approx(result["model_results"]["trans"]["acc"])


@pytest.mark.parametrize("options", [
    ["-i", "random"], ["-i", "perm"], ["-i", "eye"], ["-i", "ones-zeros"], ["-i", "ps_inv"],
    ["-m", "semi-match"], ["-m", "abs-semi-match"], ["-m", "random-permutation", "-i", "eye"],
    ["--target-type", "soft_1"], ["--target-type", "soft_2"], ["--target-type", "soft_12", "--temperature", "2"],
    ["--target-type", "soft_1_plus_2"], ["-r", "4", "-i", "perm"], ["--l1", "0.01"], ["--cka-reg", "0.5"],
    ["--cache-front", "--target-type", "soft_12", "--cka-reg", "-0.1"], ["--cache-front", "--fold-bn", "-i", "ps_inv"],
    ["--optimizer", "sgd", "-lr", "0.01", "-wd", "1e-4"],
])
def test_every_option_runs_end_to_end(nets, tmp_path, options):
    result = load_result(stitch(nets, tmp_path, "tiny0", "tiny1", ("relu4", "relu4"), *options))
    assert np.isfinite(result["model_results"]["trans"]["loss"])
    if "-m" in options:
        mask = result["trans_m"]["mask"]["w"]
        assert mask.shape == (32, 32) and (mask.sum(1) == 1).all()
        assert (result["trans_m"]["after"]["w"][:, :, 0, 0][mask == 0] == 0).all()
        if "random-permutation" in options:
            assert (mask.sum(0) == 1).all()


def test_cross_architecture_and_width_stitch(nets, tmp_path):
    result = load_result(stitch(nets, tmp_path, "narrow", "wide", ("layer2.0", "layer2.0"), "-i", "ps_inv"))
    assert result["shapes"] == {"front": [32, 16, 16], "end": [64, 16, 16]} and result["l2"] is None
    result = load_result(stitch(nets, tmp_path, "lenet", "tiny1", ("relu3", "relu8"), "-f", "-i", "ps_inv", run="x"))
    assert result["stitch"]["kind"] == "flatten" and result["trans_m"]["after"]["w"].shape == (256, 120)


def test_cached_front_activations_train_like_the_live_network(nets, tmp_path):
    live = load_result(stitch(nets, tmp_path, "tiny0", "tiny1", ("bn3", "bn3"), "--no-augment", "-i", "eye", run="live"))
    cached = load_result(stitch(nets, tmp_path, "tiny0", "tiny1", ("bn3", "bn3"), "--cache-front", "-i", "eye", run="cached"))
    assert cached["params"]["augment"] is False and cached["stitch"]["training_data"] == "cached front activations"
    # Same seed, same samples per batch? The two draw batch orders from the same seeded generator.
    assert np.allclose(live["trans_m"]["after"]["w"], cached["trans_m"]["after"]["w"], atol=1e-4)


def test_existing_results_are_kept_unless_overwrite(nets, tmp_path):
    path = stitch(nets, tmp_path)
    stamp = path.stat().st_mtime_ns
    with pytest.raises(UserError, match="already exists; pass --overwrite"):
        stitch(nets, tmp_path)
    assert path.stat().st_mtime_ns == stamp
    stitch(nets, tmp_path, "tiny0", "tiny1", ("bn3", "bn3"), "--overwrite")
    assert not list(path.parent.glob(".*.tmp"))


@pytest.mark.slow
@pytest.mark.parametrize("args,message", [
    (["tiny0", "tiny1", "bn9", "bn3"], "layer 'bn9' does not exist in Tiny10; valid layers"),
    (["tiny0", "tiny1", "bn6", "bn7", "-i", "eye"], "--init eye is not defined for a strided_conv: 64x4x4 -> 64x2x2"),
    (["tiny0", "lenet", "bn3", "fc1", "--flatten", "--pool"], "--flatten and --pool exclude each other"),
    (["narrow", "wide", "layer1.0", "layer1.0", "-i", "eye"], "needs equal widths"),
])
def test_bad_input_from_the_shell_is_one_line(nets, tmp_path, args, message):
    argv = [nets.get(a, a) for a in args] + ["-o", str(tmp_path / "res"), "--run-name", "bad", "-e", "1", "--val-size", "40"]
    done = subprocess.run([sys.executable, "stitch_nets.py", *argv], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 2 and message in done.stderr and done.stderr.count("\n") == 1
    assert not (tmp_path / "res" / "bad").exists() or not list((tmp_path / "res" / "bad").glob("*.pkl"))


def test_corrupt_result_pickle_is_a_clear_error(tmp_path):
    bad = tmp_path / "broken.pkl"
    bad.write_bytes(pickle.dumps({"x": 1})[:5])
    with pytest.raises(UserError, match="not a readable result pickle"):
        load_result(bad)
    (tmp_path / "other.pkl").write_bytes(pickle.dumps({"x": 1}))
    with pytest.raises(UserError, match="not a stitching result"):
        load_result(tmp_path / "other.pkl")
