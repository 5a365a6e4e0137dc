"""stitch_matrix.py --fronts ... --ends ...: the matrix of every ordered pair, a folder each, pairs.csv and a grid."""
import pandas as pd
import pytest

import stitch_matrix
from src.cli import run_main
from src.matrix import load_matrix
from tests.conftest import REPO

LENET = REPO / "model_weights" / "LeNet" / "FashionMNIST"
NETS = [str(LENET / f"in{i}-gn{i}" / "8580.pt") for i in range(3)]
QUICK = ["--front-layers", "relu1", "relu2", "--end-layers", "relu2", "relu3", "-d", "fashion", "-e", "1", "-b", "50",
         "--max-samples", "200", "--val-size", "100", "--measure-samples", "50"]


def test_every_ordered_pair_gets_its_run_and_a_row(fashion_available, tmp_path, capsys):
    argv = ["--fronts", NETS[0], NETS[1], "--ends", NETS[1], NETS[2], *QUICK, "-o", str(tmp_path), "--run-name", "all"]
    assert run_main(stitch_matrix.main, argv) == 0
    pairs = pd.read_csv(tmp_path / "all" / "pairs.csv")
    # in0 -> in1, in0 -> in2, in1 -> in2 (in1 is not stitched into itself)
    assert [(f.split("/")[-2], e.split("/")[-2]) for f, e in zip(pairs["front"], pairs["end"])] == [
        ("in0-gn0", "in1-gn1"), ("in0-gn0", "in2-gn2"), ("in1-gn1", "in2-gn2")]
    assert (tmp_path / "all" / "pairs.png").is_file() and (tmp_path / "all" / "pairs.pkl").is_file()
    for row in pairs.itertuples():
        summary = load_matrix(tmp_path / "all" / row.run / "matrix.pkl")
        tri = summary["triangle"]["trained"]["stitched"]
        assert row.on_or_below_diagonal == pytest.approx(tri["mean_on_or_below"])
        assert row.spearman_stitching_cka == pytest.approx(summary["spearman"]["trained"])
        assert row.end_acc == pytest.approx(summary["end_acc"]["trained"]) and row.cells == 4
    # one pair's folder holds exactly what a run of that pair alone writes
    alone = [NETS[0], NETS[2], *QUICK, "-o", str(tmp_path), "--run-name", "alone"]
    assert run_main(stitch_matrix.main, alone) == 0
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "alone" / "matrix.csv", index_col=0),
                                  pd.read_csv(tmp_path / "all" / pairs["run"][1] / "matrix.csv", index_col=0))
    capsys.readouterr()
    assert run_main(stitch_matrix.main, [*argv, "--resume"]) == 0  # every cell of every pair is kept
    assert "stitched acc" not in capsys.readouterr().out


@pytest.mark.parametrize("extra", [
    [NETS[0], NETS[1], "--fronts", NETS[0], "--ends", NETS[1]],
    ["--fronts", NETS[0]],
    ["--fronts", NETS[0], "--ends", NETS[1], "--front-weights", "w.pt"],
])
def test_pairs_and_one_pair_do_not_mix(extra, tmp_path, capsys):
    assert run_main(stitch_matrix.main, [*extra, *QUICK, "-o", str(tmp_path), "--run-name", "x"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert not (tmp_path / "x").exists()  # refused before anything is written
