"""Building a stitched network from two loaded models, two layer names and the stitch options."""
from typing import Any, Dict, Optional, Sequence

from torch import nn

from src.data import DatasetInfo
from src.errors import UserError
from src.stitching.cut import FrontPart
from src.stitching.frank import FrankensteinNet, activation_shape, network_part
from src.stitching.affine import make_stitch


def check_models_fit_dataset(front_meta: Dict[str, Any], end_meta: Dict[str, Any], info: DatasetInfo) -> None:
    """Both networks must read the data's images; the end network must predict its classes (where the networks'
    metadata tell: a module from Python is checked by running it)."""
    for role, meta in (("front", front_meta), ("end", end_meta)):
        if meta.get("n_channels") is not None and meta["n_channels"] != info.n_channels:
            raise UserError(f"the {role} model takes {meta['n_channels']}-channel input but {info.name} has "
                            f"{info.n_channels} channels")
    if end_meta.get("n_classes") is not None and end_meta["n_classes"] != info.n_classes:
        raise UserError(f"the end model predicts {end_meta['n_classes']} classes but {info.name} has {info.n_classes}")


def build_frank(front_model: nn.Module, end_model: nn.Module, front_layer: str, end_layer: str,
                input_shape: Sequence[int], flatten: bool = False, rank: Optional[int] = None,
                device="cpu", fold_batchnorm: bool = False, pool: bool = False,
                kind: Optional[str] = None, parts: Optional[Dict] = None) -> FrankensteinNet:
    """The stitched network with a freshly initialised stitch of the kind the two activation shapes and the
    options call for (or of the named ``kind``, e.g. the one recorded in a result).

    ``parts``: a memo of the networks' cut parts and activation shapes shared by several builds from the same
    two loaded networks (:func:`src.stitching.frank.network_part`). Wrong layer names raise the error listing
    the valid layers; unstitchable shapes an error giving both.
    """
    parts = {} if parts is None else parts
    front_model, end_model = front_model.to(device).eval(), end_model.to(device).eval()

    def shape(model, layer):
        key = ("shape", id(model), layer, tuple(input_shape))
        if key not in parts:
            parts[key] = activation_shape(network_part(parts, FrontPart, model, layer), input_shape, device)
        return parts[key]

    stitch = make_stitch(shape(front_model, front_layer), shape(end_model, end_layer), flatten=flatten, rank=rank,
                         pool=pool, kind=kind).to(device)
    return FrankensteinNet(front_model, end_model, front_layer, end_layer, stitch, fold_batchnorm, parts).to(device)
