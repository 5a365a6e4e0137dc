"""Every script that takes a dataset, on ``imagefolder:DIR``: the user's own images from train to comparison.

Two Tiny10s are trained once per module on a generated folder (3 easy classes, 30 train / 10 test
32x32 PNGs per class, :func:`tests.data_fixtures.make_image_folder`); the scripts' ``main`` runs
in-process through :func:`src.cli.run_main` (the shell's code path without a fresh interpreter),
one case through a real subprocess. Bad folders and options are one ``error:`` line, exit code 2,
and nothing written.
"""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

import compare_layers
import compare_nets
import eval_net
import layer_info
import stitch_nets
import train_model
from src.cli import run_main
from src.data.options import default_val_size
from src.data import dataset_info, describe_dataset
from src.models import create_model
from src.models.checkpoint import read_checkpoint, save_checkpoint
from tests.conftest import REPO
from tests.data_fixtures import make_image_folder
from tests.script_helpers import assert_one_line_error

pytestmark = pytest.mark.usefixtures("one_thread")

TRAIN = ["-m", "tiny10", "-e", "3", "-b", "16"]


def call(script, *args):
    """Exit code of ``script``'s main run like from a shell (UserErrors become exit code 2)."""
    return run_main(script.main, [str(a) for a in args])


def listing(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The image folder, its dataset name, and two trained Tiny10 checkpoints (seeds 0 and 1); outputs in tmp."""
    tmp = tmp_path_factory.mktemp("imagefolder_scripts")
    with pytest.MonkeyPatch.context() as patch:
        for key, folder in (("RESULTS_DIR", "results"), ("SNAPSHOTS_DIR", "snapshots"), ("DATASET_ROOT", "none")):
            patch.setenv(key, str(tmp / folder))
        patch.setenv("DEVICE", "cpu")
        root = make_image_folder(tmp / "images", classes=3, train=30, test=10, size=32)
        name = f"imagefolder:{root}"
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            for seed in (0, 1):
                assert call(train_model, *TRAIN, "-d", name, "-i", str(seed), "-g", str(seed)) == 0
        finally:
            torch.set_num_threads(threads)
        runs = tmp / "snapshots" / "Tiny10" / dataset_info(name).display_name
        yield {"tmp": tmp, "root": root, "name": name, "ckpts": [runs / f"in{s}-gn{s}" / "15.pt" for s in (0, 1)]}


@pytest.fixture
def env(world, monkeypatch):
    for key, folder in (("RESULTS_DIR", "results"), ("SNAPSHOTS_DIR", "snapshots"), ("DATASET_ROOT", "none")):
        monkeypatch.setenv(key, str(world["tmp"] / folder))
    monkeypatch.setenv("DEVICE", "cpu")
    return world


def lenet_checkpoint(path, name):
    """An untrained LeNet recorded as trained on ``name``: it takes only 32x32 images (flatten + linear)."""
    info = dataset_info(name)
    model = create_model("lenet", n_classes=info.n_classes, n_channels=info.n_channels, seed=0)
    meta = {"model": "lenet", "dataset": info.name, "n_channels": info.n_channels, "n_classes": info.n_classes,
            "input_size": list(info.input_size)}
    return save_checkpoint(path, model, meta)


# --- train_model.py ---------------------------------------------------------------------------------


def test_training_learns_the_folder_and_records_it(env):
    state, meta = read_checkpoint(env["ckpts"][0])
    canonical = dataset_info(env["name"]).name
    assert meta["dataset"] == canonical == f"imagefolder:{env['root'].resolve()}?size=32"
    assert meta["n_classes"] == 3 and meta["n_channels"] == 3 and meta["input_size"] == [32, 32]
    assert meta["val_size"] == 9  # a tenth of the 90 training images, not 5000
    described = meta["dataset_description"]
    assert described == describe_dataset(env["name"])
    assert described["path"] == str(env["root"].resolve()) and described["files_digest"].startswith("sha256:")
    assert described["samples"] == {"train": 90, "test": 30} and described["classes"] == ["class_00", "class_01",
                                                                                          "class_02"]
    assert meta["provenance"]["args"]["val_size"] == 9
    log = pd.read_csv(env["ckpts"][0].parent / "training_log.csv")
    assert len(log) == 3


def test_default_val_size():
    assert default_val_size("mnist") == default_val_size("cifar10") == 5000


def test_default_val_size_of_folders(tmp_path):
    small = make_image_folder(tmp_path / "small", classes=2, train=4, test=2, size=8)
    assert default_val_size(f"imagefolder:{small}") == 1  # at least one image
    with_val = make_image_folder(tmp_path / "val", classes=2, train=6, test=2, val=3, size=8)
    assert default_val_size(f"imagefolder:{with_val}") == 6  # DIR/val is the 'val' split


def test_builtin_datasets_keep_their_default_and_metadata(tmp_path, fake_mnist, capsys):
    out = tmp_path / "snap"
    base = ["-m", "lenet", "-d", "mnist", "-e", "1", "-b", "50", "-o", str(out)]
    assert call(train_model, *base) == 2  # the fake MNIST's 300 images cannot hold out the default 5000
    assert_one_line_error(capsys.readouterr().err, "got 5000")
    assert call(train_model, *base, "--val-size", "50") == 0
    _, meta = read_checkpoint(out / "LeNet" / "MNIST" / "in0-gn0" / "5.pt")
    assert "dataset_description" not in meta and meta["dataset"] == "mnist" and meta["val_size"] == 50


# --- eval_net.py and layer_info.py ------------------------------------------------------------------


def test_eval_net_on_the_folder(env, capsys):
    assert call(eval_net, env["ckpts"][0], "--json") == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n"] == 30 and result["split"] == "test" and result["acc"] > 0.6  # chance is 1/3
    assert result["dataset"] == result["trained_on"] == dataset_info(env["name"]).name
    assert result["dataset_description"]["files_digest"] == describe_dataset(env["name"])["files_digest"]
    assert call(eval_net, env["ckpts"][0], "--split", "val", "--json") == 0
    result = json.loads(capsys.readouterr().out)
    assert result["val_size"] == 9 and result["n"] == 9


def test_layer_info_of_the_checkpoint(env, capsys):
    assert call(layer_info, env["ckpts"][0]) == 0
    out = capsys.readouterr().out
    assert "input 3x32x32" in out and "16x30x30" in out and "fc" in out
    assert call(layer_info, "lenet", "-d", env["name"]) == 0
    assert "3x32x32" in capsys.readouterr().out


def test_another_size_where_the_model_cannot_take_it(env, tmp_path, capsys):
    big = make_image_folder(tmp_path / "big", classes=3, train=10, test=4, size=48, seed=1)
    lenet = lenet_checkpoint(tmp_path / "lenet.pt", env["name"])
    for script, args in ((eval_net, [str(lenet), "-d", f"imagefolder:{big}"]),
                         (layer_info, [str(lenet), "-d", f"imagefolder:{big}"])):
        assert call(script, *args) == 2
        err = capsys.readouterr().err
        assert_one_line_error(err, "was trained on 32x32 images")
        assert "cannot take the 48x48 images" in err and "--image-size 32" in err
    # resized to the model's size, the same folder is fine
    assert call(eval_net, str(lenet), "-d", f"imagefolder:{big}", "--image-size", "32", "--json") == 0
    assert json.loads(capsys.readouterr().out)["n"] == 12
    # Tiny10 pools globally: it takes 48x48 images for evaluation, but comparisons keep the trained size
    assert call(eval_net, env["ckpts"][0], "-d", f"imagefolder:{big}", "--json") == 0
    assert json.loads(capsys.readouterr().out)["n"] == 12
    assert call(compare_nets, *env["ckpts"], "relu8", "relu8", f"imagefolder:{big}", "cka") == 2
    err = capsys.readouterr().err
    assert_one_line_error(err, "model 1 was built for 3-channel 32x32 images")
    assert "--image-size 32" in err


# --- compare_nets.py and compare_layers.py ----------------------------------------------------------


def test_compare_nets_on_the_folder(env, tmp_path, capsys):
    out = tmp_path / "cmp.json"
    assert call(compare_nets, *env["ckpts"], "relu8", "relu8", env["name"], "cka", "procrustes",
                                        "--json", str(out)) == 0
    assert "on imagefolder:" in capsys.readouterr().out
    document = json.loads(out.read_text())
    assert document["n"] == 30 and 0 < document["results"]["cka"] <= 1 + 1e-6
    assert document["dataset_description"]["path"] == str(env["root"].resolve())
    assert call(compare_nets, *env["ckpts"], "relu8", "relu8", env["name"], "cka", "--split", "val") == 0
    assert "val split, 9 samples" in capsys.readouterr().out


def test_compare_layers_on_the_folder(env, tmp_path, capsys):
    out = tmp_path / "matrix"
    layers = ["--layers1", "re:relu\\d", "--layers2", "re:relu\\d"]
    assert call(compare_layers, *env["ckpts"], "-d", env["name"], *layers, "-b", "10", "-o", out) == 0
    frame = pd.read_csv(out / "matrix.csv", index_col=0)
    assert frame.shape == (8, 8) and np.all(np.isfinite(frame.values))
    assert "(test, 30 samples)" in capsys.readouterr().out
    # without -d: the folder model 1 was trained on, as its checkpoint records it
    assert call(compare_layers, *env["ckpts"], *layers, "--measure", "cka", "-o", tmp_path / "m2") == 0
    assert pd.read_pickle(tmp_path / "m2" / "matrix.pkl")["meta"]["dataset1"] == dataset_info(env["name"]).name


# --- stitching into the input ------------------------------------------------------------------------


def test_stitch_into_the_input_of_a_folder_model(env, tmp_path, capsys):
    args = [*map(str, env["ckpts"]), "relu4", "input", "-d", env["name"], "-e", "1", "-b", "16", "--val-size", "9",
            "--measure-samples", "20", "-o", str(tmp_path / "res"), "--run-name", "r"]
    assert call(stitch_nets, *args) == 0, capsys.readouterr().err
    grid = tmp_path / "res" / "r" / "relu4-input.png"
    assert grid.read_bytes()[:4] == b"\x89PNG"


def test_input_images_of_a_folder_denormalise_to_its_pixels(env):
    from src.data import get_loader, load_split
    from src.errors import UserError
    from src.stitching.images import check_input_stitch, to_pixels

    check_input_stitch(env["name"], ["relu4"], ["input"])
    x, _ = next(iter(get_loader(env["name"], "test", 8)))
    pixels = load_split(env["name"], "test").images[:8].float() / 255
    assert np.allclose(to_pixels(x, env["name"]), pixels.numpy(), atol=1e-5)
    for name in ("celeba", "user data"):
        with pytest.raises(UserError, match="has none"):
            check_input_stitch(name, ["relu4"], ["input"])


# --- the options ------------------------------------------------------------------------------------


def test_image_options_are_set_in_the_name_in_any_order(env):
    root = env["root"]
    for argv in (["-d", f"imagefolder:{root}", "--image-size", "48x40", "--mean", "0.5", "--std", "0.25"],
                 ["--std", "0.25", "--image-size", "48x40", "--mean", "0.5", "-d", f"imagefolder:{root}"],
                 ["-d", f"imagefolder:{root}?size=16&std=0.1", "--image-size", "48x40", "--mean", "0.5",
                  "--std", "0.25"]):
        job = train_model.parse_args(argv)
        assert job.dataset == f"imagefolder:{root}?size=48x40&mean=0.5&std=0.25"
    stitch = stitch_nets.parse_args(["a.pt", "b.pt", "relu1", "relu1", "-d", f"imagefolder:{root}",
                                     "--image-size", "32"])
    assert stitch.dataset == f"imagefolder:{root}?size=32"
    layers = compare_layers.parse_args(["a.pt", "-d", f"imagefolder:{root}", "--dataset2", "mnist", "--mean", "0.5"])
    assert layers.dataset == f"imagefolder:{root}?mean=0.5" and layers.dataset2 == "mnist"
    assert not hasattr(layers, "image_size")


@pytest.mark.parametrize("script,args,message", [
    (train_model, ["-d", "mnist", "--image-size", "32"], "apply to imagefolder:DIR datasets only, not 'mnist'"),
    (train_model, ["--mean", "0.5"], "apply to imagefolder:DIR datasets only, not 'cifar10'"),
    (layer_info, ["{ckpt}", "--image-size", "32"], "give one with -d/--dataset"),
    (compare_layers, ["{ckpt}", "--std", "0.5"], "give one with -d/--dataset or --dataset2"),
    (train_model, ["-d", "{name}", "--image-size", "0"], "must be at least 1 pixel"),
    (train_model, ["-d", "{name}", "--mean", "a,b"], "--mean 'a,b' is not a comma-separated list"),
    (train_model, ["-d", "{name}", "--std", "0"], "every value must be > 0"),
    (train_model, ["-d", "{name}", "--mean", "0.5,0.5"], "mean has 2 values but the images"),
    (train_model, ["-d", "imagefolder:{root}/missing"], "missing does not exist or is not a folder"),
    (eval_net, ["{ckpt}", "-d", "imagefolder:{root}/missing"], "missing does not exist or is not a folder"),
    (compare_nets, ["{ckpt}", "{ckpt}", "relu1", "relu1", "imagefolder:{root}/missing", "cka"], "does not exist"),
    (train_model, ["-d", "cifar11"], "unknown dataset 'cifar11'"),
])
def test_bad_options_are_one_line(env, tmp_path, capsys, script, args, message):
    fill = {"ckpt": str(env["ckpts"][0]), "name": env["name"], "root": str(env["root"])}
    out = tmp_path / "out"
    argv = [a.format(**fill) for a in args] + (["-e", "1", "-b", "16", "-o", str(out)] if script is train_model else [])
    assert call(script, *argv) == 2
    assert_one_line_error(capsys.readouterr().err, message)
    assert not out.exists()


@pytest.fixture
def corrupt(env, tmp_path):
    """A copy of the folder with one test image that is no PNG."""
    root = shutil.copytree(env["root"], tmp_path / "corrupt")
    bad = root / "test" / "class_01" / "003.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    return root, bad


def test_corrupt_image_is_one_line_naming_it(env, corrupt, tmp_path, capsys):
    root, bad = corrupt
    before = listing(tmp_path)
    out = tmp_path / "snap"
    assert call(train_model, *TRAIN, "-d", f"imagefolder:{root}", "-o", str(out)) == 2
    assert_one_line_error(capsys.readouterr().err, f"image {bad} cannot be read")
    assert call(eval_net, env["ckpts"][0], "-d", f"imagefolder:{root}") == 2
    assert_one_line_error(capsys.readouterr().err, f"image {bad} cannot be read")
    assert listing(tmp_path) == before


@pytest.mark.slow
def test_from_a_shell_with_options_in_the_name(env):
    name = f"imagefolder:{env['root']}?size=32&mean=0.5&std=0.25"
    done = subprocess.run([sys.executable, "eval_net.py", str(env["ckpts"][1]), "-d", name, "--json"], cwd=REPO,
                          capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["n"] == 30 and result["dataset_description"]["normalization_source"] == "given"
    assert result["dataset"] == f"imagefolder:{env['root'].resolve()}?size=32&mean=0.5&std=0.25"
