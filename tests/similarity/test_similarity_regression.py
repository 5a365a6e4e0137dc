"""lr, the closed-form maps (ps_inv, ls_orth, ls_sum, LeastSquaresFit), l2, corr and the registry."""
import numpy as np
import pytest
import torch
from torch.nn import functional as F

from src.errors import UserError
from tests.math_helpers import sum_tol
from src.similarity import (FLOAT_MEASURES, MEASURES, RETURNS, DegenerateMeasure, LeastSquaresFit,
                            canonical_correlations, corr, get_measure, l2, lr, ls_orth, ls_sum, ps_inv)


def rng(seed=0):
    return np.random.default_rng(seed)


def orthogonal(d, seed):
    q, r = np.linalg.qr(rng(seed).standard_normal((d, d)))
    return q * np.sign(np.diag(r))


def pixel_rows(a):
    return a.transpose(0, 2, 3, 1).reshape(-1, a.shape[1]) if a.ndim == 4 else a


def ref_affine_fit(x, y):
    """Least squares with an intercept column by numpy (reference for w, b and predictions)."""
    design = np.column_stack([x, np.ones(len(x))])
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    return coef[:-1].T, coef[-1]


# --- ps_inv and the streaming fit ---------------------------------------------------------------------

def test_ps_inv_recovers_exact_affine_map():
    g = rng(1)
    x = g.standard_normal((200, 10)) * 3 + 7
    w, b = g.standard_normal((6, 10)), g.standard_normal(6)
    y = x @ w.T + b
    out = ps_inv(torch.from_numpy(x), y)
    assert out["w"].shape == (6, 10) and out["b"].shape == (6,)
    np.testing.assert_allclose(out["w"], w, atol=1e-10)
    np.testing.assert_allclose(out["b"], b, atol=1e-9)


def test_streaming_fit_equals_one_shot_and_numpy():
    g = rng(2)
    x = (g.standard_normal((301, 12)) + 1e4).astype(np.float32)  # offset: merging must stay exact
    y = (x - 1e4) @ g.standard_normal((12, 5)) + g.standard_normal((301, 5))
    fit = LeastSquaresFit()
    for a, b in [(0, 64), (64, 65), (65, 200), (200, 301)]:  # uneven batches, one of a single row
        fit.update(torch.from_numpy(x[a:b]), torch.from_numpy(y[a:b]))
    streamed, one_shot = fit.solve(), ps_inv(x, y)
    np.testing.assert_allclose(streamed["w"], one_shot["w"], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(streamed["b"], one_shot["b"], rtol=1e-9)
    w_ref, b_ref = ref_affine_fit(x.astype(np.float64), y)
    np.testing.assert_allclose(streamed["w"], w_ref, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(x @ streamed["w"].T + streamed["b"], x @ w_ref.T + b_ref, atol=1e-7)


def test_feature_map_fit_is_a_1x1_conv():
    g = rng(3)
    x = torch.from_numpy(g.standard_normal((20, 4, 5, 6)))
    conv_w, conv_b = torch.from_numpy(g.standard_normal((3, 4, 1, 1))), torch.from_numpy(g.standard_normal(3))
    y = F.conv2d(x, conv_w, conv_b)
    exact = ps_inv(x, y)
    np.testing.assert_allclose(exact["w"], conv_w[:, :, 0, 0].numpy(), atol=1e-10)
    np.testing.assert_allclose(exact["b"], conv_b.numpy(), atol=1e-10)
    # noisy target: compare with an independent fit on (N*H*W, C) pixel rows
    y_noisy = y + torch.from_numpy(g.standard_normal(y.shape))
    out = ps_inv(x, y_noisy)
    w_ref, b_ref = ref_affine_fit(pixel_rows(x.numpy()), pixel_rows(y_noisy.numpy()))
    np.testing.assert_allclose(out["w"], w_ref, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(out["b"], b_ref, rtol=1e-9, atol=1e-12)
    # streaming over sample batches gives the same global fit
    fit = LeastSquaresFit()
    for s in range(0, 20, 6):
        fit.update(x[s:s + 6], y_noisy[s:s + 6])
    np.testing.assert_allclose(fit.solve()["w"], out["w"], rtol=1e-10, atol=1e-12)


def test_rank_deficient_x_gives_the_minimum_norm_fit():
    g = rng(4)
    base = g.standard_normal((50, 5))
    x = np.column_stack([base, base[:, :2], np.zeros(50), np.full(50, 3.0)])  # duplicates, dead channels
    y = base @ g.standard_normal((5, 4)) + 0.1 * g.standard_normal((50, 4))
    out = ps_inv(x, y)
    assert np.isfinite(out["w"]).all() and np.isfinite(out["b"]).all()
    xc, yc = x - x.mean(0), y - y.mean(0)
    np.testing.assert_allclose(out["w"], (np.linalg.pinv(xc) @ yc).T, atol=1e-9)
    w_ref, b_ref = ref_affine_fit(x, y)
    np.testing.assert_allclose(x @ out["w"].T + out["b"], x @ w_ref.T + b_ref, atol=1e-9)


def test_more_features_than_samples_fits_exactly_without_nan():
    g = rng(5)
    x, y = g.standard_normal((10, 30)), g.standard_normal((10, 3))
    out = ps_inv(x, y)
    assert np.isfinite(out["w"]).all()
    np.testing.assert_allclose(x @ out["w"].T + out["b"], y, atol=1e-8)


# --- ls_orth and ls_sum --------------------------------------------------------------------------------

def test_ls_orth_recovers_rotation_and_is_orthogonal():
    g = rng(6)
    x = g.standard_normal((150, 7)) + 2
    q, b = orthogonal(7, 7), g.standard_normal(7)
    out = ls_orth(x, x @ q.T + b)
    np.testing.assert_allclose(out["w"] @ out["w"].T, np.eye(7), atol=1e-12)
    np.testing.assert_allclose(out["w"], q, atol=1e-10)
    np.testing.assert_allclose(out["b"], b, atol=1e-10)


@pytest.mark.parametrize("dx,dy", [(4, 9), (9, 4)])
def test_ls_orth_is_semi_orthogonal_for_different_widths(dx, dy):
    g = rng(8)
    x = g.standard_normal((60, dx))
    y = g.standard_normal((60, dy))
    w = ls_orth(x, y)["w"]
    assert w.shape == (dy, dx)
    small = w.T @ w if dy >= dx else w @ w.T
    np.testing.assert_allclose(small, np.eye(min(dx, dy)), atol=1e-12)
    if dy > dx:  # exact minimiser over W^T W = I: no random semi-orthogonal map does better
        xc, yc = x - x.mean(0), y - y.mean(0)
        best = np.linalg.norm(xc @ w.T - yc)
        for seed in range(20):
            q = orthogonal(dy, 100 + seed)[:, :dx]
            assert best <= np.linalg.norm(xc @ q.T - yc) + 1e-12


def test_ls_sum_full_rank_is_ps_inv_and_ranks_are_eckart_young():
    g = rng(9)
    x = g.standard_normal((120, 24))
    y = x @ g.standard_normal((24, 20)) + 0.5 * g.standard_normal((120, 20))
    out = ls_sum(x, y)
    assert sorted(out) == [4, 8, 16, 20]
    full = ps_inv(x, y)
    np.testing.assert_allclose(out[20]["w"], full["w"], atol=1e-12)
    np.testing.assert_allclose(out[20]["b"], full["b"], atol=1e-12)
    fitted = (x - x.mean(0)) @ full["w"].T  # centred fitted values
    u, s, vt = np.linalg.svd(fitted, full_matrices=False)
    for r in (4, 8, 16):
        w = out[r]["w"]
        assert np.linalg.matrix_rank(w, tol=1e-8) == r
        np.testing.assert_allclose((x - x.mean(0)) @ w.T, (u[:, :r] * s[:r]) @ vt[:r], atol=1e-9)
        np.testing.assert_allclose(x.mean(0) @ w.T + out[r]["b"], y.mean(0), atol=1e-10)


def test_fit_errors():
    with pytest.raises(UserError, match=r"4x3x5x5.*4x2x4x4"):
        ps_inv(np.zeros((4, 3, 5, 5)), np.zeros((4, 2, 4, 4)))
    with pytest.raises(UserError, match="no data"):
        LeastSquaresFit().solve()
    fit = LeastSquaresFit().update(np.ones((5, 3)), np.ones((5, 2)))
    with pytest.raises(UserError, match="features"):
        fit.update(np.ones((5, 4)), np.ones((5, 2)))


# --- lr ------------------------------------------------------------------------------------------------

def test_lr_exact_affine_is_one_and_independent_is_near_zero():
    g = rng(10)
    x = g.standard_normal((2000, 5))
    assert lr(x, x @ g.standard_normal((5, 8)) - 4.0) == pytest.approx(1.0, abs=1e-12)
    assert abs(lr(x, g.standard_normal((2000, 8)))) < 0.02  # E[R^2] ~ D_x / N = 0.0025


def test_lr_matches_numpy_regression_and_streaming_r2():
    g = rng(11)
    x = g.standard_normal((80, 6)) + 10
    y = np.sin(x) @ g.standard_normal((6, 3)) + g.standard_normal((80, 3))
    w, b = ref_affine_fit(x, y)
    expected = 1 - np.sum((y - x @ w.T - b) ** 2) / np.sum((y - y.mean(0)) ** 2)
    assert lr(x, y) == pytest.approx(expected, rel=1e-10)
    assert LeastSquaresFit().update(x, y).r2() == pytest.approx(expected, rel=1e-9)
    with pytest.raises(DegenerateMeasure, match="degenerate.*12 features.*reaches N - 1 = 9"):  # D_x >= N - 1: R^2 = 1
        lr(g.standard_normal((10, 12)), y[:10])
    with pytest.raises(DegenerateMeasure, match="x is constant"):  # R^2 = 0 whatever y is
        lr(np.ones((80, 6)), y)


# --- l2 and corr ---------------------------------------------------------------------------------------

def test_l2():
    g = rng(12)
    x, y = g.standard_normal((10, 3, 4, 4)), g.standard_normal((10, 3, 4, 4))
    assert l2(x, x) == 0.0
    assert l2(torch.from_numpy(x).float(), y) == pytest.approx(np.mean((x.astype(np.float32) - y) ** 2), rel=sum_tol(x.size))
    with pytest.raises(UserError, match=r"10x3x4x4.*10x48"):
        l2(x, y.reshape(10, -1))


def test_corr_matches_corrcoef_on_pixel_rows():
    g = rng(13)
    x = g.standard_normal((6, 3, 4, 5))
    y = x[:, [2, 0]] * 2 + 0.3 * g.standard_normal((6, 2, 4, 5))
    c = corr(x, y)
    assert isinstance(c, np.ndarray) and c.shape == (3, 2)
    full = np.corrcoef(pixel_rows(x).T, pixel_rows(y).T)
    np.testing.assert_allclose(c, full[:3, 3:], atol=1e-12)
    np.testing.assert_allclose(np.diag(corr(x, x)), 1.0, atol=1e-12)


def test_corr_dead_channel_is_zero_not_nan():
    g = rng(14)
    x = g.standard_normal((50, 3))
    x[:, 1] = 0.7
    c = corr(x, x)
    assert np.isfinite(c).all()
    np.testing.assert_allclose(np.diag(c), [1.0, 0.0, 1.0], atol=1e-12)


# --- registry ------------------------------------------------------------------------------------------

def test_registry_names_and_return_kinds():
    expected = {"cka", "cka_debiased", "cka_rbf", "cka_minibatch", "dcka", "cca", "cca_mean_rho", "svcca",
                "pwcca", "procrustes", "lr", "l2", "corr", "ps_inv", "ls_orth", "ls_sum"}
    assert set(MEASURES) == expected and set(RETURNS) == expected
    g = rng(15)
    x, y = g.standard_normal((30, 4)), g.standard_normal((30, 4))
    for name in FLOAT_MEASURES:
        kw = {"inputs": g.standard_normal((30, 6))} if name == "dcka" else {}
        assert type(MEASURES[name](torch.from_numpy(x).float(), y, **kw)) is float, name
    assert isinstance(MEASURES["corr"](x, y), np.ndarray)
    assert set(MEASURES["ps_inv"](x, y)) == {"w", "b"}
    with pytest.raises(UserError, match="cka_debiased"):
        get_measure("cka_biased")


def test_float32_rank_tolerance_keeps_weak_directions_for_many_pixel_rows():
    """65536 pixel rows: a rank rule growing with N (max(N, D) * eps32 = 8e-3) would drop the weak
    channel (singular value 1e-3 of the strongest); the fit must keep it."""
    g = rng(16)
    x = torch.from_numpy(g.standard_normal((64, 2, 32, 32))).float()
    x[:, 1] *= 1e-3
    conv_w = torch.tensor([[[[2.0]], [[500.0]]]])
    y = F.conv2d(x.double(), conv_w.double())
    out = ps_inv(x, y)
    np.testing.assert_allclose(out["w"], [[2.0, 500.0]], rtol=1e-6)


def test_float32_linear_dependency_is_rank_deficient_for_cca():
    g = rng(17)
    x = torch.from_numpy(g.standard_normal((500, 10))).float()
    y = x @ torch.from_numpy(g.standard_normal((10, 20))).float()  # rank 10, computed in float32
    z = g.standard_normal((500, 30))
    assert canonical_correlations(y, z).numel() == 10
    assert canonical_correlations(y.double(), z, rtol=1e-5).numel() == 10


def test_a_solution_asked_for_before_more_data_arrives_does_not_stick():
    """The pseudo-inverse is computed once per state of the co-moments: solve, r2, then update and solve again
    must give the fit of all the data, exactly as a fresh fit of the same batches does."""
    g = np.random.default_rng(4)
    x1, x2 = g.standard_normal((40, 5)), g.standard_normal((60, 5))
    w = g.standard_normal((5, 3))
    y1, y2 = x1 @ w + 0.1 * g.standard_normal((40, 3)), x2 @ (2 * w) + 0.1 * g.standard_normal((60, 3))
    fit = LeastSquaresFit().update(x1, y1)
    first, r2_first = fit.solve(), fit.r2()
    fit.update(x2, y2)
    fresh = LeastSquaresFit().update(x1, y1).update(x2, y2)
    np.testing.assert_array_equal(fit.solve()["w"], fresh.solve()["w"])
    assert fit.r2() == fresh.r2() != r2_first
    assert not np.allclose(fit.solve()["w"], first["w"])
