"""Forward hooks as a context manager that always removes them."""
from collections import OrderedDict
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch
from torch import nn

from src.errors import UserError
from src.features.select import get_module


def unwrap_model(model: nn.Module) -> nn.Module:
    """The wrapped module of ``DataParallel`` / ``DistributedDataParallel`` (repeatedly), else the model."""
    wrappers = (nn.DataParallel, nn.parallel.DistributedDataParallel)
    while isinstance(model, wrappers):
        model = model.module
    return model


def first_tensor(output: Any, key: Optional[str] = None) -> torch.Tensor:
    """The tensor inside a module output: itself, the first tensor of a tuple/list, or ``output[key]`` of a dict."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, dict):
        if key is not None:
            if key not in output:
                raise UserError(f"module output has no key {key!r}; keys: {', '.join(map(str, output))}")
            return first_tensor(output[key])
        for value in output.values():
            try:
                return first_tensor(value)
            except UserError:
                continue
    if isinstance(output, (tuple, list)):
        for value in output:
            try:
                return first_tensor(value, key)
            except UserError:
                continue
    if hasattr(output, "logits") and isinstance(getattr(output, "logits"), torch.Tensor):
        return output.logits
    raise UserError(f"module output of type {type(output).__name__} holds no tensor")


def _version(tensor: torch.Tensor) -> Optional[int]:
    """The tensor's in-place version counter (None for inference-mode tensors, which have none)."""
    try:
        return tensor._version
    except RuntimeError:
        return None


class capture:
    """Record the outputs of named modules during forward passes.

    Usage::

        with torch.no_grad(), capture(model, ["conv1", "bn3"]) as acts:
            model(x)
        acts["bn3"]  # output of bn3 for x, detached

    Outputs are detached; with ``to_cpu=True`` they are moved to the CPU; with ``keep="all"`` every
    forward pass is kept as a list (``torch.cat`` them for a whole data set). Hooks are removed on
    exit even if the body raises. ``output_key`` picks a key of dict outputs.

    A later in-place operation (``ReLU(inplace=True)`` after a BatchNorm, as in torchvision's
    ResNets) overwrites a detached output. :meth:`overwritten` names the layers whose recorded
    output changed after it was recorded (from the tensors' version counters, at no cost);
    ``clone`` (True, or a collection of layer names, also settable later through
    :attr:`clone`) records a copy for those layers instead.

    ``transform``: a function applied to each detached output inside the hook, whose result is
    recorded instead (e.g. a Gram matrix: computed while the output is still in the CPU's caches,
    and immune to later in-place operations, so such layers are never recorded twice). Outputs
    without a batch axis are recorded untransformed, for :func:`layer_outputs` to report.
    """

    def __init__(self, model: nn.Module, layers: Sequence[str], to_cpu: bool = False,
                 keep: str = "last", output_key: Optional[str] = None, clone=False,
                 transform: Optional[Callable[[torch.Tensor], torch.Tensor]] = None):
        if keep not in ("last", "all"):
            raise ValueError("keep must be 'last' or 'all'")
        self.model = unwrap_model(model)
        self.layers = list(layers)
        self.modules = [get_module(self.model, name) for name in self.layers]
        self.to_cpu = to_cpu
        self.keep = keep
        self.output_key = output_key
        self.clone = set(self.layers) if clone is True else set(clone or ())
        self.transform = transform
        self.activations: Dict[str, Any] = OrderedDict()
        self._versions: Dict[str, List[Any]] = {}
        self._handles: List[Any] = []

    def _hook(self, name: str):
        def save(module, inputs, output):
            tensor = first_tensor(output, self.output_key).detach()
            if self.transform is not None and tensor.dim() > 0:
                tensor = self.transform(tensor)
            elif name in self.clone:
                tensor = tensor.clone()
            if self.to_cpu:
                tensor = tensor.cpu()
            if self.keep == "all":
                self.activations.setdefault(name, []).append(tensor)
                self._versions.setdefault(name, []).append((tensor, _version(tensor)))
            else:
                self.activations[name] = tensor
                self._versions[name] = [(tensor, _version(tensor))]
        return save

    def overwritten(self) -> List[str]:
        """Layers whose output recorded since the last call was modified in place afterwards.

        Checks (and forgets) every output recorded since the previous call.
        """
        changed = [name for name, seen in self._versions.items()
                   if any(version is not None and _version(tensor) != version for tensor, version in seen)]
        self._versions.clear()
        return [name for name in self.layers if name in changed]

    def __enter__(self) -> Dict[str, Any]:
        for name, module in zip(self.layers, self.modules):
            self._handles.append(module.register_forward_hook(self._hook(name)))
        return self.activations

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._versions.clear()


def forward_order(model: nn.Module, example: torch.Tensor, leaves_only: bool = True) -> List[str]:
    """Module names in the order a forward pass on ``example`` calls them (each name once)."""
    model = unwrap_model(model)
    order: List[str] = []
    handles = []
    for name, module in model.named_modules():
        if not name or (leaves_only and any(True for _ in module.children())):
            continue
        handles.append(module.register_forward_hook(lambda m, i, o, name=name: order.append(name)))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(example)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    seen = set()
    return [n for n in order if not (n in seen or seen.add(n))]
