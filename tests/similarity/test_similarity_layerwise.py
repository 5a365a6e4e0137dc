"""Layer x layer matrices: agreement with the per-pair measures, symmetry, precision, statistics, files."""
import pickle
from collections import OrderedDict

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from src.errors import UserError
from src.similarity import (DegenerateWarning, SimilarityMatrix, cka, cka_debiased, cka_matrix, cka_minibatch, dcka, layer_similarity,
                            procrustes)
from src.similarity.gram import (double_center_, gram_product, linear_gram,
                                symmetric_gram, u_center_)
from src.similarity.layer_pairs import minibatch_slices

PATTERN = "re:relu\\d|fc"
LAYERS = ["relu1", "relu2", "fc"]


pytestmark = pytest.mark.usefixtures("one_thread")


def net(seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(1, 6, 3)), ("relu1", nn.ReLU()),
        ("conv2", nn.Conv2d(6, 8, 3, stride=2)), ("relu2", nn.ReLU()),
        ("flat", nn.Flatten()), ("fc", nn.Linear(8 * 3 * 3, 5)),
    ])).eval()


def data(n: int = 98, batch: int = 32, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 9, 9, generator=g)
    return [(x[i:i + batch], torch.zeros(len(x[i:i + batch]))) for i in range(0, n, batch)]


def manual_activations(model: nn.Sequential, batches, names=LAYERS):
    """Every child's output, by calling the children one after another (no hooks involved).

    Batch by batch, as the engine sees them: a float32 convolution of 98 images at once may round
    differently from three batches of 32 on some CPUs (oneDNN picks kernels by shape), and that
    float32 difference is not what the comparisons below are about.
    """
    kept = {n: [] for n in names}
    with torch.no_grad():
        for x, _ in batches:
            out = x
            for name, child in model.named_children():
                out = child(out)
                if name in kept:
                    kept[name].append(out)
    return [torch.cat(kept[n]).double() for n in names]


def random_acts(n, seed, shapes=((7,), (3, 4, 4), (12,))):
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(n, 6, generator=g)
    acts = []
    for shape in shapes:
        d = int(np.prod(shape))
        mix = base @ torch.randn(6, d, generator=g) + 0.8 * torch.randn(n, d, generator=g)
        acts.append(torch.tanh(mix).reshape(n, *shape))
    return acts


# --- the engine against the per-pair functions of phase 1 ----------------------------------------

def test_u_centering_gives_songs_unbiased_hsic():
    from tests.similarity.test_similarity_cka import ref_unbiased_hsic

    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(11, 4, generator=g, dtype=torch.float64), torch.randn(11, 6, generator=g, dtype=torch.float64)
    k, l = x @ x.T, (y + 3) @ (y + 3).T
    expected = ref_unbiased_hsic(k.numpy(), l.numpy())
    got = (u_center_(k.clone()) * u_center_(l.clone())).sum() / (11 * 8)
    assert float(got) == pytest.approx(float(expected), rel=1e-12)


@pytest.mark.parametrize("measure,reference,options", [
    ("cka", cka, {}), ("cka_debiased", cka_debiased, {}), ("cka_minibatch", cka_minibatch, {"batch_size": 32}),
])
def test_all_pairs_equal_the_per_pair_functions(measure, reference, options):
    acts1 = random_acts(98, 0)
    acts2 = random_acts(98, 1, shapes=((5,), (2, 3, 3))) + [acts1[1] * 3 + 7]
    est = cka_matrix(acts1, acts2, measure=measure, batch_size=32)
    expected = np.array([[reference(a.double(), b.double(), **options) for b in acts2] for a in acts1])
    assert est.values.shape == (3, 3)
    np.testing.assert_allclose(est.values, expected, atol=1e-8, rtol=0)
    assert est.values[1, 2] == pytest.approx(1.0, abs=1e-8)  # invariant to scaling and translation


@pytest.mark.parametrize("n,d", [(50, 30), (130, 40), (256, 1500)])
def test_gram_backends_equal_the_plain_product(n, d):
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(n))
    expected = x.double() @ x.double().T
    for got in (symmetric_gram(x), symmetric_gram(x, blocks=3), gram_product(x)):
        assert got.shape == (n, n)
        assert torch.allclose(got.double(), expected, rtol=0, atol=1e-5 * float(expected.abs().max()))


def test_minibatches_split_like_cka_minibatch():
    assert [(s.start, s.stop) for s in minibatch_slices(98, 32)] == [(0, 32), (32, 64), (64, 98)]
    assert [(s.start, s.stop) for s in minibatch_slices(100, 32)] == [(0, 32), (32, 64), (64, 96), (96, 100)]
    with pytest.raises(UserError, match=">= 4"):
        minibatch_slices(100, 3)


@pytest.mark.parametrize("offset", [0.0, 1.5, 1e4])
def test_float32_grams_keep_float64_accuracy_with_offsets(offset):
    """Offsets from none to far above the spread (1e4: an uncentred float32 Gram would be useless)."""
    acts = [a.double() + offset for a in random_acts(256, 3)]
    other = [a.double() - offset / 3 for a in random_acts(256, 4)]
    acts32, other32 = [a.float() for a in acts], [a.float() for a in other]
    for measure in ("cka", "cka_minibatch"):
        low = cka_matrix(acts32, other32, measure=measure, batch_size=64, precision="float32").values
        high = cka_matrix([a.double() for a in acts32], [b.double() for b in other32], measure=measure,
                          batch_size=64, precision="float64").values
        np.testing.assert_allclose(low, high, rtol=1e-6, atol=1e-6)
    if offset < 100:
        return
    # the same data through an uncentred float32 Gram (centring afterwards) is useless: the test has teeth
    x, y = acts32[0].reshape(256, -1), other32[0].reshape(256, -1)
    k, l = (x @ x.T).double(), (y @ y.T).double()
    h = torch.eye(256, dtype=torch.float64) - 1 / 256
    naive = float((h @ k @ h * (h @ l @ h)).sum() / torch.sqrt((h @ k @ h).square().sum() * (h @ l @ h).square().sum()))
    assert abs(naive - cka(acts[0], other[0])) > 1e-2
    # the float32 Gram itself, once re-centred in float64 (what the biased estimator uses)
    exact = double_center_(linear_gram(acts32[0].double(), "float64"))
    fast = double_center_(linear_gram(acts32[0], "float32").double())
    assert torch.allclose(fast, exact, rtol=0, atol=1e-6 * float(exact.abs().max()))


# --- models and loaders -------------------------------------------------------------------------

@pytest.mark.parametrize("measure", ["cka_minibatch", "cka", "cka_debiased"])
def test_model_against_itself_has_ones_on_the_diagonal(measure):
    model = net(0)
    sim = layer_similarity(model, model, data(), layers1=PATTERN, layers2=PATTERN, measure=measure)
    assert sim.rows == sim.cols == LAYERS
    np.testing.assert_allclose(np.diag(sim.values), 1.0, atol=1e-6)
    np.testing.assert_allclose(sim.values, sim.values.T, atol=1e-12)
    assert sim.n_samples == 98 and sim.meta["model1"] == "Sequential"


def test_layer_matrix_equals_independent_per_pair_results():
    m1, m2 = net(0), net(1)
    batches = data()
    a1, a2 = manual_activations(m1, batches), manual_activations(m2, batches)
    sim = layer_similarity(m1, m2, batches, layers1=PATTERN, layers2=PATTERN)
    expected = np.array([[cka_minibatch(x, y, batch_size=32) for y in a2] for x in a1])
    np.testing.assert_allclose(sim.values, expected, atol=1e-7, rtol=0)
    assert sim.n_batches == 3 and sim.meta["batch_size"] == 32
    full = layer_similarity(m1, m2, batches, layers1=PATTERN, layers2=PATTERN, measure="cka")
    np.testing.assert_allclose(full.values, [[cka(x, y) for y in a2] for x in a1], atol=1e-7, rtol=0)
    pro = layer_similarity(m1, m2, batches, layers1=["relu2", "fc"], layers2="fc", measure="procrustes")
    np.testing.assert_allclose(pro.values[:, 0], [procrustes(a1[1], a2[2]), procrustes(a1[2], a2[2])], rtol=1e-9)
    dc = layer_similarity(m1, m2, batches, layers1="fc", layers2="relu2", measure="dcka")
    inputs = torch.cat([b[0] for b in batches])
    assert dc.values[0, 0] == pytest.approx(dcka(a1[2], a2[1], inputs=inputs), rel=1e-9)


def test_swapping_the_models_transposes_the_matrix():
    m1, m2 = net(0), net(1)
    ab = layer_similarity(m1, m2, data(), layers1=PATTERN, layers2=["relu2", "conv1"], names=["A", "B"])
    ba = layer_similarity(m2, m1, data(), layers1=["relu2", "conv1"], layers2=PATTERN, names=["B", "A"])
    assert ab.rows == ["relu1", "relu2", "fc"] and ab.cols == ["conv1", "relu2"]  # definition order
    np.testing.assert_allclose(ab.values, ba.values.T, atol=1e-12)
    t = ab.T
    assert t.rows == ba.rows and t.cols == ba.cols and t.meta["model1"] == "B"
    np.testing.assert_allclose(t.values, ba.values, atol=1e-12)


def test_labels_are_the_selected_names_and_default_is_every_leaf():
    m1 = net(0)
    sim = layer_similarity(m1, net(2), data(), layers2=["fc", "relu1"])
    assert sim.rows == ["conv1", "relu1", "conv2", "relu2", "flat", "fc"]  # every leaf, forward order
    assert sim.cols == ["relu1", "fc"]
    frame = sim.to_frame()
    assert list(frame.index) == sim.rows and list(frame.columns) == sim.cols
    shared = layer_similarity(m1, m1, data(), layers1=["relu2", "fc"], layers2=["fc", "conv1"])
    assert shared.cols == ["conv1", "fc"]  # patterns select in definition order
    assert shared.values[1, 1] == pytest.approx(1.0, abs=1e-9)  # fc vs fc in the shared forward pass


def test_second_dataset_compares_one_model_on_two_datasets():
    model = net(0)
    first, second = data(seed=0), data(seed=5)
    sim = layer_similarity(model, model, first, second, layers1=PATTERN, layers2=PATTERN)
    a, b = manual_activations(model, first), manual_activations(model, second)
    np.testing.assert_allclose(sim.values, [[cka_minibatch(x, y, batch_size=32) for y in b] for x in a], atol=1e-7)
    assert np.abs(np.diag(sim.values) - 1).max() > 1e-3  # different inputs: not the identity
    cut = layer_similarity(model, model, first, data(n=200, seed=5), max_samples=64, layers1="fc", layers2="fc")
    assert cut.n_samples == 64


def test_hooks_are_removed_and_modes_restored_also_after_errors():
    m1, m2 = net(0).train(), net(1)
    layer_similarity(m1, m2, data(), layers1=PATTERN, layers2=PATTERN)
    with pytest.raises(UserError):
        layer_similarity(m1, m2, data(), data(n=64), layers1=PATTERN, layers2=PATTERN)
    for model in (m1, m2):
        assert sum(len(m._forward_hooks) for m in model.modules()) == 0
    assert m1.training and all(m.training for m in m1.modules()) and not m2.training


def test_errors_are_clear():
    m1, m2 = net(0), net(1)
    with pytest.raises(UserError, match="'relu9' matches no layer of Sequential; valid layers: conv1"):
        layer_similarity(m1, m2, data(), layers1="relu9")
    with pytest.raises(UserError, match="different numbers of samples"):
        layer_similarity(m1, m2, data(), data(n=64))
    with pytest.raises(UserError, match="batch 0 has 32 samples in loader1 but 16"):
        layer_similarity(m1, m2, data(), data(batch=16))
    with pytest.raises(UserError, match="corr returns matrix"):
        layer_similarity(m1, m2, data(), measure="corr")
    with pytest.raises(UserError, match="unknown similarity measure 'ckaa'"):
        layer_similarity(m1, m2, data(), measure="ckaa")
    with pytest.raises(UserError, match="no bootstrap for cka_debiased"):
        layer_similarity(m1, m2, data(), measure="cka_debiased", bootstrap=10)
    with pytest.raises(UserError, match="available for cka, cka_debiased, cka_minibatch, not cca"):
        layer_similarity(m1, m2, data(), measure="cca", permutations=10)
    dead = net(3)
    with torch.no_grad():
        dead.conv2.weight.zero_()
        dead.conv2.bias.fill_(-1.0)  # relu2 is always 0
    # a dead layer is no error: its cells are degenerate (CKA 0/0), NaN with the reason, and a warning names them
    with pytest.warns(DegenerateWarning, match="degenerate for 3 of 9 layer pairs, stored as NaN: relu1 x relu2"):
        sim = layer_similarity(m1, dead, data(), layers1=PATTERN, layers2=PATTERN)
    assert np.isnan(sim.values[:, 1]).all() and np.isfinite(sim.values[:, [0, 2]]).all()
    assert set(sim.degenerate) == {(row, "relu2") for row in LAYERS}
    assert "relu2 (model 2) with itself is not positive" in sim.degenerate[("fc", "relu2")]


# --- permutation test and bootstrap ---------------------------------------------------------------

@pytest.mark.parametrize("measure", ["cka_minibatch", "cka"])
def test_permutation_pvalues_small_for_related_uniform_for_independent(measure):
    k = 99
    related = random_acts(96, 0)
    est = cka_matrix(related, related, measure=measure, batch_size=32, permutations=k)
    assert np.all(np.diag(est.pvalues) == pytest.approx(1 / (k + 1)))
    g = torch.Generator().manual_seed(7)
    indep1 = [torch.randn(96, 4, generator=g) for _ in range(10)]
    indep2 = [torch.randn(96, 3, generator=g) for _ in range(10)]
    p = cka_matrix(indep1, indep2, measure=measure, batch_size=32, permutations=k).pvalues
    assert p.shape == (10, 10) and p.min() >= 1 / (k + 1) and p.max() <= 1
    assert 0.35 < p.mean() < 0.65 and (p < 0.05).mean() < 0.15  # about uniform under independence
    again = cka_matrix(indep1, indep2, measure=measure, batch_size=32, permutations=k).pvalues
    np.testing.assert_array_equal(p, again)  # seeded


@pytest.mark.parametrize("measure,n_small,n_large", [("cka_minibatch", 256, 2048), ("cka", 128, 512)])
def test_bootstrap_interval_contains_the_estimate_and_narrows_with_more_samples(measure, n_small, n_large):
    widths = []
    for n in (n_small, n_large):
        acts = random_acts(n, 11)
        est = cka_matrix(acts[:1], acts[2:], measure=measure, batch_size=64, bootstrap=200, ci=0.9)
        assert est.ci_low[0, 0] <= est.values[0, 0] <= est.ci_high[0, 0]
        assert est.meta["bootstrap_unit"] == ("batches" if measure == "cka_minibatch" else "samples")
        widths.append(float(est.ci_high[0, 0] - est.ci_low[0, 0]))
    assert 0 < widths[1] < 0.75 * widths[0]


def test_bootstrap_needs_two_batches():
    with pytest.raises(UserError, match="at least 2 batches"):
        cka_matrix(random_acts(40, 0), measure="cka_minibatch", batch_size=64, bootstrap=10)


# --- files ----------------------------------------------------------------------------------------

def test_save_writes_plain_readable_files(tmp_path):
    m1, m2 = net(0), net(1)
    sim = layer_similarity(m1, m2, data(), layers1=PATTERN, layers2=["relu2", "fc"], permutations=19, bootstrap=20,
                           names=["net A", "net B"], meta={"dataset1": "noise", "split": "test"})
    paths = sim.save(tmp_path / "out")
    assert sorted(p.name for p in paths.values()) == sorted(
        ["matrix.csv", "matrix.npz", "matrix.pkl", "heatmap.png", "pvalues.csv", "ci_low.csv", "ci_high.csv"])
    frame = pd.read_csv(paths["csv"], index_col=0)
    assert list(frame.index) == LAYERS and list(frame.columns) == ["relu2", "fc"]
    np.testing.assert_allclose(frame.values, sim.values, rtol=1e-12)
    with np.load(paths["npz"], allow_pickle=False) as npz:
        assert list(npz["rows"]) == LAYERS and list(npz["cols"]) == ["relu2", "fc"] and str(npz["measure"]) == "cka_minibatch"
        np.testing.assert_allclose(npz["pvalues"], sim.pvalues)
        assert npz["ci_low"].shape == (3, 2) and "git" in str(npz["provenance"])
    with open(paths["pkl"], "rb") as handle:
        saved = pickle.load(handle)
    assert isinstance(saved["values"], pd.DataFrame) and saved["rows"] == LAYERS and saved["n_samples"] == 98
    assert isinstance(saved["pvalues"], pd.DataFrame) and saved["provenance"]["versions"]["torch"]
    assert saved["meta"]["model1"] == "net A" and saved["meta"]["dataset1"] == "noise"
    assert not any(type(v).__module__.startswith("src") for v in saved.values())
    png = paths["png"].read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    loaded = SimilarityMatrix.load(tmp_path / "out")
    np.testing.assert_allclose(loaded.values, sim.values) and np.testing.assert_allclose(loaded.ci_high, sim.ci_high)
    with pytest.raises(UserError, match="already holds matrix.csv.*pass --overwrite"):
        sim.save(tmp_path / "out")
    sim.save(tmp_path / "out", overwrite=True)
    # replaced by a matrix without statistics: none of the previous p-values or intervals stays beside it
    plain = layer_similarity(m1, m2, data(), layers1=PATTERN, layers2=["fc"])
    (tmp_path / "out" / "notes.txt").write_text("mine")
    plain.save(tmp_path / "out", overwrite=True)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "heatmap.png", "matrix.csv", "matrix.npz", "matrix.pkl", "notes.txt"]
    assert SimilarityMatrix.load(tmp_path / "out").cols == ["fc"]


def test_an_interrupted_save_leaves_the_previous_files(tmp_path, monkeypatch):
    import src.similarity.result as result_module

    first = layer_similarity(net(0), net(1), data(), layers1=PATTERN, layers2=["fc"])
    first.save(tmp_path / "out")
    before = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}

    def fail(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(result_module, "save_heatmap", fail)  # the last file of a save
    second = layer_similarity(net(0), net(1), data(), layers1=PATTERN, layers2=["relu2"])
    with pytest.raises(KeyboardInterrupt):
        second.save(tmp_path / "out", overwrite=True)
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no staging folder left behind


def test_plot_draws_labelled_axes():
    from matplotlib.figure import Figure

    sim = layer_similarity(net(0), net(1), data(), layers1=PATTERN, layers2=PATTERN, names=["A", "B"])
    ax = Figure().add_subplot()
    assert sim.plot(ax) is ax
    assert [t.get_text() for t in ax.get_xticklabels()] == LAYERS
    assert ax.get_xlabel() == "B layer" and ax.get_ylabel() == "A layer" and "A vs B" in ax.get_title()


def test_streamed_grams_of_a_batchnorm_followed_by_an_inplace_relu_are_of_each_layers_own_output():
    """Streaming CKA forms each Gram inside the forward hook; a BatchNorm output that a later
    ReLU(inplace=True) overwrites must still enter as BatchNorm's own output (negative values and
    all): the matrix equals cka_matrix of the outputs computed module by module."""
    torch.manual_seed(3)
    net = nn.Sequential(OrderedDict([("conv", nn.Conv2d(1, 4, 3)), ("bn", nn.BatchNorm2d(4)),
                                     ("relu", nn.ReLU(inplace=True)), ("flat", nn.Flatten()),
                                     ("fc", nn.Linear(4 * 6 * 6, 5))])).eval()
    with torch.no_grad():
        net.bn.running_mean.uniform_(-0.5, 0.5)
    x = torch.randn(96, 1, 8, 8)
    loader = [(x[i:i + 32], torch.zeros(32)) for i in range(0, 96, 32)]
    layers = ["bn", "relu", "fc"]
    streamed = layer_similarity(net, net, loader, layers1=layers, layers2=layers, measure="cka_minibatch")
    with torch.no_grad():  # batch by batch as the loader feeds them: float32 convolutions may round
        bn = torch.cat([net.bn(net.conv(xb)) for xb, _ in loader])  # differently for other batch shapes
        relu = torch.relu(bn)
        fc = torch.cat([net.fc(r.flatten(1)) for r in relu.split(32)])
    assert (bn < 0).any()
    reference = cka_matrix([bn, relu, fc], [bn, relu, fc], measure="cka_minibatch", batch_size=32)
    np.testing.assert_allclose(streamed.values, reference.values, rtol=0, atol=1e-9)
    assert streamed.values[0, 1] < 1 - 1e-3  # bn and relu differ: the overwritten output was not used
