"""Outputs are never replaced silently, are claimed before work starts, honour the umask, and logs flush per line."""
import os
import signal
import subprocess
import sys
import time
from argparse import Namespace

import pandas as pd
import pytest

import stitch_nets
from src.cli import run_main
from src.compare.layerwise import default_out_dir
from src.errors import UserError
from src.results_io import claim_output, refuse_overwrite, staged_folder, try_claim, write_csv, write_pickle
from src.stitching import run as stitch_run
from src.stitching.results import load_result
from tests.conftest import REPO
from tests.script_helpers import assert_one_line_error, random_checkpoint

SCRIPTS = ["compare_frank_m2.py", "compare_layers.py", "compare_nets.py", "demo.py", "eval_net.py", "eval_stitch.py",
           "layer_info.py", "stitch_nets.py", "train_model.py"]


@pytest.fixture
def checkpoints(tmp_path, fake_mnist):
    return [random_checkpoint(tmp_path / f"in{seed}-gn0" / "0.pt", seed=seed) for seed in (0, 1)]


# --- existing files are refused unless --overwrite -----------------------------------------------------

def test_layer_info_csv_refuses_to_replace_a_checkpoint(tmp_path, capsys):
    import layer_info

    victim = tmp_path / "8580.pt"
    victim.write_bytes(b"PK\x03\x04 a checkpoint")
    assert run_main(layer_info.main, ["tiny10", "--csv", str(victim)]) == 2
    assert_one_line_error(capsys.readouterr().err, f"{victim} already exists; pass --overwrite to replace it")
    assert victim.read_bytes() == b"PK\x03\x04 a checkpoint"
    assert run_main(layer_info.main, ["tiny10", "--csv", str(victim), "--overwrite"]) == 0
    assert "conv1" in list(pd.read_csv(victim)["layer"])


def test_compare_nets_json_refuses_an_existing_file(tmp_path, checkpoints, capsys):
    import compare_nets

    out = tmp_path / "nets.json"
    out.write_text("keep")
    argv = [*map(str, checkpoints), "relu4", "relu4", "mnist", "cka", "--max-samples", "20", "--json", str(out)]
    assert run_main(compare_nets.main, argv) == 2
    assert_one_line_error(capsys.readouterr().err, f"{out} already exists; pass --overwrite to replace it")
    assert out.read_text() == "keep"
    assert run_main(compare_nets.main, [*argv, "--overwrite"]) == 0
    assert '"cka"' in out.read_text()


def test_compare_layers_overwrite_leaves_no_file_of_the_previous_run(tmp_path, checkpoints):
    import compare_layers

    out = tmp_path / "m"
    common = [*map(str, checkpoints), "-d", "mnist", "--samples", "40", "-b", "20", "-o", str(out)]
    assert run_main(compare_layers.main, [*common, "--layers1", "re:relu[1-3]", "--layers2", "re:relu[1-3]",
                                          "--permutations", "3", "--bootstrap", "3"]) == 0
    (out / "notes.txt").write_text("mine")
    assert {"pvalues.csv", "ci_low.csv", "ci_high.csv"} <= {p.name for p in out.iterdir()}
    assert run_main(compare_layers.main, [*common, "--layers1", "relu1", "--layers2", "relu1", "--overwrite"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["heatmap.png", "matrix.csv", "matrix.npz", "matrix.pkl", "notes.txt"]
    assert pd.read_csv(out / "matrix.csv", index_col=0).shape == (1, 1)
    assert not list(tmp_path.glob(".m.*"))  # no staging folder or claim left behind


def test_compare_layers_default_folder_tells_families_and_layers_apart(tmp_path):
    args = Namespace(model1="w/LeNet/in0-gn0/8580.pt", model2="w/LeNet/in1-gn1/8580.pt", measure="cka",
                     layers1=None, layers2=None)
    lenet, tiny10 = {"model": "lenet"}, {"model": "tiny10"}
    folders = {default_out_dir(args, tmp_path, "fashion", None, lenet, lenet),
               default_out_dir(args, tmp_path, "fashion", None, tiny10, tiny10),
               default_out_dir(Namespace(**{**vars(args), "layers1": ["re:relu\\d"], "layers2": ["re:relu\\d"]}),
                               tmp_path, "fashion", None, tiny10, tiny10),
               default_out_dir(Namespace(**{**vars(args), "layers1": ["re:relu."], "layers2": ["re:relu."]}),
                               tmp_path, "fashion", None, tiny10, tiny10)}
    assert len(folders) == 4 and all(f.parent == tmp_path / "compare" for f in folders)
    assert tmp_path / "compare" / "LeNet-in0-gn0-8580_vs_LeNet-in1-gn1-8580_cka_fashion_layers-all" in folders


# --- claims: two runs cannot both pass the existence check --------------------------------------------

def test_second_claim_on_the_same_output_is_refused_until_released(tmp_path):
    path = tmp_path / "run" / "bn3-bn3.pkl"
    with claim_output(path):
        assert try_claim(path) is None
        with pytest.raises(UserError, match=f"another run \\(pid {os.getpid()} on .*\\) is writing {path} right now"):
            claim_output(path)
    with claim_output(path):  # released: claimable again
        pass
    assert not (tmp_path / "run").exists()  # a claim that wrote nothing leaves no folder behind


@pytest.mark.slow
def test_claim_of_a_killed_process_does_not_block_a_rerun(tmp_path):
    path = tmp_path / "bn3-bn3.pkl"
    holder = subprocess.Popen([sys.executable, "-c", f"from src.results_io import claim_output; import time; "
                               f"c = claim_output({str(path)!r}); print('held', flush=True); time.sleep(120)"],
                              cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(UserError, match=f"pid {holder.pid} on"):
            claim_output(path)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with claim_output(path):
        pass


def _stitch_argv(checkpoints, tmp_path, *extra):
    return [*map(str, checkpoints), "bn3", "bn3", "-e", "1", "-b", "32", "--val-size", "40", "--measure-samples", "50",
            "-o", str(tmp_path / "res"), "--run-name", "r", *extra]


def test_concurrent_stitch_with_the_same_run_name_is_refused_before_work(tmp_path, checkpoints, monkeypatch):
    path = tmp_path / "res" / "r" / "bn3-bn3.pkl"
    monkeypatch.setattr(stitch_run, "load_pair", lambda *a, **k: pytest.fail("work started"))
    with claim_output(path):
        with pytest.raises(UserError, match="another run .* is writing .*bn3-bn3.pkl right now"):
            stitch_run.stitch_from_args(stitch_nets.parse_args(_stitch_argv(checkpoints, tmp_path)))


def test_interrupted_result_write_leaves_an_orphan_csv_that_does_not_block_a_rerun(tmp_path, checkpoints, monkeypatch):
    argv = _stitch_argv(checkpoints, tmp_path)
    path = tmp_path / "res" / "r" / "bn3-bn3.pkl"

    def killed(*_):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch, pytest.raises(KeyboardInterrupt):
        patch.setattr(stitch_run, "write_pickle", killed)
        stitch_run.stitch_from_args(stitch_nets.parse_args(argv))
    assert path.with_suffix(".csv").is_file() and not path.exists()  # the pickle is the last write
    assert stitch_run.stitch_from_args(stitch_nets.parse_args(argv)) == path  # no --overwrite needed
    result = load_result(path)
    assert pd.read_csv(path.with_suffix(".csv")).loc[0, "trans_acc"] == result["model_results"]["trans"]["acc"]
    with pytest.raises(UserError, match="already exists; pass --overwrite"):
        stitch_run.stitch_from_args(stitch_nets.parse_args(argv))


def test_staged_folder_failure_leaves_the_old_run_untouched(tmp_path):
    target = tmp_path / "m"
    target.mkdir()
    (target / "matrix.csv").write_text("old")
    with pytest.raises(RuntimeError):
        with staged_folder(target, ["matrix.csv"]) as staging:
            (staging / "matrix.csv").write_text("half")
            raise RuntimeError("interrupted")
    assert (target / "matrix.csv").read_text() == "old" and sorted(os.listdir(tmp_path)) == ["m"]


def test_refuse_overwrite_names_the_flag(tmp_path):
    (tmp_path / "f").write_text("")
    with pytest.raises(UserError, match="f already exists; pass --force to replace it or choose another file name"):
        refuse_overwrite(tmp_path / "f", False, "--force", instead="choose another file name")
    refuse_overwrite(tmp_path / "f", True)


# --- file modes follow the umask -----------------------------------------------------------------------

@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_output_files_honour_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        written = [write_pickle(tmp_path / "a.pkl", {"x": 1}), write_csv(tmp_path / "a.csv", pd.DataFrame({"x": [1]})),
                   random_checkpoint(tmp_path / "c.pt")]
        with staged_folder(tmp_path / "new", ["matrix.csv"]) as staging:
            (staging / "matrix.csv").write_text("1")
        plain = tmp_path / "plain"
        plain.write_text("")  # what open() gives under this umask
    finally:
        os.umask(old)
    for path in written:
        assert path.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777 == 0o666 & ~umask
    assert (tmp_path / "new").stat().st_mode & 0o777 == 0o777 & ~umask


# --- progress lines reach a log file as they are printed ----------------------------------------------

@pytest.mark.slow
def test_progress_lines_are_flushed_per_line_when_stdout_is_a_file(tmp_path):
    log = tmp_path / "log.txt"
    code = ("import time; from src.cli import run_main\n"
            "def main(argv):\n    print('epoch 1/3 done')\n    time.sleep(120)\n"
            "run_main(main)\n")
    with open(log, "w") as handle:
        proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=handle)
    try:
        deadline = time.monotonic() + 60
        while "epoch 1/3 done" not in log.read_text() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert log.read_text() == "epoch 1/3 done\n"  # while the run is still going
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_script_runs_through_run_main(script):
    """run_main makes stdout line-buffered: every script must go through it to keep its log flushed."""
    assert "sys.exit(run_main(main" in (REPO / script).read_text()
