""":class:`SimilarityMatrix`: a layer x layer matrix with its labels, statistics and output files.

The rows are the layers of model 1 and the columns those of model 2, always labelled with the
names that selected them. :meth:`SimilarityMatrix.save` writes, atomically, into one folder:

- ``matrix.csv``: the values, layer names as row and column labels (``pd.read_csv(p, index_col=0)``);
  also ``pvalues.csv``, ``ci_low.csv``, ``ci_high.csv`` when those were computed;
- ``matrix.npz``: ``values``, ``rows``, ``cols``, ``measure`` and, when computed, ``pvalues``,
  ``ci_low``, ``ci_high``; ``meta`` and ``provenance`` as JSON strings;
- ``matrix.pkl``: a plain dict (pandas / numpy / Python values only, no project class needed);
- ``heatmap.png``: the heatmap (provenance in the PNG text metadata);
- ``degenerate.csv`` (only when there are such cells): ``layer1, layer2, reason`` of every cell whose
  measure is degenerate on these data (its value is NaN everywhere; see
  :class:`src.similarity._prep.DegenerateMeasure`); the pickle holds them too, under ``degenerate``.
"""
import io
import json
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import pandas as pd

from src.errors import UserError
from src.provenance import jsonable
from src.provenance import provenance as make_provenance
from src.results_io import atomic_write, read_pickle, staged_folder, write_csv, write_pickle
from src.similarity._prep import DegenerateWarning
from src.similarity.plot import draw_heatmap, save_heatmap
from src.similarity.registry import RECORDS

EXTRA_FILES = {"pvalues": "pvalues.csv", "ci_low": "ci_low.csv", "ci_high": "ci_high.csv"}
DEGENERATE_FILE = "degenerate.csv"
#: Every file :meth:`SimilarityMatrix.save` may write.
OUTPUT_FILES = ("matrix.csv", "matrix.npz", "matrix.pkl", "heatmap.png", *EXTRA_FILES.values(), DEGENERATE_FILE)
#: Cells named in a warning line before "and k more".
WARN_CELLS = 8

Cell = Tuple[str, str]


@dataclass
class SimilarityMatrix:
    """Similarity (or distance) of every layer of model 1 (rows) with every layer of model 2 (columns).

    ``meta`` holds what was compared (``model1``, ``model2``, ``dataset1``, ``dataset2``,
    ``split``, ``batch_size``, ``precision``, ...). ``pvalues`` / ``ci_low`` / ``ci_high`` are
    present when a permutation test / bootstrap was asked for (see :mod:`src.similarity.stats`).
    ``degenerate``: ``{(layer1, layer2): reason}`` for the cells whose measure is degenerate on these
    data (too few samples, a constant layer, more features than samples for CCA or lr, ...); those
    cells are NaN in ``values`` (and in the p-values and intervals), never a number.
    """

    values: np.ndarray
    rows: List[str]
    cols: List[str]
    measure: str
    n_samples: int
    n_batches: int = 1
    pvalues: Optional[np.ndarray] = None
    ci_low: Optional[np.ndarray] = None
    ci_high: Optional[np.ndarray] = None
    ci_level: Optional[float] = None
    permutations: int = 0
    bootstrap: int = 0
    meta: Dict[str, Any] = field(default_factory=dict)
    degenerate: Dict[Cell, str] = field(default_factory=dict)

    def __post_init__(self):
        self.values = np.asarray(self.values, dtype=float)
        self.rows, self.cols = list(self.rows), list(self.cols)
        if self.values.shape != (len(self.rows), len(self.cols)):
            raise ValueError(f"values of shape {self.values.shape} do not fit {len(self.rows)} rows x {len(self.cols)} columns")
        self.degenerate = {(str(r), str(c)): str(why) for (r, c), why in dict(self.degenerate or {}).items()}
        if self.degenerate:
            self._blank_degenerate()

    def _blank_degenerate(self) -> None:
        """NaN in every array at the degenerate cells (a degenerate value is never a number)."""
        rows = {name: i for i, name in enumerate(self.rows)}
        cols = {name: j for j, name in enumerate(self.cols)}
        unknown = [cell for cell in self.degenerate if cell[0] not in rows or cell[1] not in cols]
        if unknown:
            raise ValueError(f"degenerate cells {unknown} are not layer pairs of this matrix")
        index = tuple(np.array([(rows[r], cols[c]) for r, c in self.degenerate]).T)
        self.values = self.values.copy()
        self.values[index] = np.nan
        for key in ("pvalues", "ci_low", "ci_high"):
            data = getattr(self, key)
            if data is not None:
                data = np.array(data, dtype=float)
                data[index] = np.nan
                setattr(self, key, data)

    def __setstate__(self, state):
        """Matrices pickled before ``degenerate`` existed load with none."""
        state.setdefault("degenerate", {})
        self.__dict__.update(state)

    def degenerate_warning(self) -> Optional[str]:
        """One line naming the degenerate cells (None when there are none); the reasons are in
        ``degenerate`` (and ``degenerate.csv``)."""
        if not self.degenerate:
            return None
        cells = [f"{r} x {c}" for r, c in self.degenerate]
        shown = ", ".join(cells[:WARN_CELLS]) + (f" and {len(cells) - WARN_CELLS} more" if len(cells) > WARN_CELLS else "")
        first = next(iter(self.degenerate.items()))
        return (f"{self.measure} is degenerate for {len(cells)} of {self.values.size} layer pairs, stored as NaN: "
                f"{shown} ({first[0][0]} x {first[0][1]}: {first[1]})")

    def warn_degenerate(self, stacklevel: int = 3) -> None:
        """Issue :meth:`degenerate_warning` as a :class:`src.similarity._prep.DegenerateWarning`."""
        text = self.degenerate_warning()
        if text:
            warnings.warn(text, DegenerateWarning, stacklevel=stacklevel)
    # --- views ---------------------------------------------------------------------------------

    def to_frame(self, what: str = "values") -> pd.DataFrame:
        """``values`` (or ``pvalues``, ``ci_low``, ``ci_high``) as a DataFrame labelled with the layer names."""
        data = getattr(self, what)
        if data is None:
            raise UserError(f"no {what} were computed for this matrix")
        frame = pd.DataFrame(np.asarray(data), index=pd.Index(self.rows, name="layer"), columns=self.cols)
        return frame

    @property
    def T(self) -> "SimilarityMatrix":  # noqa: N802 (numpy's name)
        """The matrix with the two models swapped."""
        swap = {"model1": "model2", "model2": "model1", "dataset1": "dataset2", "dataset2": "dataset1"}
        meta = {swap.get(k, k): v for k, v in self.meta.items()}
        t = lambda a: None if a is None else np.asarray(a).T.copy()  # noqa: E731
        return replace(self, values=self.values.T.copy(), rows=self.cols, cols=self.rows, pvalues=t(self.pvalues),
                       ci_low=t(self.ci_low), ci_high=t(self.ci_high), meta=meta,
                       degenerate={(c, r): why for (r, c), why in self.degenerate.items()})

    def title(self) -> str:
        m1, m2 = self.meta.get("model1", "model 1"), self.meta.get("model2", "model 2")
        d1, d2 = self.meta.get("dataset1"), self.meta.get("dataset2")
        data = d1 if (d2 is None or d2 == d1) else f"{d1} vs {d2}"
        split = self.meta.get("split")
        where = f" on {data}" + (f" ({split}, {self.n_samples} samples)" if split else f" ({self.n_samples} samples)") \
            if data else f" ({self.n_samples} samples)"
        return f"{self.measure}: {m1} vs {m2}{where}"

    def _plot_options(self) -> Dict[str, Any]:
        record = RECORDS.get(self.measure)
        unit, distance = (record.unit_scale, record.distance) if record else (False, False)
        return dict(title=self.title(), xlabel=f"{self.meta.get('model2', 'model 2')} layer",
                    ylabel=f"{self.meta.get('model1', 'model 1')} layer",
                    colorbar_label=self.measure + (" (distance)" if distance else ""),
                    vmin=0.0 if unit else None, vmax=1.0 if unit else None,
                    cmap="magma_r" if distance else "magma", pvalues=self.pvalues)

    def plot(self, ax=None, **options):
        """Draw the heatmap into ``ax`` (default: a new pyplot figure, shown inline in notebooks); returns ``ax``."""
        if ax is None:
            import matplotlib.pyplot as plt

            side = 3.0 + 0.28 * min(max(len(self.rows), len(self.cols)), 60)
            _, ax = plt.subplots(figsize=(side + 1.5, side), layout="constrained")
        draw_heatmap(ax, self.values, self.rows, self.cols, **{**self._plot_options(), **options})
        return ax

    # --- files ---------------------------------------------------------------------------------

    def to_dict(self, provenance: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        """Everything as plain pandas / numpy / Python values (what ``matrix.pkl`` holds)."""
        frames = {k: (None if getattr(self, k) is None else self.to_frame(k)) for k in ("pvalues", "ci_low", "ci_high")}
        return {"values": self.to_frame(), "rows": list(self.rows), "cols": list(self.cols), "measure": self.measure,
                "n_samples": int(self.n_samples), "n_batches": int(self.n_batches), **frames,
                "ci_level": self.ci_level, "permutations": int(self.permutations), "bootstrap": int(self.bootstrap),
                "meta": jsonable(self.meta), "degenerate": dict(self.degenerate), "provenance": provenance}

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "SimilarityMatrix":
        arr = lambda k: None if data.get(k) is None else np.asarray(data[k])  # noqa: E731
        return cls(values=np.asarray(data["values"]), rows=data["rows"], cols=data["cols"], measure=data["measure"],
                   n_samples=data["n_samples"], n_batches=data.get("n_batches", 1), pvalues=arr("pvalues"),
                   ci_low=arr("ci_low"), ci_high=arr("ci_high"), ci_level=data.get("ci_level"),
                   permutations=data.get("permutations", 0), bootstrap=data.get("bootstrap", 0),
                   meta=dict(data.get("meta") or {}), degenerate=dict(data.get("degenerate") or {}))

    @classmethod
    def load(cls, directory) -> "SimilarityMatrix":
        """Read a folder written by :meth:`save` (its ``matrix.pkl``)."""
        return cls.from_dict(read_pickle(Path(directory) / "matrix.pkl"))

    def output_files(self, directory) -> Dict[str, Path]:
        directory = Path(directory)
        names = {"csv": directory / "matrix.csv", "npz": directory / "matrix.npz", "pkl": directory / "matrix.pkl",
                 "png": directory / "heatmap.png"}
        for key, filename in EXTRA_FILES.items():
            if getattr(self, key) is not None:
                names[key] = directory / filename
        if self.degenerate:
            names["degenerate"] = directory / DEGENERATE_FILE
        return names

    def degenerate_frame(self) -> pd.DataFrame:
        """The degenerate cells as rows ``layer1, layer2, reason``."""
        return pd.DataFrame([(r, c, why) for (r, c), why in self.degenerate.items()],
                            columns=["layer1", "layer2", "reason"])

    def save(self, directory, overwrite: bool = False, provenance: Optional[Dict[str, Any]] = None) -> Dict[str, Path]:
        """Write the files listed in the module docstring into ``directory``; returns their paths.

        Existing files are replaced only with ``overwrite=True`` (``--overwrite``); otherwise nothing
        is written and a UserError names them. The files are written into a fresh folder and moved in
        together, the pickle last (:func:`src.results_io.staged_folder`): an interrupted save leaves the
        previous files, and a replaced matrix never keeps the previous one's p-values or intervals.
        """
        paths = self.output_files(directory)
        existing = [p.name for p in paths.values() if p.exists()]
        if existing and not overwrite:
            raise UserError(f"{directory} already holds {', '.join(existing)}; pass --overwrite (overwrite=True) "
                            f"to replace them or choose another output folder (-o)")
        if provenance is None:

            provenance = make_provenance()
        with staged_folder(directory, OUTPUT_FILES, marker="matrix.pkl") as staging:
            self._write(staging, provenance)
        return paths

    def _write(self, directory: Path, provenance: Dict[str, Any]) -> None:
        paths = self.output_files(directory)
        write_csv(paths["csv"], self.to_frame(), index=True)
        for key in EXTRA_FILES:
            if key in paths:
                write_csv(paths[key], self.to_frame(key), index=True)
        if "degenerate" in paths:
            write_csv(paths["degenerate"], self.degenerate_frame(), index=False)
        arrays = {"values": self.values, "rows": np.array(self.rows, dtype=str), "cols": np.array(self.cols, dtype=str),
                  "measure": np.array(self.measure), "n_samples": np.array(self.n_samples),
                  "meta": np.array(json.dumps(jsonable(self.meta))),
                  "degenerate": np.array(json.dumps([[r, c, why] for (r, c), why in self.degenerate.items()])),
                  "provenance": np.array(json.dumps(provenance, default=str))}
        for key in ("pvalues", "ci_low", "ci_high"):
            if getattr(self, key) is not None:
                arrays[key] = np.asarray(getattr(self, key))

        def write_npz(handle):
            buffer = io.BytesIO()
            np.savez(buffer, **arrays)
            handle.write(buffer.getvalue())

        atomic_write(paths["npz"], write_npz)
        write_pickle(paths["pkl"], self.to_dict(provenance))
        save_heatmap(paths["png"], self.values, self.rows, self.cols, provenance=provenance, **self._plot_options())
