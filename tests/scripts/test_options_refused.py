"""Every bad option is refused before any work: one ``error:`` line, exit code 2, and no file or folder created.

Each case runs the script's ``main`` through :func:`src.cli.run_main` in-process (the code path of a
shell run without a fresh interpreter per case) on otherwise valid arguments: real checkpoints, the
fake MNIST, an output folder inside ``tmp_path``. The whole of ``tmp_path`` is listed before and after.
"""
import math
import os

import pytest
import torch

from src.cli import run_main
from src.errors import UserError
from src.models import create_model
from src.models.checkpoint import save_checkpoint
from src.validation import check_float, check_int, check_run_name, check_writable_dir

OUT = "{out}"  # replaced by the case's output folder
BASE = {
    "train_model": ["-m", "lenet", "-d", "mnist", "-e", "1", "-b", "32", "--val-size", "50", "-o", OUT],
    "stitch_nets": ["{front}", "{end}", "bn3", "bn3", "-e", "1", "-b", "32", "--val-size", "40",
                    "--measure-samples", "50", "-o", OUT, "--run-name", "r"],
    "compare_layers": ["{front}", "{end}", "-d", "mnist", "--layers1", "relu1", "--layers2", "relu1", "-o", OUT],
    "compare_nets": ["{front}", "{end}", "relu1", "relu1", "mnist", "cka"],
    "eval_net": ["{front}"],
    "eval_stitch": ["{out}/r/bn3-bn3.pkl", "after"],
    "compare_frank_m2": ["{out}/r/bn3-bn3.pkl", "after", "cka"],
    "demo": [],
    "layer_info": ["lenet", "-d", "mnist"],
}
UNWRITABLE = "{file}/sub"  # a folder below a regular file: nobody, root included, can create it

CASES = [
    # train_model.py
    ("train_model", ["-e", "0"], "-e/--epochs must be an integer >= 1, got 0"),
    ("train_model", ["-e", "-2"], "-e/--epochs must be an integer >= 1, got -2"),
    ("train_model", ["-s", "0"], "-s/--save-frequency must be an integer >= 1, got 0"),
    ("train_model", ["-s", "-1"], "-s/--save-frequency must be an integer >= 1, got -1"),
    ("train_model", ["-lr", "nan"], "-lr/--lr must be a finite number > 0, got nan"),
    ("train_model", ["-lr", "-1"], "-lr/--lr must be a finite number > 0, got -1"),
    ("train_model", ["-lr", "0"], "-lr/--lr must be a finite number > 0, got 0"),
    ("train_model", ["-lr", "inf"], "-lr/--lr must be a finite number > 0, got inf"),
    ("train_model", ["-wd", "-0.0001"], "-wd/--weight-decay must be a finite number >= 0, got -0.0001"),
    ("train_model", ["-wd", "nan"], "-wd/--weight-decay must be a finite number >= 0, got nan"),
    ("train_model", ["-b", "0"], "-b/--batch-size must be an integer >= 1, got 0"),
    ("train_model", ["-b", "-3"], "-b/--batch-size must be an integer >= 1, got -3"),
    ("train_model", ["--val-size", "-1"], "--val-size must be an integer >= 0, got -1"),
    ("train_model", ["--max-samples", "0"], "--max-samples must be an integer >= 1, got 0"),
    ("train_model", ["-i", "-1"], "-i/--init-noise must be an integer >= 0, got -1"),
    ("train_model", ["-g", "-1"], "-g/--gradient-noise must be an integer >= 0, got -1"),
    ("train_model", ["-b", "1000", "--max-samples", "256"], "-b/--batch-size 1000 is larger than the 256 training samples"),
    ("train_model", ["-b", "1000"], "-b/--batch-size 1000 is larger than the 250 training samples"),
    ("train_model", ["--resume", "--overwrite"], "pass one of them"),
    ("train_model", ["--resume"], "nothing to resume"),
    ("train_model", ["-o", UNWRITABLE], "is a file, not a folder"),
    # stitch_nets.py
    ("stitch_nets", ["-e", "0"], "-e/--epochs must be an integer >= 1, got 0"),
    ("stitch_nets", ["-e", "-2"], "-e/--epochs must be an integer >= 1, got -2"),
    ("stitch_nets", ["-s", "0"], "-s/--save-frequency must be an integer >= 1, got 0"),
    ("stitch_nets", ["-s", "-1"], "-s/--save-frequency must be an integer >= 1, got -1"),
    ("stitch_nets", ["-lr", "nan"], "-lr/--lr must be a finite number > 0, got nan"),
    ("stitch_nets", ["-lr", "-1"], "-lr/--lr must be a finite number > 0, got -1"),
    ("stitch_nets", ["-wd", "-1"], "-wd/--weight-decay must be a finite number >= 0, got -1"),
    ("stitch_nets", ["--temperature", "0"], "--temperature must be a finite number > 0, got 0"),
    ("stitch_nets", ["--temperature", "nan"], "--temperature must be a finite number > 0, got nan"),
    ("stitch_nets", ["-b", "-3", "--cache-front"], "-b/--batch-size must be an integer >= 1, got -3"),
    ("stitch_nets", ["-b", "1000", "--max-samples", "256"], "-b/--batch-size 1000 is larger than the 256"),
    ("stitch_nets", ["-b", "1000"], "-b/--batch-size 1000 is larger than the 260 training samples"),
    ("stitch_nets", ["--measure-samples", "0"], "--measure-samples must be an integer >= 2, got 0"),
    ("stitch_nets", ["--measure-samples", "1"], "--measure-samples must be an integer >= 2, got 1"),
    ("stitch_nets", ["--cache-limit-gb", "0"], "--cache-limit-gb must be a finite number > 0, got 0"),
    ("stitch_nets", ["--cache-limit-gb", "-1"], "--cache-limit-gb must be a finite number > 0, got -1"),
    ("stitch_nets", ["-r", "0"], "-r/--low-rank must be an integer >= 1, got 0"),
    ("stitch_nets", ["--l1", "-1"], "--l1 must be a finite number >= 0, got -1"),
    ("stitch_nets", ["--l1", "nan"], "--l1 must be a finite number >= 0, got nan"),
    ("stitch_nets", ["--cka-reg", "nan"], "--cka-reg must be a finite number, got nan"),
    ("stitch_nets", ["--seed", "-1"], "--seed must be an integer >= 0, got -1"),
    ("stitch_nets", ["--val-size", "-1"], "--val-size must be an integer >= 0, got -1"),
    ("stitch_nets", ["--max-samples", "0"], "--max-samples must be an integer >= 1, got 0"),
    ("stitch_nets", ["--run-name", "../../x"], "--run-name must be a plain folder name"),
    ("stitch_nets", ["--run-name", "a/b"], "--run-name must be a plain folder name"),
    ("stitch_nets", ["--run-name", ".."], "--run-name must be a plain folder name"),
    ("stitch_nets", ["--run-name", ""], "--run-name must be a plain folder name"),
    ("stitch_nets", ["--run-name", "/tmp/x"], "--run-name must be a plain folder name"),
    ("stitch_nets", ["-o", UNWRITABLE], "is a file, not a folder"),
    # compare_layers.py
    ("compare_layers", ["-b", "2"], "cka_minibatch computes one unbiased HSIC per batch"),
    ("compare_layers", ["-b", "3"], "needs at least 4 per batch, got 3"),
    ("compare_layers", ["-b", "0", "--measure", "cka"], "-b/--batch-size must be an integer >= 1, got 0"),
    ("compare_layers", ["--samples", "0"], "--samples must be an integer >= 1, got 0"),
    ("compare_layers", ["--permutations", "-1"], "--permutations must be an integer >= 0, got -1"),
    ("compare_layers", ["--bootstrap", "-5"], "--bootstrap must be an integer >= 0, got -5"),
    ("compare_layers", ["--ci", "1.5"], "--ci must be a finite number > 0 and < 1, got 1.5"),
    ("compare_layers", ["--ci", "nan"], "--ci must be a finite number > 0 and < 1, got nan"),
    ("compare_layers", ["--seed", "-1"], "--seed must be an integer >= 0, got -1"),
    ("compare_layers", ["--val-size", "-1"], "--val-size must be an integer >= 0, got -1"),
    ("compare_layers", ["-b", "x"], "-b/--batch-size must be an integer >= 1, got 'x'"),
    ("compare_layers", ["-o", UNWRITABLE + "/m"], "is a file, not a folder"),
    # compare_nets.py, eval_net.py, eval_stitch.py, compare_frank_m2.py, demo.py
    ("compare_nets", ["-b", "0"], "-b/--batch-size must be an integer >= 1, got 0"),
    ("compare_nets", ["--max-samples", "0"], "--max-samples must be an integer >= 1, got 0"),
    ("compare_nets", ["--val-size", "-1"], "--val-size must be an integer >= 0, got -1"),
    ("compare_nets", ["--json", "{file}/out.json"], "is a file, not a folder"),
    ("eval_net", ["-b", "0"], "-b/--batch-size must be an integer >= 1, got 0"),
    ("eval_net", ["--max-samples", "-1"], "--max-samples must be an integer >= 1, got -1"),
    ("eval_net", ["--val-size", "-1"], "--val-size must be an integer >= 0, got -1"),
    ("eval_stitch", ["-b", "0"], "-b/--batch-size must be an integer >= 1, got 0"),
    ("eval_stitch", ["--max-samples", "0"], "--max-samples must be an integer >= 1, got 0"),
    ("compare_frank_m2", ["-b", "-1"], "-b/--batch-size must be an integer >= 1, got -1"),
    ("compare_frank_m2", ["--max-samples", "0"], "--max-samples must be an integer >= 1, got 0"),
    ("layer_info", ["--csv", "{file}/layers.csv"], "is a file, not a folder"),
    ("demo", ["--epochs", "0"], "--epochs must be an integer >= 1, got 0"),
    ("demo", ["--train-epochs", "-1"], "--train-epochs must be an integer >= 1, got -1"),
]


def _checkpoint(path, seed):
    model = create_model("tiny10", n_classes=10, n_channels=1, seed=seed)
    with torch.no_grad():
        model.train()(torch.randn(64, 1, 32, 32))  # non-trivial BatchNorm statistics
    meta = {"model": "tiny10", "dataset": "mnist", "n_channels": 1, "n_classes": 10, "input_size": [32, 32]}
    return save_checkpoint(path, model.eval(), meta)


@pytest.fixture
def world(tmp_path, fake_mnist):
    """Two checkpoints, a regular file to put unwritable folders under, and an (existing, empty) output folder."""
    models = tmp_path / "models"
    names = {"front": str(_checkpoint(models / "front.pt", 0)), "end": str(_checkpoint(models / "end.pt", 1)),
             "file": str(tmp_path / "a-file"), "out": str(tmp_path / "out")}
    (tmp_path / "a-file").write_text("not a folder\n")
    (tmp_path / "out").mkdir()
    return names


def _tree(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize("script,extra,message", CASES, ids=[f"{s} {' '.join(e)}" for s, e, _ in CASES])
def test_bad_option_is_refused_before_any_work(script, extra, message, world, tmp_path, capsys, one_thread):
    argv = [a.format(**world) for a in BASE[script] + extra]
    before = _tree(tmp_path)
    module = __import__(script)
    assert run_main(module.main, argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert _tree(tmp_path) == before  # nothing written, not even an empty folder


@pytest.mark.parametrize("value", [True, 2.5, "3", None])
def test_check_int_refuses_what_is_not_an_integer(value):
    with pytest.raises(UserError, match="must be an integer"):
        check_int(value, "--x")


@pytest.mark.parametrize("value,bounds", [(math.nan, {}), (math.inf, {}), (-math.inf, {"minimum": 0}),
                                          (0.0, {"above": 0}), (1.0, {"below": 1}), (-1e-12, {"minimum": 0}),
                                          (True, {}), ("1", {})])
def test_check_float_refuses_non_finite_and_out_of_bounds(value, bounds):
    with pytest.raises(UserError, match="must be a finite number"):
        check_float(value, "--x", **bounds)


def test_check_float_and_int_accept_the_bounds_themselves():
    assert check_float(0.0, "--x", 0) == 0.0 and check_float(-3.0, "--x") == -3.0
    assert check_int(0, "--x", 0) == 0 and check_int(7, "--x", 1, 7) == 7


@pytest.mark.parametrize("name", ["../../x", "a/b", "/abs", ".", "..", "", "  ", "a\0b"])
def test_run_name_cannot_leave_the_output_folder(name):
    with pytest.raises(UserError, match="plain folder name"):
        check_run_name(name)


@pytest.mark.parametrize("name", ["t10", "a..b", "2026-12-01_0800", ".hidden"])
def test_run_name_accepts_plain_folder_names(name):
    assert check_run_name(name) == name


def test_writable_folder_check_creates_nothing(tmp_path):
    target = tmp_path / "a" / "b" / "c"
    assert check_writable_dir(target) == target
    assert list(tmp_path.iterdir()) == []  # the probe file lived in tmp_path and is gone, no folder made


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into read-only folders")
def test_writable_folder_check_refuses_a_read_only_folder(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        with pytest.raises(UserError, match="cannot write to"):
            check_writable_dir(locked / "run")
    finally:
        locked.chmod(0o700)
