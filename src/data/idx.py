"""Reader for the IDX format of the MNIST-like datasets, plain or gzip-compressed.

An IDX file is: two zero bytes, a type code, the number of dimensions ``ndim``, then ``ndim``
big-endian uint32 sizes, then the data in row-major order, big-endian. Whether the file is
gzip-compressed is decided from its first bytes, not from its name.
"""
import gzip
import zlib
from pathlib import Path

import numpy as np

from src.errors import UserError

GZIP_MAGIC = b"\x1f\x8b"
IDX_DTYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_bytes(path: Path) -> bytes:
    """The content of ``path``, decompressed when it is gzip; a broken gzip stream is a UserError."""
    data = Path(path).read_bytes()
    if not data.startswith(GZIP_MAGIC):
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as err:
        raise UserError(f"{path} is a corrupt or truncated gzip file ({err}); delete it and fetch it again") from None


def parse_idx(data: bytes, path: Path) -> np.ndarray:
    """Decode IDX ``data`` (read from ``path``, named in errors) into an array of native byte order."""
    def corrupt(why: str) -> UserError:
        return UserError(f"{path} is not a valid IDX file: {why}; delete it and fetch it again")

    if len(data) < 4:
        raise corrupt(f"only {len(data)} bytes, shorter than the 4-byte header")
    if data[0] != 0 or data[1] != 0 or data[2] not in IDX_DTYPES:
        raise corrupt(f"bad magic number 0x{data[:4].hex()}")
    dtype, ndim = IDX_DTYPES[data[2]], data[3]
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise corrupt(f"header announces {ndim} dimensions but the file ends after {len(data)} bytes")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = header_size + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        state = "truncated" if len(data) < expected else "has trailing bytes"
        raise corrupt(f"{state}: shape {shape} needs {expected} bytes, found {len(data)}")
    array = np.frombuffer(data, dtype=dtype, offset=header_size).reshape(shape)
    return array.astype(dtype.newbyteorder("="), copy=False)


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (plain or gzip) into a numpy array of shape given by its header.

    The array may be a read-only view of the file's bytes; copy it before writing to it.
    Truncated or corrupt files raise a :class:`UserError` that names the file.
    """
    return parse_idx(read_bytes(path), Path(path))
