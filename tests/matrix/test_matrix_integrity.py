"""Cell files carry a digest: a cell changed after it was written (an accuracy's 8 bytes replaced, a random overwrite
inside the pickle) is named by --collect, which refuses to make tables of it, rerun - exactly that cell - by
--resume (the tables then equal the untampered run's), and skipped with a warning by load_summaries. Cells written
before digests were recorded are accepted unverified with a note; a writer killed between the digest and the
pickle leaves nothing that counts as finished. Runs a 2 x 2 matrix on the committed Fashion-MNIST Tiny10s."""
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import textwrap

import pandas as pd
import pytest

import stitch_matrix
from src.cli import run_main
from src.errors import UserError
from src.matrix.resume import CHANGED, cell_file
from src.results_io import ChangedFile, digest_path, read_pickle, write_pickle
from src.safe_pickle import restricted_loads
from src.stitching.results import load_result, load_summaries
from tests.conftest import FASHION_DIR, REPO
from tests.script_helpers import assert_one_line_error

TINY = REPO / "model_weights" / "Tiny10" / "FashionMNIST"
FRONT, END = str(TINY / "in0-gn0" / "8580.pt"), str(TINY / "in1-gn1" / "8580.pt")
QUICK = ["-d", "fashion", "-e", "1", "-b", "50", "--max-samples", "500", "--val-size", "500", "--measure-samples", "200"]
CELLS = [f"{s}--{r}" for s in ("bn6", "bn8") for r in ("bn7", "bn8")]
TABLES = ("matrix", "relative", "ps_inv", "cka")


def matrix_argv(out, *extra):
    return [FRONT, END, "--front-layers", "bn6", "bn8", "--end-layers", "bn7", "bn8", *QUICK, "-o", str(out),
            "--run-name", "m", *extra]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One untampered run: the run folder every test copies, and the tables the repaired runs must equal."""
    if not (FASHION_DIR / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip("Fashion-MNIST (Debian package dataset-fashion-mnist) is not installed")
    out = tmp_path_factory.mktemp("reference")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DEVICE", "cpu")
        assert run_main(stitch_matrix.main, matrix_argv(out)) == 0
    return out / "m"


@pytest.fixture
def run(reference, tmp_path, monkeypatch):
    monkeypatch.setenv("DEVICE", "cpu")
    shutil.copytree(reference, tmp_path / "res" / "m")
    return tmp_path / "res" / "m"


def replace_accuracy(path, new=0.9876):
    """The audit's change: the 8 bytes of the stored stitched accuracy (a pickled float is its big-endian double)."""
    acc = load_result(path)["model_results"]["trans"]["acc"]
    data = path.read_bytes()
    old = struct.pack(">d", acc)
    assert old in data
    path.write_bytes(data.replace(old, struct.pack(">d", new)))
    return acc


def overwrite_randomly(path, size=40, seed=0):
    data = bytearray(path.read_bytes())
    rng = random.Random(seed)
    at = len(data) // 2
    data[at:at + size] = bytes(rng.randrange(256) for _ in range(size))
    path.write_bytes(bytes(data))


def assert_same_tables(folder, reference):
    for table in TABLES:
        pd.testing.assert_frame_equal(pd.read_csv(folder / f"{table}.csv", index_col=0),
                                      pd.read_csv(reference / f"{table}.csv", index_col=0), check_exact=True)


def mtimes(folder):
    return {name: (folder / "cells" / f"{name}.pkl").stat().st_mtime_ns for name in CELLS}


def test_every_cell_and_the_matrix_record_the_sha256_of_their_bytes(reference):
    import hashlib

    for path in [*(reference / "cells" / f"{name}.pkl" for name in CELLS), reference / "matrix.pkl"]:
        digest, name = digest_path(path).read_text().split()
        assert digest == hashlib.sha256(path.read_bytes()).hexdigest() and name == path.name  # sha256sum -c reads it


def test_a_tampered_cell_is_refused_by_collect_rerun_by_resume_and_skipped_by_load_summaries(run, reference, capsys):
    cells = run / "cells"
    acc = replace_accuracy(cells / "bn6--bn7.pkl")
    overwrite_randomly(cells / "bn8--bn8.pkl")
    # without its digest the changed cell would still pass for a finished one, with the new accuracy
    tampered = restricted_loads((cells / "bn6--bn7.pkl").read_bytes())
    assert tampered["model_results"]["trans"]["acc"] == 0.9876 != acc
    matrix_csv = (run / "matrix.csv").read_bytes()

    assert run_main(stitch_matrix.main, ["--collect", str(run)]) == 2
    err = capsys.readouterr().err
    assert_one_line_error(err, f"2 of 4 cells of {run} are not finished or damaged (cells/bn6--bn7, cells/bn8--bn8: "
                               f"{CHANGED}); rerun with --resume")
    assert (run / "matrix.csv").read_bytes() == matrix_csv and b"0.9876" not in matrix_csv  # no table of them

    with pytest.warns(UserWarning) as caught:
        table = load_summaries(run)
    assert len(caught) == 1
    message = str(caught[0].message)
    assert message.startswith("load_summaries skipped 2 unreadable pickle(s)")
    assert "bn6--bn7.pkl was changed or damaged after it was written" in message and "bn8--bn8.pkl" in message
    assert sorted(table["path"]) == [str(cells / "bn6--bn8.pkl"), str(cells / "bn8--bn7.pkl")]
    with pytest.raises(ChangedFile, match=r"bn6--bn7\.pkl was changed or damaged after it was written: its SHA-256 "):
        load_result(cells / "bn6--bn7.pkl")

    before = mtimes(run)
    assert run_main(stitch_matrix.main, matrix_argv(run.parent, "--resume")) == 0
    out = capsys.readouterr().out
    for name in ("bn6--bn7", "bn8--bn8"):
        assert f"cells/{name}.pkl {CHANGED}: running the cell again" in out
    assert out.count("running the cell again") == 2
    after = mtimes(run)
    assert [name for name in CELLS if after[name] != before[name]] == ["bn6--bn7", "bn8--bn8"]  # exactly those
    assert_same_tables(run, reference)
    for name in CELLS:
        assert load_result(cells / f"{name}.pkl")["model_results"] == \
            load_result(reference / "cells" / f"{name}.pkl")["model_results"]
    assert run_main(stitch_matrix.main, ["--collect", str(run)]) == 0
    assert_same_tables(run, reference)
    assert len(load_summaries(run)) == 4


def test_a_cell_whose_digest_file_is_damaged_counts_as_changed(run, capsys):
    digest_path(run / "cells" / "bn8--bn7.pkl").write_text("not a digest\n")
    assert run_main(stitch_matrix.main, ["--collect", str(run)]) == 2
    assert_one_line_error(capsys.readouterr().err, f"1 of 4 cells of {run} are not finished or damaged "
                                                   f"(cells/bn8--bn7: {CHANGED})")


def test_cells_without_digest_files_are_accepted_unverified_with_a_note(run, reference, capsys):
    """Written before digests were recorded: --collect and --resume keep them (rerunning would redo finished
    work that the old writer also marked finished by its pickle alone), and say so in one note naming them."""
    for name in CELLS[:3]:
        digest_path(run / "cells" / f"{name}.pkl").unlink()
    assert run_main(stitch_matrix.main, ["--collect", str(run)]) == 0
    err = capsys.readouterr().err
    note = [line for line in err.splitlines() if line.startswith("note: ")]
    assert note == [f"note: 3 cell file(s) of {run} have no .sha256 digest file (written before digests were "
                    f"recorded), accepted unverified: cells/bn6--bn7, cells/bn6--bn8, cells/bn8--bn7"]
    assert_same_tables(run, reference)
    before = mtimes(run)
    assert run_main(stitch_matrix.main, matrix_argv(run.parent, "--resume")) == 0
    assert capsys.readouterr().out.count("2 finished cell(s) kept") == 2 and mtimes(run) == before


def test_the_release_matrix_cells_without_digests_still_load_and_count():
    from src.matrix import load_matrix

    release = REPO / "tests" / "fixtures" / "release_0" / "matrix"
    assert not list(release.rglob("*.sha256"))
    for name in ("relu1--relu2", "relu2--relu2"):
        assert load_result(release / "cells" / f"{name}.pkl")["params"]["end_layer"] == "relu2"
    assert load_matrix(release / "matrix.pkl")["end_layers"] == ["relu2"]
    assert len(load_summaries(release)) == 2


KILLED_WRITER = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from src.results_io import write_pickle

    path = Path(sys.argv[1])
    real = os.replace

    def replace(src, dst):  # killed once the digest is in place, before the pickle is renamed into place
        if Path(dst) == path:
            os.kill(os.getpid(), signal.SIGKILL)
        real(src, dst)

    os.replace = replace
    write_pickle(path, {"params": {}, "model_results": {}, "trans_m": {}, "run": sys.argv[2]}, digest=True)
""")


@pytest.mark.parametrize("previous", [False, True], ids=["new file", "replacing a result"])
def test_a_writer_killed_between_digest_and_pickle_leaves_nothing_that_counts(tmp_path, previous):
    path = tmp_path / "cells" / "a--b.pkl"
    if previous:
        write_pickle(path, {"params": {}, "model_results": {}, "trans_m": {}, "run": "old"}, digest=True)
    done = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(path), "new"], cwd=REPO, capture_output=True,
                          env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=120)
    assert done.returncode == -signal.SIGKILL
    assert digest_path(path).is_file()  # the digest was written first
    assert list(path.parent.glob(".a--b.pkl.*.tmp"))  # the complete pickle under its temporary name, never renamed
    state = cell_file(path, job=None, digests=None)
    if previous:  # the old pickle beside the new digest: changed, so a matrix runs the cell again
        assert state.problem == CHANGED and state.result is None
        with pytest.raises(UserError, match="was changed or damaged after it was written"):
            read_pickle(path)
    else:  # a digest alone is no result
        assert not path.exists() and state.problem == "not finished"
