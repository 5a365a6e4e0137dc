"""Sweeps at scale (issue 10): a stitch matrix run by several processes (torchrun, gloo on the CPU), as job-array
shards plus --collect, and killed with SIGKILL then resumed, must give the same matrix files as one uninterrupted
process; a resume with other parameters is refused. Real multi-process runs on the committed Tiny10s, 2 x 2 cells.

Exact equality is the expected outcome, not a tuned tolerance: every process runs the same operations in the same
order with one thread (OMP_NUM_THREADS=1), each cell seeded by its own job, so the numbers are bit-identical.
"""
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from src.errors import UserError
from src.stitching.results import load_result
from src.matrix.runinfo import first_difference
from src.matrix.shard import cells_for, parse_shard
from tests.conftest import REPO
from tests.script_helpers import assert_one_line_error

# Every test here starts processes (torchrun ranks, kernels, scripts): deselect with -m "not slow".
pytestmark = pytest.mark.slow

TINY = REPO / "model_weights" / "Tiny10" / "FashionMNIST"
SENDER, RECEIVER = str(TINY / "in0-gn0" / "8580.pt"), str(TINY / "in1-gn1" / "8580.pt")
MATRIX = [SENDER, RECEIVER, "--front-layers", "bn6", "bn7", "--end-layers", "bn6", "bn7", "-d", "fashion",
          "-e", "1", "-b", "50", "--max-samples", "500", "--val-size", "100", "--measure-samples", "200"]
TABLES = ("matrix", "relative", "ps_inv", "cka")
CELLS = [f"{s}--{r}" for s in ("bn6", "bn7") for r in ("bn6", "bn7")]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]


def env():
    e = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), DEVICE="cpu")
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        e.pop(name, None)
    return e


def run(args, launcher=(sys.executable,), check=True):
    proc = subprocess.run([*launcher, str(REPO / "stitch_matrix.py"), *args], cwd=REPO, env=env(),
                          capture_output=True, text=True, timeout=300)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def matrix_args(out, name, *extra):
    return [*MATRIX, "-o", str(out), "--run-name", name, *extra]


def assert_same_matrix(folder, reference):
    for table in TABLES:
        got = pd.read_csv(folder / f"{table}.csv", index_col=0)
        want = pd.read_csv(reference / f"{table}.csv", index_col=0)
        pd.testing.assert_frame_equal(got, want, check_exact=True)
    for cell in CELLS:  # each cell's trained weights too, not only the accuracies in the tables
        got, want = load_result(folder / "cells" / f"{cell}.pkl"), load_result(reference / "cells" / f"{cell}.pkl")
        for key, value in want["trans_m"]["after"].items():
            assert (got["trans_m"]["after"][key] == value).all(), (cell, key)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted single process: the matrix every other way of running must reproduce."""
    out = tmp_path_factory.mktemp("sweep")
    run(matrix_args(out, "single"))
    return out


# --- slices --------------------------------------------------------------------------------------------------

def test_shard_slices_partition_the_cells_in_order_keeping_front_layers_together():
    cells = [(s, r) for s in "abcde" for r in range(7)]
    for n in (1, 2, 3, 4, 8, 35, 40):
        slices = [cells_for(cells, (k, n)) for k in range(1, n + 1)]
        assert sum(slices, []) == cells  # disjoint, complete, in plan order
        assert max(map(len, slices)) - min(map(len, slices)) <= 1  # balanced
        # a front network's cache is built once per slice that holds it: at most front_layers + (n - 1) caches in all
        assert sum(len({s for s, _ in part}) for part in slices) <= 5 + n - 1
    # ranks slice a shard further, with the same rule
    assert sum((cells_for(cells, (2, 3), rank, 2) for rank in range(2)), []) == cells_for(cells, (2, 3))


@pytest.mark.parametrize("text", ["0/2", "3/2", "1", "a/b", "1/0"])
def test_bad_shard_is_refused(text):
    with pytest.raises(UserError, match="--shard"):
        parse_shard(text)


def test_first_difference_names_the_nested_parameter():
    stored = {"front": "a", "job": {"epochs": 1, "seed": 0}}
    assert first_difference(stored, {"front": "a", "job": {"epochs": 2, "seed": 0}}) == ("job.epochs", 1, 2)
    assert first_difference(stored, stored) is None


# --- real processes ------------------------------------------------------------------------------------------

def test_torchrun_two_ranks_write_the_same_matrix_as_one_process(reference, tmp_path):
    run(matrix_args(tmp_path, "ddp"), launcher=TORCHRUN)
    assert_same_matrix(tmp_path / "ddp", reference / "single")


def test_shards_then_collect_equal_the_single_run_and_collect_names_missing_cells(reference, tmp_path):
    first = run(matrix_args(tmp_path, "array", "--shard", "1/2"))
    assert "--collect" in first.stdout and not (tmp_path / "array" / "matrix.csv").exists()
    early = run(["--collect", str(tmp_path / "array")], check=False)
    assert early.returncode == 2
    assert_one_line_error(early.stderr, "2 of 4 cells")
    assert "cells/bn7--bn6" in early.stderr and "cells/bn7--bn7" in early.stderr  # shard 2/2's cells
    run(matrix_args(tmp_path, "array", "--shard", "2/2"))
    run(["--collect", str(tmp_path / "array")])
    assert_same_matrix(tmp_path / "array", reference / "single")


def _kill_after_first_cell(args, launcher):
    """Start a run, SIGKILL it (with every process it started) once its first cell file is written."""
    proc = subprocess.Popen([*launcher, str(REPO / "stitch_matrix.py"), *args], cwd=REPO, env=env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    cells = args[args.index("-o") + 1] + "/" + args[args.index("--run-name") + 1] + "/cells"
    deadline = time.time() + 240
    try:
        while time.time() < deadline and proc.poll() is None:
            if any(p.endswith(".pkl") for p in (os.listdir(cells) if os.path.isdir(cells) else [])):
                break
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return proc.returncode


@pytest.mark.parametrize("launcher", [(sys.executable,), TORCHRUN], ids=["one process", "torchrun"])
def test_sigkilled_run_resumed_equals_an_uninterrupted_run(reference, tmp_path, launcher):
    args = matrix_args(tmp_path, "killed")
    assert _kill_after_first_cell(args, launcher) == -signal.SIGKILL  # killed mid-run, not finished
    cells = tmp_path / "killed" / "cells"
    finished = sorted(p.name for p in cells.glob("*.pkl"))
    assert 1 <= len(finished) < 4 and not (tmp_path / "killed" / "matrix.csv").exists()
    kept = {name: (cells / name).stat().st_mtime_ns for name in finished}
    resumed = run([*args, "--resume"], launcher=launcher)
    assert "finished cell(s) kept" in resumed.stdout
    assert {name: (cells / name).stat().st_mtime_ns for name in finished} == kept  # not run again
    assert_same_matrix(tmp_path / "killed", reference / "single")


def test_resume_with_other_parameters_is_refused_naming_the_parameter(reference, tmp_path):
    import shutil
    shutil.copytree(reference / "single", tmp_path / "single")
    refused = run([*matrix_args(tmp_path, "single"), "--resume", "--seed", "3"], check=False)
    assert refused.returncode == 2
    assert_one_line_error(refused.stderr, "different parameters (seed: 0 there, 3 now)")
    refused = run([*matrix_args(tmp_path, "single"), "--resume", "--overwrite"], check=False)
    assert_one_line_error(refused.stderr, "pass one of them")
    again = run([*matrix_args(tmp_path, "single"), "--resume"])  # nothing left to do: the tables again, same
    assert again.stdout.count("2 finished cell(s) kept") == 2  # both front layers' cells kept, none rerun
    assert_same_matrix(tmp_path / "single", reference / "single")


@pytest.mark.parametrize("front,end,layers", [
    ("torchvision:resnet18", "torchvision:resnet18", ["layer1", "layer2"]),
    ("timm:resnet18", "timm:resnet18", ["layer1", "layer2"]),
], ids=["torchvision", "timm"])
def test_torchrun_ranks_on_a_spec_pair_write_the_same_matrix_as_one_process(tmp_path, front, end, layers):
    """Model specs (random-initialised from the job's seed) on an image folder: two torchrun ranks and one process
    write the same tables, controls included."""
    from tests.data_fixtures import make_image_folder

    folder = make_image_folder(tmp_path / "images", classes=3, train=12, test=6)
    args = [front, end, "--front-layers", *layers, "--end-layers", *layers, "-d", f"imagefolder:{folder}", "-e", "1",
            "-b", "8", "--measure-samples", "12", "--controls", "-o", str(tmp_path)]
    run([*args, "--run-name", "single"])
    run([*args, "--run-name", "ddp"], launcher=TORCHRUN)
    for table in ("matrix", "ps_inv", "cka", "matrix_control_random_front", "matrix_control_random_end"):
        pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "ddp" / f"{table}.csv", index_col=0),
                                      pd.read_csv(tmp_path / "single" / f"{table}.csv", index_col=0), check_exact=True)
