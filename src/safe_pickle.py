"""Loading this project's result pickles without letting a crafted file run code or exhaust memory.

A pickle is a small program: besides data it can name any importable function (``os.system``,
``builtins.eval``, ...) and call it while loading. Results of this project hold only plain Python
values, numpy arrays and scalars and pandas frames, so :func:`restricted_load` admits exactly the
globals that unpickling those needs (listed in :data:`ALLOWED_GLOBALS`, found by recording the
globals of real stitching results and similarity matrices written with pandas 2 and 3, numpy 1 and 2,
with and without pyarrow)
and refuses every other one before it is imported, let alone called.

Even harmless names can be used to ask for unbounded memory from a few bytes: ``set(range(2**56))``,
``bytearray(10**11)``, an array or a ``RangeIndex`` of 10**12 elements, ``pandas.Series(0.0, index)``
broadcast over a huge index, lists nested through the memo so that they stand for 10**30 elements
("billion laughs"). So the loader is the pure-Python unpickler with every opcode that builds or calls
something checked:

* a global can be *called* (``REDUCE``) only when it is one of :data:`CALLS`, each of which checks its
  arguments are what results pass it (a ``numpy.ndarray`` or ``pandas.DataFrame`` is never called:
  results only name them for a reconstruction helper, or create them empty and set their state);
* every allocation a call, an object's state or a counted opcode would make is charged, before it is
  made, against a budget proportional to the file's size (:func:`memory_budget`: 64 x its size, at
  least 64 MiB); a file that would go over is refused with :class:`PickleBomb`;
* items go only into real lists, dicts and sets (never a frame's ``__setitem__``), and hashing a key
  counts the elements of nested tuples, so a tuple bomb cannot spin either;
* the loaded value is walked once: containers nested through the memo that expand to more elements
  than the budget holds, or nest deeper than :data:`MAX_DEPTH`, are refused.

Plain ``pickle.load`` still reads every result (no class of this project is ever pickled), so
notebooks can use it, with the usual caveat: like any pickle, open results only from trusted sources.
"""
import io
import math
import pickle
import struct
from typing import Any, BinaryIO, Callable, Dict, Iterable, List, Optional, Tuple

import numpy as np
import pandas as pd

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

#: The smallest memory budget, and the budget per byte of file above it (see :func:`memory_budget`).
MIN_BUDGET = 64 * 2**20
BUDGET_PER_BYTE = 64
#: How deep containers may nest in a result (results nest a handful of levels; a deep chain of tuples
#: would overflow the C stack when hashed).
MAX_DEPTH = 200
_REFERENCE = 8  # bytes a reference (a list slot, an index entry) takes
_SET_ENTRY = 64  # bytes a set takes per item (hash table with spare slots), as charged


def memory_budget(file_size: int) -> int:
    """The most memory loading a pickle of ``file_size`` bytes may take: 64 x its size, at least 64 MiB."""
    return max(MIN_BUDGET, BUDGET_PER_BYTE * file_size)


def _size(n: int) -> str:
    """``n`` bytes for a person: 60 bytes, 64 MiB, 512 PiB, 2^70 bytes."""
    if n < 1024:
        return f"{n} byte{'s' if n != 1 else ''}"
    for power, unit in ((5, "PiB"), (4, "TiB"), (3, "GiB"), (2, "MiB"), (1, "KiB")):
        if n >= 1024 ** power:
            value = n / 1024 ** power
            return f"{value:.0f} {unit}" if value < 10 ** 6 else f"2^{n.bit_length() - 1} bytes"
    raise AssertionError(n)


class Refused(pickle.UnpicklingError):
    """A pickle does something no result of this project does; its message says what, in one phrase."""


class RefusedGlobal(Refused):
    """A pickle names a global that no result of this project contains."""

    def __init__(self, name: str):
        super().__init__(f"it references {name}, which no result of this project contains")
        self.name = name


class RefusedOperation(Refused):
    """A pickle uses an allowed global or opcode in a way no result of this project does."""


class PickleBomb(Refused):
    """Loading a pickle would take far more memory (or work) than its size can account for."""


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _scalars_only(args: Tuple) -> bool:
    return all(v is None or isinstance(v, (bool, int, float, complex, str, bytes, np.generic)) for v in args)


def _count(shape: Any, what: str) -> int:
    """The number of elements of an array of ``shape`` (a tuple of non-negative ints, or one int)."""
    dims = (shape,) if _is_int(shape) else shape
    if not isinstance(dims, tuple) or not all(_is_int(d) and d >= 0 for d in dims):
        raise RefusedOperation(f"it gives {what} the shape {shape!r}, which is not a tuple of sizes")
    return math.prod(int(d) for d in dims)


def _range_length(start: Any, stop: Any, step: Any, what: str) -> int:
    if not (_is_int(start) and _is_int(stop) and _is_int(step)) or step == 0:
        raise RefusedOperation(f"it makes {what} from ({start!r}, {stop!r}, {step!r}), which are not a start, stop and step")
    start, stop, step = int(start), int(stop), int(step)
    return max(0, (stop - start + step - (1 if step > 0 else -1)) // step)


def _slice_length(value: slice, what: str) -> int:
    if value.stop is None:
        raise RefusedOperation(f"it places {what} with an open slice")
    return _range_length(0 if value.start is None else value.start, value.stop,
                         1 if value.step is None else value.step, what)


# ---- walking what was loaded: how many elements nested containers stand for -----------------------

def _python_children(obj: Any) -> Optional[List[Any]]:
    kind = type(obj)
    if kind in (list, tuple, set, frozenset):
        return list(obj)
    if kind is dict:
        return [*obj.keys(), *obj.values()]
    return None


def _all_children(obj: Any) -> Optional[List[Any]]:
    """The objects ``obj`` holds references to, where it holds many (containers, object arrays, frames)."""
    children = _python_children(obj)
    if children is not None:
        return children
    try:
        if isinstance(obj, np.ndarray):
            return list(obj.ravel(order="K")) if obj.dtype == object else None
        if isinstance(obj, pd.MultiIndex):
            return list(obj.levels)
        if isinstance(obj, pd.Index):
            return [obj._values] if obj.dtype == object else None
        if isinstance(obj, pd.Series):
            return [obj.index, obj._values] if obj.dtype == object else [obj.index]
        if isinstance(obj, pd.DataFrame):
            return [obj.index, obj.columns] + [block.values for block in obj._mgr.blocks if block.dtype == object]
    except Exception:  # an object whose state was never set (refused later, or harmless): nothing to walk
        return None
    return None


def _expanded(root: Any, children: Callable[[Any], Optional[List[Any]]], limit: int,
              sizes: Optional[Dict[int, Tuple[Any, int]]] = None) -> Tuple[int, int]:
    """(elements, depth) of ``root`` counted as a tree (a container referenced twice counts twice).

    Iterative (any depth) and linear in the distinct objects: each container's count is kept in ``sizes``
    (keyed by id, with the object kept alive so that the id stays its own). Stops once past ``limit``
    elements or :data:`MAX_DEPTH` levels, returning the count so far.
    """
    sizes = {} if sizes is None else sizes
    on_path: set = set()
    stack: List[Tuple[Any, Optional[List[Any]]]] = [(root, None)]
    deepest = 0
    while stack:
        obj, kids = stack.pop()
        key = id(obj)
        if kids is not None:  # every child counted: this container is done
            on_path.discard(key)
            total = 1 + sum(sizes[id(c)][1] if id(c) in sizes else 1 for c in kids)
            sizes[key] = (obj, total)
            if total > limit:
                return total, deepest
            continue
        if key in sizes or key in on_path:  # counted already, or a cycle back to a container being counted
            continue
        kids = children(obj)
        if not kids:
            sizes[key] = (obj, 1)
            continue
        on_path.add(key)
        deepest = max(deepest, len(on_path))
        if deepest > MAX_DEPTH:
            return sizes.get(id(root), (None, 1))[1], deepest
        stack.append((obj, kids))
        stack.extend((c, None) for c in kids if id(c) not in sizes and id(c) not in on_path)
    return sizes[id(root)][1], deepest


def _tuple_children(obj: Any) -> Optional[List[Any]]:
    return list(obj) if type(obj) is tuple else None  # what hashing a key visits (a frozenset's hash is cached)


# ---- the unpickler ---------------------------------------------------------------------------------

_Dispatch = Dict[int, Callable[["RestrictedUnpickler"], None]]


class RestrictedUnpickler(pickle._Unpickler):
    """An unpickler that resolves only the globals in :data:`ALLOWED_GLOBALS` and keeps to a memory budget.

    Every global a pickle uses (``GLOBAL``, ``STACK_GLOBAL``, the extension registry) goes through
    :meth:`find_class`, so a refused name is never imported and nothing it names ever runs. Every opcode
    that calls, creates, fills or sets the state of an object is checked (see the module's docstring);
    ``budget`` is the most bytes the allocations it makes may add up to (:func:`memory_budget` of
    ``file_size`` by default).
    """

    dispatch: _Dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file: BinaryIO, *, file_size: int, budget: Optional[int] = None, **options: Any):
        super().__init__(file, **options)
        self.file_size = file_size
        self.budget = memory_budget(file_size) if budget is None else budget
        self.spent = 0
        self._globals: Dict[int, Tuple[str, Any]] = {}  # id -> (name, object) of every global resolved
        self._tuple_sizes: Dict[int, Tuple[Any, int]] = {}

    # -- the budget

    def charge(self, nbytes: int, what: str, doing: str = "allocate") -> None:
        """Account for ``nbytes`` about to be allocated for ``what``; :class:`PickleBomb` past the budget."""
        self.spent += max(0, int(nbytes))
        if self.spent > self.budget:
            raise PickleBomb(f"loading it would {doing} {what} ({_size(int(nbytes))}), more than the "
                             f"{self.allowance()}")

    def allowance(self) -> str:
        return f"{_size(self.budget)} allowed for a file of {_size(self.file_size)}"

    def charge_hashing(self, keys: Iterable[Any]) -> None:
        """Hashing a tuple hashes every element of every tuple nested in it: count them first."""
        for key in keys:
            if type(key) is tuple:
                elements, depth = _expanded(key, _tuple_children, self.budget // _REFERENCE, self._tuple_sizes)
                if depth > MAX_DEPTH:
                    raise PickleBomb(f"it hashes tuples nested more than {MAX_DEPTH} deep")
                self.charge(elements * _REFERENCE, f"a key of {elements} nested tuple elements", doing="hash")

    # -- globals

    def find_class(self, module: str, name: str) -> Any:
        qualified = f"{_PY2_NAMES.get(module, module)}.{name}"
        if qualified not in ALLOWED_GLOBALS:
            raise RefusedGlobal(qualified)
        found = super().find_class(module, name)
        self._globals.setdefault(id(found), (qualified, found))
        return found

    def persistent_load(self, pid: Any) -> Any:
        raise RefusedOperation("it uses persistent ids, which no result of this project contains")

    def _name(self, obj: Any) -> Optional[str]:
        entry = self._globals.get(id(obj))
        return entry[0] if entry is not None and entry[1] is obj else None

    def call(self, func: Any, args: Any) -> Any:
        """``func(*args)`` for a ``REDUCE``, through the check of :data:`CALLS` for ``func``."""
        name = self._name(func)
        if name is None or name not in CALLS:
            what = name or f"a {type(func).__name__}"
            raise RefusedOperation(f"it calls {what}, which no result of this project does")
        if not isinstance(args, tuple):
            raise RefusedOperation(f"it calls {name} with arguments that are not a tuple")
        return CALLS[name](self, func, args, name)

    def new(self, cls: Any, args: Any, kwargs: Any) -> Any:
        """``cls.__new__(cls, *args, **kwargs)`` for a ``NEWOBJ``: only for classes results create empty."""
        name = self._name(cls)
        if name is None or not isinstance(cls, type):
            raise RefusedOperation(f"it creates an instance of {name or type(cls).__name__}, which is not a class "
                                   f"results hold")
        if cls.__new__ is object.__new__:  # an empty instance; its state comes with BUILD (checked there)
            return cls.__new__(cls)
        if cls in (complex, frozenset, range, slice) and not kwargs:  # immutable: __new__ is the constructor
            return self.call(cls, tuple(args))
        raise RefusedOperation(f"it creates a {name} without its constructor, which no result of this project does")

    # -- opcodes that call, create or fill

    def load_reduce(self) -> None:
        args = self.stack.pop()
        self.stack[-1] = self.call(self.stack[-1], args)
    dispatch[pickle.REDUCE[0]] = load_reduce

    def load_newobj(self) -> None:
        args = self.stack.pop()
        cls = self.stack.pop()
        self.append(self.new(cls, args, {}))
    dispatch[pickle.NEWOBJ[0]] = load_newobj

    def load_newobj_ex(self) -> None:
        kwargs = self.stack.pop()
        args = self.stack.pop()
        cls = self.stack.pop()
        self.append(self.new(cls, args, kwargs))
    dispatch[pickle.NEWOBJ_EX[0]] = load_newobj_ex

    def _instantiate(self, klass: Any, args: List[Any]) -> None:  # INST and OBJ (protocols 0 and 1)
        if args or not isinstance(klass, type) or hasattr(klass, "__getinitargs__"):
            self.append(self.call(klass, tuple(args)))
        else:
            self.append(self.new(klass, (), {}))

    def load_build(self) -> None:
        _check_state(self, self.stack[-2], self.stack[-1])
        super().load_build()
    dispatch[pickle.BUILD[0]] = load_build

    def load_bytearray8(self) -> None:
        (length,) = struct.unpack("<Q", self.read(8))
        if length > self.file_size:  # the bytes must be in the file; allocating first would take the claim
            raise PickleBomb(f"it claims a bytearray of {_size(length)} in a file of {_size(self.file_size)}")
        buffer = bytearray(length)
        self.readinto(buffer)
        self.append(buffer)
    dispatch[pickle.BYTEARRAY8[0]] = load_bytearray8

    def _target(self, kind: type, opcode: str) -> Any:
        target = self.stack[-1]
        if type(target) is not kind:
            raise RefusedOperation(f"it {opcode} a {type(target).__name__}, which no result of this project does")
        return target

    def load_append(self) -> None:
        value = self.stack.pop()
        self._target(list, "appends to").append(value)
    dispatch[pickle.APPEND[0]] = load_append

    def load_appends(self) -> None:
        items = self.pop_mark()
        self._target(list, "appends to").extend(items)
    dispatch[pickle.APPENDS[0]] = load_appends

    def load_setitem(self) -> None:
        value = self.stack.pop()
        key = self.stack.pop()
        target = self._target(dict, "sets items of")
        self.charge_hashing((key,))
        target[key] = value
    dispatch[pickle.SETITEM[0]] = load_setitem

    def load_setitems(self) -> None:
        items = self.pop_mark()
        target = self._target(dict, "sets items of")
        self.charge_hashing(items[::2])
        for i in range(0, len(items), 2):
            target[items[i]] = items[i + 1]
    dispatch[pickle.SETITEMS[0]] = load_setitems

    def load_dict(self) -> None:
        items = self.pop_mark()
        self.charge_hashing(items[::2])
        self.append({items[i]: items[i + 1] for i in range(0, len(items), 2)})
    dispatch[pickle.DICT[0]] = load_dict

    def load_additems(self) -> None:
        items = self.pop_mark()
        target = self._target(set, "adds items to")
        self.charge_hashing(items)
        target.update(items)
    dispatch[pickle.ADDITEMS[0]] = load_additems

    def load_frozenset(self) -> None:
        items = self.pop_mark()
        self.charge_hashing(items)
        self.append(frozenset(items))
    dispatch[pickle.FROZENSET[0]] = load_frozenset

    def load(self) -> Any:
        value = super().load()
        limit = self.budget // _REFERENCE
        elements, depth = _expanded(value, _all_children, limit)
        if depth > MAX_DEPTH:
            raise PickleBomb(f"it nests containers more than {MAX_DEPTH} deep, which no result of this project does")
        if elements > limit:
            raise PickleBomb(f"its containers, nested through shared references, stand for more than {limit} "
                             f"elements, whose references alone would fill the {self.allowance()}")
        return value


# ---- what each callable global may be called with --------------------------------------------------

def _call_plain(unpickler: RestrictedUnpickler, func: Any, args: Tuple, name: str) -> Any:
    """complex, slice, StringDtype, pyarrow's type_for_alias: scalars in, a small object out."""
    if not _scalars_only(args):
        raise RefusedOperation(f"it calls {name} with {', '.join(type(a).__name__ for a in args)}, "
                               f"which no result of this project does")
    return func(*args)


def _call_range(unpickler: RestrictedUnpickler, func: Any, args: Tuple, name: str) -> Any:
    if len(args) not in (1, 2, 3):
        raise RefusedOperation(f"it calls {name} with {len(args)} arguments")
    start, stop, step = (0, args[0], 1) if len(args) == 1 else (args[0], args[1], args[2] if len(args) == 3 else 1)
    length = _range_length(start, stop, step, "a range")
    unpickler.charge(length * _REFERENCE, f"a range of {length} numbers")
    return func(*args)


_MATERIAL = (list, tuple, set, frozenset, dict, str, bytes, bytearray, range)


def _call_set(unpickler: RestrictedUnpickler, func: Any, args: Tuple, name: str) -> Any:
    """set / frozenset of a list (protocols 2 and 3), or of nothing."""
    if not args:
        return func()
    if len(args) != 1 or type(args[0]) not in _MATERIAL:
        raise RefusedOperation(f"it calls {name} with {', '.join(type(a).__name__ for a in args)}, "
                               f"which no result of this project does")
    items = args[0]
    length = _range_length(items.start, items.stop, items.step, "a range") if type(items) is range else len(items)
    unpickler.charge(length * _SET_ENTRY, f"a {func.__name__} of {length} items")
    if type(items) in (list, tuple):
        unpickler.charge_hashing(items)
    return func(items)


_LATIN1 = ("latin1", "latin-1", "latin_1", "iso-8859-1", "iso8859-1", "l1")


def _call_bytearray(unpickler: RestrictedUnpickler, func: Any, args: Tuple, name: str) -> Any:
    """bytearray(bytes) (protocol 3), bytearray(str, 'latin-1') (protocol 2); a count is charged in full."""
    if not args:
        return func()
    data = args[0]
    if len(args) == 1 and _is_int(data) and data >= 0:
        unpickler.charge(int(data), f"a bytearray of {int(data)} bytes")
        return func(int(data))
    if len(args) == 1 and type(data) in (bytes, bytearray):
        pass
    elif len(args) in (2, 3) and type(data) is str and str(args[1]).lower() in _LATIN1 and _scalars_only(args):
        pass
    else:
        raise RefusedOperation(f"it calls {name} with {', '.join(type(a).__name__ for a in args)}, "
                               f"which no result of this project does")
    unpickler.charge(len(data), f"a bytearray of {len(data)} bytes")
    return func(*args)


def _call_encode(unpickler: RestrictedUnpickler, func: Any, args: Tuple, name: str) -> Any:
    """_codecs.encode(str, 'latin1'): how protocol 2 stores bytes."""
    if not (len(args) in (2, 3) and type(args[0]) is str and str(args[1]).lower() in _LATIN1 and _scalars_only(args)):
        raise RefusedOperation(f"it calls {name} with {', '.join(type(a).__name__ for a in args)}, "
                               f"which no result of this project does")
    unpickler.charge(len(args[0]), f"{len(args[0])} bytes")
    return func(*args)


def _call_dtype(unpickler: RestrictedUnpickler, func: Any, args: Tuple, name: str) -> Any:
    """numpy.dtype('f8', False, True): a dtype from its type string (its state comes with BUILD)."""
    if not (1 <= len(args) <= 3 and type(args[0]) is str and len(args[0]) <= 64 and _scalars_only(args)):
        raise RefusedOperation(f"it calls {name} with {args[:1]!r}, which is not a type string")
    return func(*args)


def _dtype_of(value: Any, name: str) -> np.dtype:
    if not isinstance(value, np.dtype):
        raise RefusedOperation(f"it calls {name} with a {type(value).__name__} for a dtype")
    return value


def _call_reconstruct(unpickler: RestrictedUnpickler, func: Any, args: Tuple, name: str) -> Any:
    """numpy's _reconstruct(ndarray, (0,), b'b'): an empty array whose state comes with BUILD."""
    if len(args) != 3 or args[0] is not np.ndarray or type(args[2]) not in (bytes, str):
        raise RefusedOperation(f"it calls {name} with {', '.join(type(a).__name__ for a in args)}, "
                               f"which no result of this project does")
    count = _count(args[1], "an array")
    unpickler.charge(count, f"an array of shape {args[1]!r}")
    return func(*args)


def _call_scalar(unpickler: RestrictedUnpickler, func: Any, args: Tuple, name: str) -> Any:
    """numpy's scalar(dtype, bytes): one numpy number."""
    if len(args) not in (1, 2):
        raise RefusedOperation(f"it calls {name} with {len(args)} arguments")
    dtype = _dtype_of(args[0], name)
    if not dtype.hasobject and len(args) == 2 and type(args[1]) not in (bytes, bytearray, str):
        raise RefusedOperation(f"it calls {name} with a {type(args[1]).__name__} for the value's bytes")
    unpickler.charge(dtype.itemsize, f"a scalar of {dtype.itemsize} bytes")
    return func(*args)


def _call_frombuffer(unpickler: RestrictedUnpickler, func: Any, args: Tuple, name: str) -> Any:
    """numpy's _frombuffer(buffer, dtype, shape, order): an array over bytes from the file."""
    if len(args) != 4 or not isinstance(args[0], (bytes, bytearray, memoryview, pickle.PickleBuffer)):
        raise RefusedOperation(f"it calls {name} with {', '.join(type(a).__name__ for a in args)}, "
                               f"which no result of this project does")
    dtype = _dtype_of(args[1], name)
    count = _count(args[2], "an array")
    nbytes = count * max(dtype.itemsize, 1)
    if nbytes != memoryview(args[0]).nbytes:
        raise RefusedOperation(f"it calls {name} for an array of shape {args[2]!r} over "
                               f"{memoryview(args[0]).nbytes} bytes")
    unpickler.charge(nbytes, f"an array of shape {args[2]!r}")
    return func(*args)


def _index_classes(unpickler: RestrictedUnpickler, cls: Any, name: str) -> type:
    if not (isinstance(cls, type) and issubclass(cls, pd.Index) and unpickler._name(cls) is not None):
        raise RefusedOperation(f"it calls {name} for a {getattr(cls, '__name__', type(cls).__name__)}, "
                               f"which is not an index")
    return cls


def _call_new_index(unpickler: RestrictedUnpickler, func: Any, args: Tuple, name: str) -> Any:
    """pandas' _new_Index(cls, state): an Index over an array, a RangeIndex, a MultiIndex."""
    if len(args) != 2 or type(args[1]) is not dict:
        raise RefusedOperation(f"it calls {name} with {', '.join(type(a).__name__ for a in args)}, "
                               f"which no result of this project does")
    cls, state = _index_classes(unpickler, args[0], name), args[1]
    if issubclass(cls, pd.RangeIndex):
        length = _range_length(state.get("start", 0), state.get("stop", 0), state.get("step", 1), "a RangeIndex")
        unpickler.charge(length * _REFERENCE, f"a RangeIndex of {length} entries")
    elif issubclass(cls, pd.MultiIndex):
        levels, codes = state.get("levels"), state.get("codes", state.get("labels"))
        if not (isinstance(levels, (list, tuple)) and isinstance(codes, (list, tuple)) and len(levels) == len(codes)
                and all(isinstance(c, (np.ndarray, list, tuple)) for c in codes)
                and all(isinstance(lv, (pd.Index, np.ndarray, list, tuple)) for lv in levels)):
            raise RefusedOperation(f"it calls {name} for a MultiIndex without matching levels and codes")
        length = max((len(c) for c in codes), default=0)
        unpickler.charge(length * (len(codes) + 7) * _REFERENCE, f"a MultiIndex of {length} entries of "
                                                                 f"{len(codes)} levels")
    elif not isinstance(state.get("data"), (np.ndarray, pd.api.extensions.ExtensionArray)):
        raise RefusedOperation(f"it calls {name} for a {cls.__name__} whose data is a "
                               f"{type(state.get('data')).__name__}, not an array")
    return func(*args)


def _call_block_manager(unpickler: RestrictedUnpickler, func: Any, args: Tuple, name: str) -> Any:
    """pandas' BlockManager(blocks, axes): a frame's columns, checked against its axes by pandas."""
    from pandas.core.internals.blocks import Block
    if not (len(args) == 2 and isinstance(args[0], (tuple, list)) and all(isinstance(b, Block) for b in args[0])
            and isinstance(args[1], list) and all(isinstance(ax, pd.Index) for ax in args[1])):
        raise RefusedOperation(f"it calls {name} with something else than blocks and indexes")
    return func(*args)


def _check_values(values: Any, name: str) -> None:
    if not isinstance(values, (np.ndarray, pd.api.extensions.ExtensionArray)):
        raise RefusedOperation(f"it gives {name} a {type(values).__name__} for a block's values")


def _check_placement(unpickler: RestrictedUnpickler, placement: Any, name: str) -> None:
    from pandas._libs.internals import BlockPlacement
    if isinstance(placement, slice):
        length = _slice_length(placement, "a block")
        unpickler.charge(length * _REFERENCE, f"a block placed at {length} columns")
    elif not isinstance(placement, (np.ndarray, BlockPlacement)):
        raise RefusedOperation(f"it gives {name} a {type(placement).__name__} for a block's placement")


def _call_unpickle_block(unpickler: RestrictedUnpickler, func: Any, args: Tuple, name: str) -> Any:
    """pandas' _unpickle_block(values, placement, ndim): one block of a frame's columns."""
    if len(args) != 3 or args[2] not in (1, 2):
        raise RefusedOperation(f"it calls {name} with {len(args)} arguments")
    _check_values(args[0], name)
    _check_placement(unpickler, args[1], name)
    return func(*args)


def _call_ndarray_backed(unpickler: RestrictedUnpickler, func: Any, args: Tuple, name: str) -> Any:
    """pandas' Cython unpickle helper for StringArray: an empty array whose state comes with BUILD."""
    from pandas._libs.arrays import NDArrayBacked
    cls = args[0] if args else None
    if not (len(args) == 3 and isinstance(cls, type) and issubclass(cls, NDArrayBacked)
            and unpickler._name(cls) is not None and _is_int(args[1]) and args[2] is None):
        raise RefusedOperation(f"it calls {name} with something else than a string array class")
    return func(*args)


def _call_restore_array(unpickler: RestrictedUnpickler, func: Any, args: Tuple, name: str) -> Any:
    """pyarrow's _restore_array((type, length, null_count, offset, buffers, children, dictionary))."""
    data = args[0] if len(args) == 1 else None
    if not (isinstance(data, tuple) and len(data) == 7 and _is_int(data[1]) and _is_int(data[3])
            and 0 <= data[1] and 0 <= data[3] and data[1] + data[3] <= unpickler.budget):
        raise RefusedOperation(f"it calls {name} with something else than an Arrow array's data")
    array = func(*args)
    try:  # pyarrow trusts the lengths it is given; an array longer than its buffers is refused here
        array.validate(full=True)
    except Exception as err:
        raise RefusedOperation(f"it holds an inconsistent Arrow array ({err})") from None
    return array


def _call_py_buffer(unpickler: RestrictedUnpickler, func: Any, args: Tuple, name: str) -> Any:
    if len(args) != 1 or type(args[0]) not in (bytes, bytearray):
        raise RefusedOperation(f"it calls {name} with something else than bytes")
    return func(*args)


#: The globals a result pickle may call, each with the check of its arguments (every other allowed global
#: is only ever named: passed to one of these, or created empty and given its state).
CALLS: Dict[str, Callable[[RestrictedUnpickler, Any, Tuple, str], Any]] = {
    "builtins.complex": _call_plain, "builtins.slice": _call_plain,
    "builtins.set": _call_set, "builtins.frozenset": _call_set, "builtins.bytearray": _call_bytearray,
    "builtins.range": _call_range, "_codecs.encode": _call_encode,
    "numpy.dtype": _call_dtype,
    "numpy._core.multiarray._reconstruct": _call_reconstruct, "numpy.core.multiarray._reconstruct": _call_reconstruct,
    "numpy._core.multiarray.scalar": _call_scalar, "numpy.core.multiarray.scalar": _call_scalar,
    "numpy._core.numeric._frombuffer": _call_frombuffer, "numpy.core.numeric._frombuffer": _call_frombuffer,
    "pandas.core.indexes.base._new_Index": _call_new_index,
    "pandas.core.internals.managers.BlockManager": _call_block_manager,
    "pandas._libs.internals._unpickle_block": _call_unpickle_block,
    "pandas.StringDtype": _call_plain, "pandas.core.arrays.string_.StringDtype": _call_plain,
    "pandas._libs.arrays.__pyx_unpickle_NDArrayBacked": _call_ndarray_backed,
    "pyarrow.lib._restore_array": _call_restore_array, "pyarrow.lib.py_buffer": _call_py_buffer,
    "pyarrow.lib.type_for_alias": _call_plain,
}
assert set(CALLS) <= ALLOWED_GLOBALS


# ---- what each kind of object's state (BUILD) may be ------------------------------------------------

def _check_state(unpickler: RestrictedUnpickler, inst: Any, state: Any) -> None:
    """Refuse a BUILD that would allocate past the budget or give an object a state results never give it."""
    kind = type(inst).__name__
    if isinstance(inst, np.ndarray):
        parts = state if isinstance(state, tuple) else ()
        if len(parts) == 4:
            parts = (1,) + parts
        if len(parts) != 5 or not isinstance(parts[2], np.dtype):
            raise RefusedOperation("it gives an array a state that is not (shape, dtype, order, data)")
        count = _count(parts[1], "an array")
        nbytes = count * max(parts[2].itemsize, 1)
        unpickler.charge(nbytes, f"an array of shape {parts[1]!r} of {parts[2]}")
        if parts[2].hasobject and not (isinstance(parts[4], list) and len(parts[4]) == count):
            raise RefusedOperation(f"it gives an object array of shape {parts[1]!r} other than one item per element")
        return
    if isinstance(inst, np.dtype):
        return
    if isinstance(inst, pd.core.generic.NDFrame):
        from pandas.core.internals.managers import BaseBlockManager
        manager = state if not isinstance(state, dict) else state.get("_mgr", state.get("_data"))
        if not isinstance(manager, BaseBlockManager) or unpickler._name(type(inst)) is None:
            raise RefusedOperation(f"it gives a {kind} a state without its columns")
        return
    if _is_block_manager(inst):
        extra = state[3] if isinstance(state, tuple) and len(state) >= 4 and isinstance(state[3], dict) else {}
        body = extra.get("0.14.1")
        if not (isinstance(body, dict) and isinstance(body.get("axes"), list) and isinstance(body.get("blocks"), list)
                and all(isinstance(ax, pd.Index) for ax in body["axes"])
                and all(isinstance(b, dict) and {"values", "mgr_locs"} <= set(b) for b in body["blocks"])):
            raise RefusedOperation(f"it gives a {kind} a state other than its indexes and blocks")
        for block in body["blocks"]:
            _check_values(block["values"], kind)
            _check_placement(unpickler, block["mgr_locs"], kind)
        return
    if _is_ndarray_backed(inst):
        return  # (dtype, ndarray[, attributes]): arrays already charged
    if _is_arrow_array(inst):
        import pyarrow
        data = state.get("_pa_array", state.get("_data")) if isinstance(state, dict) else None
        if not isinstance(data, (pyarrow.Array, pyarrow.ChunkedArray)):
            raise RefusedOperation(f"it gives a {kind} a state without its Arrow array")
        return
    raise RefusedOperation(f"it sets the state of a {kind}, which no result of this project does")


def _is_block_manager(obj: Any) -> bool:
    from pandas.core.internals.managers import BaseBlockManager
    return isinstance(obj, BaseBlockManager)


def _is_ndarray_backed(obj: Any) -> bool:
    from pandas._libs.arrays import NDArrayBacked
    return isinstance(obj, NDArrayBacked)


def _is_arrow_array(obj: Any) -> bool:
    from pandas.core.arrays.arrow.array import ArrowExtensionArray
    return isinstance(obj, ArrowExtensionArray)


def restricted_load(handle: BinaryIO, *, budget: Optional[int] = None, **options: Any) -> Any:
    """``pickle.load(handle)`` admitting only what results contain, within a memory budget.

    :class:`RefusedGlobal` for a global no result names, :class:`RefusedOperation` for a use of one no
    result makes, :class:`PickleBomb` for a file that would take more memory than ``budget`` (by default
    :func:`memory_budget` of its size). The whole file is read first: its size sets the budget, and no
    length a pickle claims can make the loader allocate more than the file holds.
    """
    data = handle.read()
    return RestrictedUnpickler(io.BytesIO(data), file_size=len(data), budget=budget, **options).load()


def restricted_loads(data: bytes, *, budget: Optional[int] = None, **options: Any) -> Any:
    """:func:`restricted_load` of bytes in memory."""
    return restricted_load(io.BytesIO(data), budget=budget, **options)
