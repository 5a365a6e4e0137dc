"""Selecting modules by exact name, glob or regular expression."""
import fnmatch
import re
from typing import Iterable, List, Sequence

from torch import nn

from src.errors import UserError

REGEX_PREFIX = "re:"


def module_names(model: nn.Module, leaves_only: bool = False) -> List[str]:
    """Names of the model's submodules in definition order (the root, named ``""``, excluded)."""
    names = []
    for name, module in model.named_modules():
        if not name:
            continue
        if leaves_only and any(True for _ in module.children()):
            continue
        names.append(name)
    return names


def _short_list(names: Sequence[str], limit: int = 40) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def get_module(model: nn.Module, name: str) -> nn.Module:
    """The submodule called ``name``; an unknown name is a :class:`UserError` listing the valid ones."""
    modules = dict(model.named_modules())
    if name and name in modules:
        return modules[name]
    valid = module_names(model)
    raise UserError(f"layer {name!r} does not exist in {type(model).__name__}; valid layers: {_short_list(valid)}")


def _matches(pattern: str, names: Iterable[str]) -> List[str]:
    if pattern.startswith(REGEX_PREFIX):
        try:
            regex = re.compile(pattern[len(REGEX_PREFIX):])
        except re.error as err:
            raise UserError(f"bad regular expression {pattern!r}: {err}") from err
        return [n for n in names if regex.fullmatch(n)]
    if any(ch in pattern for ch in "*?["):
        return [n for n in names if fnmatch.fnmatchcase(n, pattern)]
    return [n for n in names if n == pattern]


def resolve_layers(model: nn.Module, patterns: Sequence[str], leaves_only: bool = False) -> List[str]:
    """Module names selected by ``patterns``, without repeats, in the model's definition order.

    A pattern is an exact module name, a glob (``*``, ``?``, ``[...]``), or a regular expression
    written ``re:<expr>`` that must match the whole name. A pattern that selects nothing is an error.
    """
    if isinstance(patterns, str):
        patterns = [patterns]
    names = module_names(model)
    candidates = module_names(model, leaves_only=True) if leaves_only else names
    chosen = set()
    for pattern in patterns:
        # An exact name is always allowed, even a container when leaves_only is set.
        hits = _matches(pattern, names if pattern in names else candidates)
        if not hits:
            raise UserError(f"layer pattern {pattern!r} matches no layer of {type(model).__name__}; valid layers: {_short_list(names)}")
        chosen.update(hits)
    return [n for n in names if n in chosen]
