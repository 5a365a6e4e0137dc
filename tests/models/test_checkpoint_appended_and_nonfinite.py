"""Checkpoints changed after they were written are refused in one line naming the file: bytes appended after
the zip archive (as a flipped byte's bad CRC is), and weights holding NaN or infinity, which every script that
loads a checkpoint refuses with the same line naming the tensor."""
import shutil

import pytest
import torch

import compare_layers
import compare_nets
import stitch_nets
from src.cli import run_main
from src.errors import UserError
from src.models.checkpoint import load_checkpoint, read_checkpoint, verify_archive
from src.models.specs import read_weights
from tests.conftest import REPO
from tests.script_helpers import assert_one_line_error, random_checkpoint

COMMITTED = REPO / "model_weights" / "Tiny10" / "FashionMNIST" / "in0-gn0" / "8580.pt"


def _appended(tmp_path, count=1000):
    path = tmp_path / "8580.pt"
    shutil.copy(COMMITTED, path)
    with open(path, "ab") as handle:
        handle.write(bytes(range(256)) * (count // 256) + bytes(count % 256))
    return path


def test_bytes_appended_after_the_archive_are_refused_like_a_bad_crc(tmp_path):
    path = _appended(tmp_path)
    expected = (f"{path} is damaged (1000 bytes follow the end of its zip archive): it changed after it was written; "
                f"restore it from a copy or retrain the model")
    for load in (verify_archive, read_checkpoint, load_checkpoint, read_weights):
        with pytest.raises(UserError) as info:
            load(path)
        assert str(info.value) == expected


def test_appended_bytes_would_otherwise_load_silently(tmp_path):
    """Why the check is needed: zipfile and torch read the archive and ignore what follows it."""
    path = _appended(tmp_path)
    loaded = torch.load(path, weights_only=True)["state_dict"]
    original = torch.load(COMMITTED, weights_only=True)["state_dict"]
    assert all(torch.equal(loaded[k], original[k]) for k in original)


def test_one_appended_byte_and_an_untouched_checkpoint(tmp_path):
    verify_archive(COMMITTED)  # nothing follows torch.save's archive
    path = _appended(tmp_path, count=1)
    with pytest.raises(UserError, match=r"is damaged \(1 byte follow"):
        load_checkpoint(path)


def _with(tmp_path, key, value, index=(0, 0, 0, 0), bare=False, name="bad.pt"):
    """The committed checkpoint with ``value`` written at ``index`` of tensor ``key`` (bare: its state_dict only)."""
    payload = torch.load(COMMITTED, weights_only=True)
    payload["state_dict"][key][index] = value
    path = tmp_path / name
    torch.save(payload["state_dict"] if bare else payload, path)
    return path


@pytest.mark.parametrize("value,bare", [(float("nan"), False), (float("inf"), False), (float("-inf"), True)])
def test_non_finite_weights_are_refused_naming_the_file_and_the_tensor(tmp_path, value, bare):
    path = _with(tmp_path, "conv1.weight", value, bare=bare)
    with pytest.raises(UserError) as info:
        load_checkpoint(path, "tiny10", "fashion")
    assert str(info.value) == (f"the weights in {path} are not finite: tensor 'conv1.weight' holds 1 NaN or infinite "
                               f"value(s) of 144; the training diverged or the file is damaged, use an earlier snapshot")
    with pytest.raises(UserError, match="not finite: tensor 'conv1.weight'"):
        read_weights(path)  # a model spec's weights file: the same words


def test_non_finite_buffers_are_refused_too(tmp_path):
    path = _with(tmp_path, "bn1.running_var", float("nan"), index=(3,))
    with pytest.raises(UserError, match=r"tensor 'bn1\.running_var' holds 1 NaN or infinite value\(s\) of 16"):
        load_checkpoint(path)


@pytest.mark.slow
@pytest.mark.parametrize("script", ["stitch_nets", "compare_nets", "compare_layers"])
def test_scripts_refuse_non_finite_checkpoints_in_the_same_line(tmp_path, fake_mnist, capsys, script):
    good = random_checkpoint(tmp_path / "good.pt", "tiny10", 0)
    bad = random_checkpoint(tmp_path / "bad.pt", "tiny10", 1)
    payload = torch.load(bad, weights_only=True)
    payload["state_dict"]["conv2.weight"][1, 0, 0, 0] = float("inf")
    torch.save(payload, bad)
    argv = {"stitch_nets": [str(good), str(bad), "bn3", "bn3", "-e", "1", "-o", str(tmp_path / "res")],
            "compare_nets": [str(good), str(bad), "bn3", "bn3", "mnist", "cka"],
            "compare_layers": [str(good), str(bad), "-d", "mnist", "-o", str(tmp_path / "cl")]}[script]
    assert run_main({"stitch_nets": stitch_nets, "compare_nets": compare_nets,
                     "compare_layers": compare_layers}[script].main, argv) == 2
    assert_one_line_error(capsys.readouterr().err, f"the weights in {bad} are not finite: tensor 'conv2.weight' holds "
                                                   f"1 NaN or infinite value(s) of")
