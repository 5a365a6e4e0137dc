"""The layer table of a model: every leaf module in forward order, with its output shape and parameter count."""
from typing import List, Sequence

import pandas as pd
import torch
from torch import nn

from src.errors import UserError
from src.features import capture, module_names, unwrap_model

COLUMNS = ["layer", "type", "output_shape", "params"]


def layer_table(model: nn.Module, input_shape: Sequence[int]) -> pd.DataFrame:
    """One row per leaf module, in the order one forward pass calls them.

    The pass runs in eval mode under ``torch.no_grad()`` on zeros of shape ``(2, *input_shape)``;
    the hooks are removed and the training mode restored afterwards. Columns: ``layer`` (module
    name), ``type`` (class name), ``output_shape`` (without the batch dimension, e.g. ``"16x30x30"``)
    and ``params`` (the module's own parameters); the index (named ``index``) counts from 0.

    Only leaves are listed, but containers are valid layer names too: ``layer1.0`` (a ResNet
    block) or ``mixed3a`` (an Inception block) name the output of the whole block.
    """
    model = unwrap_model(model)
    leaves = module_names(model, leaves_only=True)
    modules = dict(model.named_modules())
    device = next(model.parameters(), torch.empty(0)).device
    example = torch.zeros(2, *input_shape, device=device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), capture(model, leaves) as outputs:
            model(example)
    except RuntimeError as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"input shape {tuple(input_shape)} does not fit {type(model).__name__}: {first_line}") from err
    finally:
        model.train(was_training)
    rows = [{
        "layer": name,
        "type": type(modules[name]).__name__,
        "output_shape": "x".join(str(size) for size in output.shape[1:]),
        "params": sum(p.numel() for p in modules[name].parameters(recurse=False)),
    } for name, output in outputs.items()]  # filled in call order
    table = pd.DataFrame(rows, columns=COLUMNS)
    table.index.name = "index"
    return table


def stitchable_layers(model: nn.Module, input_shape: Sequence[int]) -> List[str]:
    """The leaf layer names of :func:`layer_table`, in forward order."""
    return layer_table(model, input_shape)["layer"].tolist()
