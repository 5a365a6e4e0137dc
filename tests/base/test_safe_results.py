"""Result pickles are loaded with a restricted unpickler: a crafted file is refused and never runs.

Each crafted pickle would create a marker file if anything in it were executed; the tests check both
the one-line refusal naming the global and that the marker never appears. Real results (written by
this project with today's and older pandas / numpy) still load.
"""
import copy
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from src.cli import run_main
from src.errors import UserError
from src.results_io import read_pickle, write_pickle
from src.safe_pickle import ALLOWED_GLOBALS
from src.similarity import SimilarityMatrix
from src.stitching.results import load_result, load_summaries
from tests.fixtures.make_pandas2_numpy1_result import VALUES

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


class _Payload:
    """Pickles as a call of ``function(*args)``: what a crafted result would run on load."""

    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


def _touch(marker: Path) -> str:
    return f"touch {marker}"


def _crafted(marker: Path):
    """Raw pickles (protocol 0 text, like an attacker writes them) that would create ``marker``."""
    shell = _touch(marker).encode()
    python = f"open({str(marker)!r}, 'w').close()".encode()
    return {
        "posix.system": b"cposix\nsystem\n(S'" + shell + b"'\ntR.",
        "os.system": b"cos\nsystem\n(S'" + shell + b"'\ntR.",
        "subprocess.check_call": b"csubprocess\ncheck_call\n((lp0\nS'touch'\naS'" + str(marker).encode() + b"'\natR.",
        "builtins.eval": b"cbuiltins\neval\n(S'" + python.replace(b"'", b"\\'") + b"'\ntR.",
        "builtins.exec": b"c__builtin__\nexec\n(S'" + python.replace(b"'", b"\\'") + b"'\ntR.",
        # getattr(__import__('os'), 'system')('touch ...'): the refusal comes at the first global
        "builtins.getattr": b"cbuiltins\ngetattr\n(cbuiltins\n__import__\n(S'os'\ntRS'system'\ntR(S'" + shell + b"'\ntR.",
    }


@pytest.mark.slow
@pytest.mark.parametrize("refused", list(_crafted(Path("m"))))
def test_crafted_pickle_with_os_system_is_refused_and_never_runs(tmp_path, refused):
    marker = tmp_path / "marker"
    path = tmp_path / "x.pkl"
    path.write_bytes(_crafted(marker)[refused])
    with pytest.raises(UserError) as info:
        read_pickle(path)
    assert str(info.value) == (f"refusing to load {path}: it references {refused}, which no result of this project "
                               f"contains; only open pickles from trusted sources")
    assert not marker.exists()
    with pytest.raises(UserError, match=f"references {refused}"):
        load_result(path)
    assert not marker.exists()


@pytest.mark.slow
def test_crafted_payloads_would_run_with_plain_pickle(tmp_path):
    """The crafted files above are real attacks: plain pickle.load runs them (so their refusal means something)."""
    marker = tmp_path / "marker"
    pickle.loads(_crafted(marker)["builtins.eval"])
    assert marker.exists()


def test_valid_result_with_a_payload_nested_inside_is_refused(tmp_path):
    marker = tmp_path / "marker"
    result = {"params": {"run_name": "r", "note": [1, {"deep": _Payload(os.system, _touch(marker))}]},
              "model_results": {}, "trans_m": {"after": {"w": np.eye(2)}}, "trans_fit": pd.DataFrame({"epoch": [1]})}
    path = tmp_path / "r" / "bn3-bn3.pkl"
    write_pickle(path, result)  # protocol 5: the global is named by STACK_GLOBAL, inside valid containers
    with pytest.raises(UserError, match=r"references posix\.system, which no result"):
        load_result(path)
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable pickle\(s\): .*bn3-bn3.pkl \(refusing to load"):
        assert load_summaries(tmp_path).empty  # skipped (and said so), not run
    assert not marker.exists()


def test_frames_with_a_multiindex_load(tmp_path):
    """A --objective both matrix.pkl holds evess_summary, indexed by (group of cells, statistic)."""
    frame = pd.DataFrame({"EV": [0.1, 0.9]}, index=pd.MultiIndex.from_product([["all"], ["min", "max"]],
                                                                            names=["cells", "statistic"]))
    write_pickle(tmp_path / "matrix.pkl", {"format": "drfrank-stitch-matrix", "evess_summary": frame})
    pd.testing.assert_frame_equal(read_pickle(tmp_path / "matrix.pkl")["evess_summary"], frame)


def test_load_summaries_passes_over_other_pickles_quietly_and_names_unreadable_ones(tmp_path):
    good = {"params": {}, "model_results": {}, "trans_m": {}, "summary": {"trans_acc": 0.5}}
    write_pickle(tmp_path / "run" / "cells" / "a--b.pkl", good)
    write_pickle(tmp_path / "run" / "matrix.pkl", {"format": "drfrank-stitch-matrix", "tables": {}})
    (tmp_path / "run" / "cells" / "c--d.pkl").write_bytes(pickle.dumps(good)[:20])  # truncated by a crash
    with pytest.warns(UserWarning) as caught:
        table = load_summaries(tmp_path)
    assert list(table["trans_acc"]) == [0.5] and table["path"].iloc[0].endswith("a--b.pkl")
    assert len(caught) == 1 and "c--d.pkl" in str(caught[0].message) and "matrix.pkl" not in str(caught[0].message)


def test_matrix_pickle_with_a_payload_is_refused(tmp_path):
    marker = tmp_path / "marker"
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "matrix.pkl").write_bytes(pickle.dumps({"values": _Payload(eval, "1")}))
    with pytest.raises(UserError, match=r"references builtins\.eval"):
        SimilarityMatrix.load(tmp_path / "m")
    assert not marker.exists()


@pytest.mark.slow
@pytest.mark.parametrize("script,extra", [("eval_stitch", ["after"]), ("compare_frank_m2", ["after", "cka"])])
def test_scripts_refuse_a_crafted_result_in_one_line(tmp_path, capsys, script, extra):
    marker = tmp_path / "marker"
    path = tmp_path / "x.pkl"
    path.write_bytes(_crafted(marker)["posix.system"])
    assert run_main(__import__(script).main, [str(path), *extra]) == 2
    err = capsys.readouterr().err
    assert err == (f"error: refusing to load {path}: it references posix.system, which no result of this project "
                   f"contains; only open pickles from trusted sources\n")
    assert not marker.exists()


def _reference_values():
    """Values of every kind results hold: what tests/fixtures/pandas2_numpy1_result.pkl holds too."""
    return copy.deepcopy(VALUES)


def _assert_same(loaded, expected):
    same = dict(check_dtype=False, check_index_type=False)  # pandas 2's object strings are pandas 3's str
    for key in ("curve", "matrix"):
        pd.testing.assert_frame_equal(loaded[key], expected[key], check_column_type=False, **same)
    pd.testing.assert_series_equal(loaded["series"], expected["series"], **same)
    for got, want in zip(loaded["arrays"], expected["arrays"]):
        assert got.dtype == want.dtype and np.array_equal(got, want)
    assert [(type(v), v) for v in loaded["scalars"]] == [(type(v), v) for v in expected["scalars"]]
    assert loaded["types"] == expected["types"]


def test_results_of_every_kind_load(tmp_path):
    expected = _reference_values()
    write_pickle(tmp_path / "now.pkl", expected)
    _assert_same(read_pickle(tmp_path / "now.pkl"), expected)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # numpy 2 reading numpy 1's module names
@pytest.mark.parametrize("name,needs", [("pandas2_numpy1_result.pkl", None), ("pandas3_pyarrow_result.pkl", "pyarrow")])
def test_results_written_by_other_pandas_and_numpy_versions_load(name, needs):
    if needs:
        pytest.importorskip(needs)
    _assert_same(read_pickle(FIXTURES / name), _reference_values())


def test_saved_similarity_matrix_loads_back(tmp_path):
    rng = np.random.default_rng(0)
    sim = SimilarityMatrix(values=rng.random((2, 3)), rows=["a", "b"], cols=["x", "y", "z"], measure="cka",
                           n_samples=10, pvalues=rng.random((2, 3)), permutations=9, meta={"model1": "A"})
    sim.save(tmp_path / "m", provenance={"command": "test"})
    loaded = SimilarityMatrix.load(tmp_path / "m")
    assert np.array_equal(loaded.values, sim.values) and np.array_equal(loaded.pvalues, sim.pvalues)
    assert loaded.rows == sim.rows and loaded.cols == sim.cols and loaded.meta == sim.meta


def test_allowed_globals_are_classes_or_reconstruction_helpers():
    """No allowed name is a general-purpose callable (a shell, an evaluator, an importer, attribute access)."""
    risky = {"eval", "exec", "compile", "getattr", "setattr", "__import__", "open", "system", "popen", "apply",
             "call", "run", "load", "loads", "read_pickle", "import_module"}
    assert not {name.rsplit(".", 1)[1] for name in ALLOWED_GLOBALS} & risky


@pytest.mark.slow
def test_plain_pickle_still_loads_results_without_the_project(tmp_path):
    """Notebooks may keep using pickle.load: results hold no class of this project."""
    path = tmp_path / "r.pkl"
    write_pickle(path, _reference_values())
    code = f"import pickle, sys; sys.modules['src'] = None; pickle.load(open({str(path)!r}, 'rb'))"  # src unimportable
    done = subprocess.run([sys.executable, "-c", code], cwd="/", capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
