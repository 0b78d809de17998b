"""The one check of a value against a declared type: notebook parameters, grid values, config fields and
model options all go through :func:`fits` / :func:`coerce`.

A declared type is a typing object (``int``, ``float | None``, ``Optional[str]``, ``list[int]``,
``Literal["a", "b"]``) or its text as written in a notebook's parameters cell or a dataclass annotation
(``"Optional[str]"``, ``"int | str | None"``); :func:`parse_annotation` turns the text into the object.
Rules: an ``int`` is a ``float``, a ``bool`` is never a number, a ``tuple`` is a ``list``. Strings are
parsed for non-string types by :func:`parse_value` (the rule the CLI uses), so
``papermill -p study_losses '["dpsh", "hsc"]'`` gives the list, never the string.
"""
from __future__ import annotations

import ast
import json
import types
import typing
from typing import Any

from .errors import ConfigError

_NAMES = {"int": int, "float": float, "str": str, "bool": bool, "list": list, "dict": dict, "tuple": tuple,
          "None": type(None), "NoneType": type(None), "Any": Any, "Optional": typing.Optional,
          "Union": typing.Union, "List": typing.List, "Dict": typing.Dict, "Tuple": typing.Tuple,
          "Literal": typing.Literal}


def parse_value(text: str) -> Any:
    """A command-line or papermill string -> a Python value, by the one rule used everywhere.

    JSON when it parses (``16``, ``1e-3``, ``true``, ``null``, ``[16, 32]``, ``{"gamma": 5}``); Python's
    spellings ``True``/``False``/``None`` (what papermill writes); YAML flow syntax for a list or mapping
    (``[csq, dpsh]``, ``{gamma: 5}``); anything else stays the string. Non-strings pass unchanged.
    """
    if not isinstance(text, str):
        return text
    s = text.strip()
    try:
        return json.loads(s)
    except json.JSONDecodeError:
        pass
    if s in ("True", "False", "None"):
        return {"True": True, "False": False, "None": None}[s]
    if s[:1] in "[{":
        import yaml

        try:
            return yaml.safe_load(s)
        except yaml.YAMLError:
            return text
    return text


def parse_annotation(text: str | Any) -> Any:
    """The typing object of an annotation text such as ``"Optional[str]"`` or ``"float | None"``.

    A typing object passes unchanged. Text that names something else (a class of the notebook) gives
    ``Any`` (accepted unchecked).
    """
    if not isinstance(text, str):
        return text
    t = text.strip().strip("'\"")
    try:
        return eval(compile(ast.parse(t, mode="eval"), "<annotation>", "eval"), {"__builtins__": {}}, dict(_NAMES))
    except Exception:  # noqa: BLE001 - an annotation we cannot read is not checked
        return Any


def fits(value: Any, tp: Any) -> bool:
    """Whether ``value`` has the declared type ``tp`` (a typing object or its text)."""
    tp = parse_annotation(tp)
    if tp is Any:
        return True
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(fits(value, a) for a in typing.get_args(tp))
    if origin is typing.Literal:
        return value in typing.get_args(tp)
    if tp is type(None) or tp is None:
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp in (list, tuple) or origin in (list, tuple):
        args = typing.get_args(tp)
        return isinstance(value, (list, tuple)) and (not args or all(fits(v, args[0]) for v in value))
    if tp is dict or origin is dict:
        return isinstance(value, dict)
    return isinstance(value, origin or tp) if isinstance(origin or tp, type) else True


def type_name(tp: Any) -> str:
    """A reader's name of a declared type: ``"int or None"``, ``"one of 'a', 'b'"``, ``"list"``."""
    tp = parse_annotation(tp)
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_name(a) for a in typing.get_args(tp))
    if origin is typing.Literal:
        return "one of " + ", ".join(map(repr, typing.get_args(tp)))
    if tp is type(None) or tp is None:
        return "None"
    if tp is Any:
        return "any value"
    if origin in (list, tuple) and typing.get_args(tp):  # list[int]: the items' type too
        return f"list[{type_name(typing.get_args(tp)[0])}]"
    return getattr(tp, "__name__", str(tp))


def infer_type(default: Any) -> Any:
    """The declared type of a parameter written without annotation, from its default's value."""
    if default is None:
        return Any
    return {bool: bool, int: int, float: float, str: str, list: list, dict: dict, tuple: list}.get(type(default), Any)


def coerce(name: str, value: Any, tp: Any, *, where: str = "parameter") -> Any:
    """``value`` checked against the declared type ``tp``; a string is parsed when the type is not ``str``.

    Returns the value (parsed from its text when that is what makes it fit). Raises ConfigError naming
    ``where``, ``name``, the value and the expected type when it does not fit.
    """
    if fits(value, tp):
        return value
    if isinstance(value, str):
        parsed = parse_value(value)
        if fits(parsed, tp):
            return parsed
    raise ConfigError(f"{where} {name}={value!r} ({type(value).__name__}) must be {type_name(tp)}"
                      + (" (a string is parsed as JSON/YAML, e.g. '[16, 32]' or '{\"gamma\": 5}')"
                         if isinstance(value, str) else ""))
