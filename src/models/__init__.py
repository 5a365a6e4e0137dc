"""The model zoo: plain ``nn.Module``s whose every step is a named layer, behind a registry.

``create_model("resnet20_w2", n_classes=10, n_channels=3, seed=0)`` builds a model by name;
:func:`list_models` gives the names and patterns, :func:`model_display_name` the folder name
(``ResNet20_w2``), :func:`canonical_model_name` the canonical one. :func:`layer_table` lists a
model's layers with output shapes. Checkpoints are in :mod:`src.models.checkpoint`; its
:func:`load_model` / :func:`load_checkpoint` (rebuild a model from its file) are importable from here.
"""
from src.models.registry import (canonical_model_name, create_model, list_models, model_display_name,
                                 register_model)
# Importing a family registers its models; this order is the order of list_models().
from src.models import lenet, tiny10, dense, inception, resnet  # noqa: F401  (isort: skip)
from src.models.layer_table import layer_table, stitchable_layers
# Last: the checkpoint module builds models through create_model above.
from src.models.checkpoint import load_checkpoint, load_model  # noqa: E402  (isort: skip)

__all__ = ["create_model", "list_models", "model_display_name", "canonical_model_name", "register_model",
           "layer_table", "stitchable_layers", "load_model", "load_checkpoint"]
