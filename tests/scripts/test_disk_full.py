"""Running out of room: the free space is checked before the work (one line naming the folder and the space needed),
and a write that still fails for want of room (no space, over the file-size limit, over quota) is one line naming
the file, leaves no partial file counted, and - for stitch_nets.py - keeps the trained stitch in a fallback file.

The full disk is simulated: the files written under a folder fail with ``OSError(ENOSPC)`` after half their bytes
(a patched ``os.fdopen``, the call :func:`src.results_io.atomic_write` writes through), ``shutil.disk_usage``
reports little free space, and, in a subprocess, ``RLIMIT_FSIZE`` (``ulimit -f``) makes the kernel refuse a file
past the limit with EFBIG.
"""
import errno
import hashlib
import os
import pickle
import resource
import shutil
import subprocess
import sys
import tempfile
from collections import namedtuple
from pathlib import Path

import pandas as pd
import pytest

import stitch_matrix
import stitch_nets
from src.cli import run_main
from src.errors import UserError
from src.results_io import (NoRoom, check_free_space, digest_path, read_pickle, write_csv,
                            write_pickle)
from src.stitching import run as stitch_run
from src.stitching.results import load_result
from tests.conftest import REPO
from tests.script_helpers import assert_one_line_error, random_checkpoint

TINY = REPO / "model_weights" / "Tiny10" / "FashionMNIST"
FRONT, END = str(TINY / "in0-gn0" / "8580.pt"), str(TINY / "in1-gn1" / "8580.pt")
QUICK = ["-d", "fashion", "-e", "1", "-b", "50", "--max-samples", "500", "--val-size", "500", "--measure-samples", "200"]
Usage = namedtuple("Usage", "total used free")


# --- the simulated full disk ---------------------------------------------------------------------------------

class _Full:
    """A file whose writes fail with ``code`` once half of what is written has gone through (as a disk filling
    up mid-write): the rest of a real file object as it is."""

    def __init__(self, handle, code):
        self._handle, self._code = handle, code

    def write(self, data):
        half = len(data) // 2
        if half:
            self._handle.write(data[:half])
        raise OSError(self._code, os.strerror(self._code))

    def __getattr__(self, name):
        return getattr(self._handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._handle.close()


def fill_disk(monkeypatch, full, code=errno.ENOSPC):
    """Writes through ``os.fdopen`` to a file ``full(path)`` says yes to fail with ``code``."""
    real = os.fdopen

    def fdopen(fd, *args, **kwargs):
        handle = real(fd, *args, **kwargs)
        try:
            path = Path(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            return handle
        return _Full(handle, code) if full(path) else handle

    monkeypatch.setattr(os, "fdopen", fdopen)


def under(folder, prefix=""):
    """The files written under ``folder`` (whose names start with ``prefix``: atomic_write's ``.<name>.``)."""
    folder = Path(folder).resolve()
    return lambda path: folder in path.resolve().parents and path.name.startswith(prefix)


def files_under(folder):
    return sorted(str(p.relative_to(folder)) for p in Path(folder).rglob("*") if p.is_file())


def little_space(monkeypatch, free):
    monkeypatch.setattr(shutil, "disk_usage", lambda _path: Usage(10 * 2**30, 10 * 2**30 - free, free))


# --- the writing helpers ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("code,meaning", [(errno.ENOSPC, "no space left on the device (ENOSPC)"),
                                          (errno.EFBIG, "file too large"), (errno.EDQUOT, "disk quota exceeded")])
def test_a_write_out_of_room_is_one_line_naming_the_file_and_leaves_no_partial_file(tmp_path, monkeypatch, code, meaning):
    path = tmp_path / "out" / "r.pkl"
    fill_disk(monkeypatch, under(tmp_path), code)
    with pytest.raises(NoRoom) as caught:
        write_pickle(path, {"x": list(range(10000))}, digest=True)
    message = str(caught.value)
    assert message.startswith(f"cannot write {path}: {meaning}") and "\n" not in message
    assert caught.value.path == path and caught.value.errno == code
    assert files_under(tmp_path) == []  # no pickle, no digest, no temporary file: atomic_write removed it
    with pytest.raises(NoRoom, match=r"cannot write .*t\.csv"):
        write_csv(tmp_path / "out" / "t.csv", pd.DataFrame({"a": range(1000)}))
    assert files_under(tmp_path) == []


def test_a_failed_pickle_write_keeps_the_previous_pickle_and_its_digest(tmp_path, monkeypatch):
    path = tmp_path / "r.pkl"
    write_pickle(path, {"run": 1}, digest=True)
    before = (path.read_bytes(), digest_path(path).read_bytes())
    real = os.replace

    def replace(src, dst):
        if Path(dst) == path:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(src, dst)

    with monkeypatch.context() as patch:  # the new pickle is complete and its digest written, then the rename fails
        patch.setattr(os, "replace", replace)
        with pytest.raises(NoRoom):
            write_pickle(path, {"run": 2}, digest=True)
    assert (path.read_bytes(), digest_path(path).read_bytes()) == before  # the previous digest put back
    assert read_pickle(path) == {"run": 1} and files_under(tmp_path) == ["r.pkl", "r.pkl.sha256"]
    fill_disk(monkeypatch, under(tmp_path, ".r.pkl.sha256."))  # the digest cannot be written: nor is the pickle
    with pytest.raises(NoRoom, match=r"cannot write .*r\.pkl\.sha256: no space"):
        write_pickle(path, {"run": 3}, digest=True)
    assert read_pickle(path) == {"run": 1} and files_under(tmp_path) == ["r.pkl", "r.pkl.sha256"]


def test_check_free_space_names_the_folder_and_the_space_needed(tmp_path, monkeypatch):
    folder = tmp_path / "not" / "made" / "yet"
    asked = []
    monkeypatch.setattr(shutil, "disk_usage", lambda p: asked.append(Path(p)) or Usage(2**30, 2**30 - 28 * 1024, 28 * 1024))
    check_free_space(folder, 20 * 1024, "a small result")
    assert asked == [tmp_path]  # the nearest folder that exists
    with pytest.raises(UserError) as caught:
        check_free_space(folder, 5 * 2**20, "the result of this stitch (bn3-bn3.pkl)")
    assert str(caught.value) == (f"{folder} has 28.0 KiB free, less than the 5.0 MiB or so needed for the result of "
                                 f"this stitch (bn3-bn3.pkl); free some space there or write elsewhere (-o/--out-dir)")


# --- stitch_nets.py --------------------------------------------------------------------------------------------

@pytest.fixture
def checkpoints(tmp_path, fake_mnist):
    return [random_checkpoint(tmp_path / f"in{seed}-gn0" / "0.pt", seed=seed) for seed in (0, 1)]


@pytest.fixture
def elsewhere(tmp_path, monkeypatch):
    """The system's temporary folder and the home folder, the fallbacks of a result that cannot be written."""
    tmp, home = tmp_path / "systemtmp", tmp_path / "home"
    tmp.mkdir()
    home.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    monkeypatch.setenv("HOME", str(home))
    return tmp, home


def _stitch_argv(checkpoints, tmp_path, *extra):
    return [*map(str, checkpoints), "bn3", "bn3", "-e", "1", "-b", "32", "--val-size", "40", "--measure-samples", "50",
            "-o", str(tmp_path / "res"), "--run-name", "r", *extra]


def test_stitch_nets_refuses_a_disk_too_full_for_its_result_before_training(tmp_path, checkpoints, monkeypatch, capsys):
    little_space(monkeypatch, 28 * 1024)
    monkeypatch.setattr(stitch_run, "run_stitch", lambda *a, **k: pytest.fail("the training started"))
    assert run_main(stitch_nets.main, _stitch_argv(checkpoints, tmp_path)) == 2
    err = capsys.readouterr().err
    assert_one_line_error(err, f"{tmp_path / 'res' / 'r'} has 28.0 KiB free, less than the ")
    assert "needed for the result of this stitch (bn3-bn3.pkl); free some space there or write elsewhere" in err
    assert not (tmp_path / "res").exists() or files_under(tmp_path / "res") == []


def test_stitch_nets_out_of_room_saves_the_trained_stitch_elsewhere(tmp_path, checkpoints, monkeypatch, capsys, elsewhere):
    path = tmp_path / "res" / "r" / "bn3-bn3.pkl"
    written = []
    real_write_result = stitch_run.write_result
    monkeypatch.setattr(stitch_run, "write_result", lambda p, result: written.append(result) or real_write_result(p, result))
    fill_disk(monkeypatch, under(path.parent, ".bn3-bn3.pkl."))  # the CSV fits, the pickle does not
    assert run_main(stitch_nets.main, _stitch_argv(checkpoints, tmp_path)) == 2
    err = capsys.readouterr().err
    (saved,) = elsewhere[0].glob("*.pkl")
    assert saved.name.startswith("r--bn3-bn3-")
    assert_one_line_error(err, f"cannot write {path}: no space left on the device (ENOSPC); nothing was written under "
                               f"that name; ")
    assert f"the result was saved to {saved} instead (with its digest {saved.name}.sha256): move both beside {path}" in err
    # nothing under the result's name counts: the CSV alone (as after any interrupted write), no temporary file
    assert files_under(path.parent) == ["bn3-bn3.csv"]
    # the fallback is the very pickle that would have been written, with its digest
    (result,) = written
    data = saved.read_bytes()
    assert data == pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL)
    assert digest_path(saved).read_text().split()[0] == hashlib.sha256(data).hexdigest()
    loaded = load_result(saved)
    assert loaded["summary"] == result["summary"] and loaded["model_results"] == result["model_results"]
    assert (loaded["trans_m"]["after"]["w"] == result["trans_m"]["after"]["w"]).all()
    # moved beside the others as the message says, it is the result: stitch_nets.py refuses to overwrite it
    os.replace(saved, path)
    os.replace(digest_path(saved), digest_path(path))
    monkeypatch.undo()
    assert load_result(path)["summary"] == result["summary"]
    assert run_main(stitch_nets.main, _stitch_argv(checkpoints, tmp_path)) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err


def test_stitch_nets_out_of_room_everywhere_says_the_stitch_is_lost(tmp_path, checkpoints, monkeypatch, capsys, elsewhere):
    fill_disk(monkeypatch, under(tmp_path))
    assert run_main(stitch_nets.main, _stitch_argv(checkpoints, tmp_path)) == 2
    err = capsys.readouterr().err
    assert_one_line_error(err, "cannot write ")
    assert (f"saving the result elsewhere failed too ({elsewhere[0]}: no space left on the device; {elsewhere[1]}: "
            f"no space left on the device): the trained stitch is lost") in err
    assert [f for f in files_under(tmp_path) if not f.endswith(".pt") and "datasets" not in f] == []


@pytest.mark.slow
def test_stitch_nets_over_the_file_size_limit_is_one_line_without_a_partial_result(tmp_path, fashion_available):
    """ulimit -f in a real process: the kernel refuses the pickle past the limit (EFBIG, Python ignores SIGXFSZ);
    the limit holds for every file of the process, so the fallbacks fail too, and say so."""
    out, home, tmp = tmp_path / "out", tmp_path / "home", tmp_path / "tmp"
    home.mkdir()
    tmp.mkdir()
    limit = 64 * 1024  # a Tiny10 bn6 -> bn7 result is about 460 KiB, its CSV about 1 KiB

    def limited():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    env = dict(os.environ, OMP_NUM_THREADS="1", DEVICE="cpu", HOME=str(home), TMPDIR=str(tmp), PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "stitch_nets.py", FRONT, END, "bn6", "bn7", *QUICK, "-o", str(out),
                           "--run-name", "s"], cwd=REPO, env=env, capture_output=True, text=True, preexec_fn=limited,
                          timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    assert_one_line_error(done.stderr, f"cannot write {out / 's' / 'bn6-bn7.pkl'}: file too large")
    assert "(EFBIG)" in done.stderr and "the trained stitch is lost" in done.stderr
    assert files_under(out) == ["s/bn6-bn7.csv"] and files_under(tmp) == [] and files_under(home) == []


# --- stitch_matrix.py ------------------------------------------------------------------------------------------

def _matrix_argv(out, *extra):
    return [FRONT, END, "--front-layers", "bn6", "bn8", "--end-layers", "bn7", "bn8", *QUICK, "-o", str(out),
            "--run-name", "m", *extra]


@pytest.fixture
def cpu(monkeypatch, fashion_available):
    monkeypatch.setenv("DEVICE", "cpu")


def test_stitch_matrix_refuses_a_disk_too_full_for_its_cells_before_any_work(tmp_path, monkeypatch, capsys, cpu):
    little_space(monkeypatch, 5 * 2**20)
    monkeypatch.setattr("src.matrix.run.run_cells", lambda *a, **k: pytest.fail("the work started"))
    assert run_main(stitch_matrix.main, _matrix_argv(tmp_path / "res")) == 2
    assert_one_line_error(capsys.readouterr().err, f"{tmp_path / 'res' / 'm'} has 5.0 MiB free, less than the 12.0 MiB "
                                                   f"or so needed for the 4 cell(s) left to run (4 result file(s) at a "
                                                   f"rough 2 MiB each, and the tables)")
    assert not (tmp_path / "res").exists() or files_under(tmp_path / "res") == []  # nothing written


def test_stitch_matrix_out_of_room_keeps_the_finished_cells_and_resumes(tmp_path, monkeypatch, capsys, cpu):
    out = tmp_path / "res"
    cells = out / "m" / "cells"
    with monkeypatch.context() as patch:
        fill_disk(patch, under(cells, ".bn6--bn8.pkl."))  # the second cell's pickle
        assert run_main(stitch_matrix.main, _matrix_argv(out)) == 2
    err = capsys.readouterr().err
    assert_one_line_error(err, f"cannot write {cells / 'bn6--bn8.pkl'}: no space left on the device (ENOSPC)")
    assert err.rstrip().endswith("the finished cells are kept: rerun with --resume once there is room")
    # the first cell is finished; of the second only its CSV (never counted); no temporary file
    assert files_under(cells) == ["bn6--bn7.csv", "bn6--bn7.pkl", "bn6--bn7.pkl.sha256", "bn6--bn8.csv"]
    kept = (cells / "bn6--bn7.pkl").stat().st_mtime_ns
    assert run_main(stitch_matrix.main, _matrix_argv(out, "--resume")) == 0
    assert "bn6: 1 finished cell(s) kept" in capsys.readouterr().out
    assert (cells / "bn6--bn7.pkl").stat().st_mtime_ns == kept
    assert sorted(p.name for p in cells.glob("*.pkl")) == ["bn6--bn7.pkl", "bn6--bn8.pkl", "bn8--bn7.pkl", "bn8--bn8.pkl"]


def test_stitch_matrix_tables_out_of_room_say_collect_writes_them(tmp_path, monkeypatch, capsys, cpu):
    out = tmp_path / "res"
    with monkeypatch.context() as patch:
        fill_disk(patch, under(out / "m", ".matrix.pkl."))
        assert run_main(stitch_matrix.main, _matrix_argv(out)) == 2
    err = capsys.readouterr().err
    assert_one_line_error(err, f"cannot write {out / 'm' / 'matrix.pkl'}: no space left on the device")
    assert f"every cell is finished and kept: stitch_matrix.py --collect {out / 'm'} writes the tables" in err
    assert not (out / "m" / "matrix.pkl").exists() and not digest_path(out / "m" / "matrix.pkl").exists()
    assert run_main(stitch_matrix.main, ["--collect", str(out / "m")]) == 0
    assert (out / "m" / "matrix.pkl").is_file() and digest_path(out / "m" / "matrix.pkl").is_file()


@pytest.mark.slow
def test_stitch_matrix_over_the_file_size_limit_is_one_line_then_resumes(tmp_path, fashion_available):
    out = tmp_path / "res"
    env = dict(os.environ, OMP_NUM_THREADS="1", DEVICE="cpu", PYTHONPATH=str(REPO))

    def limited():
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))

    command = [sys.executable, "stitch_matrix.py", *_matrix_argv(out)]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, preexec_fn=limited, timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    assert_one_line_error(done.stderr, f"cannot write {out / 'm' / 'cells' / 'bn6--bn7.pkl'}: file too large")
    assert not list((out / "m" / "cells").glob("*.pkl")) and not list((out / "m").rglob("*.tmp"))
    done = subprocess.run([*command, "--resume"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(list((out / "m" / "cells").glob("*.pkl.sha256"))) == 4 and (out / "m" / "matrix.csv").is_file()
