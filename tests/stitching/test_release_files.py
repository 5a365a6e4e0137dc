"""Files written by an earlier release (tests/fixtures/release_0, made before the package layout and the names
changed) still load, rebuild and evaluate to the numbers they recorded."""
import json
import shutil

import pytest

import eval_stitch
from src.errors import UserError
from src.matrix import load_matrix
from src.matrix.runinfo import read_run_info
from src.stitching.rebuild import recorded_kind
from src.stitching.results import load_result
from tests.conftest import REPO

RELEASE = REPO / "tests" / "fixtures" / "release_0"
FRONT = REPO / "model_weights" / "LeNet" / "FashionMNIST" / "in0-gn0" / "8580.pt"
END = REPO / "model_weights" / "LeNet" / "FashionMNIST" / "in1-gn1" / "8580.pt"


def test_a_release_stitch_result_loads_with_its_kind_under_the_old_key():
    result = load_result(RELEASE / "stitch_relu1-relu2.pkl")
    assert result["stitch"]["mode"] == "resample_conv1x1"  # the file is as that release wrote it
    assert recorded_kind(result) == "resample_conv1x1"


def test_eval_stitch_rebuilds_a_release_result_and_reproduces_its_recorded_accuracy(fashion_available, capsys):
    result = load_result(RELEASE / "stitch_relu1-relu2.pkl")
    n = result["params"]["max_samples"]
    for weights, key in (("after", "trans"), ("ps_inv", "ps_inv")):
        eval_stitch.main([str(RELEASE / "stitch_relu1-relu2.pkl"), weights, "--json", "--max-samples", str(n),
                          "--front-model", str(FRONT), "--end-model", str(END)])
        printed = json.loads(capsys.readouterr().out)
        # the same network on the same n test images: the same count of correct answers
        assert round(printed["acc"] * n) == round(result["model_results"][key]["acc"] * n), weights


def test_a_release_matrix_loads_with_todays_names():
    summary = load_matrix(RELEASE / "matrix" / "matrix.pkl")
    assert summary["front_layers"] == ["relu1", "relu2"] and summary["end_layers"] == ["relu2"]
    assert set(summary["models"]) == {"front", "end"} and set(summary["labels"]) == {"front", "end"}
    assert summary["matrix"].index.name == "front layer" and list(summary["matrix"].columns) == ["relu2"]
    assert "front_patterns" in summary["params"] and "sender_patterns" not in summary["params"]
    cells = {name: load_result(RELEASE / "matrix" / "cells" / f"{name}.pkl") for name in ("relu1--relu2", "relu2--relu2")}
    for name, cell in cells.items():  # the table holds the cells' accuracies, as written
        front_layer = name.split("--")[0]
        assert summary["matrix"].loc[front_layer, "relu2"] == cell["model_results"]["trans"]["acc"]


def test_a_release_run_description_reads_with_todays_names(tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(RELEASE / "matrix", folder)
    parameters = read_run_info(folder)["parameters"]
    assert parameters["front_layers"] == ["relu1", "relu2"] and parameters["end_layers"] == ["relu2"]
    assert parameters["front"].endswith("in0-gn0/8580.pt") and "sender" not in parameters


def test_a_run_description_without_parameters_is_one_line(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "run.json").write_text(json.dumps({"format": "drfrank-stitch-matrix-run", "version": 1}))
    with pytest.raises(UserError, match="holds no run parameters"):
        read_run_info(folder)
