"""eval_stitch.py and compare_frank_m2.py refuse a result whose saved stitch holds NaN or infinity, or a weight
of the wrong shape, in one line naming the result file and the weight (they used to report 'loss nan' and exit
0, or end in a torch traceback), as the scripts that load checkpoints refuse non-finite weights."""
import copy

import numpy as np
import pytest

import compare_frank_m2
import eval_stitch
import stitch_nets
from src.cli import run_main
from src.errors import UserError
from src.results_io import write_pickle
from src.stitching.evaluate_result import compare_stitch_to_end, evaluate_stitch
from src.stitching.results import load_result
from tests.conftest import FASHION_DIR, REPO
from tests.script_helpers import assert_one_line_error

LENET = REPO / "model_weights" / "LeNet" / "FashionMNIST"


@pytest.fixture(scope="module")
def stitched(tmp_path_factory):
    """A real result of stitch_nets.py at a tiny budget: LeNet relu1 -> relu2 on 300 Fashion-MNIST images."""
    if not (FASHION_DIR / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip("Fashion-MNIST (Debian package dataset-fashion-mnist) is not installed")
    out = tmp_path_factory.mktemp("stitch")
    argv = [str(LENET / "in0-gn0" / "8580.pt"), str(LENET / "in1-gn1" / "8580.pt"), "relu1", "relu2", "-d", "fashion",
            "-e", "1", "--max-samples", "300", "--measure-samples", "100", "-o", str(out), "--run-name", "r"]
    assert run_main(stitch_nets.main, argv) == 0
    return load_result(out / "r" / "relu1-relu2.pkl")


def _variant(result, tmp_path, change, name="R.pkl"):
    changed = copy.deepcopy(result)
    change(changed["trans_m"])
    return write_pickle(tmp_path / name, changed)


def _set(weights, key, index, value):
    def change(trans_m):
        trans_m[weights][key][index] = value
    return change


@pytest.mark.slow
@pytest.mark.parametrize("weights,key,index,value", [
    ("after", "w", (0, 0, 0, 0), np.nan),
    ("after", "b", (3,), np.inf),
    ("ps_inv", "w", (2, 1, 0, 0), -np.inf),
])
def test_non_finite_stitch_weights_are_refused_naming_the_file_and_the_weight(stitched, tmp_path, capsys,
                                                                               weights, key, index, value):
    path = _variant(stitched, tmp_path, _set(weights, key, index, value))
    size = stitched["trans_m"][weights][key].size
    expected = (f"the stitch weights in {path} are not finite: tensor '{weights}.{key}' holds 1 NaN or infinite "
                f"value(s) of {size}")
    assert run_main(eval_stitch.main, [str(path), weights]) == 2
    assert_one_line_error(capsys.readouterr().err, expected)
    assert run_main(compare_frank_m2.main, [str(path), weights, "cka", "--max-samples", "100"]) == 2
    assert_one_line_error(capsys.readouterr().err, expected)
    with pytest.raises(UserError, match="are not finite"):
        evaluate_stitch(path, weights)


@pytest.mark.slow
def test_only_the_stitch_used_is_checked(stitched, tmp_path):
    """A NaN in the 'before' stitch does not stop evaluating the trained one."""
    path = _variant(stitched, tmp_path, _set("before", "w", (0, 0, 0, 0), np.nan))
    assert evaluate_stitch(path, "after", max_samples=100)["acc"] == pytest.approx(
        evaluate_stitch(_variant(stitched, tmp_path, lambda t: None, "clean.pkl"), "after", max_samples=100)["acc"])


@pytest.mark.slow
def test_a_stitch_weight_of_the_wrong_shape_is_one_line(stitched, tmp_path, capsys):
    def wrong_shape(trans_m):
        trans_m["after"]["w"] = np.ones((3, 3), np.float32)
    path = _variant(stitched, tmp_path, wrong_shape)
    expected = (f"the 'after' stitch in {path} does not fit the stitch rebuilt from its networks and layers "
                f"('after.w' of shape (3, 3): shape '[16, 6]' is invalid for input of size 9)")
    assert run_main(eval_stitch.main, [str(path), "after"]) == 2
    assert_one_line_error(capsys.readouterr().err, expected)
    assert run_main(compare_frank_m2.main, [str(path), "after", "cka", "--max-samples", "100"]) == 2
    assert_one_line_error(capsys.readouterr().err, expected)
    with pytest.raises(UserError, match="does not fit the stitch rebuilt"):
        compare_stitch_to_end(path, "after", ["cka"], max_samples=100)


def test_non_finite_stitch_is_refused_before_any_network_is_loaded(tmp_path):
    """The check needs nothing but the result: no checkpoint, no data."""
    result = {"params": {"front_model": "missing.pt", "end_model": "missing.pt", "dataset": "fashion"},
              "model_results": {}, "trans_m": {"after": {"w": np.array([[1.0, np.nan]]), "b": np.zeros(1)},
                                                "mask": {"w": np.array([[1.0, np.inf]])}}}
    path = write_pickle(tmp_path / "R.pkl", result)
    with pytest.raises(UserError, match=r"not finite: tensor 'after\.w' holds 1 NaN"):
        evaluate_stitch(path, "after")
    result["trans_m"]["after"]["w"] = np.ones((1, 2))
    path = write_pickle(tmp_path / "R.pkl", result)
    with pytest.raises(UserError, match=r"not finite: tensor 'mask\.w' holds 1 NaN"):
        evaluate_stitch(path, "after")
    result["trans_m"]["after"]["w"] = np.array(["a", "b"], dtype=object)
    path = write_pickle(tmp_path / "R.pkl", result)
    with pytest.raises(UserError, match=r"the stitch weight 'after\.w' in .*R\.pkl is not an array of numbers"):
        evaluate_stitch(path, "after")
