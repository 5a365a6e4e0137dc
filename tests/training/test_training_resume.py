"""One run folder per run: refusal of an existing one, --overwrite, --resume after a kill, and the
validation numbers of each checkpoint; eval_net.py's 'val' split is the checkpoint's own."""
import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch

import train_model
from src.cli import run_main
from src.data import get_loader
from src.errors import UserError
from src.models import create_model
from src.models.checkpoint import read_checkpoint, save_checkpoint
from src.training import resume
from src.training.resume import STATE_NAME
from src.training.run import train_from_args
from src.training.trainer import final_checkpoint
from tests.conftest import REPO
from tests.data_fixtures import fake_mnist_arrays, make_config, write_celeba, write_mnist_folder

RUN = ("LeNet", "MNIST", "in0-gn0")
ITERATIONS_PER_EPOCH = 250 // 32  # fake MNIST: 300 - 50 validation samples, last partial batch dropped


def _argv(out, *extra):
    return ["-m", "lenet", "-d", "mnist", "-e", "3", "-b", "32", "-s", "5", "--val-size", "50", "-o", str(out), *extra]


def _train(out, *extra):
    argv = _argv(out, *extra)
    return train_from_args(train_model.parse_args(argv), ["train_model.py", *argv])


class Killed(BaseException):
    """Stands for SIGKILL: not an Exception, so nothing in the trainer handles it."""


def _checkpoints(run_dir):
    return {p.name: read_checkpoint(p) for p in run_dir.glob("*.pt") if p.stem.isdigit()}


def _assert_same_run(run_dir, reference_dir):
    """Same checkpoints (weights bit for bit, iteration, epoch, validation numbers) and the same log."""
    got, expected = _checkpoints(run_dir), _checkpoints(reference_dir)
    assert sorted(got) == sorted(expected)
    for name, (state, meta) in expected.items():
        other_state, other_meta = got[name]
        assert all(torch.equal(state[k], other_state[k]) for k in state), name
        for key in ("iteration", "epoch", "val_acc", "val_loss"):
            assert other_meta[key] == meta[key], (name, key)
    log, reference_log = (pd.read_csv(d / "training_log.csv").drop(columns="seconds") for d in (run_dir, reference_dir))
    pd.testing.assert_frame_equal(log, reference_log, check_exact=True)
    assert not (run_dir / STATE_NAME).exists() and not (reference_dir / STATE_NAME).exists()


@pytest.mark.parametrize("save_every,kill_at,state_written", [
    ("5", 10, True),    # mid-epoch (epoch 2 runs iterations 8..14)
    ("5", 15, False),   # checkpoint 15.pt written, killed before its state: resumes from 10 and rewrites 15
    ("5", 0, True),     # right after the untrained network was saved
    ("7", 14, True),    # at the last batch of epoch 2, before its end-of-epoch validation and log row
], ids=["mid-epoch", "between-checkpoint-and-state", "after-iteration-0", "end-of-epoch"])
def test_killed_run_resumed_ends_with_the_same_weights(save_every, kill_at, state_written, tmp_path, fake_mnist,
                                                       monkeypatch, one_thread):
    reference = _train(tmp_path / "reference", "-s", save_every)
    real_write_state = resume.write_state

    def write_state_then_die(run_dir, state):
        if state["iteration"] == kill_at and not state_written:
            raise Killed
        real_write_state(run_dir, state)
        if state["iteration"] == kill_at:
            raise Killed

    with monkeypatch.context() as patch, pytest.raises(Killed):
        patch.setattr("src.training.trainer.write_state", write_state_then_die)
        _train(tmp_path / "killed", "-s", save_every)
    run_dir = tmp_path / "killed" / RUN[0] / RUN[1] / RUN[2]
    final = 3 * ITERATIONS_PER_EPOCH
    assert not (run_dir / f"{final}.pt").exists()  # the kill happened before the end
    with pytest.raises(UserError, match="--resume to continue"):
        _train(tmp_path / "killed", "-s", save_every)  # a plain rerun never mixes into the killed run
    _train(tmp_path / "killed", "-s", save_every, "--resume")
    _assert_same_run(run_dir, reference)


@pytest.mark.slow
def test_run_killed_with_sigkill_resumes_to_the_same_weights(tmp_path, fake_mnist, one_thread):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    argv = _argv(tmp_path / "killed", "-e", "8", "-s", "7")
    run_dir = tmp_path / "killed" / RUN[0] / RUN[1] / RUN[2]
    process = subprocess.Popen([sys.executable, "train_model.py", *argv], cwd=REPO, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while not (run_dir / "14.pt").exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, process.stderr.read().decode()
    process.stderr.close()
    assert not (run_dir / f"{8 * ITERATIONS_PER_EPOCH}.pt").exists()  # killed mid-run
    resumed = subprocess.run([sys.executable, "train_model.py", *argv, "--resume"], cwd=REPO, env=env,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming at iteration" in resumed.stdout
    reference = _train(tmp_path / "reference", "-e", "8", "-s", "7")
    _assert_same_run(run_dir, reference)


def test_resume_refuses_changed_settings(tmp_path, fake_mnist, monkeypatch, one_thread):
    def die_after_first_state(run_dir, state):
        resume.atomic_write(run_dir / STATE_NAME, lambda f: torch.save(dict(state, version=1), f))
        raise Killed

    with monkeypatch.context() as patch, pytest.raises(Killed):
        patch.setattr("src.training.trainer.write_state", die_after_first_state)
        _train(tmp_path)
    before = sorted(p.name for p in (tmp_path / RUN[0] / RUN[1] / RUN[2]).iterdir())
    with pytest.raises(UserError, match=r"differ: epochs 3 -> 4, lr 0\.1 -> 0\.05;"):
        _train(tmp_path, "-lr", "0.05", "-e", "4", "--resume")
    assert sorted(p.name for p in (tmp_path / RUN[0] / RUN[1] / RUN[2]).iterdir()) == before


def test_finished_run_has_no_state_and_resume_says_so(tmp_path, fake_mnist, one_thread):
    run_dir = _train(tmp_path, "-e", "1")
    assert not (run_dir / STATE_NAME).exists()
    with pytest.raises(UserError, match=f"holds no {STATE_NAME} \\(its last checkpoint is 7.pt\\)"):
        _train(tmp_path, "-e", "1", "--resume")


def test_existing_run_folder_is_refused_and_left_untouched(tmp_path, fake_mnist, capsys, one_thread):
    run_dir = _train(tmp_path, "-e", "1")
    contents = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    assert run_main(train_model.main, _argv(tmp_path, "-e", "1")) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "pass --resume" in err and "--overwrite" in err
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == contents


def test_overwrite_deletes_an_earlier_runs_checkpoints_so_the_final_one_is_new(tmp_path, fake_mnist, one_thread):
    run_dir = _train(tmp_path, "-e", "1")
    stale = read_checkpoint(run_dir / "7.pt")
    (run_dir / "300.pt").write_bytes((run_dir / "7.pt").read_bytes())  # a longer, killed earlier run
    (run_dir / "notes.txt").write_text("mine\n")
    _train(tmp_path, "-e", "2", "-g", "0", "-lr", "0.05", "--overwrite")
    names = sorted(p.name for p in run_dir.iterdir())
    assert names == ["0.pt", "10.pt", "14.pt", "5.pt", "notes.txt", "training_log.csv"]
    final_state, final_meta = read_checkpoint(final_checkpoint(run_dir))
    assert final_meta["iteration"] == 14 and final_meta["settings"]["lr"] == 0.05
    assert not torch.equal(final_state["conv1.weight"], stale[0]["conv1.weight"])
    assert len(pd.read_csv(run_dir / "training_log.csv")) == 2


def test_demo_train_evaluates_the_networks_it_just_trained(tmp_path, fake_mnist, one_thread):
    from src.config import get_config
    from src.demo import get_checkpoints

    # Fashion-MNIST as the demo needs it (5000 validation images by default), from random images.
    write_mnist_folder(fake_mnist / "FashionMNIST" / "raw", fake_mnist_arrays(n_train=5256, n_test=10), gz=True)
    stale_dir = get_config().snapshots_dir / "demo" / "LeNet" / "FashionMNIST" / "in0-gn0"
    stale_dir.mkdir(parents=True)
    model = create_model("lenet", n_classes=10, n_channels=1, seed=9)
    meta = {"model": "lenet", "dataset": "fashion", "n_channels": 1, "n_classes": 10, "input_size": [32, 32]}
    save_checkpoint(stale_dir / "999.pt", model, meta)
    paths = get_checkpoints("lenet", train=True, train_epochs=1)
    assert [p.name for p in paths] == ["2.pt", "2.pt"]  # 256 training images in batches of 128: 2 iterations
    assert not (stale_dir / "999.pt").exists() and paths[0].parent == stale_dir
    assert read_checkpoint(paths[0])[1]["provenance"]["command"].startswith("python demo.py")


def test_each_checkpoint_records_the_validation_accuracy_of_its_own_weights(tmp_path, fake_mnist, one_thread):
    run_dir = _train(tmp_path, "-e", "2", "-s", "3")
    val = get_loader("mnist", "val", 512, val_size=50)
    (x, y), = list(val)
    recorded = {}
    for path in run_dir.glob("*.pt"):
        state, meta = read_checkpoint(path)
        model = create_model("lenet", n_classes=10, n_channels=1)
        model.load_state_dict(state)
        with torch.no_grad():
            logits = model.eval()(x)
        hits = (logits.argmax(1) == y).sum().item()
        # evaluate() averages the 0/1 hits in float32: one rounding of a ratio, relative error < 2**-23
        assert meta["val_acc"] == pytest.approx(hits / len(y), rel=2**-23, abs=0), path.name
        recorded[meta["iteration"]] = meta["val_acc"]
    assert sorted(recorded) == [0, 3, 6, 9, 12, 14]
    assert len(set(recorded.values())) > 1  # the weights moved: one stale number for all would fail above


def test_loader_state_resumes_mid_pass_with_the_same_batches(fake_mnist):
    def loader():
        return get_loader("mnist", "train", 32, seed=3, val_size=50, drop_last=True)

    whole = loader()
    expected = [b for b in whole] + [b for b in whole]  # two passes
    first = loader()
    taken = []
    for b in first:
        taken.append(b)
        if len(taken) == 3:
            break
    second = loader()
    second.load_state_dict(first.state_dict())
    rest = list(second) + list(second)
    got = taken + rest
    assert len(got) == len(expected)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(got, expected))


def test_celeba_loader_state_resumes_mid_pass_with_the_same_batches(tmp_path):
    write_celeba(tmp_path / "celeba")
    config = make_config(tmp_path, celeba_root=tmp_path / "celeba")

    def loader():
        return get_loader("celeba", "train", 2, seed=1, val_size=2, drop_last=True, config=config)

    whole = loader()
    expected = list(whole) + list(whole)
    first = loader()
    iterator = iter(first)
    taken = [next(iterator)]
    state = first.state_dict()
    second = loader()
    second.load_state_dict(state)
    got = taken + list(second) + list(second)
    assert len(got) == len(expected) == 6
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(got, expected))


def test_eval_net_val_split_is_the_checkpoints_own_held_out_part(tmp_path, fake_mnist, capsys):
    model = create_model("lenet", n_classes=10, n_channels=1, seed=4)
    meta = {"model": "lenet", "dataset": "mnist", "n_channels": 1, "n_classes": 10, "input_size": [32, 32],
            "val_size": 100}
    path = save_checkpoint(tmp_path / "m.pt", model, meta)
    import eval_net

    assert run_main(eval_net.main, [str(path), "--split", "val", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    (x, y), = list(get_loader("mnist", "val", 1000, val_size=100))
    with torch.no_grad():
        hits = (model.eval()(x).argmax(1) == y).sum().item()
    assert result["n"] == 100 and result["val_size"] == 100
    assert result["acc"] == pytest.approx(hits / 100, rel=2**-23, abs=0)  # a float32 mean of 0/1 hits
    assert run_main(eval_net.main, [str(path), "--split", "val", "--val-size", "60", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 60  # a subset of the held-out part is fine
    assert run_main(eval_net.main, [str(path), "--split", "val", "--val-size", "200"]) == 2
    err = capsys.readouterr().err
    assert "trained with --val-size 100" in err and "100 of its training images" in err and err.count("\n") == 1


def test_committed_model_weights_are_never_replaced_without_overwrite(capsys):
    run_dir = REPO / "model_weights" / "LeNet" / "FashionMNIST" / "in0-gn0"
    if not run_dir.is_dir():
        pytest.skip(f"{run_dir} is absent")
    before = {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir()}
    argv = ["-m", "lenet", "-d", "fashion", "-e", "1", "-i", "0", "-g", "0", "-o", "model_weights"]
    assert run_main(train_model.main, argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "files of a training run; pass --resume" in err and err.count("\n") == 1
    assert {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir()} == before


def test_run_folder_created_by_another_run_meanwhile_is_not_shared(tmp_path, fake_mnist, monkeypatch):
    import src.training.run as run_module

    run_dir = tmp_path / RUN[0] / RUN[1] / RUN[2]
    real_get_loader = run_module.get_loader

    def loader_while_another_run_starts(*args, **kwargs):
        run_dir.mkdir(parents=True, exist_ok=True)  # the other run claims the folder while we load data
        return real_get_loader(*args, **kwargs)

    monkeypatch.setattr(run_module, "get_loader", loader_while_another_run_starts)
    with pytest.raises(UserError, match="created by another run meanwhile"):
        _train(tmp_path, "-e", "1")
    assert list(run_dir.iterdir()) == []  # nothing of ours was written into the other run's folder
