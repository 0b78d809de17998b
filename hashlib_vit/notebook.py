"""Notebook parameters checked in the notebook's first code cell, before any work.

Every notebook declares its parameters in one cell tagged ``parameters`` with annotations
(``bits: int = 32``, ``study_losses: list = [...]``); those land in the kernel's ``__annotations__``.
Papermill injects the values it is given as a cell that starts with the line ``# Parameters`` and holds
plain assignments; plain papermill passes ``-p name '[1, 2]'`` as the *string* ``'[1, 2]'``. The next cell
calls ``check_parameters(globals())``, which

* refuses a name papermill injected that the notebook does not declare (``-p bitz 16``), with the close
  matches, instead of papermill's warning and a run with the defaults;
* checks every declared parameter against its annotation and parses strings for lists, dicts, numbers and
  booleans by the one rule of :func:`hashlib_vit.typecheck.parse_value`,
  writing the parsed value back into the namespace.

Both raise :class:`~hashlib_vit.errors.ConfigError` before any data is loaded or anything is written.
Without papermill (JupyterLab, nbval) the declared defaults are checked the same way.

The student edition of the course (``make student``; :mod:`hashlib_vit.course`) replaces each worked
solution by a call to :func:`exercise_unanswered`, which stops the notebook there with a message for the
student instead of a traceback from inside the library.
"""
from __future__ import annotations

import ast
import difflib
from typing import Any, MutableMapping

from .errors import ConfigError, ExerciseNotAnswered
from .typecheck import coerce

INJECTED_HEADER = "# Parameters"  # the first line of the cell papermill's Python translator writes


def injected_names(namespace: MutableMapping[str, Any]) -> list[str]:
    """The names assigned by the latest papermill-injected cell in the kernel's history (``In``), in order.

    Empty when the notebook runs without papermill. The injected cell is the most recent executed cell
    whose first line is exactly ``# Parameters``.
    """
    for source in reversed(list(namespace.get("In") or [])):
        if not isinstance(source, str) or source.split("\n", 1)[0].strip() != INJECTED_HEADER:
            continue
        try:
            tree = ast.parse(source)
        except SyntaxError:
            return []
        names = []
        for node in tree.body:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
                node, ast.AnnAssign) else []
            names += [t.id for t in targets if isinstance(t, ast.Name)]
        return names
    return []


def check_parameters(namespace: MutableMapping[str, Any], *, where: str = "notebook parameter") -> dict[str, Any]:
    """Check (and parse) a notebook's parameters in place; returns ``{name: value}`` of the declared ones.

    ``namespace`` is the notebook's ``globals()``: its ``__annotations__`` are the declared parameters
    and their types. Raises ConfigError for an injected name that is not declared (naming the close
    matches and the declared names) and for a value that does not have its declared type after parsing.
    """
    declared = dict(namespace.get("__annotations__") or {})
    if not declared:
        raise ConfigError("this notebook declares no annotated parameters (its 'parameters' cell must run first)")
    unknown = [n for n in injected_names(namespace) if n not in declared]
    if unknown:
        hints = []
        for n in unknown:
            close = difflib.get_close_matches(n, declared, n=3)
            hints.append(f"{n!r}" + (f" (did you mean {', '.join(close)}?)" if close else ""))
        raise ConfigError(f"unknown {where}(s) {', '.join(hints)}; this notebook's parameters are: "
                          f"{', '.join(declared)} (papermill --help-notebook lists them with their defaults)")
    out = {}
    for name, tp in declared.items():
        if name not in namespace:
            continue
        value = coerce(name, namespace[name], tp, where=where)
        namespace[name] = out[name] = value
    return out


def exercise_unanswered(exercise_id: str) -> None:
    """Stop a student-edition notebook at an exercise that has not been answered yet.

    The student edition (:func:`hashlib_vit.course.student_edition`) puts a call to this function in place
    of each worked solution cell. Always raises :class:`~hashlib_vit.errors.ExerciseNotAnswered` whose
    message (the whole ``evalue`` a notebook front end shows) names the exercise and says what to do.
    The student sees one line, ``ExerciseNotAnswered: <message>`` (the error's ``_render_traceback_``, which
    IPython shows in place of a traceback), and no library frame; ``__tracebackhide__`` does the same for
    pytest and the debugger. ``exercise_id`` is ``"N.k"`` (lesson N, exercise k), e.g. ``"3.2"``.
    """
    __tracebackhide__ = True
    raise ExerciseNotAnswered(
        f"Exercise {exercise_id} is not answered yet: write your answer in this cell in place of this line "
        f"(and the import above it), then run the cell again. The task is in the 'Exercise {exercise_id}' "
        f"cell above.")
