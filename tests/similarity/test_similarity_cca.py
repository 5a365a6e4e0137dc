"""CCA variants and the Procrustes distance against independent formulas and known properties."""
import numpy as np
import pytest
import torch
from scipy.linalg import orthogonal_procrustes, sqrtm

from src.errors import UserError
from src.similarity import DegenerateMeasure, canonical_correlations, cca, cca_mean_rho, procrustes, pwcca, svcca
from tests.math_helpers import orthogonal, rng, sum_tol


def related_pair(n=200, dx=8, dy=6, seed=0, noise=1.0):
    g = rng(seed)
    x = g.standard_normal((n, dx))
    y = x @ g.standard_normal((dx, dy)) + noise * g.standard_normal((n, dy))
    return x, y


def ref_cca(x, y):
    """Textbook CCA by whitening: singular values of Sxx^-1/2 Sxy Syy^-1/2 (and X's variates)."""
    xc, yc = x - x.mean(0), y - y.mean(0)
    sxx_ih = np.linalg.inv(np.real(sqrtm(xc.T @ xc)))
    syy_ih = np.linalg.inv(np.real(sqrtm(yc.T @ yc)))
    u, rho, _ = np.linalg.svd(sxx_ih @ xc.T @ yc @ syy_ih)
    k = min(x.shape[1], y.shape[1])
    h = xc @ sxx_ih @ u[:, :k]  # canonical variates of x, unit norm
    return rho[:k], h, xc


def test_canonical_correlations_match_whitening_formula():
    x, y = related_pair(seed=1)
    rho, _, _ = ref_cca(x, y)
    got = canonical_correlations(torch.from_numpy(x), y).numpy()
    np.testing.assert_allclose(got, rho, rtol=1e-10)
    assert cca(x, y) == pytest.approx(np.mean(rho ** 2), rel=1e-10)
    assert cca_mean_rho(x, y) == pytest.approx(np.mean(rho), rel=1e-10)


def test_pwcca_matches_projection_weighting():
    x, y = related_pair(seed=2)
    rho, h, xc = ref_cca(x, y)
    alpha = np.abs(h.T @ xc).sum(axis=1)
    expected = np.sum(alpha * rho) / alpha.sum()
    assert pwcca(x, y) == pytest.approx(expected, rel=1e-10)
    assert pwcca(x, x) == pytest.approx(1.0, abs=1e-12)


def test_cca_invariant_to_invertible_maps_and_translation():
    x, y = related_pair(seed=3)
    a = orthogonal(8, 4) @ np.diag(np.logspace(0, 4, 8)) @ orthogonal(8, 5)  # condition 1e4
    b = rng(6).standard_normal((6, 6))
    for f in (cca, cca_mean_rho):
        assert f(x @ a + 100.0, y @ b - 5.0) == pytest.approx(f(x, y), rel=1e-8)
    assert pwcca(x, y @ b + 3.0) == pytest.approx(pwcca(x, y), rel=1e-8)
    # the weights use |<h_i, x_j>| per neuron: invariant to scaling, translation, permuting and
    # sign-flipping the neurons of x, but not to rotating them
    signed_perm = np.eye(8)[rng(7).permutation(8)] * np.where(rng(8).random(8) < 0.5, -1.0, 1.0)
    assert pwcca(2.5 * x @ signed_perm + 1.0, y) == pytest.approx(pwcca(x, y), rel=1e-8)
    assert abs(pwcca(x @ orthogonal(8, 9), y) - pwcca(x, y)) > 1e-4


def test_cca_refuses_when_dimension_reaches_n():
    """Rank N - 1 spans all centred directions, so every canonical correlation is 1 whatever the data: the
    averages are refused (DegenerateMeasure), while canonical_correlations returns the forced 1s as they are."""
    g = rng(8)
    x, y = g.standard_normal((20, 50)), g.standard_normal((20, 30))
    for f in (cca, cca_mean_rho, pwcca):
        with pytest.raises(DegenerateMeasure, match=r"degenerate.*50 features.*19 \+ 19 = 38 > N - 1 = 19"):
            f(x, y)
    rho = canonical_correlations(x, y)
    assert rho.numel() == 19  # centred rank N - 1
    np.testing.assert_allclose(rho.numpy(), 1.0, atol=1e-9)


def test_rank_deficient_inputs_give_finite_cca():
    x, y = related_pair(seed=9)
    x_dup = np.column_stack([x, x[:, :3], np.zeros(len(x))])  # duplicated and dead columns
    assert cca(x_dup, y) == pytest.approx(cca(x, y), rel=1e-9)
    assert pwcca(x_dup, y) == pytest.approx(pwcca(x_dup, y), rel=1e-12)


def test_svcca_drops_low_variance_noise_directions():
    g = rng(10)
    n = 400
    s = g.standard_normal((n, 5))
    x = np.column_stack([s, 1e-4 * g.standard_normal((n, 5))])
    y = np.column_stack([s @ g.standard_normal((5, 5)), 1e-4 * g.standard_normal((n, 5))])
    assert svcca(x, y) == pytest.approx(1.0, abs=1e-6)        # 5 shared directions kept each side
    assert cca_mean_rho(x, y) < 0.7                            # the noise directions count in plain CCA
    assert svcca(x, y, keep=1.0) == pytest.approx(cca_mean_rho(x, y), rel=sum_tol(n * 10))
    with pytest.raises(UserError, match="keep"):
        svcca(x, y, keep=1.5)


def test_cca_errors():
    with pytest.raises(UserError, match=r"10x3.*9x3"):
        cca(np.zeros((10, 3)), np.ones((9, 3)))
    with pytest.raises(UserError, match="constant"):
        cca(np.ones((10, 3)), rng(11).standard_normal((10, 3)))


# --- Procrustes -----------------------------------------------------------------------------------

def ref_procrustes(x, y):
    """min_R ||X^ R - Y^||^2 over orthogonal R by scipy, after zero-padding to a common width."""
    xc, yc = x - x.mean(0), y - y.mean(0)
    xc, yc = xc / np.linalg.norm(xc), yc / np.linalg.norm(yc)
    d = max(xc.shape[1], yc.shape[1])
    xp = np.pad(xc, ((0, 0), (0, d - xc.shape[1])))
    yp = np.pad(yc, ((0, 0), (0, d - yc.shape[1])))
    r, _ = orthogonal_procrustes(xp, yp)
    return np.linalg.norm(xp @ r - yp) ** 2


@pytest.mark.parametrize("shape", [(100, 6, 6), (100, 4, 9), (15, 40, 25)])
@pytest.mark.parametrize("method", ["gram", "feature", "auto"])
def test_procrustes_matches_scipy(shape, method):
    n, dx, dy = shape
    g = rng(12)
    x, y = g.standard_normal((n, dx)), g.standard_normal((n, dy))
    y[:, :min(dx, dy)] += x[:, :min(dx, dy)]
    assert procrustes(x, y, method=method) == pytest.approx(ref_procrustes(x, y), rel=1e-9)


def test_procrustes_zero_for_similarity_transform_and_symmetric():
    x, y = related_pair(seed=13)
    x2 = 4.2 * x @ orthogonal(8, 14) + rng(15).standard_normal(8) * 30
    assert abs(procrustes(x, x2)) < 1e-12
    assert abs(procrustes(x2, x, method="gram")) < 1e-12
    assert procrustes(x, y) == pytest.approx(procrustes(y, x), rel=sum_tol(x.shape[0] * x.shape[0] + x.shape[1]))
    assert 0 < procrustes(x, y) < 2
