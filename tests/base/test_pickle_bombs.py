"""Pickle bombs: a few bytes that would ask for unbounded memory (or work) are refused quickly, in one line.

Each file below uses only globals that real results name (``builtins.set``, ``builtins.range``,
``numpy``'s reconstruction helpers, ``pandas``' index helpers), so the restricted unpickler's list of
names alone does not stop them: the size checks and the memory budget (64 x the file's size, at least
64 MiB) do. Every refusal must come in well under a second and without allocating what the file asks for.
"""
import pickle
import struct
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from src.cli import run_main
from src.errors import UserError
from src.results_io import read_pickle, write_pickle
from src.safe_pickle import MIN_BUDGET, PickleBomb, memory_budget, restricted_loads
from src.similarity import SimilarityMatrix
from src.stitching.results import load_result, load_summaries
from tests.script_helpers import assert_one_line_error


def _billion_laughs(levels: int = 30, width: int = 10) -> bytes:
    """Lists of ``width`` references to the list before, ``levels`` deep, through the memo: 10**30 'lol's."""
    out = b"\x80\x02X\x03\x00\x00\x00lolq\x00"  # 'lol', memo 0
    for level in range(1, levels + 1):  # [] ( get(level-1) dup*(width-1) appends put(level)
        out += b"](h" + bytes([level - 1]) + b"2" * (width - 1) + b"eq" + bytes([level])
    return out + b"."


def _tuple_key(levels: int = 40) -> bytes:
    """A dict keyed by ((1, 1), (1, 1))... 40 deep: hashing the key would visit 2**40 tuples."""
    out = b"\x80\x02K\x01q\x00"
    for level in range(1, levels + 1):
        out += b"(h" + bytes([level - 1]) + b"2tq" + bytes([level])
    return out + b"}h" + bytes([levels]) + b"K\x00s."


def _deep(depth: int = 5000) -> bytes:
    """A list in a list in a list ... ``depth`` deep (hashing or printing it would overflow the stack)."""
    return b"\x80\x02" + b"]" * depth + b"a" * (depth - 1) + b"."


_RANGE_2_56 = b"c__builtin__\nrange\n(I0\nI72057594037927936\ntR"
_DTYPE_O = b"cnumpy\ndtype\n(S'O'\nI0\nI1\ntR"

#: name -> (the pickle, what the refusal says)
BOMBS = {
    "billion laughs (nested lists through the memo)": (_billion_laughs(), "nested through shared references"),
    "set(range(2**56))": (b"c__builtin__\nset\n(" + _RANGE_2_56 + b"tR.", "a range of 72057594037927936 numbers"),
    "frozenset(range(2**56))": (b"c__builtin__\nfrozenset\n(" + _RANGE_2_56 + b"tR.", "a range of 72057594037927936"),
    "bytearray(10**11)": (b"c__builtin__\nbytearray\n(I100000000000\ntR.", "a bytearray of 100000000000 bytes"),
    "BYTEARRAY8 claiming 10**11 bytes": (b"\x80\x05\x96" + struct.pack("<Q", 10**11) + b"abc.", "claims a bytearray"),
    "numpy.ndarray((10**6, 10**6))": (b"cnumpy\nndarray\n((I1000000\nI1000000\ntS'f8'\ntR.", "it calls numpy.ndarray"),
    "numpy _reconstruct of 10**12 bytes": (
        b"cnumpy._core.multiarray\n_reconstruct\n(cnumpy\nndarray\n(I1000000\nI1000000\ntS'b'\ntR.",
        "an array of shape (1000000, 1000000)"),
    "numpy array state of 10**10 objects": (
        b"cnumpy._core.multiarray\n_reconstruct\n(cnumpy\nndarray\n(I0\ntS'b'\ntR(I1\n(I100000\nI100000\nt"
        + _DTYPE_O + b"I00\n(ltb.", "an array of shape (100000, 100000) of object"),
    "numpy _frombuffer shaped past its bytes": (
        b"cnumpy._core.numeric\n_frombuffer\n(C\x08abcdefghcnumpy\ndtype\n(S'f8'\nI0\nI1\ntR"
        b"(I1000000\nI1000000\ntS'C'\ntR.", "over 8 bytes"),
    "pandas.Series(0.0, RangeIndex(10**10))": (
        b"cpandas\nSeries\n(F0.0\n(lp0\ntR.", "it calls pandas.Series"),
    "pandas.RangeIndex(10**10)": (b"cpandas\nRangeIndex\n(I10000000000\ntR.", "it calls pandas.RangeIndex"),
    "pandas _new_Index(RangeIndex, stop=10**10)": (
        b"cpandas.core.indexes.base\n_new_Index\n(cpandas\nRangeIndex\n(dS'start'\nI0\nsS'stop'\nI10000000000\nstR.",
        "a RangeIndex of 10000000000 entries"),
    "pandas block placed at 10**12 columns": (
        b"cpandas._libs.internals\n_unpickle_block\n(cnumpy._core.multiarray\n_reconstruct\n(cnumpy\nndarray\n(I0\ntS'b'\n"
        b"tRc__builtin__\nslice\n(I0\nI1000000000000\nI1\ntRI2\ntR.", "a block placed at 1000000000000 columns"),
    "an empty DataFrame filled through __setitem__": (
        b"\x80\x02cpandas\nDataFrame\n)\x81U\x01aG\x00\x00\x00\x00\x00\x00\x00\x00s.", "sets items of a DataFrame"),
    "a dict keyed by tuples nested 40 deep": (_tuple_key(), "hash a key of"),
    "lists nested 5000 deep": (_deep(), "nests containers more than"),
}


@pytest.mark.parametrize("name", list(BOMBS))
def test_pickle_bomb_is_refused_quickly_in_bounded_memory(tmp_path, name):
    data, says = BOMBS[name]
    assert len(data) < 12_000
    path = tmp_path / "bomb.pkl"
    path.write_bytes(data)
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(UserError) as info:
            read_pickle(path)
        elapsed = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    message = str(info.value)
    assert message.startswith(f"refusing to load {path}: ") and says in message, message
    assert message.endswith("only open pickles from trusted sources") and "\n" not in message
    assert elapsed < 0.5, f"{name} took {elapsed:.2f}s to refuse"
    assert peak < 16 * 2**20, f"{name} allocated {peak / 2**20:.0f} MiB before it was refused"


def test_plain_pickle_would_really_take_the_memory():
    """The files above are real bombs: plain pickle builds what they ask for (shown on small sizes)."""
    assert len(pickle.loads(b"c__builtin__\nbytearray\n(I1000000\ntR.")) == 10**6
    laughs = pickle.loads(_billion_laughs(levels=3, width=10))
    assert sum(len(inner) for middle in laughs for inner in middle) == 1000  # 10**30 at 30 levels


def test_budget_grows_with_the_file_and_counts_every_allocation():
    assert memory_budget(60) == MIN_BUDGET == 64 * 2**20
    assert memory_budget(10 * 2**20) == 640 * 2**20
    data = pickle.dumps({"a": np.zeros(1000), "b": np.zeros(1000)}, protocol=pickle.HIGHEST_PROTOCOL)
    assert restricted_loads(data)["a"].shape == (1000,)
    with pytest.raises(PickleBomb, match=r"loading it would allocate an array of shape \(1000,\)"):
        restricted_loads(data, budget=12_000)  # each array fits, both do not


def test_memory_error_while_loading_is_one_line_naming_the_file(tmp_path, monkeypatch):
    """Within the budget but more than the machine has: a UserError, and load_summaries skips the file."""
    good = {"params": {}, "model_results": {}, "trans_m": {}, "summary": {"trans_acc": 0.5}}
    write_pickle(tmp_path / "a.pkl", good)
    write_pickle(tmp_path / "b.pkl", good)

    def short_of_memory(handle, **options):
        if Path(handle.name).name == "b.pkl":
            raise MemoryError()
        return pickle.load(handle)

    monkeypatch.setattr("src.results_io.restricted_load", short_of_memory)
    with pytest.raises(UserError, match=r"^cannot load .*b\.pkl: it needs more memory than is free here"):
        read_pickle(tmp_path / "b.pkl")
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable pickle\(s\): .*b\.pkl \(cannot load"):
        table = load_summaries(tmp_path)
    assert list(table["path"]) == [str(tmp_path / "a.pkl")]


_SET_BOMB = BOMBS["set(range(2**56))"][0]


def test_load_result_and_load_summaries_refuse_a_bomb(tmp_path):
    write_pickle(tmp_path / "run" / "good.pkl", {"params": {}, "model_results": {}, "trans_m": {},
                                                 "summary": {"trans_acc": 0.5}})
    bomb = tmp_path / "run" / "bomb.pkl"
    bomb.write_bytes(_SET_BOMB)
    with pytest.raises(UserError, match=r"refusing to load .*bomb\.pkl: loading it would allocate a range"):
        load_result(bomb)
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable pickle\(s\): .*bomb\.pkl \(refusing to load"):
        table = load_summaries(tmp_path)
    assert list(table["trans_acc"]) == [0.5]


def test_similarity_matrix_load_refuses_a_bomb(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "matrix.pkl").write_bytes(_billion_laughs())
    with pytest.raises(UserError, match=r"refusing to load .*matrix\.pkl: its containers, nested through shared"):
        SimilarityMatrix.load(tmp_path / "m")


@pytest.mark.slow
@pytest.mark.parametrize("script,extra", [("eval_stitch", ["after"]), ("compare_frank_m2", ["after", "cka"])])
def test_scripts_refuse_a_bomb_in_one_line(tmp_path, capsys, script, extra):
    path = tmp_path / "x.pkl"
    path.write_bytes(_SET_BOMB)
    assert run_main(__import__(script).main, [str(path), *extra]) == 2
    assert_one_line_error(capsys.readouterr().err, f"refusing to load {path}: loading it would allocate a range")


def test_real_results_with_frames_and_shared_values_still_load(tmp_path):
    """What results hold, shared references included (one string or array referenced many times), loads."""
    name, array = "relu1", np.arange(6.0).reshape(2, 3)
    value = {"layers": [name] * 1000, "w": [array, array], "curve": pd.DataFrame({"epoch": range(50), "acc": 0.5}),
             "matrix": pd.DataFrame(np.eye(3), index=pd.RangeIndex(3), columns=list("abc")), "keys": {(1, 2): 3},
             "objects": pd.DataFrame({"a": [[1, 2], [3]]}), "nothing": pd.DataFrame()}
    write_pickle(tmp_path / "r.pkl", value)
    loaded = read_pickle(tmp_path / "r.pkl")
    assert loaded["layers"] == value["layers"] and np.array_equal(loaded["w"][1], array)
    pd.testing.assert_frame_equal(loaded["curve"], value["curve"])
    pd.testing.assert_frame_equal(loaded["objects"], value["objects"])
    assert loaded["keys"] == {(1, 2): 3} and loaded["nothing"].empty
