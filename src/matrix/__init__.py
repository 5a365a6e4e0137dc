"""Stitch matrices (``stitch_matrix.py``): every front layer stitched into every end layer, beside CKA.

The package sits above :mod:`src.stitching` (one stitch) and runs its steps for every cell:

- :mod:`.plan`: the job (:class:`MatrixJob`), its cells and the checks made before anything runs;
- :mod:`.caches`: activations computed once per layer instead of once per cell;
- :mod:`.run`: running the cells on one process, across torchrun ranks or as job-array shards;
- :mod:`.shard`: which cells a shard or rank runs; :mod:`.runinfo`: the run's parameters in ``run.json``;
  :mod:`.resume`: which cells are finished;
- :mod:`.evess`: the similarity-trained twins and the EV / ES / SV tables;
- :mod:`.summary`: the tables and the files of a run folder; :mod:`.stats`: numbers read off a matrix;
  :mod:`.plot`: ``matrix.png``; :mod:`.images`: ``images.png``.
"""
from src.matrix.plan import MatrixJob, plan_matrix
from src.matrix.run import collect_matrix, run_matrix
from src.matrix.summary import load_matrix, print_summary

__all__ = ["MatrixJob", "plan_matrix", "run_matrix", "collect_matrix", "print_summary", "load_matrix"]
