"""Damaged, foreign and swapped checkpoints are refused in one line, never loaded as if they were fine."""
import hashlib
import random
import shutil
import zipfile

import pytest
import torch

import stitch_nets
from src.cli import run_main
from src.errors import UserError
from src.models import create_model
from src.models.checkpoint import load_checkpoint, read_checkpoint
from src.stitching.evaluate_result import compare_stitch_to_end, evaluate_stitch
from src.stitching.results import load_result
from src.stitching.run import stitch_from_args
from tests.conftest import REPO
from tests.script_helpers import random_checkpoint

COMMITTED = REPO / "model_weights" / "Tiny10" / "FashionMNIST" / "in0-gn0" / "8580.pt"


def _record_offset(path, name):
    """Where the bytes of zip record ``name`` start in the file (torch stores records uncompressed)."""
    with zipfile.ZipFile(path) as archive:
        content = archive.read(name)
    offset = path.read_bytes().find(content)
    assert offset > 0 and len(content) >= 2000
    return offset


def _flip(path, offset, count):
    raw = bytearray(path.read_bytes())
    raw[offset:offset + count] = bytes(b ^ 0x5A for b in raw[offset:offset + count])
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("record", ["archive/data.pkl", "archive/data/42"])
def test_checkpoint_with_flipped_bytes_is_refused(tmp_path, record):
    path = tmp_path / "8580.pt"
    shutil.copy(COMMITTED, path)
    _flip(path, _record_offset(path, record) + 100, 2000 if record != "archive/data.pkl" else 16)
    with pytest.raises(UserError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert message.startswith(f"{path} is damaged (Bad CRC-32 for file '{record}')") and "\n" not in message


def test_flipped_tensor_bytes_would_otherwise_load_silently(tmp_path):
    """Why the CRC check is needed: torch itself loads the damaged weights without a word."""
    path = tmp_path / "8580.pt"
    shutil.copy(COMMITTED, path)
    _flip(path, _record_offset(path, "archive/data/42") + 100, 2000)
    damaged = torch.load(path, weights_only=True)["state_dict"]
    original = torch.load(COMMITTED, weights_only=True)["state_dict"]
    assert any(not torch.equal(damaged[k], original[k]) for k in original)


def test_damaged_legacy_checkpoint_is_one_line_never_a_traceback(tmp_path):
    """The older non-zip format (the reference's files) has no checksum, but damage to it is still one line."""
    path = tmp_path / "legacy.pt"
    torch.save(create_model("lenet", n_classes=10, n_channels=1, seed=0).state_dict(), path,
               _use_new_zipfile_serialization=False)
    raw, rng, refused = path.read_bytes(), random.Random(0), 0
    for _ in range(40):
        damaged = bytearray(raw)
        offset = rng.randrange(min(len(raw), 3000))  # the pickled structure before the tensor data
        damaged[offset:offset + 8] = rng.randbytes(8)
        path.write_bytes(bytes(damaged))
        try:
            load_checkpoint(path, "lenet", "mnist")
        except UserError as err:  # anything else fails the test
            assert "\n" not in str(err) and "weights_only" not in str(err)
            refused += 1
    assert refused > 0


@pytest.mark.parametrize("content,kind", [
    (b"epoch,iteration,loss\n1,429,0.51\n", "text beginning 'epoch,iteration,loss\\n1,4'"),
    (b'{"loss": 0.5}', "text beginning '{\"loss\": 0.5}'"),
    (bytes(range(1, 200)), "data beginning"),
])
def test_text_or_csv_renamed_pt_is_one_line(tmp_path, capsys, content, kind):
    path = tmp_path / "model.pt"
    path.write_bytes(content)
    with pytest.raises(UserError) as info:
        read_checkpoint(path)
    assert str(info.value).startswith(f"{path} is not a readable PyTorch checkpoint: it is {kind}")
    import eval_net
    assert run_main(eval_net.main, [str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path} is not a readable PyTorch checkpoint") and err.count("\n") == 1


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os
        return os.system, (f"touch {self.marker}",)


def test_checkpoint_with_code_is_refused_without_torchs_weights_only_advice(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "x": _Payload(marker)}, path)
    with pytest.raises(UserError) as info:
        read_checkpoint(path)
    message = str(info.value)
    assert message == (f"refusing to load {path}: it references posix.system, which no checkpoint of this project "
                       f"or state_dict contains; only open checkpoints from trusted sources")
    assert "weights_only" not in message and not marker.exists()


# --- a result checks the checkpoints it was trained with ----------------------------------------------

@pytest.fixture
def stitched(tmp_path, fake_mnist):
    front, end = random_checkpoint(tmp_path / "front.pt", seed=0), random_checkpoint(tmp_path / "end.pt", seed=1)
    argv = [str(front), str(end), "bn3", "bn3", "-e", "1", "-b", "32", "--val-size", "40", "--measure-samples", "50",
            "-o", str(tmp_path / "res"), "--run-name", "r"]
    return stitch_from_args(stitch_nets.parse_args(argv), ["stitch_nets.py", *argv]), front, end


def test_result_against_swapped_checkpoint_is_refused_unless_allowed(stitched, tmp_path, capsys):
    path, front, end = stitched
    params = load_result(path)["params"]  # the result records the SHA-256 of each checkpoint file
    assert params["front_model_sha256"] == hashlib.sha256(front.read_bytes()).hexdigest()
    assert params["end_model_sha256"] == hashlib.sha256(end.read_bytes()).hexdigest()
    original = tmp_path / "end-original.pt"
    shutil.copy(end, original)
    random_checkpoint(end, seed=2)  # another network now sits at the recorded path
    with pytest.raises(UserError, match=r"the end checkpoint .*end\.pt is not the file the stitch was trained with"):
        evaluate_stitch(path, "after")
    import eval_stitch
    import compare_frank_m2
    assert run_main(eval_stitch.main, [str(path), "after"]) == 2
    err = capsys.readouterr().err
    assert "--allow-changed-models" in err and err.count("\n") == 1
    assert run_main(compare_frank_m2.main, [str(path), "after", "cka", "--max-samples", "20"]) == 2
    assert "not the file the stitch was trained with" in capsys.readouterr().err
    assert 0 <= evaluate_stitch(path, "after", allow_changed_models=True)["acc"] <= 1
    assert run_main(eval_stitch.main, [str(path), "after", "--allow-changed-models"]) == 0
    # the original file, moved elsewhere and given by path, is accepted: it is the same file
    recorded = load_result(path)["model_results"]["trans"]["acc"]
    assert evaluate_stitch(path, "after", end_model=str(original))["acc"] == pytest.approx(recorded)
    assert compare_stitch_to_end(path, "after", ["cka"], max_samples=20, end_model=str(original))["n"] == 20
