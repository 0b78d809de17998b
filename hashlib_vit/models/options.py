"""Typed options of the model parts (backbone modifier, neck, hash layers): dataclasses, checked by field.

Every configurable part of a model declares its options as a dataclass (``Neck.Options``,
``HashLayer.Options``, :class:`~hashlib_vit.models.aem.AEMOptions`). :func:`make_options` builds one from
a plain mapping (``RunConfig.model_params``): an unknown name is a :class:`ConfigError` listing the
allowed ones, a value of the wrong type a :class:`ConfigError` naming the option, its value and the
expected type (read from the dataclass annotations, not from a function signature). Value checks
beyond the type live in the dataclass's ``__post_init__``.
"""
from __future__ import annotations

import dataclasses
import typing
from typing import Any, Mapping

from ..errors import ConfigError
from ..typecheck import fits, type_name


def option_names(cls) -> list[str]:
    """The option names of an options dataclass ``cls``, in declaration order."""
    return [f.name for f in dataclasses.fields(cls)]


def make_options(cls, params: Mapping[str, Any] | None, where: str):
    """Build the options dataclass ``cls`` from ``params`` (a mapping of option name -> value).

    ``where`` names the part in messages (e.g. ``"neck 'mgvt'"``). Raises :class:`ConfigError` for an
    unknown name (listing the allowed ones) or a value whose type does not match the field's annotation
    (an ``int`` is accepted for a ``float`` field, a ``bool`` never for a number); the dataclass's own
    ``__post_init__`` checks the values.
    """
    params = dict(params or {})
    names = option_names(cls)
    unknown = sorted(set(params) - set(names))
    if unknown:
        raise ConfigError(f"model parameter(s) {unknown} are not options of {where}; allowed: {names or 'none'}")
    hints = typing.get_type_hints(cls)
    for name, value in params.items():
        if not fits(value, hints[name]):
            raise ConfigError(f"model parameter {name}={value!r} ({where}) must be {type_name(hints[name])}")
    return cls(**params)


@dataclasses.dataclass(frozen=True)
class NoOptions:
    """Options of a part that has none."""


__all__ = ["make_options", "option_names", "NoOptions"]
