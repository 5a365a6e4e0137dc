"""train_model.py, eval_net.py, layer_info.py from a shell: outputs and one-line errors."""
import json
import subprocess
import sys

import pytest

from tests.conftest import REPO


def run(*args, env=None):
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, env=env, timeout=300)


@pytest.fixture
def env(fake_mnist):
    import os
    return dict(os.environ)


@pytest.mark.slow
def test_train_then_eval_and_layer_info(tmp_path, env):
    out = tmp_path / "snap"
    done = run("train_model.py", "-m", "lenet", "-d", "mnist", "-e", "1", "-b", "50", "--val-size", "50",
               "-o", str(out), env=env)
    assert done.returncode == 0, done.stderr
    ckpt = out / "LeNet" / "MNIST" / "in0-gn0" / "5.pt"
    assert ckpt.is_file()
    result = run("eval_net.py", str(ckpt), "--json", env=env)
    assert result.returncode == 0, result.stderr
    numbers = json.loads(result.stdout)
    assert numbers["n"] == 60 and numbers["split"] == "test" and 0 <= numbers["acc"] <= 1
    table = run("layer_info.py", str(ckpt), env=env)
    assert table.returncode == 0 and "conv1" in table.stdout and "6x28x28" in table.stdout and "fc3" in table.stdout


@pytest.mark.slow
@pytest.mark.parametrize("args,message", [
    (("train_model.py", "-m", "nonet", "-d", "mnist"), "unknown model 'nonet'"),
    (("eval_net.py", "missing.pt"), "checkpoint missing.pt does not exist"),
    (("layer_info.py", "resnet_9999"), "unknown model 'resnet_9999'"),
    (("train_model.py", "-m", "lenet", "-d", "cifar10", "-e", "1"), "CIFAR10 not found"),
])
def test_bad_input_is_one_line_on_stderr(args, message, env):
    done = run(*args, env=env)
    assert done.returncode == 2
    assert done.stderr.startswith("error: ") and message in done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


@pytest.mark.slow
def test_layer_info_of_a_model_name():
    done = run("layer_info.py", "tiny10", "-d", "fashion")
    assert done.returncode == 0
    assert "1x32x32" in done.stdout and "bn3" in done.stdout and "32x13x13" in done.stdout
