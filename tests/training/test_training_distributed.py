"""Training under torchrun: real 2-process runs on the CPU (gloo) against one process.

What must hold: the ranks' shards of a batch are, together, exactly the one-process batch (same
samples, same augmentations); one DistributedDataParallel step on 2 ranks equals the one-process
step on the same global batch up to the rounding of a reordered sum; ``train_model.py`` under
``torchrun --nproc_per_node=2`` writes the files one process writes (rank 0 alone writes them),
with weights close to the one-process run; bad combinations are refused in one line.
"""
import os
import signal
import socket
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch
import torch.multiprocessing as mp

import train_model
from src.data import dataset_info, get_loader
from src.distributed import World, session, world_from_env
from src.errors import UserError
from src.models import create_model
from src.models.checkpoint import read_checkpoint
from src.training.resume import STATE_NAME
from src.training.run import check_same_world, check_world, train_from_args
from src.training.trainer import ClassifierTrainer, TrainSettings
from tests.conftest import REPO

# Every test here starts processes (torchrun ranks, kernels, scripts): deselect with -m "not slow".
pytestmark = pytest.mark.slow

MNIST = dataset_info("mnist")
RUN = ("LeNet", "MNIST", "in0-gn0")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- the loader's shards ----------------------------------------------------------------------------

def test_shards_of_every_batch_are_together_the_one_process_batch(fake_mnist):
    # Augmentation on: the random affine draws must be the same as one process's, per sample.
    def batches(shard):
        loader = get_loader("mnist", "train", 32, seed=5, drop_last=True, augment=True, val_size=50, shard=shard)
        return [batch for _ in range(2) for batch in loader]  # two passes: the order changes between them

    whole, first, second = batches((0, 1)), batches((0, 2)), batches((1, 2))
    assert len(whole) == len(first) == len(second) == 2 * (250 // 32)
    for (x, y), (x0, y0), (x1, y1) in zip(whole, first, second):
        assert x0.shape[0] == x1.shape[0] == 16
        assert torch.equal(torch.cat([x0, x1]), x) and torch.equal(torch.cat([y0, y1]), y)


def test_shard_needs_a_batch_divisible_by_the_processes(fake_mnist):
    with pytest.raises(ValueError, match="cannot be split evenly into 3 shards"):
        get_loader("mnist", "train", 32, drop_last=True, val_size=50, shard=(0, 3))


# -- one DDP step ---------------------------------------------------------------------------------------

def _one_step(x, y, world, run_dir):
    """One SGD step of the trainer on (x, y) in float64; returns the gradients and the new weights (nothing is written)."""
    model = create_model("lenet", n_classes=MNIST.n_classes, n_channels=MNIST.n_channels, seed=0).double()
    trainer = ClassifierTrainer(model, [(x, y)], None, TrainSettings(epochs=1, save_frequency=None), run_dir, {},
                                progress=False, world=world)
    trainer.train_epoch()
    return ({name: p.grad.detach().clone() for name, p in model.named_parameters()},
            {name: t.detach().clone() for name, t in model.state_dict().items()})


def _ddp_rank(rank, size, port, batch_file, out_file, run_dir):
    os.environ.update(WORLD_SIZE=str(size), RANK=str(rank), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    x, y = torch.load(batch_file, weights_only=True)
    with session(torch.device("cpu")) as world:
        assert (world.rank, world.size) == (rank, size)
        per_rank = len(x) // size
        mine = slice(rank * per_rank, (rank + 1) * per_rank)
        grads, weights = _one_step(x[mine], y[mine], world, run_dir)
        if world.is_main:
            torch.save({"grads": grads, "weights": weights}, out_file)


def _summed_sample_gradients(x, y, run_dir):
    """The sum over the samples of |the gradient of each sample's loss| (float64), per parameter."""
    total = None
    for i in range(len(x)):
        grads, _ = _one_step(x[i:i + 1], y[i:i + 1], World(), run_dir)
        total = {k: g.abs() for k, g in grads.items()} if total is None else {k: total[k] + g.abs() for k, g in grads.items()}
    return total


def test_two_rank_ddp_step_equals_one_process_step_on_the_global_batch(tmp_path):
    n = 8
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(n, MNIST.n_channels, *MNIST.input_size, generator=generator, dtype=torch.float64)
    y = torch.randint(0, MNIST.n_classes, (n,), generator=generator)
    torch.save((x, y), tmp_path / "batch.pt")
    mp.spawn(_ddp_rank, args=(2, _free_port(), str(tmp_path / "batch.pt"), str(tmp_path / "ddp.pt"), str(tmp_path)),
             nprocs=2, join=True)
    ddp = torch.load(tmp_path / "ddp.pt", weights_only=True)
    grads, weights = _one_step(x, y, World(), tmp_path)
    scale = _summed_sample_gradients(x, y, tmp_path)
    # The two gradients are the same mean over the same samples, summed in another order (two half
    # batches, then the all-reduce of their means). Two float64 sums of the same m terms in different
    # orders differ by at most 2 m u times the sum of the terms' magnitudes (u the unit roundoff). A
    # gradient entry sums at most m = N x 32 x 32 products (samples x positions of a feature map);
    # for the magnitudes we take the samples' gradients summed in magnitude, times N as headroom for
    # cancellation among the positions of one sample.
    u = torch.finfo(torch.float64).eps / 2
    m = n * MNIST.input_size[0] * MNIST.input_size[1]
    for name, grad in grads.items():
        tolerance = 2 * m * u * n * scale[name].max().item()
        assert (ddp["grads"][name] - grad).abs().max().item() <= tolerance, name
        assert grad.abs().max().item() > 1000 * tolerance, name  # the comparison is not vacuous
    # One step of SGD (Nesterov momentum 0.9, lr 0.1): the weights move by lr * (1 + 0.9) * (gradient + decay),
    # so they agree to lr * 1.9 * the gradient tolerance (plus the rounding of the weights themselves).
    for name, weight in weights.items():
        tolerance = 0.1 * 1.9 * 2 * m * u * n * scale[name].max().item() + 4 * u * weight.abs().max().item()
        assert (ddp["weights"][name] - weight).abs().max().item() <= tolerance, name


# -- train_model.py under torchrun ------------------------------------------------------------------

def _argv(out, *extra):
    return ["-m", "lenet", "-d", "mnist", "-e", "2", "-b", "32", "-s", "5", "--val-size", "50", "--max-samples", "96",
            "--no-augment", "-o", str(out), *extra]


def _torchrun_command(argv, nproc=2):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               str(REPO / "train_model.py"), *argv]
    return command, env


def _torchrun(argv, nproc=2):
    command, env = _torchrun_command(argv, nproc)
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, cwd=REPO)


def test_torchrun_two_ranks_writes_the_files_of_one_process_with_close_weights(tmp_path, fake_mnist):
    done = _torchrun(_argv(tmp_path / "ddp"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("training LeNet on MNIST") == 1  # rank 0 alone reports
    assert "2 processes on cpu (global batch 32, 16 per process)" in done.stdout
    argv = _argv(tmp_path / "one")
    one = train_from_args(train_model.parse_args(argv), ["train_model.py", *argv])
    ddp = tmp_path / "ddp" / RUN[0] / RUN[1] / RUN[2]
    # 96 samples, 3 iterations per epoch, 2 epochs: checkpoints 0, 5 and 6, the log; no resume state left.
    assert sorted(p.name for p in ddp.iterdir()) == sorted(p.name for p in one.iterdir()) == \
        ["0.pt", "5.pt", "6.pt", "training_log.csv"]
    start_ddp, start_one = read_checkpoint(ddp / "0.pt")[0], read_checkpoint(one / "0.pt")[0]
    assert all(torch.equal(start_ddp[k], start_one[k]) for k in start_one)
    final_ddp, meta = read_checkpoint(ddp / "6.pt")
    final_one, meta_one = read_checkpoint(one / "6.pt")
    assert meta["world_size"] == 2 and "world_size" not in meta_one
    # 6 float32 SGD steps: the one-process and the 2-rank gradients differ by float32 rounding of
    # reordered sums (relative ~ m u with m = 32 x 32 x 32 terms, see the float64 step test), which the
    # later steps carry along; the weights' own change over the run is what a wrong shard would get wrong.
    u = torch.finfo(torch.float32).eps / 2
    m = 32 * 32 * 32
    for key in final_one:
        if not final_one[key].is_floating_point():
            continue
        moved = (final_one[key] - start_one[key]).abs().max().item()
        difference = (final_ddp[key] - final_one[key]).abs().max().item()
        assert difference <= 6 * m * u * max(moved, final_one[key].abs().max().item()), key
    # The log: the same epochs and iterations; training loss summed over both ranks' halves.
    log_ddp, log_one = (pd.read_csv(d / "training_log.csv") for d in (ddp, one))
    assert list(log_ddp["iteration"]) == list(log_one["iteration"]) == [3, 6]
    assert log_ddp["train_loss"].tolist() == pytest.approx(log_one["train_loss"].tolist(), rel=1e-3)
    assert log_ddp["val_loss"].tolist() == pytest.approx(log_one["val_loss"].tolist(), rel=1e-3)


def _alive(pid) -> bool:
    """Whether process ``pid`` still runs (a zombie, killed but not yet reaped by its parent, does not)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def test_torchrun_run_killed_and_resumed_under_torchrun_ends_as_an_uninterrupted_one(tmp_path, fake_mnist):
    # All 300 fake images but the 50 for validation: 7 iterations per epoch, 8 epochs, a checkpoint every 7.
    argv = ["-m", "lenet", "-d", "mnist", "-e", "8", "-b", "32", "-s", "7", "--val-size", "50"]
    command, env = _torchrun_command([*argv, "-o", str(tmp_path / "killed")])
    run_dir = tmp_path / "killed" / RUN[0] / RUN[1] / RUN[2]
    launcher = subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while not (run_dir / "14.pt").exists() and launcher.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    # torchrun starts its workers in sessions of their own: SIGKILL them with the launcher.
    workers = [int(pid) for pid in subprocess.run(["ps", "-o", "pid=", "--ppid", str(launcher.pid)],
                                                  capture_output=True, text=True).stdout.split()]
    assert len(workers) == 2
    for pid in [launcher.pid, *workers]:
        os.kill(pid, signal.SIGKILL)
    launcher.wait()
    for pid in workers:
        while _alive(pid):
            time.sleep(0.01)
    assert (run_dir / "14.pt").exists() and not (run_dir / "56.pt").exists()  # killed mid-run
    # One process may not continue a 2-process run (BatchNorm's statistics would change).
    with pytest.raises(UserError, match="as it ran, on 2 processes"):
        resume_argv = [*argv, "-o", str(tmp_path / "killed"), "--resume"]
        train_from_args(train_model.parse_args(resume_argv), ["train_model.py", *resume_argv])
    resumed = _torchrun([*argv, "-o", str(tmp_path / "killed"), "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed.stdout.count("resuming at iteration") == 1
    reference = _torchrun([*argv, "-o", str(tmp_path / "reference")])
    assert reference.returncode == 0, reference.stderr[-3000:]
    reference_dir = tmp_path / "reference" / RUN[0] / RUN[1] / RUN[2]
    names = sorted(p.name for p in reference_dir.iterdir())
    assert names == sorted(p.name for p in run_dir.iterdir()) and STATE_NAME not in names
    for name in names:
        if name.endswith(".pt"):  # gloo sums the two ranks' gradients in a fixed order: bit for bit
            expected, got = read_checkpoint(reference_dir / name)[0], read_checkpoint(run_dir / name)[0]
            assert all(torch.equal(expected[k], got[k]) for k in expected), name
    logs = [pd.read_csv(d / "training_log.csv").drop(columns="seconds") for d in (run_dir, reference_dir)]
    pd.testing.assert_frame_equal(*logs, check_exact=True)


def test_a_torchrun_rank_refuses_a_batch_not_divisible_by_the_processes(tmp_path, fake_mnist):
    # The check comes before the process group opens, so one rank of a 2-process job shows it alone
    # (under torchrun every rank prints this line, then torchrun its own report of the failed ranks).
    env = dict(os.environ, WORLD_SIZE="2", RANK="1", LOCAL_RANK="1", OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, str(REPO / "train_model.py"), *_argv(tmp_path / "out", "-b", "33")],
                          env=env, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: -b/--batch-size 33 is the global batch, split evenly over the 2 processes of torchrun; "
        "it must be divisible by 2"]
    assert not (tmp_path / "out").exists()


# -- refusals without processes -----------------------------------------------------------------------

def test_world_from_env_without_torchrun_is_one_process(monkeypatch):
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    assert world_from_env() == World()
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(UserError, match="do not describe a process"):
        world_from_env()


def test_sync_bn_refused_without_torchrun_and_on_the_cpu():
    job = train_model.parse_args(["--sync-bn"])
    with pytest.raises(UserError, match="one process has nothing to synchronise"):
        check_world(job, World(), torch.device("cpu"))
    with pytest.raises(UserError, match="needs CUDA"):
        check_world(job, World(rank=0, size=2), torch.device("cpu"))


def test_resume_with_another_number_of_processes_is_refused(tmp_path):
    two_ranks = {"run": {}, "world_size": 2}
    with pytest.raises(UserError, match="on 2 processes .* but this is one process"):
        check_same_world(two_ranks, 1, False, tmp_path)
    with pytest.raises(UserError, match="on one process, but this is 2 processes"):
        check_same_world({"run": {}}, 2, False, tmp_path)
    check_same_world(two_ranks, 2, False, tmp_path)  # the same world: accepted
    with pytest.raises(UserError, match="with --sync-bn"):
        check_same_world({"run": {"sync_bn": True}, "world_size": 2}, 2, False, tmp_path)
