"""Representational similarity measures between two activation tensors of the same N samples.

Every measure takes ``x`` and ``y`` (torch tensors on any device, or numpy arrays), ``N x D`` or
``N x C x H x W`` (flattened per sample, ``reshape(N, -1)``), and returns a Python float — except
``corr`` (a numpy channel-correlation matrix) and the closed-form maps ``ps_inv``, ``ls_orth``,
``ls_sum`` (numpy weights), which treat pixels as samples. :data:`MEASURES` maps the command-line
names to the functions; :data:`RETURNS` says what each returns.

All arithmetic is float64 with centring before any product (see :mod:`src.similarity._prep`); bad
input (mismatched N, too few samples, constant representations, NaN) is a
:class:`src.errors.UserError`, never a NaN result.

Layer x layer matrices: :func:`layer_similarity` (models and loaders -> :class:`SimilarityMatrix`),
:func:`cka_matrix` (all pairs of CKA from activations in memory, one matrix product per batch; see
:mod:`src.similarity.matrix`), permutation p-values and bootstrap intervals in
:mod:`src.similarity.stats`, heatmaps in :mod:`src.similarity.plot`.
"""
from src.similarity.basic import corr, l2
from src.similarity.cca import canonical_correlations, cca, cca_mean_rho, pwcca, svcca
from src.similarity.cka import (MinibatchCKA, centered_gram, cka, cka_debiased, cka_minibatch, cka_rbf, dcka,
                                rbf_gram)
from src.similarity.procrustes import procrustes
from src.similarity.registry import (ASYMMETRIC, DISTANCES, FLOAT_MEASURES, MEASURES, NEEDS_INPUTS, RETURNS,
                                     get_measure)
from src.similarity.regression import LeastSquaresFit, lr, ls_orth, ls_sum, ps_inv
from src.similarity.matrix import HSICMatrix, MatrixEstimate, cka_matrix, pairwise_matrix
from src.similarity.result import SimilarityMatrix
from src.similarity.api import layer_similarity

__all__ = [
    "MEASURES", "RETURNS", "FLOAT_MEASURES", "DISTANCES", "NEEDS_INPUTS", "ASYMMETRIC", "get_measure",
    "cka", "cka_debiased", "cka_rbf", "cka_minibatch", "MinibatchCKA", "dcka", "centered_gram", "rbf_gram",
    "cca", "cca_mean_rho", "svcca", "pwcca", "canonical_correlations", "procrustes",
    "lr", "ps_inv", "ls_orth", "ls_sum", "LeastSquaresFit", "l2", "corr",
    "layer_similarity", "SimilarityMatrix", "cka_matrix", "pairwise_matrix", "HSICMatrix", "MatrixEstimate",
]
