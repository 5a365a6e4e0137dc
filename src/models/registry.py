"""The model registry: model names and name patterns mapped to constructors.

Each model family registers itself with :func:`register_model`::

    @register_model("resnet20_w{k}", display="ResNet20_w{k}", aliases={"resnet20": "resnet20_w1"})
    def resnet20(n_classes, n_channels, k): ...

A ``{field}`` in a pattern matches a positive integer unless the decorator gives another regular
expression for it (``abcd=r"[12]{4}"``); the matched text is passed to the constructor as a keyword
argument (a string). Names are case-insensitive and the display names (folder names such as
``ResNet20_w1`` or ``NbnTiny10``) are accepted too.
"""
import re
from dataclasses import dataclass
from typing import Callable, Dict, List, Mapping, Optional, Tuple

import torch
from torch import nn

from src.errors import UserError

POSITIVE_INT = r"[1-9][0-9]*"
_FIELD = re.compile(r"\{(\w+)\}")


def _compile(pattern: str, fields: Mapping[str, str]) -> "re.Pattern[str]":
    """A regex that matches ``pattern`` (lower-cased) with each ``{field}`` as a named group."""
    parts = []
    position = 0
    for match in _FIELD.finditer(pattern):
        parts.append(re.escape(pattern[position:match.start()].lower()))
        parts.append(f"(?P<{match.group(1)}>{fields[match.group(1)]})")
        position = match.end()
    parts.append(re.escape(pattern[position:].lower()))
    return re.compile("".join(parts))


@dataclass(frozen=True)
class _Entry:
    pattern: str
    display: str
    builder: Callable[..., nn.Module]
    note: str
    regexes: Tuple["re.Pattern[str]", ...]

    def match(self, key: str) -> Optional[Dict[str, str]]:
        """The field values if the lower-cased ``key`` names a model of this entry, else ``None``."""
        for regex in self.regexes:
            found = regex.fullmatch(key)
            if found:
                return found.groupdict()
        return None

    def describe(self) -> str:
        return f"{self.pattern} ({self.note})" if self.note else self.pattern


_ENTRIES: List[_Entry] = []
_ALIASES: Dict[str, str] = {}


def register_model(name_or_pattern: str, display: Optional[str] = None, aliases: Optional[Mapping[str, str]] = None,
                   note: str = "", **fields: str):
    """Decorator registering a model class or constructor ``builder(n_classes, n_channels, **fields)``.

    ``display`` is the folder name (same fields as the pattern; default: the decorated object's
    ``__name__``), ``aliases`` maps extra names to canonical ones, ``note`` explains the fields in
    help texts, and ``fields`` gives a regular expression per field (default: a positive integer).
    """
    names = _FIELD.findall(name_or_pattern)
    unknown = set(fields) - set(names)
    if unknown:
        raise ValueError(f"fields {sorted(unknown)} do not occur in {name_or_pattern!r}")
    regex_of = {name: fields.get(name, POSITIVE_INT) for name in names}

    def decorate(builder):
        shown = display or builder.__name__
        if sorted(_FIELD.findall(shown)) != sorted(names):
            raise ValueError(f"display name {shown!r} must have the fields of {name_or_pattern!r}")
        if any(entry.pattern == name_or_pattern for entry in _ENTRIES):
            raise ValueError(f"model {name_or_pattern!r} is registered twice")
        regexes = (_compile(name_or_pattern, regex_of), _compile(shown, regex_of))
        _ENTRIES.append(_Entry(name_or_pattern, shown, builder, note, regexes))
        for alias, target in (aliases or {}).items():
            _ALIASES[alias.lower()] = target
        return builder

    return decorate


def list_models() -> List[str]:
    """Canonical names and patterns (``resnet20_w{k}``) of all registered models, in registration order."""
    return [entry.pattern for entry in _ENTRIES]


def _lookup(name: str) -> Tuple[_Entry, Dict[str, str]]:
    key = str(name).strip().lower()
    key = _ALIASES.get(key, key)
    for entry in _ENTRIES:
        fields = entry.match(key)
        if fields is not None:
            return entry, fields
    known = ", ".join(entry.describe() for entry in _ENTRIES)
    raise UserError(f"unknown model {name!r}; known models: {known}")


def canonical_model_name(name: str) -> str:
    """The canonical (lower-case) name of a model given in any case or as its display name."""
    entry, fields = _lookup(name)
    return entry.pattern.format(**fields)


def model_display_name(name: str) -> str:
    """The display name of a model, used as its folder name (``ResNet20_w1``, ``Tiny10``)."""
    entry, fields = _lookup(name)
    return entry.display.format(**fields)


def create_model(name: str, n_classes: int = 10, n_channels: int = 3, seed: Optional[int] = None) -> nn.Module:
    """A freshly initialised model for ``n_channels`` x 32 x 32 inputs and ``n_classes`` outputs.

    With a ``seed`` the weights come from ``torch.manual_seed(seed)`` in a forked random state, so
    the same seed gives the same weights and the caller's random state is left as it was; without
    one they are drawn from (and advance) the global generator. The model's ``zoo_name`` attribute
    holds its canonical name.
    """
    entry, fields = _lookup(name)
    for what, value in (("n_classes", n_classes), ("n_channels", n_channels)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserError(f"{what} must be a positive integer, not {value!r}")
    if seed is None:
        model = entry.builder(n_classes=n_classes, n_channels=n_channels, **fields)
    else:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            model = entry.builder(n_classes=n_classes, n_channels=n_channels, **fields)
    model.zoo_name = entry.pattern.format(**fields)
    return model
