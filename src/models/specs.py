"""Models given as a *spec* (a torchvision or timm architecture, or your own constructor) instead of a zoo checkpoint.

``load_model_spec(spec, weights=None, n_classes=..., n_channels=..., input_size=..., device=..., seed=0)``
returns ``(model in eval mode, meta)``; ``is_model_spec(text)`` tells a spec from a checkpoint path
(an existing file is always a checkpoint); ``read_weights(path)`` reads a weights file on its own.

Spec syntax::

    torchvision:NAME[?KEY=VALUE,...]     torchvision.models.get_model(NAME, weights=None, num_classes=K, ...)
    timm:NAME[?KEY=VALUE,...]            timm.create_model(NAME, pretrained=False, num_classes=K, in_chans=C, ...)
    MODULE:FUNCTION[?KEY=VALUE,...]      FUNCTION from the importable MODULE (dotted), returning an nn.Module

Examples: ``torchvision:resnet18``, ``timm:resnet18``,
``timm:vit_tiny_patch16_224?img_size=32,patch_size=4,depth=2``, ``my_models:small_cnn?width=64``.

The part after ``?`` is keyword arguments for the constructor, separated by ``,`` or ``&``
(``?img_size=32&patch_size=4`` is the same; prefer ``,`` on a command line, where ``&`` must be
quoted). A value is read as a Python literal (``32``, ``0.1``, ``(32, 32)``, ``True``, ``'text'``)
or, when it is none, as the plain text (``global_pool=avg``); ``true``/``false``/``none`` work too.
``num_classes``/``n_classes`` and ``in_chans``/``n_channels``/``in_channels`` given there fix the
number of classes and channels (they win over the weights and the data).

What the constructor is given:

* the number of classes (``num_classes``) and, for timm, of input channels (``in_chans``): from a
  project checkpoint's metadata, else from the weights (the classifier's weight: timm's declared
  classifier, then ``fc``/``head``/``classifier``/``heads.head``..., else the last 2-d weight; the
  channels from the first convolution's weight), else from the caller (the dataset's values);
  without any of them the constructor's own default (1000 classes, 3 channels) stays;
* the input size, to models that take one (timm's ``img_size``, torchvision ViTs' ``image_size``):
  from the weights of a ViT (position embedding and patch size, so ``timm:vit_tiny_patch16_224`` with
  weights trained at ``img_size=32, patch_size=4`` rebuilds that model), else from the caller.
  Models that do not take it (most CNNs, which pool adaptively) are built without it.
* ``MODULE:FUNCTION`` is called with the keyword arguments it accepts among ``num_classes`` /
  ``n_classes`` and ``in_chans`` / ``n_channels`` / ``in_channels``, plus the spec's own; MODULE is
  imported from ``sys.path`` and, failing that, from the current folder.

Weights (optional) come from a file holding a state_dict: a plain one (``torch.save(model.state_dict(), path)``),
one inside a dict under a usual key (``state_dict``, ``model_state_dict``, ``model``, ``net``,
``weights``, ``ema`` ...), a checkpoint of this project (:mod:`src.models.checkpoint`) or a
``.safetensors`` file. ``torch.load(..., weights_only=True)`` reads it after the zip archive's CRC
check of :func:`~src.models.checkpoint.verify_archive`; a ``module.`` (DataParallel) or ``_orig_mod.``
(torch.compile) prefix is stripped, tensors that are not finite are refused, and loading is strict.
Without weights the model is randomly initialised from ``seed`` (controls, tests); ``meta`` says so.

Nothing is ever downloaded (``weights=None`` / ``pretrained=False``). To use pretrained weights,
save them once on a machine with internet and give the file::

    import torch, torchvision, timm
    torch.save(torchvision.models.resnet18(weights="DEFAULT").state_dict(), "resnet18.pt")
    torch.save(timm.create_model("vit_tiny_patch16_224", pretrained=True).state_dict(), "vit_tiny.pt")

then ``load_model_spec("torchvision:resnet18", "resnet18.pt")`` (1000 classes, read from the file).
"""
import ast
import difflib
import importlib
import inspect
import math
import os
import pickle
import re
import sys
import zipfile
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.nn.modules.utils import consume_prefix_in_state_dict_if_present

from src.errors import UserError
from src.models.checkpoint import FORMAT, _file_kind, _first_line, _load_error, checkpoint_digest, verify_archive

SOURCES = ("torchvision", "timm")
# Keys under which training scripts keep the state_dict, in the order they are tried (the model's own
# weights before an EMA copy).
STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model", "net", "network", "weights", "params", "module",
                   "state_dict_ema", "model_ema", "ema")
# Classifier weights of common architectures (torchvision, timm and most hand-written models).
HEAD_KEYS = ("fc.weight", "head.weight", "head.fc.weight", "heads.head.weight", "classifier.weight",
             "last_linear.weight", "head.l.weight", "linear.weight", "logits.weight")
CLASS_ALIASES = ("num_classes", "n_classes")
CHANNEL_ALIASES = ("in_chans", "n_channels", "in_channels")
SIZE_ALIASES = ("img_size", "image_size")
_PREFIXES = ("module.", "_orig_mod.")
_IDENT = re.compile(r"[A-Za-z_]\w*")
_MODULE = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*")
_MODEL_NAME = re.compile(r"[A-Za-z0-9_]+(?:\.[A-Za-z0-9_-]+)?")  # timm: NAME[.pretrained_tag]
_LOAD_ERRORS = (pickle.UnpicklingError, EOFError, RuntimeError, zipfile.BadZipFile, ValueError, OSError, KeyError,
                IndexError, TypeError, AttributeError, AssertionError)


@dataclass(frozen=True)
class ModelSpec:
    """A parsed spec: ``source`` is ``torchvision``, ``timm`` or ``callable``; ``name`` the model or ``MODULE:FUNCTION``."""
    text: str
    source: str
    name: str
    kwargs: Dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------- parsing

def is_model_spec(text) -> bool:
    """Whether ``text`` is a model spec rather than a checkpoint path (an existing file is always a checkpoint)."""
    if not isinstance(text, str):
        return False
    text = text.strip()
    if not text or Path(text).is_file():
        return False
    head = text.split("?", 1)[0]
    prefix, colon, rest = head.partition(":")
    if not colon:
        return False
    if prefix.lower() in SOURCES:
        return True
    return bool(_MODULE.fullmatch(prefix) and _IDENT.fullmatch(rest))


def parse_model_spec(text: str) -> ModelSpec:
    """Split a spec into source, name and keyword arguments; a malformed one is a :class:`UserError`."""
    text = str(text).strip()
    head, _, query = text.partition("?")
    prefix, colon, name = head.partition(":")
    if not colon or not prefix or not name:
        raise UserError(f"{text!r} is not a model spec; write torchvision:NAME, timm:NAME or MODULE:FUNCTION, "
                        f"optionally followed by ?KEY=VALUE,... (e.g. timm:vit_tiny_patch16_224?img_size=32,patch_size=4)")
    kwargs = _parse_kwargs(query, text)
    if prefix.lower() in SOURCES:
        source = prefix.lower()
        if not _MODEL_NAME.fullmatch(name):
            raise UserError(f"{text!r}: {name!r} is not a {source} model name (letters, digits and _; hub names such "
                            f"as hf-hub:... are not supported, since nothing is downloaded: save the weights once "
                            f"and give the file)")
        return ModelSpec(text, source, name, kwargs)
    if not _MODULE.fullmatch(prefix) or not _IDENT.fullmatch(name):
        raise UserError(f"{text!r} is not a model spec: MODULE:FUNCTION needs a dotted module name and a function "
                        f"name (e.g. my_models:small_cnn)")
    return ModelSpec(text, "callable", f"{prefix}:{name}", kwargs)


def _split_top_level(query: str) -> List[str]:
    """``query`` split at ``,`` and ``&`` outside brackets and quotes (so ``img_size=(32,32)`` stays one part)."""
    parts, depth, quote, current = [], 0, "", []
    for char in query:
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif char in ",&" and depth == 0:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    return [part.strip() for part in parts if part.strip()]


def _parse_value(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return {"true": True, "false": False, "none": None}.get(text.lower(), text)


def _parse_kwargs(query: str, spec: str) -> Dict[str, Any]:
    kwargs: Dict[str, Any] = {}
    for part in _split_top_level(query):
        key, equals, value = part.partition("=")
        key, value = key.strip(), value.strip()
        if not equals or not _IDENT.fullmatch(key) or not value:
            raise UserError(f"{spec!r}: {part!r} is not KEY=VALUE; write the arguments as ?img_size=32,patch_size=4")
        if key in kwargs:
            raise UserError(f"{spec!r} gives {key} twice")
        kwargs[key] = _parse_value(value)
    return kwargs


def _pop_alias(kwargs: Dict[str, Any], aliases: Sequence[str], what: str, spec: str) -> Optional[int]:
    given = {name: kwargs.pop(name) for name in aliases if name in kwargs}
    values = set(map(repr, given.values()))
    if len(values) > 1:
        raise UserError(f"{spec!r} gives the {what} twice with different values ({given})")
    if not given:
        return None
    value = next(iter(given.values()))
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise UserError(f"{spec!r}: the {what} must be a non-negative integer, not {value!r}")
    return value


# ---------------------------------------------------------------------------------------------- weights

def read_weights(path) -> Tuple[Dict[str, torch.Tensor], Optional[Dict[str, Any]], Optional[str]]:
    """``(state_dict, meta, key)`` of a weights file: ``meta`` for a project checkpoint, ``key`` where the state_dict was found.

    The state_dict has its ``module.`` / ``_orig_mod.`` prefix stripped and only finite tensors; anything
    else is a one-line :class:`UserError`.
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"weights file {path} does not exist; check the path")
    if not path.is_file():
        raise UserError(f"weights file {path} is not a file")
    meta, key = None, None
    if _is_safetensors(path):
        obj = _load_safetensors(path)
    else:
        if _file_kind(path) == "zip":  # a one-line error for an empty file or one torch.save did not write
            verify_archive(path)
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except _LOAD_ERRORS as err:  # torch on a damaged or foreign file
            raise UserError(_load_error(path, err)) from err
    if isinstance(obj, dict) and obj.get("format") == FORMAT and isinstance(obj.get("state_dict"), dict):
        state, meta, key = obj["state_dict"], obj.get("meta"), "state_dict"
    else:
        found = _find_state_dict(obj)
        if found is None:
            raise UserError(f"{path} holds no state_dict: {_describe(obj)}; save one with "
                            f"torch.save(model.state_dict(), path) or under one of the keys {', '.join(STATE_DICT_KEYS)}")
        state, key = found
    state = _strip_prefixes(state)
    _check_finite(state, path)
    return state, meta, key


def _is_safetensors(path: Path) -> bool:
    """safetensors: an 8-byte little-endian header length, then the JSON header."""
    with open(path, "rb") as handle:
        head = handle.read(9)
    return len(head) == 9 and head[8:9] == b"{" and 2 <= int.from_bytes(head[:8], "little") <= path.stat().st_size


def _load_safetensors(path: Path) -> Dict[str, torch.Tensor]:
    try:
        from safetensors.torch import load_file
    except ImportError as err:
        raise UserError(f"{path} is a safetensors file; install safetensors (pip install safetensors) to read it, "
                        f"or save the weights with torch.save") from err
    try:
        return load_file(str(path), device="cpu")
    except Exception as err:  # safetensors raises its own SafetensorError on a damaged file
        raise UserError(f"{path} is not a readable safetensors file ({_first_line(err)})") from err


def _is_state_dict(obj) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(key, str) for key in obj) and \
        all(isinstance(value, torch.Tensor) for value in obj.values())


def _find_state_dict(obj, depth: int = 0) -> Optional[Tuple[Dict[str, torch.Tensor], Optional[str]]]:
    if _is_state_dict(obj):
        return obj, None
    if not isinstance(obj, dict) or depth >= 2:
        return None
    for key in STATE_DICT_KEYS:
        if key in obj:
            found = _find_state_dict(obj[key], depth + 1)
            if found is not None:
                return found[0], key if found[1] is None else f"{key}.{found[1]}"
    return None


def _describe(obj) -> str:
    if isinstance(obj, dict):
        keys = [str(key) for key in obj][:8]
        more = ", ..." if len(obj) > 8 else ""
        return f"a dict with the keys {', '.join(keys)}{more}" if keys else "an empty dict"
    return f"a {type(obj).__name__}"


def _strip_prefixes(state: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """A copy of ``state`` without a ``module.`` / ``_orig_mod.`` prefix on every key; the modules' version
    metadata (``_metadata``, which BatchNorm and others read when loading) is kept, its keys stripped too."""
    metadata = getattr(state, "_metadata", None)
    state = OrderedDict(state)
    if metadata is not None:
        state._metadata = OrderedDict(metadata)
    changed = True
    while changed:
        changed = False
        for prefix in _PREFIXES:
            if state and all(key.startswith(prefix) for key in state):
                consume_prefix_in_state_dict_if_present(state, prefix)
                changed = True
    return state


def _check_finite(state: Mapping[str, torch.Tensor], path) -> None:
    for key, tensor in state.items():
        if (tensor.is_floating_point() or tensor.is_complex()) and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise UserError(f"the weights in {path} are not finite: tensor {key!r} holds {bad} NaN or infinite "
                            f"value(s) of {tensor.numel()}; the training diverged or the file is damaged, use "
                            f"an earlier snapshot")


# ---------------------------------------------------------------------------------------------- inference

def infer_n_classes(state: Mapping[str, torch.Tensor], head: Optional[str] = None) -> Optional[int]:
    """Classes from the classifier's weight: ``head`` (e.g. timm's declared classifier), a known head name,
    else the last 2-d weight (the last 1x1 convolution's when there is none); ``None`` when there is none."""
    names = ([f"{head}.weight"] if head else []) + list(HEAD_KEYS)
    for name in names:
        tensor = state.get(name)
        if tensor is not None and (tensor.dim() == 2 or (tensor.dim() == 4 and tensor.shape[2:] == (1, 1))):
            return int(tensor.shape[0])
    if head and f"{head}.weight" not in state:
        return None  # the declared head is absent: a headless (feature) model, not a guess from the body
    last = [tensor for key, tensor in state.items() if key.endswith("weight") and tensor.dim() == 2]
    if not last:  # all-convolutional (SqueezeNet): the last 1x1 convolution classifies
        last = [tensor for key, tensor in state.items()
                if key.endswith("weight") and tensor.dim() == 4 and tensor.shape[2:] == (1, 1)]
    return int(last[-1].shape[0]) if last else None


def infer_n_channels(state: Mapping[str, torch.Tensor], first_conv: Optional[str] = None) -> Optional[int]:
    """Input channels from the first convolution's weight (``first_conv``, else the first 4-d weight)."""
    tensor = state.get(f"{first_conv}.weight") if first_conv else None
    if tensor is None or tensor.dim() != 4:
        tensor = next((t for key, t in state.items() if key.endswith("weight") and t.dim() == 4), None)
    return int(tensor.shape[1]) if tensor is not None else None


def infer_vit_geometry(state: Mapping[str, torch.Tensor]) -> Optional[Tuple[int, int]]:
    """``(image size, patch size)`` of a ViT's weights (timm's ``pos_embed`` or torchvision's
    ``encoder.pos_embedding`` with the patch convolution), for a square grid; ``None`` otherwise."""
    for pos_key, patch_key in (("pos_embed", "patch_embed.proj.weight"), ("encoder.pos_embedding", "conv_proj.weight")):
        pos, patch = state.get(pos_key), state.get(patch_key)
        if pos is None or patch is None or pos.dim() != 3 or patch.dim() != 4 or patch.shape[2] != patch.shape[3]:
            continue
        tokens = int(pos.shape[1])
        for prefix in range(9):  # class, distillation and register tokens
            grid = math.isqrt(max(tokens - prefix, 0))
            if grid > 0 and grid * grid == tokens - prefix:
                return grid * int(patch.shape[2]), int(patch.shape[2])
    return None


def _size(value, what: str) -> Optional[List[int]]:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return [value, value]
    if isinstance(value, (tuple, list)) and len(value) in (2, 3) and \
            all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value):
        return [int(value[-2]), int(value[-1])]
    raise UserError(f"{what} must be a positive integer or (height, width), not {value!r}")


def _positive(value, what: str) -> Optional[int]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"{what} must be a positive integer, not {value!r}")
    return value


# ---------------------------------------------------------------------------------------------- builders

@dataclass
class _Plan:
    """What a source needs to build: the constructor, the keyword arguments that must be passed (the spec's)
    and those passed only where the constructor takes them (sizes from the weights or the data)."""
    build: Callable[..., nn.Module]
    fixed: Dict[str, Any]
    optional: Dict[str, Any]
    head: Optional[str] = None
    first_conv: Optional[str] = None
    default_size: Optional[List[int]] = None
    fixed_size: bool = False


def _suggest(name: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(name.lower(), list(known), n=5, cutoff=0.6)
    return f"; did you mean {', '.join(close)}?" if close else ""


def _torchvision_plan(spec: ModelSpec) -> _Plan:
    import torchvision.models as tv_models

    name = spec.name.lower()
    classification = tv_models.list_models(module=tv_models)
    if name not in classification:
        if name in tv_models.list_models():
            raise UserError(f"torchvision:{spec.name} is not an image classification model; give one of "
                            f"torchvision.models.list_models(module=torchvision.models) such as resnet18 or vit_b_16")
        raise UserError(f"unknown torchvision model {spec.name!r}{_suggest(name, classification)} "
                        f"(torchvision.models.list_models(module=torchvision.models) lists them)")
    default_size = [224, 224]  # the input size of its ImageNet weights' evaluation transform, where it says
    try:
        crop = list(tv_models.get_model_weights(name).DEFAULT.transforms().crop_size)
    except (ValueError, KeyError, AttributeError, TypeError):  # no weights enum or transform: metadata only
        crop = []
    if len(crop) in (1, 2) and all(isinstance(v, int) and v > 0 for v in crop):
        default_size = [crop[0], crop[-1]]

    def build(**kwargs):
        return tv_models.get_model(name, weights=None, **kwargs)

    return _Plan(build, {}, {}, head=None, first_conv=None, default_size=default_size)


def _timm_plan(spec: ModelSpec) -> _Plan:
    try:
        import timm
        from timm.models import get_pretrained_cfg
    except ImportError as err:
        raise UserError(f"{spec.text} needs timm; install it with pip install 'timm>=1.0,<1.1'") from err
    base = spec.name.split(".", 1)[0].lower()
    if not timm.is_model(base):
        raise UserError(f"unknown timm model {spec.name!r}{_suggest(base, timm.list_models())} "
                        f"(timm.list_models() lists them)")
    try:
        cfg = get_pretrained_cfg(spec.name.lower())
    except RuntimeError as err:  # an unknown pretrained tag (NAME.TAG)
        tags = timm.list_pretrained(f"{base}.*")
        raise UserError(f"timm has no {spec.name!r} ({_first_line(err)}); its tags: {', '.join(tags[:8]) or 'none'}"
                        f"{', ...' if len(tags) > 8 else ''} (a tag only selects timm's default settings here)") from err
    head = cfg.classifier if cfg is not None else None
    head = head[0] if isinstance(head, (tuple, list)) else head
    first = cfg.first_conv if cfg is not None else None
    first = first[0] if isinstance(first, (tuple, list)) else first
    size = _size(cfg.input_size, "input size") if cfg is not None and cfg.input_size else None

    def build(**kwargs):
        return timm.create_model(spec.name.lower(), pretrained=False, **kwargs)

    return _Plan(build, {}, {}, head=head, first_conv=first, default_size=size,
                 fixed_size=bool(cfg is not None and cfg.fixed_input_size))


def _import_module(module: str, spec: str):
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        if not _is_missing(err, module):
            raise UserError(f"importing {module} for {spec} failed: {type(err).__name__}: {_first_line(err)}") from err
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
        importlib.invalidate_caches()
        try:
            return importlib.import_module(module)
        except ModuleNotFoundError as err:
            if not _is_missing(err, module):
                raise UserError(f"importing {module} for {spec} failed: {type(err).__name__}: "
                                f"{_first_line(err)}") from err
        except Exception as err:
            raise UserError(f"importing {module} for {spec} failed: {type(err).__name__}: {_first_line(err)}") from err
        finally:
            if sys.path and sys.path[0] == cwd:
                del sys.path[0]
    close = difflib.get_close_matches(module.lower(), SOURCES, n=1, cutoff=0.7)
    hint = f"; did you mean {close[0]}:NAME?" if close else ""
    raise UserError(f"cannot import module {module!r} of the spec {spec} (looked on sys.path and in {cwd}); put the "
                    f"file on PYTHONPATH or run from its folder{hint}")


def _is_missing(err: ModuleNotFoundError, module: str) -> bool:
    """Whether ``module`` itself (or a package above it) is what was not found, not an import inside it."""
    missing = err.name or ""
    return missing == module or module.startswith(missing + ".")


def _callable_plan(spec: ModelSpec) -> Tuple[_Plan, Optional[inspect.Signature]]:
    module_name, function_name = spec.name.split(":")
    try:
        module = _import_module(module_name, spec.text)
    except UserError:
        raise
    except Exception as err:  # the module's own code failed (SyntaxError, a missing dependency, ...)
        raise UserError(f"importing {module_name} for {spec.text} failed: {type(err).__name__}: "
                        f"{_first_line(err)}") from err
    function = getattr(module, function_name, None)
    if function is None:
        known = [name for name, value in vars(module).items() if callable(value) and not name.startswith("_")]
        raise UserError(f"module {module_name} ({getattr(module, '__file__', '?')}) has no {function_name!r}"
                        f"{_suggest(function_name, known)}")
    if not callable(function):
        raise UserError(f"{spec.name} is not a function returning an nn.Module (it is of type {type(function).__name__})")
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        signature = None
    return _Plan(function, {}, {}), signature


def _callable_kwargs(spec: ModelSpec, signature: Optional[inspect.Signature], n_classes, n_channels) -> Dict[str, Any]:
    """The keyword arguments ``MODULE:FUNCTION`` is called with: the class and channel counts under the names it
    takes, and the spec's own (an argument it does not take is an error)."""
    params = signature.parameters if signature is not None else {}
    takes_any = signature is None or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    named = {name for name, p in params.items()
             if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)}
    kwargs: Dict[str, Any] = {}
    for aliases, value in ((CLASS_ALIASES, n_classes), (CHANNEL_ALIASES, n_channels)):
        if value is not None:
            kwargs.update({name: value for name in aliases if name in named})
    unknown = [key for key in spec.kwargs if key not in named] if not takes_any else []
    if unknown:
        raise UserError(f"{spec.name} takes no argument {', '.join(unknown)} (it takes "
                        f"{', '.join(sorted(named)) or 'no keyword arguments'}); fix the ?KEY=VALUE part of {spec.text}")
    kwargs.update(spec.kwargs)
    return kwargs


def _construct(plan: _Plan, spec: ModelSpec, seed: int) -> Tuple[nn.Module, Dict[str, Any]]:
    """Build with ``plan.fixed`` and those of ``plan.optional`` the constructor takes; returns the model and the
    keyword arguments it was built with. The weights come from ``torch.manual_seed(seed)`` in a forked state."""
    kwargs = {**plan.optional, **plan.fixed}
    while True:
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                model = plan.build(**kwargs)
        except TypeError as err:
            unexpected = re.search(r"unexpected keyword argument '(\w+)'", str(err))
            if unexpected and unexpected.group(1) in plan.optional and unexpected.group(1) not in plan.fixed \
                    and unexpected.group(1) in kwargs:
                del kwargs[unexpected.group(1)]
                continue
            raise UserError(_build_error(spec, kwargs, err)) from err
        except UserError:
            raise
        except Exception as err:  # the constructor's own complaint about its arguments
            raise UserError(_build_error(spec, kwargs, err)) from err
        break
    if not isinstance(model, nn.Module):
        raise UserError(f"{spec.name} returned a {type(model).__name__}, not a torch.nn.Module; make it return the model")
    return model, kwargs


def _build_error(spec: ModelSpec, kwargs: Mapping[str, Any], err: Exception) -> str:
    args = ", ".join(f"{key}={value!r}" for key, value in kwargs.items())
    return f"building {spec.text} ({args}) failed: {type(err).__name__}: {_first_line(err)}"


# ---------------------------------------------------------------------------------------------- loading

def _fit_error(spec: ModelSpec, path, model: nn.Module, state: Mapping[str, torch.Tensor], err: Exception,
               n_classes, n_channels) -> str:
    own = model.state_dict()
    missing = [key for key in own if key not in state]
    unexpected = [key for key in state if key not in own]
    shapes = [f"{key} {list(state[key].shape)} in the file, {list(own[key].shape)} in the model"
              for key in own if key in state and state[key].shape != own[key].shape]
    parts = []
    for what, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes)):
        if keys:
            more = ", ..." if len(keys) > 3 else ""
            parts.append(f"{len(keys)} {what} ({'; '.join(keys[:3])}{more})")
    detail = ", ".join(parts) if parts else " ".join(str(err).split())[:300]
    hint = "check that the spec names the architecture the weights were saved from"
    file_channels = infer_n_channels(state)
    if spec.source == "torchvision" and file_channels not in (None, 3):
        hint = (f"torchvision's models take 3-channel input, the weights {file_channels}; use timm:NAME (in_chans) "
                f"or MODULE:FUNCTION for them")
    elif missing and not unexpected and not shapes and all(k.endswith("num_batches_tracked") for k in missing):
        hint = "only BatchNorm counters are missing"
    shape = ", ".join(f"{value} {what}" for value, what in ((n_classes, "classes"), (n_channels, "channels"))
                      if value is not None)
    return f"the weights in {path} do not fit {spec.text}{f' ({shape})' if shape else ''}: {detail}; {hint}"


def load_model_spec(spec: str, weights=None, *, n_classes: Optional[int] = None, n_channels: Optional[int] = None,
                    input_size=None, device="cpu", seed: int = 0) -> Tuple[nn.Module, Dict[str, Any]]:
    """Build the model a spec names, load ``weights`` (a file) strictly or initialise it from ``seed``.

    ``n_classes``, ``n_channels`` and ``input_size`` (int or (H, W)) are the data's values, used where the
    weights do not tell. Returns ``(model, meta)`` with the model in ``eval()`` mode on ``device`` and
    ``meta`` = {"spec", "model" (the spec), "source", "weights" (absolute path or None), "weights_sha256",
    "weights_key", "n_classes", "n_channels", "input_size", "initialisation", "init_seed", "kwargs"}.
    Every problem is a one-line :class:`UserError`.
    """
    parsed = parse_model_spec(spec)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise UserError(f"the seed must be an integer, not {seed!r}")
    n_classes = _positive(n_classes, "n_classes")
    n_channels = _positive(n_channels, "n_channels")
    data_size = _size(input_size, "input_size")
    spec_kwargs = dict(parsed.kwargs)
    spec_classes = _pop_alias(spec_kwargs, CLASS_ALIASES, "number of classes", parsed.text)
    spec_channels = _pop_alias(spec_kwargs, CHANNEL_ALIASES, "number of channels", parsed.text)
    parsed = ModelSpec(parsed.text, parsed.source, parsed.name, spec_kwargs)

    signature = None
    if parsed.source == "torchvision":
        plan = _torchvision_plan(parsed)
    elif parsed.source == "timm":
        plan = _timm_plan(parsed)
    else:
        plan, signature = _callable_plan(parsed)

    state, ckpt_meta, weights_key, weights_path = None, None, None, None
    if weights is not None:
        weights_path = Path(weights).expanduser().resolve()
        state, ckpt_meta, weights_key = read_weights(weights_path)
        if ckpt_meta is not None and not is_model_spec(str(ckpt_meta.get("model", ""))):
            raise UserError(f"{weights} is a checkpoint of the zoo model {ckpt_meta.get('model')!r}; give it as a "
                            f"checkpoint (without a spec), not as weights for {parsed.text}")
    ckpt_meta = ckpt_meta or {}

    classes = _first_known(spec_classes, ckpt_meta.get("n_classes"),
                           infer_n_classes(state, plan.head) if state is not None else None, n_classes)
    channels = _first_known(spec_channels, ckpt_meta.get("n_channels"),
                            infer_n_channels(state, plan.first_conv) if state is not None else None, n_channels)
    geometry = infer_vit_geometry(state) if state is not None else None
    ckpt_size = _size(ckpt_meta.get("input_size"), "the checkpoint's input_size")

    size_from_weights = ckpt_size or (geometry and [geometry[0], geometry[0]])
    wanted_size = size_from_weights or data_size
    if parsed.source == "torchvision":
        plan.fixed = dict(spec_kwargs)
        if classes is not None:
            plan.fixed["num_classes"] = classes
        if spec_channels not in (None, 3):
            raise UserError(f"{parsed.text}: torchvision's models take 3-channel input; use timm:NAME?in_chans="
                            f"{spec_channels} or MODULE:FUNCTION for {spec_channels} channels")
        if wanted_size and wanted_size[0] == wanted_size[1] and "image_size" not in spec_kwargs:
            plan.optional["image_size"] = wanted_size[0]  # torchvision's ViTs; other models are built without it
    elif parsed.source == "timm":
        plan.fixed = dict(spec_kwargs)
        if classes is not None:
            plan.fixed["num_classes"] = classes
        if spec_channels is not None:
            plan.fixed["in_chans"] = spec_channels
        elif channels is not None:
            plan.optional["in_chans"] = channels
        if wanted_size and "img_size" not in spec_kwargs:
            plan.optional["img_size"] = wanted_size[0] if wanted_size[0] == wanted_size[1] else tuple(wanted_size)
        if geometry and plan.first_conv == "patch_embed.proj" and "patch_size" not in spec_kwargs:
            plan.optional["patch_size"] = geometry[1]
    else:
        plan.fixed = _callable_kwargs(parsed, signature, classes, channels)

    model, used = _construct(plan, parsed, seed)

    if state is not None:
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as err:
            own = model.state_dict()
            raise UserError(_fit_error(parsed, weights, model, state, err, _first_known(classes, infer_n_classes(
                own, plan.head)), _first_known(infer_n_channels(own, plan.first_conv), channels))) from err

    own = model.state_dict()
    passed_classes = next((used[name] for name in CLASS_ALIASES if name in used), None)
    model_classes = getattr(model, "num_classes", None) if parsed.source == "timm" else None
    if not isinstance(model_classes, int) or isinstance(model_classes, bool):
        model_classes = infer_n_classes(own, plan.head)
    final_classes = _first_known(passed_classes, model_classes, classes)
    final_channels = _first_known(infer_n_channels(own, plan.first_conv),
                                  next((used[name] for name in CHANNEL_ALIASES if name in used), None), channels)
    built_size = next((used[name] for name in SIZE_ALIASES if name in used), None)
    built_size = _size(built_size, "the model's img_size") if isinstance(built_size, (int, tuple, list)) else None
    if built_size is None and plan.fixed_size:
        built_size = plan.default_size
    final_size = built_size or size_from_weights or data_size or plan.default_size

    try:
        model.to(device).eval()
    except (RuntimeError, AssertionError, ValueError) as err:  # no such device, or torch built without it
        raise UserError(f"cannot put {parsed.text} on device {device!r}: {_first_line(err)}") from err
    model.model_spec = parsed.text
    meta = {
        "spec": parsed.text, "model": parsed.text, "source": parsed.source,
        "weights": str(weights_path) if weights_path else None,
        "weights_sha256": checkpoint_digest(weights_path) if weights_path else None,
        "weights_key": weights_key,
        "n_classes": final_classes, "n_channels": final_channels, "input_size": final_size,
        "initialisation": "weights" if weights_path else f"random (seed {seed})",
        "init_seed": None if weights_path else seed,
        "kwargs": dict(used),
    }
    return model, meta


def _first_known(*values):
    return next((value for value in values if value is not None), None)
