"""layer_table / stitchable_layers."""
import pytest
import torch
from torch import nn

from src.errors import UserError
from src.models import create_model, layer_table, stitchable_layers


def test_table_columns_index_and_rows():
    model = create_model("lenet", n_channels=1)
    table = layer_table(model, (1, 32, 32))
    assert list(table.columns) == ["layer", "type", "output_shape", "params"]
    assert table.index.name == "index"
    assert list(table.index) == list(range(len(table)))
    assert table.iloc[0].to_dict() == {"layer": "conv1", "type": "Conv2d", "output_shape": "6x28x28", "params": 156}
    assert table.iloc[6].to_dict() == {"layer": "flatten", "type": "Flatten", "output_shape": "400", "params": 0}
    assert table["params"].sum() == sum(p.numel() for p in model.parameters())


def test_table_of_a_two_input_layer():
    table = layer_table(create_model("resnet20_w1"), (3, 32, 32)).set_index("layer")
    assert table.loc["layer2.0.add"].to_dict() == {"type": "Add", "output_shape": "32x16x16", "params": 0}


def test_table_leaves_no_hooks_and_restores_the_mode():
    model = create_model("tiny10")
    model.train()
    layer_table(model, (3, 32, 32))
    assert model.training
    assert all(not m._forward_hooks for m in model.modules())
    model.eval()
    layer_table(model, (3, 32, 32))
    assert not model.training


def test_table_does_not_touch_batchnorm_statistics():
    model = create_model("tiny10")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    layer_table(model, (3, 32, 32))
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_stitchable_layers_is_the_layer_column():
    model = create_model("nbn_tiny10", n_channels=1)
    assert stitchable_layers(model, (1, 32, 32)) == layer_table(model, (1, 32, 32))["layer"].tolist()


def test_wrapped_model_is_unwrapped():
    model = create_model("dense")
    assert stitchable_layers(nn.DataParallel(model), (3, 32, 32)) == stitchable_layers(model, (3, 32, 32))


def test_wrong_input_shape_is_a_user_error():
    with pytest.raises(UserError, match=r"input shape \(1, 32, 32\) does not fit Tiny10"):
        layer_table(create_model("tiny10", n_channels=3), (1, 32, 32))
