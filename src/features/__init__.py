"""Feature extraction by forward hooks.

- :func:`resolve_layers` turns exact names, globs (``layer1.*.relu2``) or regexes (``re:bn\\d``)
  into module names, with an error listing the valid names when a pattern matches nothing.
- :class:`capture` is a context manager that records the outputs of those modules on every
  forward pass (detached, under the caller's ``torch.no_grad()``) and removes its hooks on exit.
- :func:`forward_order` lists the leaf modules in the order a forward pass runs them.
- :mod:`src.features.stream`: input batches of any loader (:func:`batch_input`,
  :func:`input_batches`, :func:`paired_batches`), :func:`evaluating`, :func:`select_layers`,
  :func:`layer_outputs`; :mod:`src.features.store`: :class:`ActivationStore` (whole data sets,
  with a memory check).
"""
from src.features.hooks import capture, first_tensor, forward_order, unwrap_model
from src.features.select import get_module, module_names, resolve_layers
from src.features.store import ActivationStore, available_memory, check_memory
from src.features.stream import (batch_input, evaluating, input_batches, layer_outputs, loader_size, model_device,
                                 paired_batches, select_layers)

__all__ = ["capture", "first_tensor", "forward_order", "unwrap_model", "get_module", "module_names", "resolve_layers",
           "ActivationStore", "available_memory", "check_memory", "batch_input", "evaluating", "input_batches",
           "layer_outputs", "loader_size", "model_device", "paired_batches", "select_layers"]
