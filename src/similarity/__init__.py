"""Representational similarity measures between two activation tensors of the same N samples.

Every measure takes ``x`` and ``y`` (torch tensors on any device, or numpy arrays), ``N x D`` or
``N x C x H x W`` (flattened per sample, ``reshape(N, -1)``), and returns a Python float — except
``corr`` (a numpy channel-correlation matrix) and the closed-form maps ``ps_inv``, ``ls_orth``,
``ls_sum`` (numpy weights), which treat pixels as samples. :data:`RECORDS` holds one
:class:`Measure` record per command-line name (function, family, what it returns, scale, whether
it needs the inputs, its Gram form, whether it streams); :data:`MEASURES`, :data:`RETURNS` and the
other name sets are views of it.

Data are centred before any product (see :mod:`src.similarity._prep`); the linear CKAs multiply
float32 data in float32 with float64 sums (:mod:`src.similarity.hsic`), everything else is float64; bad
input (mismatched N, NaN) is a :class:`src.errors.UserError`, never a NaN result. A value that the
data cannot decide (too few samples, a constant representation, canonical correlations or an R^2
forced to 1 by more features than samples) is a :class:`DegenerateMeasure` (a UserError with the
reason); the rules are in :mod:`src.similarity._prep` (:func:`degenerate_reason`, :data:`MIN_SAMPLES`).
Layer x layer matrices and stitch results store such values as NaN with the reason beside them
(``SimilarityMatrix.degenerate``) and warn (:class:`DegenerateWarning`).

Layer x layer matrices: :func:`layer_similarity` (models and loaders -> :class:`SimilarityMatrix`),
:func:`cka_matrix` (all pairs of CKA from activations in memory, one matrix product per batch; see
:mod:`src.similarity.layer_pairs`; the single-pair CKAs use the same engine, :mod:`src.similarity.hsic`), permutation p-values and bootstrap intervals in
:mod:`src.similarity.stats`, heatmaps in :mod:`src.similarity.plot`.
"""
from src.similarity._prep import MIN_SAMPLES, DegenerateMeasure, DegenerateWarning, degenerate_reason
from src.similarity.basic import corr, l2
from src.similarity.cca import canonical_correlations, cca, cca_mean_rho, pwcca, svcca
from src.similarity.cka import (MinibatchCKA, centered_gram, cka, cka_against, cka_against_cells, cka_debiased,
                                cka_minibatch, cka_rbf, dcka, rbf_gram)
from src.similarity.procrustes import procrustes
from src.similarity.registry import (ASYMMETRIC, DISTANCES, FLOAT_MEASURES, MEASURES, NEEDS_INPUTS, RECORDS, RETURNS,
                                     Measure, get_measure, get_record)
from src.similarity.regression import LeastSquaresFit, lr, ls_orth, ls_sum, ps_inv
from src.similarity.hsic import BIASED, UNBIASED, HSICEstimator, HSICMatrix
from src.similarity.layer_pairs import cka_matrix, pairwise_matrix
from src.similarity.result import SimilarityMatrix
from src.similarity.api import layer_similarity

__all__ = [
    "RECORDS", "Measure", "get_record", "MEASURES", "RETURNS", "FLOAT_MEASURES", "DISTANCES", "NEEDS_INPUTS",
    "ASYMMETRIC", "get_measure", "DegenerateMeasure", "DegenerateWarning", "degenerate_reason", "MIN_SAMPLES",
    "cka", "cka_against", "cka_against_cells", "cka_debiased", "cka_rbf", "cka_minibatch", "MinibatchCKA", "dcka", "centered_gram", "rbf_gram",
    "cca", "cca_mean_rho", "svcca", "pwcca", "canonical_correlations", "procrustes",
    "lr", "ps_inv", "ls_orth", "ls_sum", "LeastSquaresFit", "l2", "corr",
    "layer_similarity", "SimilarityMatrix", "cka_matrix", "pairwise_matrix", "HSICMatrix",
    "HSICEstimator", "BIASED", "UNBIASED",
]
