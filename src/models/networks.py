"""A network by reference: a zoo checkpoint, a model spec with its weights, or an ``nn.Module`` from Python.

Every script and the Python API name the two networks of a stitch or a comparison by a *reference*
(a string that results record) and load them with :func:`load_network`:

- a path to a checkpoint of this project (or a bare state_dict with ``--front-arch``), as always;
- a model spec, ``torchvision:NAME``, ``timm:NAME`` or ``MODULE:FUNCTION`` (:mod:`src.models.specs`), with
  its weights from a file (``--weights`` / ``--front-weights`` / ``--end-weights``) or, without one, a
  random initialisation from a seed;
- ``python:NAME#ID``, which :func:`module_ref` gives to an ``nn.Module`` handed to the Python API
  (:mod:`src.api`): the module itself, for this process only. Results record its class name; to rebuild
  such a result in another process, name the network by a spec and a weights file.

:func:`network_digest` is the SHA-256 that results record to notice a changed network: of the
checkpoint or weights file, or, for a module or a randomly initialised spec, of its parameters.
:func:`random_network` makes the random-weight control of a network for stitch matrices.
"""
import copy
import hashlib
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch
from torch import nn

from src.data.registry import DatasetInfo
from src.data.source import USER_DATA
from src.errors import UserError
from src.models.checkpoint import checkpoint_digest, load_checkpoint
from src.models.registry import create_model
from src.models.specs import is_model_spec, load_model_spec

MODULE_PREFIX = "python:"
_MODULES: Dict[str, nn.Module] = {}  # references handed out by module_ref, for this process


def module_ref(module: nn.Module) -> str:
    """The reference of a Python ``nn.Module`` (the same module always gets the same one)."""
    if not isinstance(module, nn.Module):
        raise UserError(f"a network must be an nn.Module, a checkpoint path or a model spec, not {type(module).__name__}")
    ref = f"{MODULE_PREFIX}{type(module).__name__}#{id(module):x}"
    _MODULES[ref] = module
    return ref


def is_module_ref(ref: Any) -> bool:
    return isinstance(ref, str) and ref.startswith(MODULE_PREFIX)


def network_kind(ref: str) -> str:
    """``module``, ``spec`` or ``checkpoint``."""
    if is_module_ref(ref):
        return "module"
    return "spec" if is_model_spec(ref) else "checkpoint"


def _info_fields(info: Optional[DatasetInfo]) -> Dict[str, Any]:
    if info is None:
        return {}
    return {"n_classes": info.n_classes, "n_channels": info.n_channels, "input_size": list(info.input_size)}


def load_network(ref: str, weights: Optional[str] = None, arch: Optional[str] = None, dataset: Optional[str] = None,
                 info: Optional[DatasetInfo] = None, device="cpu", seed: int = 0) -> Tuple[nn.Module, Dict[str, Any]]:
    """``(model in eval mode on device, meta)`` for a reference (see the module docstring).

    ``dataset`` / ``info``: the data the network is used on, for what the reference does not tell (a bare
    state_dict's classes, a spec's classes, channels and input size). ``meta`` always holds ``model``,
    ``n_classes``, ``n_channels`` and ``input_size`` (None where unknown) and ``network`` (the kind)."""
    kind = network_kind(ref)
    if kind == "module":
        if weights is not None:
            raise UserError(f"{ref} is a module from Python: load its weights into it before passing it")
        if ref not in _MODULES:
            raise UserError(f"{ref} names a Python module of another process; name the network by a checkpoint, "
                            f"or by a spec (torchvision:NAME, timm:NAME, MODULE:FUNCTION) with its weights file")
        model = _MODULES[ref].to(device).eval()
        meta = {"model": type(model).__name__, **_info_fields(info), "dataset": info.name if info else dataset}
        if info is not None:
            meta["n_classes"] = _check_module_fits(model, info, device)
    elif kind == "spec":
        fields = _info_fields(info)
        model, meta = load_model_spec(ref, weights, n_classes=fields.get("n_classes"),
                                      n_channels=fields.get("n_channels"), input_size=fields.get("input_size"),
                                      device=device, seed=seed)
        meta["dataset"] = info.name if info else dataset
    else:
        if weights is not None:
            raise UserError(f"--weights is for a model spec (torchvision:NAME, timm:NAME, MODULE:FUNCTION); {ref} "
                            f"is a checkpoint, which holds its weights")
        model, meta = load_checkpoint(ref, arch, dataset, device)
    meta["network"] = kind
    return model, meta


def _check_module_fits(model: nn.Module, info: DatasetInfo, device) -> int:
    """A module from Python must take the data's inputs and give one output per class (one line otherwise);
    returns its number of outputs."""
    shape = (info.n_channels, *info.input_size)
    try:
        with torch.no_grad():
            out = model(torch.zeros(2, *shape, device=device))
    except Exception as err:  # noqa: BLE001 - any failure here means the module cannot take these inputs
        raise UserError(f"the module {type(model).__name__} cannot take the data's inputs of shape {list(shape)} "
                        f"({type(err).__name__}: {str(err).strip().splitlines()[0][:160] if str(err).strip() else ''})")
    out = out[0] if isinstance(out, (tuple, list)) else out
    # the user's own data count their classes from the labels they hold: a classifier with more outputs fits
    fits = (lambda k: k >= info.n_classes) if info.name == USER_DATA else (lambda k: k == info.n_classes)
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or not fits(out.shape[1]):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise UserError(f"the module {type(model).__name__} gives outputs of shape {got} for the data's inputs, but the "
                        f"data have {info.n_classes} classes; give a classifier with {info.n_classes} outputs")
    return int(out.shape[1])


def parameters_digest(model: nn.Module) -> str:
    """SHA-256 of a module's parameters and buffers (names, shapes, dtypes and values)."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def network_digest(ref: str, weights: Optional[str] = None, model: Optional[nn.Module] = None,
                   meta: Optional[Dict[str, Any]] = None) -> str:
    """The SHA-256 a result records for a network: of its checkpoint or weights file, else of the loaded
    ``model``'s parameters (a module from Python, a spec without weights). ``meta``: what :func:`load_network`
    returned, whose ``weights_sha256`` (hashed while loading) saves reading the weights file again."""
    if weights is not None:
        return (meta or {}).get("weights_sha256") or checkpoint_digest(weights)
    if network_kind(ref) == "checkpoint":
        return checkpoint_digest(ref)
    if model is None:
        model, _ = load_network(ref)
    return parameters_digest(model)


def network_path(ref: str) -> str:
    """What results record as the network's location: a checkpoint's absolute path, else the reference itself."""
    return str(Path(ref).resolve()) if network_kind(ref) == "checkpoint" else ref


def random_copy(module: nn.Module, seed: int) -> nn.Module:
    """A deep copy of ``module`` with every parameter re-initialised from ``seed`` (each submodule's own
    ``reset_parameters``, as when the network was built), buffers such as BatchNorm statistics reset too."""
    fresh = copy.deepcopy(module)
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        for sub in fresh.modules():
            for reset in ("reset_parameters", "reset_running_stats"):
                if callable(getattr(sub, reset, None)):
                    getattr(sub, reset)()
    finally:
        torch.random.set_rng_state(state)
    return fresh.eval()


#: Added to a control's seed for a model spec: a spec without weights is itself initialised from the job's seed
#: (0 by default, as the control seed is), and its control must not be the very same network.
CONTROL_SEED_OFFSET = 1_000_003


def random_network(ref: str, meta: Dict[str, Any], seed: int, info: Optional[DatasetInfo] = None,
                   device="cpu") -> nn.Module:
    """The random-weight control of a network: the same architecture, freshly initialised from ``seed`` (a spec from
    ``seed + CONTROL_SEED_OFFSET``)."""
    kind = network_kind(ref)
    if kind == "module":
        return random_copy(load_network(ref)[0], seed).to(device)
    if kind == "spec":
        return load_network(ref, info=info, device=device, seed=seed + CONTROL_SEED_OFFSET)[0]
    return create_model(meta["model"], n_classes=meta["n_classes"], n_channels=meta["n_channels"], seed=seed).to(device)
