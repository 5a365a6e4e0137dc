"""The checkpoints published with the reference code load unchanged into the zoo and look trained.

``reference_checkpoints`` (tests/conftest.py) is ``../shared/reference-checkpoints`` beside the
repository; the tests skip where it is absent.
"""
import pytest
import torch

from src.models import create_model, model_display_name


@pytest.mark.parametrize("model_name,n_keys", [("tiny10", 58), ("resnet20", 128)])
def test_reference_checkpoints_load_strictly_and_look_trained(reference_checkpoints, model_name, n_keys):
    paths = sorted((reference_checkpoints / model_display_name(model_name) / "CIFAR10").glob("in*-gn*/110000.pt"))
    assert paths, f"no {model_display_name(model_name)} checkpoints in {reference_checkpoints}"
    for path in paths:
        state = torch.load(path, map_location="cpu", weights_only=True)
        assert len(state) == n_keys
        model = create_model(model_name, n_classes=10, n_channels=3)
        model.load_state_dict(state, strict=True)
        model.eval()
        for name, module in model.named_modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                assert module.num_batches_tracked.item() > 100_000, name
                assert not torch.allclose(module.running_mean, torch.zeros_like(module.running_mean)), name
                assert not torch.allclose(module.running_var, torch.ones_like(module.running_var)), name
                assert not torch.allclose(module.weight, torch.ones_like(module.weight)), name
        inputs = torch.randn(256, 3, 32, 32, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            logits = model(inputs)
        assert torch.isfinite(logits).all()
        assert len(logits.argmax(1).unique()) >= 2, f"{path}: constant predictions"
