"""Loading this project's result pickles without letting a crafted file run code.

A pickle is a small program: besides data it can name any importable function (``os.system``,
``builtins.eval``, ...) and call it while loading. Results of this project hold only plain Python
values, numpy arrays and scalars and pandas frames, so :func:`restricted_load` admits exactly the
globals that unpickling those needs (listed in :data:`ALLOWED_GLOBALS`, found by recording the
globals of real stitching results and similarity matrices written with pandas 2 and 3, numpy 1 and 2,
with and without pyarrow)
and refuses every other one before it is imported, let alone called.

Plain ``pickle.load`` still reads every result (no class of this project is ever pickled), so
notebooks can use it, with the usual caveat: like any pickle, open results only from trusted sources.
"""
import pickle
from typing import Any, BinaryIO

#: Every global a result pickle may name, as ``module.name`` (the names pickles of older numpy and
#: pandas versions use are listed beside today's, so results stay readable across versions).
ALLOWED_GLOBALS = frozenset({
    # plain Python values that have no opcode of their own (set/frozenset/bytearray below protocol 4/5)
    "builtins.complex", "builtins.slice", "builtins.set", "builtins.frozenset", "builtins.bytearray",
    "builtins.range", "_codecs.encode",  # bytes in protocol 2
    # numpy arrays, dtypes and scalars (numpy >= 2 under numpy._core, numpy 1 under numpy.core)
    "numpy.ndarray", "numpy.dtype",
    "numpy._core.multiarray._reconstruct", "numpy._core.multiarray.scalar", "numpy._core.numeric._frombuffer",
    "numpy.core.multiarray._reconstruct", "numpy.core.multiarray.scalar", "numpy.core.numeric._frombuffer",
    # pandas frames, series and indexes (pandas 3 names, then pandas 2 names)
    "pandas.DataFrame", "pandas.Series", "pandas.Index", "pandas.RangeIndex",
    "pandas.core.frame.DataFrame", "pandas.core.series.Series", "pandas.core.indexes.base.Index",
    "pandas.core.indexes.range.RangeIndex", "pandas.core.indexes.base._new_Index",
    "pandas.MultiIndex", "pandas.core.indexes.multi.MultiIndex",  # e.g. a matrix's evess_summary (group, statistic)
    "pandas.core.internals.managers.BlockManager", "pandas.core.internals.managers.SingleBlockManager",
    "pandas._libs.internals._unpickle_block",
    # pandas string columns and indexes (the default string dtype of pandas 3, pandas 2 with infer_string)
    "pandas.StringDtype", "pandas.arrays.StringArray",
    "pandas.core.arrays.string_.StringDtype", "pandas.core.arrays.string_.StringArray",
    "pandas._libs.arrays.__pyx_unpickle_NDArrayBacked",
    # the same, stored by pyarrow where it is installed (pandas 3's default string storage then)
    "pandas.arrays.ArrowStringArray", "pandas.core.arrays.string_arrow.ArrowStringArray",
    "pandas.core.arrays.string_arrow.ArrowStringArrayNumpySemantics",
    "pyarrow.lib._restore_array", "pyarrow.lib.py_buffer", "pyarrow.lib.type_for_alias",
})

#: Python 2 module names that protocol 0-2 pickles use for builtins.
_PY2_NAMES = {"__builtin__": "builtins"}


class RefusedGlobal(pickle.UnpicklingError):
    """A pickle names a global that no result of this project contains."""

    def __init__(self, name: str):
        super().__init__(f"it references {name}, which no result of this project contains")
        self.name = name


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals in :data:`ALLOWED_GLOBALS`.

    Every global a pickle uses (``GLOBAL``, ``STACK_GLOBAL``, the extension registry) goes through
    :meth:`find_class`, so a refused name is never imported and nothing it names ever runs.
    """

    def find_class(self, module: str, name: str) -> Any:
        qualified = f"{_PY2_NAMES.get(module, module)}.{name}"
        if qualified not in ALLOWED_GLOBALS:
            raise RefusedGlobal(qualified)
        return super().find_class(module, name)

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("it uses persistent ids, which no result of this project contains")


def restricted_load(handle: BinaryIO, **options: Any) -> Any:
    """``pickle.load(handle)`` admitting only what results contain; :class:`RefusedGlobal` for anything else."""
    return RestrictedUnpickler(handle, **options).load()
