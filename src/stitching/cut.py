"""Cutting a network at a named layer: the part up to it, and the part after it.

``FrontPart(model, layer)(x)`` returns the output of ``layer``; ``EndPart(model, layer)(x, a)``
returns the model's output when ``layer``'s output is replaced by ``a``. Only what is needed runs:
both parts are built by tracing the model with :mod:`torch.fx` and dropping the nodes whose values
are not needed. For a sequential cut (Tiny10 at ``bn3``, a ResNet at a block output) the end part
does not look at ``x`` at all; for a cut inside a residual block it still computes the skip branch
from ``x`` with the end network's own weights - exactly what running the whole end network with a
hook that overrides the layer's output computes (the reference design), minus the wasted work.

With ``fold_batchnorm=True`` every BatchNorm that directly follows a convolution or linear layer
of the (frozen, eval-mode) part is folded into it: fewer operations per step, logits equal to the
unfolded network's up to float rounding (about 1e-7 relative), so it is an opt-in speed option.

Models that torch.fx cannot trace (data-dependent control flow) fall back to hooks: the front part
stops the forward pass with an exception as soon as the layer has run; the end part runs the whole
network and overrides the layer's output.
"""
import logging
from typing import Optional

import torch
from torch import fx, nn
from torch.fx.experimental.optimization import fuse

from src.errors import UserError
from src.features import first_tensor, get_module

log = logging.getLogger(__name__)

#: The pseudo-layer name of a network's input: ``FrontPart(model, INPUT_LAYER)(x)`` is ``x`` and
#: ``EndPart(model, INPUT_LAYER)(x, a)`` is ``model(a)`` - a stitch into it generates the image the
#: end sees (see :mod:`src.stitching.images`). It is an end layer only.
INPUT_LAYER = "input"


class _CutTracer(fx.Tracer):
    """The default tracer, except that the cut module is a leaf even if it is a container (e.g. a block)."""

    def __init__(self, cut: str):
        super().__init__()
        self.cut = cut

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        return qualified_name == self.cut or super().is_leaf_module(module, qualified_name)


#: The model classes the hook fallback was announced for (one printed line per class and process).
_ANNOUNCED = set()


def _trace(model: nn.Module, layer: str) -> Optional[fx.Graph]:
    try:
        return _CutTracer(layer).trace(model)
    except Exception as err:  # noqa: BLE001 - any tracing failure means: use the hook fallback
        name = type(model).__name__
        log.info("torch.fx cannot trace %s (%s); using forward hooks", name, err)
        if name not in _ANNOUNCED:
            _ANNOUNCED.add(name)
            reason = str(err).strip().splitlines()[0][:120] if str(err).strip() else type(err).__name__
            print(f"note: torch.fx cannot trace {name} ({reason}); running whole networks with a forward hook "
                  f"at the cut instead (the reference design: same results, more computation)")
        return None


def _layer_node(graph: fx.Graph, layer: str) -> Optional[fx.Node]:
    nodes = [n for n in graph.nodes if n.op == "call_module" and n.target == layer]
    if len(nodes) > 1:
        raise UserError(f"layer {layer!r} is called {len(nodes)} times in one forward pass; stitch at a layer used once")
    return nodes[0] if nodes else None


def _pruned(model: nn.Module, graph: fx.Graph, fold_batchnorm: bool = False) -> fx.GraphModule:
    """A GraphModule of ``graph`` without the nodes whose values are unused (sharing ``model``'s modules,
    or with conv/linear + BatchNorm pairs folded into copies of them)."""
    draft = fx.GraphModule(model, graph)  # dead-code elimination needs an owning module
    draft.graph.eliminate_dead_code()
    draft.graph.lint()
    pruned = fx.GraphModule(model, draft.graph)
    if fold_batchnorm:
        pruned = fuse(pruned.eval(), no_trace=True)
    return pruned


class _StopForward(Exception):
    def __init__(self, value):
        super().__init__()
        self.value = value


class FrontPart(nn.Module):
    """The network from its input up to and including ``layer``."""

    def __init__(self, model: nn.Module, layer: str, fold_batchnorm: bool = False):
        super().__init__()
        self.layer = layer
        self.model = model
        self.graph_module: Optional[fx.GraphModule] = None
        if layer == INPUT_LAYER:  # the input itself: nothing to run
            return
        get_module(model, layer)  # a clear error for a wrong name
        graph = _trace(model, layer)
        node = _layer_node(graph, layer) if graph is not None else None
        if node is not None:
            for out in [n for n in graph.nodes if n.op == "output"]:
                graph.erase_node(out)
            graph.output(node)
            self.graph_module = _pruned(model, graph, fold_batchnorm)

    @property
    def uses_fx(self) -> bool:
        return self.graph_module is not None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.layer == INPUT_LAYER:
            return x
        if self.graph_module is not None:
            return first_tensor(self.graph_module(x))

        def stop(module, inputs, output):
            raise _StopForward(first_tensor(output))

        handle = get_module(self.model, self.layer).register_forward_hook(stop)
        try:
            self.model(x)
        except _StopForward as done:
            return done.value
        finally:
            handle.remove()
        raise RuntimeError(f"layer {self.layer!r} was not called during the forward pass")


class EndPart(nn.Module):
    """The network after ``layer``: ``forward(x, activation)`` with ``activation`` in place of the layer's output.

    ``needs_input`` tells whether ``x`` is used at all (False for sequential cuts; then ``x`` may be None).
    """

    def __init__(self, model: nn.Module, layer: str, fold_batchnorm: bool = False):
        super().__init__()
        self.layer = layer
        self.model = model
        self.graph_module: Optional[fx.GraphModule] = None
        self.needs_input = layer != INPUT_LAYER
        if layer == INPUT_LAYER:  # the whole network on the stitched input (unfolded: folding is a speed option)
            return
        get_module(model, layer)
        graph = _trace(model, layer)
        node = _layer_node(graph, layer) if graph is not None else None
        if node is not None:
            inputs = [n for n in graph.nodes if n.op == "placeholder"]
            with graph.inserting_after(inputs[-1]):  # after optional inputs (timm's attn_mask=None) it needs a default
                replacement = graph.placeholder("stitched_activation", default_value=None)
            node.replace_all_uses_with(replacement)
            graph.erase_node(node)
            self.graph_module = _pruned(model, graph, fold_batchnorm)
            self.needs_input = any(n.users for n in self.graph_module.graph.nodes
                                   if n.op == "placeholder" and n.target != "stitched_activation")
            # the network's inputs without a default value all get x (as the whole network would be called)
            self._n_inputs = sum(1 for n in inputs if not n.args)

    @property
    def uses_fx(self) -> bool:
        return self.graph_module is not None

    def forward(self, x: Optional[torch.Tensor], activation: torch.Tensor) -> torch.Tensor:
        if self.layer == INPUT_LAYER:
            return self.model(activation)
        if self.graph_module is not None:
            if x is None and self.needs_input:
                raise ValueError(f"the part after {self.layer!r} needs the network input")
            return self.graph_module(*([x] * self._n_inputs), stitched_activation=activation)

        def override(module, inputs, output):
            return activation

        handle = get_module(self.model, self.layer).register_forward_hook(override)
        try:
            return self.model(x)
        finally:
            handle.remove()
