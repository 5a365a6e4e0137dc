"""The IDX reader against files written independently with struct (plain and gzip)."""
import gzip

import numpy as np
import pytest

from src.data.idx import read_idx
from src.errors import UserError
from tests.data_fixtures import idx_bytes, write_idx


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("dtype", ["u1", "i1", ">i2", ">i4", ">f4", ">f8"])
def test_round_trip(tmp_path, dtype, gz):
    array = (np.arange(2 * 3 * 4) * 11 - 7).reshape(2, 3, 4).astype(dtype)
    read = read_idx(write_idx(tmp_path / "a.idx", array, gz))
    assert read.shape == (2, 3, 4)
    assert read.dtype == np.dtype(dtype).newbyteorder("=")
    np.testing.assert_array_equal(read, array)


def test_gzip_detected_by_content_not_name(tmp_path):
    labels = np.array([3, 1, 4, 1, 5], np.uint8)
    path = tmp_path / "plain-name-but-gzipped"
    path.write_bytes(gzip.compress(idx_bytes(labels)))
    np.testing.assert_array_equal(read_idx(path), labels)


def test_one_dimensional_and_empty(tmp_path):
    np.testing.assert_array_equal(read_idx(write_idx(tmp_path / "l", np.array([7, 8], np.uint8))), [7, 8])
    assert read_idx(write_idx(tmp_path / "e", np.zeros((0, 28, 28), np.uint8))).shape == (0, 28, 28)


@pytest.mark.parametrize("cut", [2, 6, 16 + 28 * 28 * 3 - 1])
def test_truncated_file_names_the_file(tmp_path, cut):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(idx_bytes(np.zeros((3, 28, 28), np.uint8))[:cut])
    with pytest.raises(UserError, match="train-images-idx3-ubyte.*not a valid IDX file"):
        read_idx(path)


def test_trailing_bytes_and_bad_magic(tmp_path):
    path = tmp_path / "x"
    path.write_bytes(idx_bytes(np.zeros(4, np.uint8)) + b"\0")
    with pytest.raises(UserError, match="trailing bytes"):
        read_idx(path)
    path.write_bytes(b"\x01\x02\x08\x01" + bytes(8))
    with pytest.raises(UserError, match="bad magic number 0x01020801"):
        read_idx(path)
    path.write_bytes(b"\x00\x00\x42\x01" + bytes(8))
    with pytest.raises(UserError, match="bad magic"):
        read_idx(path)


def test_truncated_gzip_names_the_file(tmp_path):
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.arange(200, dtype=np.uint8)))[:30])
    with pytest.raises(UserError, match="t10k-labels-idx1-ubyte.gz is a corrupt or truncated gzip"):
        read_idx(path)
