"""Output paths that cannot be written are refused in one clear line before any work: a dangling symbolic link
(the output, or a folder above it; it used to say a bare "(File exists)"), a folder given where a file is to be
written (it used to end in IsADirectoryError), and run names holding control characters (a newline made a
folder whose name broke every listing)."""
import os

import pytest

import layer_info
import stitch_nets
from src.cli import run_main
from src.errors import UserError
from src.results_io import atomic_write, claim_output, refuse_overwrite, staged_folder, try_claim, write_csv
from src.validation import check_run_name, check_writable_dir
from tests.script_helpers import assert_one_line_error, random_checkpoint


@pytest.fixture
def dangling(tmp_path):
    link = tmp_path / "results"
    link.symlink_to(tmp_path / "unmounted" / "results")
    return link


def test_a_dangling_link_as_the_output_is_named_with_its_target(tmp_path, dangling):
    expected = (f"{dangling} is a dangling symbolic link: it points to {tmp_path / 'unmounted' / 'results'}, which "
                f"does not exist; make {tmp_path / 'unmounted' / 'results'} exist (e.g. mount its drive), remove the "
                f"link, or choose another output path")
    for refuse in (lambda: refuse_overwrite(dangling, False), lambda: refuse_overwrite(dangling, True),
                   lambda: claim_output(dangling), lambda: write_csv(dangling, __import__("pandas").DataFrame()),
                   lambda: staged_folder(dangling, ["matrix.csv"]).__enter__()):
        with pytest.raises(UserError) as info:
            refuse()
        assert str(info.value) == expected
    assert dangling.is_symlink() and not dangling.exists()  # the link is left as it was, never replaced by a file


def test_a_dangling_link_above_the_output_is_named(dangling):
    with pytest.raises(UserError) as info:
        try_claim(dangling / "run" / "bn3-bn3.pkl")
    message = str(info.value)
    assert message.startswith(f"{dangling} (a folder above {dangling / 'run' / 'bn3-bn3.pkl'}) is a dangling symbolic "
                              f"link") and "File exists" not in message
    with pytest.raises(UserError, match=f"cannot write to {dangling / 'run'}: {dangling} is a dangling symbolic link"):
        check_writable_dir(dangling / "run")


def test_a_link_loop_is_refused_like_a_dangling_link(tmp_path):
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    with pytest.raises(UserError, match="is a dangling symbolic link"):
        atomic_write(loop / "x.pkl", lambda f: f.write(b"x"))


def test_stitch_nets_into_a_dangling_link_is_one_line_before_any_work(tmp_path, fake_mnist, dangling, capsys):
    nets = [str(random_checkpoint(tmp_path / f"n{seed}.pt", "tiny10", seed)) for seed in (0, 1)]
    argv = [*nets, "bn3", "bn3", "-e", "1", "-o", str(dangling), "--run-name", "r"]
    assert run_main(stitch_nets.main, argv) == 2
    captured = capsys.readouterr()
    assert_one_line_error(captured.err, f"{dangling} is a dangling symbolic link (it points to ")
    assert "File exists" not in captured.err and "epoch" not in captured.out


@pytest.mark.parametrize("name", ["a\nb", "a\tb", "run\r", "\x1b[31mred", "a\x7fb", "a\x85b", "a\u2028b"])
def test_run_names_with_control_characters_are_refused(name):
    with pytest.raises(UserError) as info:
        check_run_name(name)
    message = str(info.value)
    assert message.startswith("--run-name must be a plain folder name without control characters") and "\n" not in message


@pytest.mark.parametrize("name", ["run-1", "2026-12-05_020636", "résumé", "seed 3", "a.b_c"])
def test_plain_run_names_still_pass(name):
    assert check_run_name(name) == name


def test_stitch_nets_refuses_a_newline_in_the_run_name_and_creates_nothing(tmp_path, fake_mnist, capsys):
    nets = [str(random_checkpoint(tmp_path / f"n{seed}.pt", "tiny10", seed)) for seed in (0, 1)]
    out = tmp_path / "res"
    assert run_main(stitch_nets.main, [*nets, "bn3", "bn3", "-e", "1", "-o", str(out), "--run-name", "a\nb"]) == 2
    assert_one_line_error(capsys.readouterr().err, "--run-name must be a plain folder name without control characters")
    assert not out.exists() or not any(out.iterdir())


def test_layer_info_csv_into_a_folder_is_one_line_and_leaves_the_folder(tmp_path, capsys):
    folder = tmp_path / "tables"
    folder.mkdir()
    (folder / "keep.txt").write_text("keep")
    assert run_main(layer_info.main, ["tiny10", "-d", "fashion", "--csv", str(folder), "--overwrite"]) == 2
    assert_one_line_error(capsys.readouterr().err, f"{folder} is a folder, not a file; give the path of a file to write")
    assert sorted(os.listdir(folder)) == ["keep.txt"] and not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
    assert run_main(layer_info.main, ["tiny10", "-d", "fashion", "--csv", str(folder / "layers.csv")]) == 0
    assert "conv1" in (folder / "layers.csv").read_text()
