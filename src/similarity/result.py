""":class:`SimilarityMatrix`: a layer x layer matrix with its labels, statistics and output files.

The rows are the layers of model 1 and the columns those of model 2, always labelled with the
names that selected them. :meth:`SimilarityMatrix.save` writes, atomically, into one folder:

- ``matrix.csv``: the values, layer names as row and column labels (``pd.read_csv(p, index_col=0)``);
  also ``pvalues.csv``, ``ci_low.csv``, ``ci_high.csv`` when those were computed;
- ``matrix.npz``: ``values``, ``rows``, ``cols``, ``measure`` and, when computed, ``pvalues``,
  ``ci_low``, ``ci_high``; ``meta`` and ``provenance`` as JSON strings;
- ``matrix.pkl``: a plain dict (pandas / numpy / Python values only, no project class needed);
- ``heatmap.png``: the heatmap (provenance in the PNG text metadata).
"""
import io
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import pandas as pd

from src.errors import UserError
from src.provenance import jsonable
from src.provenance import provenance as make_provenance
from src.results_io import atomic_write, read_pickle, staged_folder, write_csv, write_pickle
from src.similarity.plot import draw_heatmap, save_heatmap
from src.similarity.registry import RECORDS

EXTRA_FILES = {"pvalues": "pvalues.csv", "ci_low": "ci_low.csv", "ci_high": "ci_high.csv"}
#: Every file :meth:`SimilarityMatrix.save` may write.
OUTPUT_FILES = ("matrix.csv", "matrix.npz", "matrix.pkl", "heatmap.png", *EXTRA_FILES.values())


@dataclass
class SimilarityMatrix:
    """Similarity (or distance) of every layer of model 1 (rows) with every layer of model 2 (columns).

    ``meta`` holds what was compared (``model1``, ``model2``, ``dataset1``, ``dataset2``,
    ``split``, ``batch_size``, ``precision``, ...). ``pvalues`` / ``ci_low`` / ``ci_high`` are
    present when a permutation test / bootstrap was asked for (see :mod:`src.similarity.stats`).
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

    def __post_init__(self):
        self.values = np.asarray(self.values, dtype=float)
        self.rows, self.cols = list(self.rows), list(self.cols)
        if self.values.shape != (len(self.rows), len(self.cols)):
            raise ValueError(f"values of shape {self.values.shape} do not fit {len(self.rows)} rows x {len(self.cols)} columns")

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
                       ci_low=t(self.ci_low), ci_high=t(self.ci_high), meta=meta)

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
                "meta": jsonable(self.meta), "provenance": provenance}

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "SimilarityMatrix":
        arr = lambda k: None if data.get(k) is None else np.asarray(data[k])  # noqa: E731
        return cls(values=np.asarray(data["values"]), rows=data["rows"], cols=data["cols"], measure=data["measure"],
                   n_samples=data["n_samples"], n_batches=data.get("n_batches", 1), pvalues=arr("pvalues"),
                   ci_low=arr("ci_low"), ci_high=arr("ci_high"), ci_level=data.get("ci_level"),
                   permutations=data.get("permutations", 0), bootstrap=data.get("bootstrap", 0),
                   meta=dict(data.get("meta") or {}))

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
        return names

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
        arrays = {"values": self.values, "rows": np.array(self.rows, dtype=str), "cols": np.array(self.cols, dtype=str),
                  "measure": np.array(self.measure), "n_samples": np.array(self.n_samples),
                  "meta": np.array(json.dumps(jsonable(self.meta))),
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
