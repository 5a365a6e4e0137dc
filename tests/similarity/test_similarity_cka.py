"""CKA family: mathematics checked against independent numpy formulas and known properties."""
import numpy as np
import pytest
import torch
from scipy.spatial.distance import pdist, squareform

from src.errors import UserError
from src.similarity import (MEASURES, MinibatchCKA, cca, cka, cka_debiased, cka_minibatch, cka_rbf, dcka)
from tests.math_helpers import orthogonal, rng, sum_tol


def related_pair(n=120, dx=15, dy=25, seed=0, noise=0.7):
    g = rng(seed)
    x = g.standard_normal((n, dx))
    y = np.tanh(x @ g.standard_normal((dx, dy))) + noise * g.standard_normal((n, dy))
    return x, y


# --- independent reference formulas (numpy float64, explicit centring matrix) -------------------

def ref_hsic(k, l):
    n = k.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    return np.trace(k @ h @ l @ h) / (n - 1) ** 2


def ref_cka(k, l):
    return ref_hsic(k, l) / np.sqrt(ref_hsic(k, k) * ref_hsic(l, l))


def ref_unbiased_hsic(k, l):
    """Song et al. 2012, eq. (5), written out with explicit zero-diagonal matrices."""
    n = k.shape[0]
    kt, lt = k - np.diag(np.diag(k)), l - np.diag(np.diag(l))
    one = np.ones(n)
    return (np.trace(kt @ lt) + (one @ kt @ one) * (one @ lt @ one) / ((n - 1) * (n - 2))
            - 2 / (n - 2) * one @ kt @ lt @ one) / (n * (n - 3))


def ref_debiased_cka(k, l):
    return ref_unbiased_hsic(k, l) / np.sqrt(ref_unbiased_hsic(k, k) * ref_unbiased_hsic(l, l))


def ref_rbf_gram(x, frac):
    d = squareform(pdist(x))
    sigma = frac * np.median(pdist(x))
    return np.exp(-d ** 2 / (2 * sigma ** 2))


# --- agreement with the reference formulas -----------------------------------------------------

@pytest.mark.parametrize("method", ["gram", "feature", "auto"])
@pytest.mark.parametrize("shape", [(60, 8, 12), (30, 70, 45)])
def test_linear_cka_matches_explicit_hkh_formula(method, shape):
    n, dx, dy = shape
    x, y = related_pair(n, dx, dy, seed=1)
    x = x + 3.0  # uncentred inputs: the reference centres with H, the code centres the data
    expected = ref_cka(x @ x.T, y @ y.T)
    assert cka(torch.from_numpy(x), torch.from_numpy(y), method=method) == pytest.approx(expected, rel=1e-10)
    expected_u = ref_debiased_cka(x @ x.T, y @ y.T)
    assert cka_debiased(x, y, method=method) == pytest.approx(expected_u, rel=1e-9)


def test_rbf_cka_matches_reference_with_median_pair_distance():
    x, y = related_pair(50, 6, 9, seed=2)
    k, l = ref_rbf_gram(x, 0.8), ref_rbf_gram(y, 0.8)
    assert cka_rbf(x, y) == pytest.approx(ref_cka(k, l), rel=1e-10)
    assert cka_rbf(x, y, debiased=True) == pytest.approx(ref_debiased_cka(k, l), rel=1e-9)
    k2, l2 = ref_rbf_gram(x, 0.3), ref_rbf_gram(y, 0.3)
    assert cka_rbf(x, y, sigma_frac=0.3) == pytest.approx(ref_cka(k2, l2), rel=1e-10)


@pytest.mark.parametrize("method", ["gram", "feature"])
def test_dcka_matches_paper_regression(method):
    """Cui et al.: regress vec(K) on [1, vec(K0)] by least squares, CKA of the residual Grams."""
    x, y = related_pair(40, 6, 9, seed=3)
    z = x @ rng(4).standard_normal((6, 20)) + rng(5).standard_normal((40, 20))  # inputs related to x

    def gram(a):
        a = a - a.mean(0)
        a = a / np.linalg.norm(a)
        return a @ a.T

    k0 = gram(z)
    design = np.column_stack([np.ones(k0.size), k0.ravel()])

    def residual(k):
        coef, *_ = np.linalg.lstsq(design, k.ravel(), rcond=None)
        return (k.ravel() - design @ coef).reshape(k.shape)

    expected = ref_cka(residual(gram(x)), residual(gram(y)))
    assert dcka(x, y, inputs=z, method=method) == pytest.approx(expected, rel=1e-9)
    assert abs(dcka(x, y, inputs=z) - cka(x, y)) > 1e-3  # the deconfounding does something


# --- properties -----------------------------------------------------------------------------------

ALL_CKA = {
    "cka": cka,
    "cka_debiased": cka_debiased,
    "cka_rbf": cka_rbf,
    "cka_rbf_debiased": lambda a, b: cka_rbf(a, b, debiased=True),
    "cka_minibatch": lambda a, b: cka_minibatch(a, b, batch_size=32),
    "dcka": lambda a, b: dcka(a, b, inputs=np.random.default_rng(9).standard_normal((a.shape[0], 7))),
}


@pytest.mark.parametrize("name", ALL_CKA)
def test_cka_of_a_representation_with_itself_is_one(name):
    x, _ = related_pair(100, 12, 5, seed=6)
    assert ALL_CKA[name](x, x) == pytest.approx(1.0, abs=1e-12)
    assert isinstance(ALL_CKA[name](x, x), float)


@pytest.mark.parametrize("name", ALL_CKA)
def test_cka_invariances(name):
    """Orthogonal maps, isotropic scaling and translation of either argument leave CKA unchanged."""
    x, y = related_pair(96, 10, 14, seed=7)
    f = ALL_CKA[name]
    base = f(x, y)
    x2 = 3.7 * x @ orthogonal(10, 8) + rng(9).standard_normal(10) * 50
    y2 = 0.02 * y @ orthogonal(14, 10) - 7.0
    assert f(x2, y) == pytest.approx(base, rel=1e-9)
    assert f(x, y2) == pytest.approx(base, rel=1e-9)
    assert f(x2, y2) == pytest.approx(base, rel=1e-9)


def test_cka_not_invariant_to_ill_conditioned_map_but_cca_is():
    x, y = related_pair(400, 10, 10, seed=11)
    a = orthogonal(10, 12) @ np.diag(np.logspace(0, 3, 10)) @ orthogonal(10, 13)  # condition 1e3
    for f in (cka, cka_debiased, cka_rbf):
        assert abs(f(x @ a, y) - f(x, y)) > 0.05
    assert cca(x @ a, y) == pytest.approx(cca(x, y), rel=1e-9)


@pytest.mark.parametrize("shape", [(50, 4, 7), (20, 90, 60), (64, 64, 3)])
def test_gram_and_feature_forms_agree(shape):
    n, dx, dy = shape
    x, y = related_pair(n, dx, dy, seed=14)
    z = rng(15).standard_normal((n, 11))
    for f, kw in ((cka, {}), (cka_debiased, {}), (dcka, {"inputs": z}),
                  (cka_minibatch, {"batch_size": 16})):
        gram, feat = f(x, y, method="gram", **kw), f(x, y, method="feature", **kw)
        assert gram == pytest.approx(feat, rel=1e-10, abs=1e-13), f


def test_minibatch_with_one_batch_equals_debiased():
    x, y = related_pair(100, 9, 13, seed=16)
    expected = cka_debiased(x, y)
    rel = sum_tol(100 * 100 + 13)  # N = 100 samples, at most 13 features
    assert cka_minibatch(x, y, batch_size=256) == pytest.approx(expected, rel=rel)
    assert cka_minibatch(x, y, batch_size=100) == pytest.approx(expected, rel=rel)
    assert MinibatchCKA().update(x, y).value() == pytest.approx(expected, rel=rel)


def test_minibatch_is_ratio_of_mean_unbiased_hsics():
    """Batches 0:40, 40:80, 80:123 (the 3-sample remainder joins the last batch)."""
    x, y = related_pair(123, 6, 8, seed=17)
    bounds = [(0, 40), (40, 80), (80, 123)]
    hs = np.array([[ref_unbiased_hsic(k, l), ref_unbiased_hsic(k, k), ref_unbiased_hsic(l, l)]
                   for k, l in ((x[a:b] @ x[a:b].T, y[a:b] @ y[a:b].T) for a, b in bounds)])
    kl, kk, ll = hs.mean(0)
    expected = kl / np.sqrt(kk * ll)
    assert cka_minibatch(x, y, batch_size=40) == pytest.approx(expected, rel=1e-9)
    acc = MinibatchCKA()
    for a, b in bounds:
        acc.update(x[a:b], torch.from_numpy(y[a:b]))
    assert acc.value() == pytest.approx(expected, rel=1e-9)
    assert acc.batches == 3


def test_debiased_near_zero_for_independent_data_biased_is_not():
    g = rng(18)
    n = 500
    x50, y50 = g.standard_normal((n, 50)), g.standard_normal((n, 50))
    x200, y200 = g.standard_normal((n, 200)), g.standard_normal((n, 200))
    assert abs(cka_debiased(x50, y50)) < 0.05
    assert abs(cka_debiased(x200, y200)) < 0.05
    assert abs(cka_minibatch(x50, y50, batch_size=250)) < 0.05
    biased50, biased200 = cka(x50, y50), cka(x200, y200)
    assert biased50 > 0.05                       # ~ D / (N + D) = 0.09
    assert biased200 > biased50 + 0.1            # ~ 0.29: grows with D / N


@pytest.mark.parametrize("name", ["cka", "cka_debiased", "cka_rbf", "cka_minibatch", "cca", "procrustes", "lr"])
def test_float32_with_large_offset_gives_the_float64_answer(name):
    x, y = related_pair(200, 12, 16, seed=19)
    x32 = torch.from_numpy(x + 1e4).float()
    y32 = torch.from_numpy(y - 3e4).float()
    f = MEASURES[name]
    assert f(x32, y32) == pytest.approx(f(x32.double(), y32.double()), rel=1e-6, abs=1e-6)


def test_accepts_numpy_and_feature_maps():
    g = rng(20)
    x = g.standard_normal((30, 3, 4, 4)).astype(np.float32)
    y = g.standard_normal((30, 5, 2, 2))
    assert cka(x, y) == pytest.approx(cka(x.reshape(30, -1), torch.from_numpy(y).reshape(30, -1)), rel=sum_tol(30 * 30 + 48))


# --- errors -----------------------------------------------------------------------------------

def test_mismatched_n_names_both_shapes():
    with pytest.raises(UserError, match=r"50x3x4x4.*40x7"):
        cka(np.zeros((50, 3, 4, 4)), np.ones((40, 7)))


@pytest.mark.parametrize("f", [cka_debiased, lambda a, b: cka_minibatch(a, b, batch_size=8),
                               lambda a, b: cka_rbf(a, b, debiased=True)])
def test_unbiased_estimators_need_four_samples(f):
    x, y = related_pair(3, 4, 4, seed=21)
    with pytest.raises(UserError, match="at least 4 samples"):
        f(x, y)


def test_dcka_without_inputs_is_a_user_error():
    x, y = related_pair(20, 4, 4, seed=22)
    with pytest.raises(UserError, match="inputs"):
        MEASURES["dcka"](x, y)


def test_dcka_of_input_copy_is_undefined():
    x, y = related_pair(20, 4, 4, seed=23)
    with pytest.raises(UserError, match="explained"):
        dcka(2 * x @ orthogonal(4, 1), y, inputs=x)


@pytest.mark.parametrize("f", [cka, cka_debiased, cka_rbf, cka_minibatch])
def test_constant_representation_is_a_user_error(f):
    x, _ = related_pair(20, 4, 4, seed=24)
    with pytest.raises(UserError, match="constant"):
        f(x, np.full((20, 5), 0.1))


def test_bad_options():
    x, y = related_pair(20, 4, 4, seed=25)
    with pytest.raises(UserError, match="method"):
        cka(x, y, method="fast")
    with pytest.raises(UserError, match="batch_size"):
        cka_minibatch(x, y, batch_size=2)
    with pytest.raises(UserError, match="NaN"):
        cka(np.where(x > 1, np.nan, x), y)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    x, y = related_pair(300, 40, 30, seed=26)
    xt, yt = torch.from_numpy(x).float(), torch.from_numpy(y).float()
    for name in ("cka", "cka_debiased", "cka_rbf", "cka_minibatch", "cca", "svcca", "pwcca", "procrustes", "lr"):
        assert MEASURES[name](xt.cuda(), yt.cuda()) == pytest.approx(MEASURES[name](xt, yt), rel=1e-9), name
