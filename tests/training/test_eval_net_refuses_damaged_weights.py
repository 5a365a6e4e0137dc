"""eval_net.py refuses a checkpoint whose weights are not finite (one NaN, one Inf) or that was appended to,
in one line naming the file (and the tensor), instead of printing 'loss nan, accuracy 0.1' and exiting 0."""
import pytest
import torch

import eval_net
from src.cli import run_main
from src.training.eval_checkpoint import evaluate_checkpoint
from src.errors import UserError
from tests.script_helpers import assert_one_line_error, random_checkpoint


def _poisoned(tmp_path, value, key="conv1.weight"):
    path = random_checkpoint(tmp_path / "net.pt", "tiny10", 0)
    payload = torch.load(path, weights_only=True)
    payload["state_dict"][key].view(-1)[5] = value
    torch.save(payload, path)
    return path


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_eval_net_refuses_non_finite_weights_in_one_line(tmp_path, fake_mnist, capsys, value):
    path = _poisoned(tmp_path, value)
    assert run_main(eval_net.main, [str(path), "-d", "mnist"]) == 2
    captured = capsys.readouterr()
    assert_one_line_error(captured.err, f"the weights in {path} are not finite: tensor 'conv1.weight' holds 1 NaN or "
                                        f"infinite value(s) of")
    assert "accuracy" not in captured.out
    with pytest.raises(UserError, match="not finite: tensor 'conv1.weight'"):
        evaluate_checkpoint(path, "mnist")


def test_eval_net_refuses_a_checkpoint_with_bytes_appended(tmp_path, fake_mnist, capsys):
    path = random_checkpoint(tmp_path / "net.pt", "tiny10", 0)
    with open(path, "ab") as handle:
        handle.write(b"\0" * 1000)
    assert run_main(eval_net.main, [str(path), "-d", "mnist"]) == 2
    assert_one_line_error(capsys.readouterr().err, f"{path} is damaged (1000 bytes follow the end of its zip archive)")


def test_eval_net_still_scores_a_sound_checkpoint(tmp_path, fake_mnist):
    result = evaluate_checkpoint(random_checkpoint(tmp_path / "net.pt", "tiny10", 0), "mnist")
    assert result["n"] == 60 and 0 <= result["acc"] <= 1 and result["loss"] == result["loss"]
