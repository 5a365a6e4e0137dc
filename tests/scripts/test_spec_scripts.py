"""Every script that takes a checkpoint also takes a model spec with its weights file: a user's own constructor
(MODULE:FUNCTION) trained on a generated image folder, through the scripts' main() as a shell would call them."""
import json

import pytest
import torch
from torch import nn

import compare_layers
import compare_nets
import eval_net
import eval_stitch
import layer_info
import stitch_matrix
import stitch_nets
from src.cli import run_main
from src.data import get_loader
from src.matrix import load_matrix
from src.stitching.results import load_result
from tests.conftest import REPO
from tests.data_fixtures import make_image_folder

SPEC = "user_models:tiny_cnn"


def _train(model, name, seed):
    torch.manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(4):
        for x, y in get_loader(name, "train", 32, seed=seed, val_size=0, augment=False):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model.train()(x), y).backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        return float(torch.cat([(model(x).argmax(1) == y).float() for x, y in get_loader(name, "test", 100)]).mean())


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Two tiny CNNs trained on a 3-class folder; their weights as a plain state_dict and as {'state_dict': ...}."""
    import sys

    sys.path.insert(0, str(REPO / "tests" / "fixtures"))  # MODULE:FUNCTION specs import user_models from the path
    from user_models import tiny_cnn

    tmp = tmp_path_factory.mktemp("specs")
    name = f"imagefolder:{make_image_folder(tmp / 'images', classes=3, train=40, test=20)}"
    weights, accuracies = [], []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = tiny_cnn(num_classes=3, in_chans=3)
        accuracies.append(_train(model, name, seed))
        path = tmp / f"net{seed}.pt"
        torch.save(model.state_dict() if seed == 0 else {"state_dict": model.state_dict(), "epoch": 4}, path)
        weights.append(str(path))
    yield name, weights, accuracies, tmp
    sys.path.remove(str(REPO / "tests" / "fixtures"))


def test_stitch_nets_then_eval_stitch_rebuild_a_spec_pair(setup, capsys):
    name, (w0, w1), _, tmp = setup
    argv = [SPEC, SPEC, "2", "2", "-d", name, "--front-weights", w0, "--end-weights", w1, "-e", "3", "-b", "16",
            "-lr", "0.01", "-o", str(tmp / "out"), "--run-name", "pair"]
    assert run_main(stitch_nets.main, argv) == 0
    path = tmp / "out" / "pair" / "2-2.pkl"
    result = load_result(path)
    assert result["model_results"]["trans"]["acc"] > 0.7  # 3 classes: chance is 1/3
    assert result["params"]["front_weights"] == w0 and len(result["params"]["front_model_sha256"]) == 64
    capsys.readouterr()
    assert run_main(eval_stitch.main, [str(path), "after", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["acc"] == pytest.approx(result["model_results"]["trans"]["acc"])
    # a weights file that changed since is refused, as a changed checkpoint is
    other = tmp / "other.pt"
    torch.save({k: v + 1 for k, v in torch.load(w0, weights_only=True).items()}, other)
    assert run_main(eval_stitch.main, [str(path), "after", "--front-weights", str(other)]) == 2
    assert "is not the one the stitch was trained with" in capsys.readouterr().err


def test_eval_net_and_layer_info_take_a_spec_with_weights(setup, capsys):
    name, (w0, _), (acc0, _), _ = setup
    assert run_main(eval_net.main, [SPEC, "--weights", w0, "-d", name, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["acc"] == pytest.approx(acc0)
    assert run_main(layer_info.main, [SPEC, "--weights", w0, "-d", name]) == 0
    out = capsys.readouterr().out
    assert "user_models:tiny_cnn" in out and "Conv2d" in out and "3 classes" in out


def test_compare_nets_and_compare_layers_take_specs(setup, capsys, tmp_path):
    name, (w0, w1), _, _ = setup
    assert run_main(compare_nets.main, [SPEC, SPEC, "2", "2", name, "cka", "--weights1", w0, "--weights2", w0]) == 0
    assert capsys.readouterr().out.split()[-2:] == ["cka", "1.000000"]  # the same network against itself
    assert run_main(compare_layers.main, [SPEC, SPEC, "-d", name, "--layers1", "2", "4", "--layers2", "2", "4",
                                          "--weights1", w0, "--weights2", w1, "-o", str(tmp_path / "c")]) == 0
    assert (tmp_path / "c" / "matrix.csv").is_file()


def test_stitch_matrix_of_a_spec_pair_with_controls_resumes_and_collects(setup, capsys):
    name, (w0, w1), _, tmp = setup
    argv = [SPEC, SPEC, "--front-layers", "2", "4", "--end-layers", "2", "4", "-d", name, "--front-weights", w0,
            "--end-weights", w1, "-e", "1", "-b", "16", "--controls", "--measure-samples", "30",
            "-o", str(tmp / "out"), "--run-name", "matrix"]
    assert run_main(stitch_matrix.main, argv) == 0
    run = tmp / "out" / "matrix"
    first = load_matrix(run / "matrix.pkl")
    assert (run / "controls" / "random_front.pt").is_file() and (run / "controls" / "random_end.pt").is_file()
    assert first["tables"]["matrix"].shape == (2, 2) and "matrix_control_random_front" in first["tables"]
    capsys.readouterr()
    assert run_main(stitch_matrix.main, [*argv, "--resume"]) == 0  # every cell finished: kept, not rerun
    assert capsys.readouterr().out.count("2 finished cell(s) kept") == 6  # 3 variants x 2 front layers, none rerun
    assert run_main(stitch_matrix.main, ["--collect", str(run)]) == 0
    again = load_matrix(run / "matrix.pkl")
    assert again["tables"]["matrix"].equals(first["tables"]["matrix"])


@pytest.mark.parametrize("argv,message", [
    ([SPEC, "--weights", "missing.pt", "-d", "cifar10"], "missing.pt"),
    (["model_weights/LeNet/FashionMNIST/in0-gn0/8580.pt", "--weights", "x.pt"], "--weights is for a model spec"),
    (["torchvision:resnet99", "-d", "cifar10"], "unknown torchvision model 'resnet99'"),
])
def test_bad_specs_and_weights_are_one_line(setup, capsys, argv, message):
    assert run_main(layer_info.main, argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err


def test_objective_both_images_and_shards_work_on_a_spec_pair(setup, capsys):
    """--objective both (EV / ES / SV) and stitching into the input, run as two shards and collected: the tables
    equal one process's."""
    name, (w0, w1), _, tmp = setup
    common = [SPEC, SPEC, "--front-layers", "2", "4", "--end-layers", "input", "4", "-d", name, "--front-weights", w0,
              "--end-weights", w1, "-e", "1", "-b", "16", "--objective", "both", "--measure-samples", "30",
              "-o", str(tmp / "both")]
    assert run_main(stitch_matrix.main, [*common, "--run-name", "whole"]) == 0
    for shard in ("1/2", "2/2"):
        assert run_main(stitch_matrix.main, [*common, "--run-name", "sharded", "--shard", shard]) == 0
    assert run_main(stitch_matrix.main, ["--collect", str(tmp / "both" / "sharded")]) == 0
    whole, sharded = (load_matrix(tmp / "both" / run / "matrix.pkl") for run in ("whole", "sharded"))
    assert whole["tables"]["matrix"].equals(sharded["tables"]["matrix"])
    assert whole["tables"]["matrix_mse"].equals(sharded["tables"]["matrix_mse"])
    assert whole["evess"].equals(sharded["evess"]) and (tmp / "both" / "whole" / "images.png").is_file()
    assert set(whole["images"]) == {"2", "4"}
