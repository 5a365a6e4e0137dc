"""Degenerate measures: values fixed by the sample size or the dimensions are refused (or NaN), never returned.

The rules come from the mathematics (see the notes in :mod:`src.similarity._prep`), and so do these tests:

- centred data lie in the (N - 1)-dimensional complement of the ones vector, so column spaces of ranks
  r_x and r_y share at least r_x + r_y - (N - 1) dimensions, each a canonical correlation of exactly 1;
- a centred X of rank N - 1 spans that whole space, so it predicts every Y exactly (R^2 = 1);
- with N = 2 every centred representation is a multiple of (1, -1): every CKA is 1, Procrustes 0;
- for independent Gaussian X (N x p) and Y (N x q) with p, q << N, (N - 1) * sum_i rho_i^2 is close to
  chi^2 with p q degrees of freedom (Bartlett), so R^2_CCA = sum rho_i^2 / min(p, q) has mean about
  max(p, q) / (N - 1) and standard deviation sqrt(2 p q) / ((N - 1) min(p, q)); the pooled lr R^2 of
  q columns has mean p / (N - 1) and standard deviation sqrt(2 p q) / ((N - 1) q).
"""
import math
import pickle
import warnings

import numpy as np
import pytest
import torch

from src.errors import UserError
from src.similarity import (FLOAT_MEASURES, MEASURES, MIN_SAMPLES, RECORDS, DegenerateMeasure, DegenerateWarning,
                            LeastSquaresFit, SimilarityMatrix, canonical_correlations, cca, cca_mean_rho, cka,
                            cka_against_cells, cka_matrix, degenerate_reason, lr, procrustes, pwcca, svcca)
from src.similarity._prep import combine_degenerate
from src.similarity.hsic import BIASED, UNBIASED
from src.similarity.layer_pairs import pairwise_matrix
from src.similarity.registry import check_sample_count
from tests.math_helpers import rng

CCA_FAMILY = (cca, cca_mean_rho, pwcca)


def gaussian(n, d, seed):
    return rng(seed).standard_normal((n, d))


def call(name, x, y, **options):
    if RECORDS[name].needs_inputs:
        options.setdefault("inputs", gaussian(x.shape[0], 3, 99))
    return MEASURES[name](x, y, **options)


# --- canonical correlations: forced unit correlations ---------------------------------------------

@pytest.mark.parametrize("n,dx,dy", [(20, 50, 30), (100, 100, 7), (60, 59, 2), (40, 25, 25)])
def test_random_features_outnumbering_samples_are_refused(n, dx, dy):
    """d >= n (or r_x + r_y > n - 1): the forced unit correlations are really there, and every average refuses."""
    x, y = gaussian(n, dx, 1), gaussian(n, dy, 2)
    r_x, r_y = min(dx, n - 1), min(dy, n - 1)
    forced = r_x + r_y - (n - 1)
    assert forced > 0
    rho = canonical_correlations(x, y).numpy()
    assert (rho > 1 - 1e-9).sum() == min(forced, len(rho))  # exactly the dimension count says how many are 1
    for f in CCA_FAMILY:
        with pytest.raises(DegenerateMeasure, match=f"{r_x} \\+ {r_y} = {r_x + r_y} > N - 1 = {n - 1}") as err:
            f(x, y)
        assert err.value.measure == f.__name__ and err.value.samples_needed == dx + dy + 1
        assert "degenerate" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(DegenerateMeasure, match="svcca is degenerate"):
        svcca(x, y, keep=1.0)  # no reduction: the same forced correlations


def test_all_correlations_one_when_x_spans_every_centred_direction():
    x, y = gaussian(30, 40, 3), gaussian(30, 4, 4)
    np.testing.assert_allclose(canonical_correlations(x, y).numpy(), 1.0, atol=1e-9)  # rank_x = N - 1
    with pytest.raises(DegenerateMeasure, match="all 4 canonical correlations are 1 whatever the data"):
        cca(x, y)


def test_boundary_rank_sum_n_minus_1_is_computed_and_n_is_refused():
    """r_x + r_y = N - 1: no forced dimension, the value depends on the data; one more feature forces one 1."""
    n = 41
    x, y = gaussian(n, 25, 5), gaussian(n, 15, 6)  # 25 + 15 = 40 = N - 1
    rho = canonical_correlations(x, y).numpy()
    assert rho.max() < 1 - 1e-6
    assert cca(x, y) == pytest.approx(np.mean(rho ** 2), rel=1e-10)
    y16 = gaussian(n, 16, 7)  # 25 + 16 = 41 > 40: exactly one correlation is 1
    rho16 = canonical_correlations(x, y16).numpy()
    assert rho16[0] == pytest.approx(1.0, abs=1e-9) and rho16[1] < 1 - 1e-6
    with pytest.raises(DegenerateMeasure, match="1 of the 16 canonical correlations are 1"):
        cca(x, y16)


def test_svcca_is_refused_only_when_its_kept_directions_overlap_by_dimension():
    """Low-rank signal plus weak noise in many features: keep=0.99 keeps the few strong directions (computed),
    keep=1.0 keeps every direction (refused)."""
    g = rng(8)
    n, d = 60, 80
    x = g.standard_normal((n, 4)) @ g.standard_normal((4, d)) + 1e-3 * g.standard_normal((n, d))
    y = g.standard_normal((n, 4)) @ g.standard_normal((4, d)) + 1e-3 * g.standard_normal((n, d))
    value = svcca(x, y, keep=0.99)
    assert 0 <= value < 1
    with pytest.raises(DegenerateMeasure, match="directions kept"):
        svcca(x, y, keep=1.0)


def test_independent_low_dimensional_data_stay_within_the_small_sample_bias():
    """d = 5 << N = 2000, independent: R^2_CCA ~ chi^2_{25} / ((N - 1) 5), mean 5/(N - 1), sd sqrt(50)/((N - 1) 5)."""
    n, p, q = 2000, 5, 5
    for seed in range(3):
        x, y = gaussian(n, p, 10 + seed), gaussian(n, q, 20 + seed)
        mean = max(p, q) / (n - 1)
        sd = math.sqrt(2 * p * q) / ((n - 1) * min(p, q))
        value = cca(x, y)
        assert abs(value - mean) < 5 * sd, (value, mean, sd)
        # mean rho <= sqrt(mean rho^2) (Jensen); pwcca and svcca average correlations no larger than the first,
        # and rho_1^2 <= sum rho_i^2, whose chi^2_{25} tail beyond 60 has probability < 1e-4
        bound = math.sqrt(mean + 5 * sd)
        assert 0 < cca_mean_rho(x, y) < bound
        rho_max = math.sqrt(60 / (n - 1))
        assert 0 < pwcca(x, y) < rho_max and 0 < svcca(x, y) < rho_max
        # lr of q columns: pooled R^2 ~ chi^2_{pq} / ((N - 1) q): mean p/(N - 1), sd sqrt(2pq)/((N - 1) q)
        r2_mean, r2_sd = p / (n - 1), math.sqrt(2 * p * q) / ((n - 1) * q)
        assert abs(lr(x, y) - r2_mean) < 5 * r2_sd


# --- regression -----------------------------------------------------------------------------------

def test_lr_refused_when_x_spans_every_centred_direction():
    n = 30
    x = gaussian(n, n - 1, 30)  # rank N - 1: every y is predicted exactly
    for y in (gaussian(n, 3, 31), np.sin(gaussian(n, 2, 32))):
        with pytest.raises(DegenerateMeasure, match="reaches N - 1 = 29, so every y is predicted exactly"):
            lr(x, y)
    x_less = gaussian(n, n - 2, 33)  # rank N - 2: data-dependent, below 1
    assert lr(x_less, gaussian(n, 3, 34)) < 1 - 1e-6


def test_least_squares_r2_is_nan_with_a_reason_when_degenerate():
    g = rng(35)
    x, y = g.standard_normal((12, 11)), g.standard_normal((12, 3))  # 11 features, 12 rows: rank N - 1
    fit = LeastSquaresFit().update(x, y)
    assert "reaches N - 1 = 11" in fit.degenerate_reason()
    with pytest.warns(DegenerateWarning, match="least-squares R\\^2 is degenerate"):
        assert math.isnan(fit.r2())
    assert np.isfinite(fit.solve()["w"]).all()  # the map itself (a stitch initialisation) is still given
    fit.update(g.standard_normal((40, 11)), g.standard_normal((40, 3)))
    assert fit.degenerate_reason() is None and 0 < fit.r2() < 1
    constant_y = LeastSquaresFit().update(g.standard_normal((50, 3)), np.ones((50, 2)))
    assert "constant" in constant_y.degenerate_reason()


# --- too few samples ------------------------------------------------------------------------------

def test_two_samples_fix_every_centred_measure():
    """With N = 2 the centred data are multiples of (1, -1): CKA 1 and Procrustes 0 for any data (shown with
    the plain formulas), so every such measure refuses N = 2 and computes from its minimum on."""
    x, y = gaussian(2, 7, 40), gaussian(2, 3, 41)
    xc, yc = x - x.mean(0), y - y.mean(0)
    k, l = xc @ xc.T, yc @ yc.T
    assert np.sum(k * l) / np.sqrt(np.sum(k * k) * np.sum(l * l)) == pytest.approx(1.0, abs=1e-12)
    nuclear = np.linalg.svd((xc / np.linalg.norm(xc)).T @ (yc / np.linalg.norm(yc)), compute_uv=False).sum()
    assert 2 - 2 * nuclear == pytest.approx(0.0, abs=1e-12)
    for name in FLOAT_MEASURES:
        need = RECORDS[name].min_samples
        for n in range(1, need):
            with pytest.raises(DegenerateMeasure, match=f"at least {need} samples are needed"):
                call(name, gaussian(n, 3, 42), gaussian(n, 2, 43))
        if name != "l2":
            assert np.isfinite(call(name, gaussian(max(need, 8), 3, 44), gaussian(max(need, 8), 2, 45)))


def test_three_samples_are_informative_for_cka_and_procrustes():
    x, y = gaussian(3, 5, 46), gaussian(3, 4, 47)
    assert cka(x, y) < 1 - 1e-6 and procrustes(x, y) > 1e-6
    with pytest.raises(DegenerateMeasure, match="at least 4 samples are needed"):
        MEASURES["cka_debiased"](x, y)


def test_one_definition_of_the_minimum_samples():
    assert set(MIN_SAMPLES) == set(RECORDS)
    for name, record in RECORDS.items():
        assert record.min_samples == MIN_SAMPLES[name]
        if record.gram is not None:
            assert record.min_samples >= record.gram.min_n  # the HSIC estimator is defined there
    assert MIN_SAMPLES["cka_minibatch"] == MIN_SAMPLES["cka_debiased"] == UNBIASED.min_n == 4
    assert MIN_SAMPLES["cka"] == BIASED.min_n + 1 == 3
    with pytest.raises(DegenerateMeasure, match="use --samples 3 or more"):
        check_sample_count("cka", 2, "--samples")
    check_sample_count("cka", 3, "--samples")


# --- constant representations ---------------------------------------------------------------------

@pytest.mark.parametrize("name", [n for n in FLOAT_MEASURES if n != "l2"])
def test_constant_representation_is_refused(name):
    x = gaussian(30, 4, 50)
    for args in ((x, np.full((30, 3), 0.5)), (np.full((30, 3), -2.0), x)):
        with pytest.raises(DegenerateMeasure, match="constant across samples") as err:
            call(name, *args)
        assert isinstance(err.value, UserError)


# --- the exception --------------------------------------------------------------------------------

def test_degenerate_measure_message_pickles_and_combines():
    err = DegenerateMeasure("cca", "a reason", "a remedy", 11)
    assert str(err) == "cca is degenerate here: a reason; use more samples (at least 11), or else a remedy"
    assert str(err.with_option("--max-samples")) == ("cca is degenerate here: a reason; use --max-samples 11 or more, "
                                                     "or else a remedy")
    again = pickle.loads(pickle.dumps(err.with_option("--samples")))
    assert str(again) == str(err.with_option("--samples")) and again.samples_needed == 11
    both = combine_degenerate([err, DegenerateMeasure("pwcca", "a reason", "a remedy", 11),
                               DegenerateMeasure("lr", "another", "", 5)], "--max-samples")
    assert str(both) == ("cca and pwcca are degenerate here: a reason; use --max-samples 11 or more, or else a remedy; "
                         "lr is degenerate here: another; use --max-samples 5 or more")
    assert degenerate_reason("cca", 100, ranks=(5, 5), widths=(5, 5)) is None


# --- matrices and stitch results: NaN with the reason ---------------------------------------------

def wide_and_narrow(n=40, seed=60):
    g = rng(seed)
    base = g.standard_normal((n, 3))
    narrow = torch.from_numpy(base @ g.standard_normal((3, 4)) + 0.5 * g.standard_normal((n, 4)))
    wide = torch.from_numpy(base @ g.standard_normal((3, 60)) + 0.5 * g.standard_normal((n, 60)))
    return narrow, wide


def test_pairwise_matrix_stores_nan_and_the_reason_for_degenerate_pairs():
    narrow, wide = wide_and_narrow()
    found = {}
    values = pairwise_matrix([narrow, wide], [narrow, wide], cca, ["n1", "w1"], ["n2", "w2"], degenerate=found)
    assert np.isfinite(values[0, 0]) and values[0, 0] == pytest.approx(cca(narrow, narrow))
    assert np.isnan(values[[0, 1, 1], [1, 0, 1]]).all()  # 4 + 39 > 39, 39 + 4 > 39, 39 + 39 > 39
    assert set(found) == {("n1", "w2"), ("w1", "n2"), ("w1", "w2")}
    assert "canonical correlations are 1 whatever the data" in found[("w1", "w2")]
    with pytest.raises(DegenerateMeasure, match="layers w1 \\(model 1\\) and n2 \\(model 2\\): x has 60 features"):
        pairwise_matrix([wide], [narrow], cca, ["w1"], ["n2"])


def test_layer_similarity_of_cca_warns_and_keeps_the_reasons(tmp_path):
    from collections import OrderedDict

    from torch import nn

    from src.similarity import layer_similarity

    torch.manual_seed(0)
    net = nn.Sequential(OrderedDict([("conv", nn.Conv2d(1, 4, 3)), ("relu", nn.ReLU()), ("flat", nn.Flatten()),
                                     ("fc", nn.Linear(4 * 6 * 6, 3))])).eval()
    x = torch.randn(40, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    loader = [(x[i:i + 20], torch.zeros(20)) for i in (0, 20)]
    with pytest.warns(DegenerateWarning, match=r"cca is degenerate for 3 of 4 layer pairs, stored as NaN: relu x relu"):
        sim = layer_similarity(net, net, loader, layers1=["relu", "fc"], layers2=["relu", "fc"], measure="cca")
    assert np.isnan(sim.values[0, 0]) and sim.values[1, 1] == pytest.approx(1.0, abs=1e-6)  # fc: 3 features
    assert set(sim.degenerate) == {("relu", "relu"), ("relu", "fc"), ("fc", "relu")}
    assert "144 features" in sim.degenerate[("relu", "fc")]
    paths = sim.save(tmp_path / "m")
    loaded = SimilarityMatrix.load(tmp_path / "m")
    assert loaded.degenerate == sim.degenerate and np.isnan(loaded.values[0, 0])
    frame = __import__("pandas").read_csv(paths["degenerate"])
    assert list(frame.columns) == ["layer1", "layer2", "reason"] and len(frame) == 3
    with np.load(paths["npz"]) as npz:
        assert len(__import__("json").loads(str(npz["degenerate"]))) == 3
    assert sim.T.degenerate[("fc", "relu")] == sim.degenerate[("relu", "fc")]


def test_cka_matrix_below_the_minimum_and_with_a_constant_layer():
    acts = [torch.randn(2, 5), torch.randn(2, 3)]
    with pytest.warns(DegenerateWarning, match="degenerate for 4 of 4"):
        sim = cka_matrix(acts, measure="cka", rows=["a", "b"], cols=["a", "b"])
    assert np.isnan(sim.values).all() and "at least 3 samples are needed" in sim.degenerate[("a", "b")]
    g = torch.Generator().manual_seed(3)
    live, dead = torch.randn(30, 6, generator=g), torch.zeros(30, 4)
    with pytest.warns(DegenerateWarning, match="dead x live"):
        sim = cka_matrix([live, dead], [live], measure="cka", rows=["live", "dead"], cols=["live"], permutations=9)
    assert sim.values[0, 0] == pytest.approx(1.0) and np.isnan(sim.values[1, 0]) and np.isnan(sim.pvalues[1, 0])
    assert list(sim.degenerate) == [("dead", "live")]


def test_old_matrices_load_without_degenerate_cells(tmp_path):
    sim = SimilarityMatrix(np.eye(2), ["a", "b"], ["a", "b"], "cka", 10)
    data = sim.to_dict()
    del data["degenerate"]  # a pickle of the previous release
    assert SimilarityMatrix.from_dict(data).degenerate == {}
    del sim.__dict__["degenerate"]  # an object pickled before the attribute existed
    assert pickle.loads(pickle.dumps(sim)).degenerate == {}
    with pytest.raises(ValueError, match="not layer pairs"):
        SimilarityMatrix(np.eye(2), ["a", "b"], ["a", "b"], "cka", 10, degenerate={("a", "c"): "why"})


def test_stitch_result_cka_is_nan_with_the_reason():
    from src.stitching.report import cka_values

    g = torch.Generator().manual_seed(4)
    end = torch.randn(20, 6, generator=g)
    acts = {"front": torch.ones(20, 5), "trans": end + 0.1 * torch.randn(20, 6, generator=g),
            "ps_inv": torch.randn(20, 6, generator=g), "end": end}
    result = {}
    with pytest.warns(DegenerateWarning, match="CKA is degenerate for cka on 20 measured samples"):
        values = cka_values(acts, result)
    assert math.isnan(values["cka"]) and 0 < values["cka_frank"] <= 1 and np.isfinite(values["cka_ps_inv"])
    assert list(result["degenerate"]) == ["cka"] and "x is constant" in result["degenerate"]["cka"]
    varied = {k: v[:5] for k, v in acts.items()}
    varied["front"] = acts["ps_inv"][:5]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing degenerate: no warning
        result = {}
        assert all(np.isfinite(v) for v in cka_values(varied, result).values()) and result["degenerate"] == {}
    two = {k: v[:2] for k, v in acts.items()}
    result = {}
    with pytest.warns(DegenerateWarning):
        assert all(math.isnan(v) for v in cka_values(two, result).values())
    assert set(result["degenerate"]) == {"cka", "cka_frank", "cka_ps_inv"}
    cells = cka_against_cells([acts["trans"]], acts["end"])
    assert cells[0][1] is None and cells[0][0] == pytest.approx(cka(acts["trans"], acts["end"]))
