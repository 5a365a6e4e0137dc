"""The model registry: names, display names, errors, seeding."""
import pytest
import torch

from src.errors import UserError
from src.models import (canonical_model_name, create_model, list_models, model_display_name, register_model)

DISPLAY = {
    "lenet": "LeNet", "tiny10": "Tiny10", "nbn_tiny10": "NbnTiny10", "dense": "Dense",
    "inceptionv1": "InceptionV1", "resnet20_w1": "ResNet20_w1", "resnet20_w2": "ResNet20_w2",
    "resnet20_w12": "ResNet20_w12", "resnet_1111": "ResNet_1111", "resnet_1212": "ResNet_1212",
    "resnet_2222": "ResNet_2222", "resnet34": "ResNet34", "resnet_1111_w8": "ResNet_1111_w8",
    "resnet_2222_w16": "ResNet_2222_w16", "resnet_1212_w128": "ResNet_1212_w128",
}


def test_list_models_gives_names_and_patterns():
    assert list_models() == ["lenet", "tiny10", "nbn_tiny10", "dense", "inceptionv1",
                             "resnet20_w{k}", "resnet_{abcd}[_w{k}]", "resnet34"]


@pytest.mark.parametrize("canonical,display", DISPLAY.items())
def test_display_and_canonical_names_round_trip(canonical, display):
    assert model_display_name(canonical) == display
    assert canonical_model_name(display) == canonical
    assert canonical_model_name(display.upper()) == canonical
    assert canonical_model_name(canonical) == canonical


@pytest.mark.parametrize("given,canonical", [
    ("nbntiny10", "nbn_tiny10"), ("NBN_TINY10", "nbn_tiny10"), ("resnet20", "resnet20_w1"),
    ("ResNet20", "resnet20_w1"), (" Tiny10 ", "tiny10"), ("inceptionV1", "inceptionv1"),
    ("resnet_2222_w64", "resnet_2222"), ("ResNet_1111_W8", "resnet_1111_w8"),
])
def test_name_variants(given, canonical):
    assert canonical_model_name(given) == canonical
    assert model_display_name(given) == DISPLAY[canonical]


@pytest.mark.parametrize("bad", ["resnet_3333", "resnet_111", "resnet_12121", "resnet20_wx", "resnet20_w0",
                                 "resnet20_w01", "resnet20_w", "resnet18", "tiny", "tiny10x", "",
                                 "resnet_1111_w0", "resnet_1111_w", "resnet_1111w8", "resnet_1111_w8_w8",
                                 "resnet_3333_w8"])
def test_unknown_names_are_user_errors_listing_the_models(bad):
    with pytest.raises(UserError) as info:
        create_model(bad)
    message = str(info.value)
    assert "\n" not in message
    assert f"unknown model {bad!r}" in message
    for known in list_models():
        assert known in message
    with pytest.raises(UserError):
        canonical_model_name(bad)
    with pytest.raises(UserError):
        model_display_name(bad)


@pytest.mark.parametrize("kwargs", [{"n_classes": 0}, {"n_channels": -1}, {"n_classes": 2.5}, {"n_channels": True}])
def test_bad_sizes_are_user_errors(kwargs):
    with pytest.raises(UserError, match="must be a positive integer"):
        create_model("tiny10", **kwargs)


def test_registering_a_name_twice_is_refused():
    with pytest.raises(ValueError, match="registered twice"):
        register_model("tiny10")(lambda n_classes, n_channels: None)
    assert list_models().count("tiny10") == 1


def test_optional_parts_need_defaults_and_matching_display_names():
    with pytest.raises(ValueError, match="need defaults"):
        register_model("toy[_w{k}]")
    with pytest.raises(ValueError, match="need defaults"):
        register_model("toy_w{k}", defaults={"k": "1"})
    with pytest.raises(ValueError, match="fields and \\[parts\\]"):
        register_model("toy[_w{k}]", display="Toy_w{k}", defaults={"k": "1"})(lambda n_classes, n_channels, k: None)
    assert "toy[_w{k}]" not in list_models()


def test_zoo_name_is_the_canonical_name():
    assert create_model("ResNet20").zoo_name == "resnet20_w1"
    assert create_model("NbnTiny10").zoo_name == "nbn_tiny10"
    assert create_model("resnet20_w3").fc.in_features == 64 * 3
    assert create_model("ResNet_2222_w64").zoo_name == "resnet_2222"
    assert create_model("resnet_1111_w8").zoo_name == "resnet_1111_w8"


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("name", ["tiny10", "resnet20_w1", "lenet"])
def test_same_seed_same_weights_different_seed_different_weights(name):
    assert _same_weights(create_model(name, seed=5), create_model(name, seed=5))
    assert not _same_weights(create_model(name, seed=5), create_model(name, seed=6))


def test_seeded_creation_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(5)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    create_model("tiny10", seed=0)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(torch.rand(5), expected)


def test_seeded_weights_do_not_depend_on_the_global_rng():
    torch.manual_seed(1)
    a = create_model("tiny10", seed=0)
    torch.manual_seed(2)
    b = create_model("tiny10", seed=0)
    assert _same_weights(a, b)


def test_unseeded_models_draw_from_the_global_rng():
    assert not _same_weights(create_model("tiny10"), create_model("tiny10"))
