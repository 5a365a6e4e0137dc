"""The model registry: model names and name patterns mapped to constructors.

Each model family registers itself with :func:`register_model`::

    @register_model("resnet20_w{k}", display="ResNet20_w{k}", aliases={"resnet20": "resnet20_w1"})
    def resnet20(n_classes, n_channels, k): ...

A ``{field}`` in a pattern matches a positive integer unless the decorator gives another regular
expression for it (``abcd=r"[12]{4}"``); the matched text is passed to the constructor as a keyword
argument (a string). A part in square brackets may be left out, its fields then take their
``defaults``: ``resnet_{abcd}[_w{k}]`` with ``defaults={"k": "64"}`` names ``resnet_2222`` and
``resnet_2222_w16``, and a name whose bracketed fields equal their defaults is written without the
part (``resnet_2222_w64`` is ``resnet_2222``). Names are case-insensitive and the display names
(folder names such as ``ResNet20_w1`` or ``NbnTiny10``) are accepted too.
"""
import re
from dataclasses import dataclass
from typing import Callable, Dict, List, Mapping, Optional, Tuple

import torch
from torch import nn

from src.errors import UserError

POSITIVE_INT = r"[1-9][0-9]*"
_FIELD = re.compile(r"\{(\w+)\}")
_OPTIONAL = re.compile(r"\[([^\[\]]*)\]")


def _compile_fixed(text: str, fields: Mapping[str, str]) -> str:
    """Regex source matching ``text`` (lower-cased, no brackets) with each ``{field}`` as a named group."""
    parts = []
    position = 0
    for match in _FIELD.finditer(text):
        parts.append(re.escape(text[position:match.start()].lower()))
        parts.append(f"(?P<{match.group(1)}>{fields[match.group(1)]})")
        position = match.end()
    parts.append(re.escape(text[position:].lower()))
    return "".join(parts)


def _compile(pattern: str, fields: Mapping[str, str]) -> "re.Pattern[str]":
    """A regex that matches ``pattern``; each ``[optional part]`` may be absent."""
    parts = []
    position = 0
    for match in _OPTIONAL.finditer(pattern):
        parts.append(_compile_fixed(pattern[position:match.start()], fields))
        parts.append(f"(?:{_compile_fixed(match.group(1), fields)})?")
        position = match.end()
    parts.append(_compile_fixed(pattern[position:], fields))
    return re.compile("".join(parts))


def _render(pattern: str, fields: Mapping[str, str], defaults: Mapping[str, str]) -> str:
    """``pattern`` with its fields filled in; an ``[optional part]`` whose fields all have their default is left out."""
    def optional(match: "re.Match[str]") -> str:
        inner = _FIELD.findall(match.group(1))
        return "" if all(fields[name] == defaults[name] for name in inner) else match.group(1)

    return _OPTIONAL.sub(optional, pattern).format(**fields)


@dataclass(frozen=True)
class _Entry:
    pattern: str
    display: str
    builder: Callable[..., nn.Module]
    note: str
    regexes: Tuple["re.Pattern[str]", ...]
    defaults: Mapping[str, str]

    def match(self, key: str) -> Optional[Dict[str, str]]:
        """The field values (defaults for left-out parts) if the lower-cased ``key`` names a model of this entry."""
        for regex in self.regexes:
            found = regex.fullmatch(key)
            if found:
                return {name: self.defaults[name] if value is None else value
                        for name, value in found.groupdict().items()}
        return None

    def canonical(self, fields: Mapping[str, str]) -> str:
        return _render(self.pattern, fields, self.defaults)

    def display_name(self, fields: Mapping[str, str]) -> str:
        return _render(self.display, fields, self.defaults)

    def describe(self) -> str:
        return f"{self.pattern} ({self.note})" if self.note else self.pattern


_ENTRIES: List[_Entry] = []
_ALIASES: Dict[str, str] = {}


def _optional_fields(pattern: str) -> List[str]:
    return [name for part in _OPTIONAL.findall(pattern) for name in _FIELD.findall(part)]


def register_model(name_or_pattern: str, display: Optional[str] = None, aliases: Optional[Mapping[str, str]] = None,
                   note: str = "", defaults: Optional[Mapping[str, str]] = None, **fields: str):
    """Decorator registering a model class or constructor ``builder(n_classes, n_channels, **fields)``.

    ``display`` is the folder name (same fields and bracketed parts as the pattern; default: the
    decorated object's ``__name__``), ``aliases`` maps extra names to canonical ones, ``note``
    explains the fields in help texts, ``defaults`` gives the value of each field in a ``[part]``
    that may be left out, and ``fields`` gives a regular expression per field (default: a positive integer).
    """
    names = _FIELD.findall(name_or_pattern)
    defaults = dict(defaults or {})
    unknown = (set(fields) | set(defaults)) - set(names)
    if unknown:
        raise ValueError(f"fields {sorted(unknown)} do not occur in {name_or_pattern!r}")
    if sorted(_optional_fields(name_or_pattern)) != sorted(defaults):
        raise ValueError(f"the fields in [brackets] of {name_or_pattern!r} and only they need defaults")
    regex_of = {name: fields.get(name, POSITIVE_INT) for name in names}

    def decorate(builder):
        shown = display or builder.__name__
        if sorted(_FIELD.findall(shown)) != sorted(names) or \
                sorted(_optional_fields(shown)) != sorted(_optional_fields(name_or_pattern)):
            raise ValueError(f"display name {shown!r} must have the fields and [parts] of {name_or_pattern!r}")
        if any(entry.pattern == name_or_pattern for entry in _ENTRIES):
            raise ValueError(f"model {name_or_pattern!r} is registered twice")
        regexes = (_compile(name_or_pattern, regex_of), _compile(shown, regex_of))
        _ENTRIES.append(_Entry(name_or_pattern, shown, builder, note, regexes, defaults))
        for alias, target in (aliases or {}).items():
            _ALIASES[alias.lower()] = target
        return builder

    return decorate


def list_models() -> List[str]:
    """Canonical names and patterns (``resnet20_w{k}``, ``resnet_{abcd}[_w{k}]``) of all registered models, in registration order."""
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
    return entry.canonical(fields)


def model_display_name(name: str) -> str:
    """The display name of a model, used as its folder name (``ResNet20_w1``, ``Tiny10``)."""
    entry, fields = _lookup(name)
    return entry.display_name(fields)


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
    model.zoo_name = entry.canonical(fields)
    return model
