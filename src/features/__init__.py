"""Feature extraction by forward hooks.

- :func:`resolve_layers` turns exact names, globs (``layer1.*.relu2``) or regexes (``re:bn\\d``)
  into module names, with an error listing the valid names when a pattern matches nothing.
- :class:`capture` is a context manager that records the outputs of those modules on every
  forward pass (detached, under the caller's ``torch.no_grad()``) and removes its hooks on exit.
- :func:`forward_order` lists the leaf modules in the order a forward pass runs them.
"""
from src.features.hooks import capture, first_tensor, forward_order, unwrap_model
from src.features.select import get_module, module_names, resolve_layers

__all__ = ["capture", "first_tensor", "forward_order", "unwrap_model", "get_module", "module_names", "resolve_layers"]
