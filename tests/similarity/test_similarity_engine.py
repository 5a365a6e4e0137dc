"""One similarity engine: registry records, one implementation per HSIC estimator, float32 accuracy."""
import inspect
import pickle

import numpy as np
import pytest
import torch

import src.similarity.registry as registry
from src.similarity import (BIASED, MEASURES, RECORDS, UNBIASED, SimilarityMatrix, cka, cka_debiased, cka_matrix,
                            cka_minibatch, get_record)
from src.similarity.hsic import sq_fro, sq_fro_gram_t
from tests.math_helpers import rng, sum_tol

pytestmark = pytest.mark.usefixtures("one_thread")

LINEAR = {"cka": (cka, {}), "cka_debiased": (cka_debiased, {}), "cka_minibatch": (cka_minibatch, {"batch_size": 64})}


def related(n=256, dx=40, dy=30, seed=0, dtype=np.float64):
    g = rng(seed)
    x = g.standard_normal((n, dx))
    y = np.tanh(x @ g.standard_normal((dx, dy))) + 0.5 * g.standard_normal((n, dy))
    return torch.from_numpy(x.astype(dtype)), torch.from_numpy(y.astype(dtype))


# --- the registry ---------------------------------------------------------------------------------

def test_registry_records_are_complete_and_the_name_sets_are_their_views():
    families = {"cka", "cca", "procrustes", "regression", "elementwise"}
    for name, record in RECORDS.items():
        assert record.name == name and callable(record.function) and record.family in families
        assert (record.scale is None) == (record.returns != "float")
        assert "inputs" in inspect.signature(record.function).parameters or not record.needs_inputs
        assert not record.streams or record.gram is not None
    assert MEASURES == {n: r.function for n, r in RECORDS.items()}
    assert registry.RETURNS == {n: r.returns for n, r in RECORDS.items()}
    assert registry.DISTANCES == {"procrustes", "l2"} and registry.NEEDS_INPUTS == {"dcka"}
    assert {n: r.gram for n, r in RECORDS.items() if r.gram} == {"cka": BIASED, "cka_debiased": UNBIASED,
                                                                "cka_minibatch": UNBIASED}
    assert [n for n, r in RECORDS.items() if r.streams] == ["cka_minibatch"]
    assert {n for n, r in RECORDS.items() if r.unit_scale} == {
        "cka", "cka_debiased", "cka_minibatch", "cka_rbf", "dcka", "cca", "cca_mean_rho", "svcca", "pwcca"}


def test_unknown_measure_names_the_valid_ones():
    from src.errors import UserError

    with pytest.raises(UserError, match="unknown similarity measure 'ckaa'; choose one of cka, cka_debiased"):
        get_record("ckaa")


# --- one engine -----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", LINEAR)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_single_pair_cka_is_the_matrix_engine_entry_exactly(name, dtype):
    """The single-pair Gram form *is* the engine on one pair: bit-identical, not merely close."""
    f, options = LINEAR[name]
    x, y = related(200, 30, 20, seed=1, dtype=dtype)
    precision = "float32" if dtype == np.float32 else "float64"
    engine = cka_matrix([x], [y], measure=name, precision=precision, **options).values[0, 0]
    assert f(x, y, method="gram", **options) == engine


@pytest.mark.parametrize("name", LINEAR)
def test_gram_measures_of_the_registry_are_served_by_the_engine(name):
    """Every entry of a layer matrix equals the registered single-pair function (feature form here)."""
    f, options = LINEAR[name]
    acts1 = list(related(256, 40, 30, seed=2))
    acts2 = list(related(256, 25, 35, seed=3))
    sim = cka_matrix(acts1, acts2, measure=name, precision="float64", **options)
    expected = [[RECORDS[name].function(a, b, method="feature", **options) for b in acts2] for a in acts1]
    np.testing.assert_allclose(sim.values, expected, rtol=sum_tol(256 * 256 + 40), atol=0)


def test_cka_matrix_is_a_similarity_matrix_with_plain_pickles(tmp_path):
    x, y = related(96, 8, 6, seed=4, dtype=np.float32)
    sim = cka_matrix([x, y], [y], measure="cka_minibatch", batch_size=32, permutations=9, bootstrap=10, seed=3)
    assert isinstance(sim, SimilarityMatrix) and sim.n_batches == 3 and sim.n_samples == 96
    assert sim.meta == {"estimator": "unbiased HSIC, summed over batches", "bootstrap_unit": "batches"}
    assert sim.pvalues.shape == sim.ci_low.shape == (2, 1) and sim.permutations == 9 and sim.bootstrap == 10
    loaded = pickle.loads(pickle.dumps(sim.to_dict(provenance={})))
    assert not any(type(v).__module__.startswith("src") for v in loaded.values())
    again = SimilarityMatrix.from_dict(loaded)
    np.testing.assert_array_equal(again.values, sim.values)
    np.testing.assert_array_equal(again.pvalues, sim.pvalues)


# --- float32 products ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", LINEAR)
@pytest.mark.parametrize("method", ["gram", "feature"])
def test_float32_path_within_1e6_of_float64_with_offset_300(name, method):
    """Products of float32 data centred first keep the float64 answer to 1e-6 although the features sit
    300 standard deviations from 0; the uncentred float32 product is far off (the test has teeth)."""
    f, options = LINEAR[name]
    x, y = related(256, 40, 30, seed=5)
    x32, y32 = (x + 300).float(), (y - 300).float()
    exact = f(x32.double(), y32.double(), method=method, **options)
    assert f(x32, y32, method=method, **options) == pytest.approx(exact, abs=1e-6)
    matrix = cka_matrix([x32], [y32], measure=name, **options).values[0, 0]
    assert matrix == pytest.approx(exact, abs=1e-6)
    if name == "cka" and method == "feature":  # the same products of the uncentred float32 data, centred
        n = x32.shape[0]                        # afterwards in float64, are far off: the test has teeth
        mx, my = x32.double().mean(0), y32.double().mean(0)
        prod = lambda a, b, ma, mb: (a.T @ b).double() - n * torch.outer(ma, mb)  # noqa: E731
        kl, kk, ll = sq_fro(prod(y32, x32, my, mx)), sq_fro(prod(x32, x32, mx, mx)), sq_fro(prod(y32, y32, my, my))
        assert abs(float(kl / torch.sqrt(kk * ll)) - exact) > 1e-3


def test_feature_form_of_a_wide_layer_counts_each_symmetric_block_once():
    x = torch.randn(300, 1100, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    assert float(sq_fro_gram_t(x)) == pytest.approx(float(sq_fro(x.T @ x)), rel=sum_tol(300 + 1100 ** 2))


def test_float32_centring_leaves_an_offset_of_the_spread_not_of_the_offset():
    """The two-pass float32 centring of the feature form: column means of the result are at most
    about 256 roundings of the spread (its float32 partial sums), and each value is the float64
    centring of the same float32 data up to that plus one rounding of the result."""
    from src.similarity.cka import centred

    g = torch.Generator().manual_seed(11)
    spread = torch.linspace(0.1, 3.0, 37)
    x32 = (torch.randn(3001, 37, generator=g) * spread + 1e4).float()
    c = centred(x32, torch.float32)
    ref = x32.double() - x32.double().mean(0)
    eps = torch.finfo(torch.float32).eps
    bound = (256 + 2) * eps * ref.abs().max(0).values  # per column
    assert (c.double().mean(0).abs() <= bound).all()
    assert ((c.double() - ref).abs() <= bound + eps * ref.abs()).all()
    # the same data centred by float32 column means is off by a rounding of the offset (1e4 * eps)
    naive = x32 - x32.mean(0)
    assert (naive.double().mean(0).abs() > bound).any()


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf"), None])
def test_non_finite_activations_are_refused_and_finite_ones_whose_sum_overflows_are_not(bad):
    from src.errors import UserError
    from src.similarity._prep import check_finite

    x = torch.full((50, 8), 3e38)  # finite, but its float32 sum overflows to inf
    check_finite(x, "x")
    if bad is None:  # an inf and a -inf: the sum is NaN
        x[3, 2], x[7, 1] = float("inf"), -float("inf")
    else:
        x[3, 2] = bad
    with pytest.raises(UserError, match="NaN or inf"):
        check_finite(x, "x")


@pytest.mark.parametrize("n", [30, 400])  # fewer samples than features (Gram form) and more (feature form)
def test_cka_against_is_cka_of_each_with_the_shared_side_computed_once(n):
    from src.similarity import cka_against

    g = torch.Generator().manual_seed(12)
    y = torch.randn(n, 4, 5, 5, generator=g)
    xs = [y + 0.5 * torch.randn(n, 4, 5, 5, generator=g), torch.randn(n, 60, generator=g), y.flip(1)]
    assert cka_against(xs, y) == [cka(x, y) for x in xs]
