"""--objective both (EV / ES / SV), stitching into the end network's input (image grids), and their bad input,
end to end on a tiny fake MNIST; the statistics are recomputed from the cell pickles with forward hooks."""
import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import stitch_matrix
import stitch_nets
from src.cli import run_main
from src.data import get_loader, load_split
from src.models.checkpoint import save_checkpoint
from src.models.registry import register_model
from src.matrix.evess import cell_position, diagonal_position, evess_summary, evess_table
from src.stitching.affine import make_stitch
from src.matrix import run_matrix
from src.stitching.results import load_result, load_summaries
from src.stitching.run import stitch_from_args
from tests.script_helpers import random_checkpoint

QUICK = ["-e", "1", "-b", "32", "--val-size", "40", "--measure-samples", "50"]


@pytest.fixture
def tinies(tmp_path, fake_mnist):
    return [str(random_checkpoint(tmp_path / f"tiny{s}.pt", "tiny10", s)) for s in (0, 1)]


def _blocks_of(image: np.ndarray, k: int) -> np.ndarray:
    """``C x H x W`` -> ``C x H/k x W/k x k*k``: the k x k blocks."""
    c, h, w = image.shape
    return image.reshape(c, h // k, k, w // k, k).transpose(0, 1, 3, 2, 4).reshape(c, h // k, w // k, k * k)


def test_stitch_into_the_input_generates_images_of_the_input_shape(tinies, tmp_path):
    argv = [*tinies, "bn7", "input", *QUICK, "--objective", "mse", "-o", str(tmp_path / "res"), "--run-name", "img"]
    path = stitch_from_args(stitch_nets.parse_args(argv), ["stitch_nets.py", *argv])
    result = load_result(path)
    assert result["params"]["objective"] == "mse" and result["summary"]["objective"] == "mse"
    assert result["stitch"]["kind"] == "upsample_conv1x1" and result["shapes"]["end"] == [1, 32, 32]
    assert (path.parent / "bn7-input.png").stat().st_size > 0
    images = result["images"]
    # The real row is the first test images in pixel range: the raw uint8 split divided by 255 (float32 rounding
    # of normalising and de-normalising: a few ulps of values <= 1).
    raw = load_split("mnist", "test", val_size=40).images[:8].numpy() / 255.0
    assert images["real"].shape == (8, 1, 32, 32) and np.abs(images["real"] - raw).max() < 1e-6
    # bn7 is 64 x 2 x 2: nearest upsampling by 16 and a 1x1 convolution make every 16 x 16 block one grey level.
    for key in ("trans", "ps_inv"):
        assert images[key].shape == (8, 1, 32, 32) and images[key].min() >= 0 and images[key].max() <= 1
        for image in images[key]:
            blocks = _blocks_of(image, 16)
            assert (blocks == blocks[..., :1]).all()


def _activations(model: nn.Module, layer: str, loader) -> torch.Tensor:
    """The layer's output (or the input, for 'input') over the loader, from a forward hook: not the fx cut."""
    out = []
    for x, _ in loader:
        if layer == "input":
            out.append(x)
            continue
        handle = dict(model.named_modules())[layer].register_forward_hook(lambda m, i, o: out.append(o.detach()))
        with torch.no_grad():
            model(x)
        handle.remove()
    return torch.cat(out)


def _stitch_from(result, which):
    s = result["stitch"]
    stitch = make_stitch(s["front_shape"], s["end_shape"], kind=s["kind"])
    stitch.load_param_dict(result["trans_m"][which])
    return stitch.eval()


def test_objective_both_trains_a_twin_per_cell_and_the_statistics_recompute_from_the_pickles(tinies, tmp_path):
    from src.models.checkpoint import load_checkpoint

    argv = [*tinies, "--front-layers", "bn7", "bn8", "--end-layers", "input", "bn8", *QUICK,
            "--objective", "both", "-o", str(tmp_path / "res"), "--run-name", "both"]
    path, summary = run_matrix(stitch_matrix.parse_args(argv), ["stitch_matrix.py", *argv], progress=False)
    run = path.parent
    front, _ = load_checkpoint(tinies[0])
    end, _ = load_checkpoint(tinies[1])
    loader = get_loader("mnist", "test", 1000, val_size=40, shuffle=False, augment=False)
    table = pd.read_csv(run / "evess.csv")
    assert len(table) == 4 and len(load_summaries(run)) == 8  # a task and an mse pickle per cell
    from src.results_io import read_pickle  # the matrix pickle (evess_summary has a MultiIndex) loads safely
    assert read_pickle(path)["evess_summary"].index.names == ["cells", "statistic"]
    matrix_mse = pd.read_csv(run / "matrix_mse.csv", index_col=0)
    for s in ("bn7", "bn8"):
        for r in ("input", "bn8"):
            vanilla, twin = load_result(run / "cells" / f"{s}--{r}.pkl"), load_result(run / "cells" / f"{s}--{r}.mse.pkl")
            assert (vanilla["params"]["objective"], twin["params"]["objective"]) == ("task", "mse")
            assert np.array_equal(vanilla["trans_m"]["before"]["w"], twin["trans_m"]["before"]["w"])  # same init
            assert matrix_mse.loc[s, r] == twin["model_results"]["trans"]["acc"]
            with torch.no_grad():
                fa = _activations(front, s, loader)
                expected = _activations(end, r, loader).double().flatten(1)
                outs = {k: st(fa).double().flatten(1) for k, st in
                        (("V", _stitch_from(vanilla, "after")), ("S", _stitch_from(twin, "after")),
                         ("L", _stitch_from(twin, "ps_inv")))}
            row = table[(table["front layer"] == s) & (table["end layer"] == r)].iloc[0]
            variance = expected.numpy().var(axis=0).mean()
            # float32 activations and stitch outputs; float64 sums of squares: relative differences of a few 1e-7
            # per element, amplified where expected and stitch output nearly cancel: 1e-5 is ample.
            for name, (a, b) in {"EV": (expected, outs["V"]), "ES": (expected, outs["S"]), "SV": (outs["S"], outs["V"]),
                                 "EL": (expected, outs["L"])}.items():
                mse = float((a - b).pow(2).mean())
                assert row[name] == pytest.approx(mse, rel=1e-5)
                assert row[f"{name}_rel"] == pytest.approx(mse / variance, rel=1e-5)
            assert row["EV_over_ES"] == pytest.approx(row["EV"] / row["ES"], rel=1e-12)
    # the input column is its own group; bn8 is then the only end layer, which spans all depths (as a single
    # layer does in the matrix's triangle statistic), so both of its cells count as on the diagonal
    assert dict(zip(zip(table["front layer"], table["end layer"]), table["position"])) == {
        ("bn7", "input"): "input", ("bn7", "bn8"): "diagonal",
        ("bn8", "input"): "input", ("bn8", "bn8"): "diagonal"}
    saved = pd.read_csv(run / "evess_summary.csv", index_col=[0, 1])
    assert saved.loc[("all", "mean"), "ES"] == pytest.approx(table["ES"].mean(), rel=1e-12)
    diagonal = table[table["position"] == "diagonal"]
    assert saved.loc[("diagonal", "max"), "EV_rel"] == pytest.approx(diagonal["EV_rel"].max(), rel=1e-12)
    assert saved.loc[("diagonal", "std"), "SV"] == pytest.approx(diagonal["SV"].std(ddof=1), rel=1e-9)
    assert saved.loc[("all", "min"), "n_cells"] == 4 and saved.loc[("input", "mean"), "n_cells"] == 2
    assert pd.read_csv(run / "cka.csv", index_col=0)["input"].isna().all()  # no CKA with the raw input
    assert (run / "images.png").stat().st_size > 0
    # the triangle statistic leaves the input column out (a generated image is not an end depth): only
    # the bn8 column counts, a single end layer, so both of its cells are on or below the diagonal
    triangle = summary["triangle"]["trained"]["stitched"]
    assert (triangle["cells_on_or_below"], triangle["cells_above"]) == (2, 0)
    assert triangle["mean_on_or_below"] == pytest.approx(summary["matrix"]["bn8"].mean(), rel=1e-12)
    assert set(summary["images"]) == {"bn7", "bn8"} and set(summary["images"]["bn7"]) == {"task", "mse"}
    stored = pd.read_pickle(path)
    assert stored["evess"].equals(summary["evess"]) and "matrix_mse" in stored["tables"]


def test_diagonal_positions_follow_proportional_depth_and_the_summary_groups_them():
    # the input column is its own group and does not shift the others' depths
    assert cell_position("b", "input", ["a", "b"], ["input", "a", "b"]) == "input"
    assert cell_position("b", "b", ["a", "b"], ["input", "a", "b"]) == "diagonal"
    # 3 front_layers (depths 0, 1/2, 1) x 5 end_layers (0, 1/4, 1/2, 3/4, 1): the diagonal is (0,0), (1,2), (2,4).
    positions = [[diagonal_position(i, j, 3, 5) for j in range(5)] for i in range(3)]
    assert [(i, j) for i in range(3) for j in range(5) if positions[i][j] == "diagonal"] == [(0, 0), (1, 2), (2, 4)]
    assert positions[1][1] == "below diagonal" and positions[1][3] == "above diagonal"
    rows = [{"front layer": i, "end layer": j, "position": positions[i][j], "EV": 1.0 + i + j, "ES": 1.0,
             "SV": 2.0, "EL": 0.5, "EV_rel": 0.1, "ES_rel": 0.1, "SV_rel": 0.2, "EL_rel": 0.05}
            for i in range(3) for j in range(5)]
    summary = evess_summary(evess_table(rows))
    assert summary.loc[("diagonal", "mean"), "EV"] == pytest.approx(np.mean([1, 4, 7]))
    assert summary.loc[("all", "max"), "EV_over_ES"] == 7.0 and summary.loc[("below diagonal", "min"), "n_cells"] == 6


# --- bad input: one line, exit 2, nothing written -------------------------------------------------------------

class TokensForTests(nn.Module):
    """An end with a 2-d activation (3 tokens x 64): a token sequence with no patch grid (3 is no square plus a
    few prefix tokens), which no stitch kind maps a feature map to."""

    def __init__(self, n_classes: int = 10, n_channels: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(n_channels, 3, 4, stride=4)
        self.tokens = nn.Flatten(2)
        self.fc = nn.Linear(3, n_classes)

    def forward(self, x):
        return self.fc(self.tokens(self.conv(x)).mean(2))


@pytest.fixture
def tokens_model():
    """Registers TokensForTests for one test and removes it again, so other tests see the zoo unchanged."""
    from src.models import registry

    entries, aliases = list(registry._ENTRIES), dict(registry._ALIASES)
    register_model("tokens_for_tests")(TokensForTests)
    yield "tokens_for_tests"
    registry._ENTRIES[:] = entries
    registry._ALIASES.clear()
    registry._ALIASES.update(aliases)


def _special_checkpoint(tmp_path, name, dataset="mnist", n_channels=1, n_classes=10, size=32):
    from src.models import create_model

    meta = {"model": name, "dataset": dataset, "n_channels": n_channels, "n_classes": n_classes,
            "input_size": [size, size]}
    model = create_model(name, n_classes=n_classes, n_channels=n_channels, seed=0)
    return str(save_checkpoint(tmp_path / f"{name}-{dataset}.pt", model.eval(), meta))


@pytest.mark.parametrize("script,case,message", [
    ("nets", "input front", "'input' can only be an end layer"),
    ("matrix", "input front", "'input' can only be an end layer"),
    ("nets", "no image grid", "needs a dataset of images with per-channel mean/std"),
    ("matrix", "no image grid", "needs a dataset of images with per-channel mean/std"),
    ("nets", "unmappable mse", "no stitch kind maps a 3-d activation (64x2x2) to a 2-d one (3x64)"),
    ("matrix", "unmappable mse", "no stitch kind maps a 3-d activation (64x2x2) to a 2-d one (3x64)"),
])
def test_bad_objective_and_input_stitches_are_one_line_and_write_nothing(tinies, tmp_path, capsys, script, case,
                                                                         message, tokens_model):
    out = tmp_path / "out"
    front_net, end_net, front, end, extra = *tinies, "bn8", "input", ["--objective", "mse"]
    if case == "input front":
        front, end = "input", "bn8"
    elif case == "no image grid":  # celeba: 3 x 224 x 224 faces, 40 attributes, no per-channel mean/std
        front_net = end_net = _special_checkpoint(tmp_path, "tiny10", "celeba", 3, 40, 224)
        extra = ["-d", "celeba"]
    elif case == "unmappable mse":
        end_net, end = _special_checkpoint(tmp_path, tokens_model), "tokens"
    if script == "nets":
        argv, main = [front_net, end_net, front, end, *QUICK, *extra], stitch_nets.main
    else:
        argv = [front_net, end_net, "--front-layers", front, "--end-layers", end, *QUICK, *extra]
        main = stitch_matrix.main
    assert run_main(main, [*argv, "-o", str(out), "--run-name", "bad"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    assert not out.exists() or not any(out.rglob("*"))


def test_objective_both_resumes_and_shards_to_the_same_tables(tinies, tmp_path):
    """The EV / ES / SV row lives in each cell's mse pickle, and a cell counts as finished only with its twin:
    shards + --collect, and a resume after losing one cell's marker and another cell's twin, rebuild exactly
    the uninterrupted run's tables."""
    import shutil

    from src.matrix import collect_matrix

    def argv(name, *extra):
        return [*tinies, "--front-layers", "bn7", "bn8", "--end-layers", "bn7", "bn8", *QUICK,
                "--objective", "both", "-o", str(tmp_path / "res"), "--run-name", name, *extra]

    def matrix(args):
        return run_matrix(stitch_matrix.parse_args(args), ["stitch_matrix.py", *args], progress=False)

    path, _ = matrix(argv("single"))
    reference = path.parent
    tables = ("matrix", "matrix_mse", "evess")

    def assert_same(folder):
        for table in tables:
            pd.testing.assert_frame_equal(pd.read_csv(folder / f"{table}.csv"), pd.read_csv(reference / f"{table}.csv"),
                                          check_exact=True)

    for k in (1, 2):
        assert matrix(argv("array", "--shard", f"{k}/2")) == (None, None)
    collect_matrix(tmp_path / "res" / "array")
    assert_same(tmp_path / "res" / "array")

    shutil.copytree(reference, tmp_path / "res" / "resumed")
    cells = tmp_path / "res" / "resumed" / "cells"
    for table in tables:
        (cells.parent / f"{table}.csv").unlink()
    (cells / "bn7--bn8.pkl").unlink()  # killed after its twin, before the marker
    (cells / "bn8--bn7.mse.pkl").unlink()  # a twin lost
    kept = {p.name: p.stat().st_mtime_ns for p in cells.glob("*.pkl")}
    matrix(argv("resumed", "--resume"))
    rerun = {p.name for p in cells.glob("*.pkl") if kept.get(p.name) != p.stat().st_mtime_ns}
    assert rerun == {"bn7--bn8.pkl", "bn7--bn8.mse.pkl", "bn8--bn7.pkl", "bn8--bn7.mse.pkl"}
    assert_same(tmp_path / "res" / "resumed")
