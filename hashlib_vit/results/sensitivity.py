"""Sensitivity of a method to one hyper-parameter, selected on the validation split (never the queries).

A sensitivity study is a grid (``hashlib-vit run-grid``) that sweeps one parameter — a field or a dotted
key into a dict field (``loss_params.tau``) — with ``val_per_class`` set, so that every run reports
``val_map`` (docs/data.md, "A validation split"). :func:`sensitivity_table` reads the runs below a
results folder and gives, per value, the number of runs (seeds), the mean and spread of the selection
metric and of the reported query mAP, and marks the value the selection metric chooses. The query mAP
is shown for the reader, never used to choose.

A study is one parameter at a time around a **base run** (the grid's run named ``base``): for each studied
parameter, :func:`study_plan` keeps the runs that hold every *other* studied parameter at the base run's
value. ``hashlib-vit sensitivity ROOT --param P ...`` writes the tables (``sensitivity.md``, one CSV per
parameter) and the figure (``sensitivity.png``, :func:`hashlib_vit.results.figures.sensitivity_figure`).
"""
from __future__ import annotations

import math
import os
from typing import Any

from ..errors import ConfigError, DataError

#: Metrics a value may be selected on: measured on the validation split only.
SELECTION_METRICS = ("val_map",)
_UNSET = "(default)"


def _value(config: dict, key: str) -> Any:
    """``key`` of a run's flat config (``"lr"`` or dotted ``"loss_params.tau"``); ``(default)`` when unset."""
    head, _, rest = key.partition(".")
    v = config.get(head, _UNSET)
    for part in rest.split(".") if rest else ():
        v = v.get(part, _UNSET) if isinstance(v, dict) else _UNSET
    return v


def sensitivity_table(runs, parameter: str, *, select: str = "val_map", where: dict | None = None,
                      min_seeds: int = 1):
    """One row per value of ``parameter`` among the runs (a DataFrame of :func:`~.collect.collect`, or a
    results folder), sorted by value: ``value``, ``n`` (runs), ``<select>_mean`` / ``<select>_std``,
    ``map_mean`` / ``map_std`` (the query mAP, for reading only) and ``selected`` (True on the value with
    the highest mean ``select`` among the values with at least ``min_seeds`` runs; the others are shown, as
    evidence, and never chosen). ``where``: keep only runs whose config has these values (e.g.
    ``{"loss": "hsc", "protocol": "digits"}``).

    Raises ConfigError for a ``select`` not in :data:`SELECTION_METRICS` (selecting on the query mAP
    is what a validation split exists to avoid); DataError when no run matches, when the runs carry no
    ``select`` (run them with ``val_per_class``), or when ``parameter`` has a single value among them.
    """
    import pandas as pd

    from .collect import collect

    _check_select(select, "select=")
    if isinstance(runs, (str, os.PathLike)):
        runs = collect(runs)
    rows = []
    for _, r in runs.iterrows():
        cfg = r.get("config") if isinstance(r.get("config"), dict) else {}
        if any(_value(cfg, k) != v for k, v in (where or {}).items()):
            continue
        score = r.get(select)
        rows.append({"value": _value(cfg, parameter), select: score, "map": r.get("map")})
    if not rows:
        raise DataError(f"no run matches {where!r}" if where else "no run to compare")
    df = pd.DataFrame(rows)
    if df[select].isna().all():  # every row has the column (None where the run lacks it)
        raise DataError(f"none of the {len(df)} runs reports {select!r}: run the study with val_per_class >= 1 "
                        "(a validation split carved from train)")
    df = df.dropna(subset=[select])
    df["key"] = df["value"].map(repr)
    if df["key"].nunique() < 2:
        raise DataError(f"parameter {parameter!r} takes one value ({df['value'].iloc[0]!r}) among the runs; a "
                        "sensitivity study needs two or more")
    out = df.groupby("key", sort=False).agg(value=("value", "first"), n=(select, "size"),
                                            **{f"{select}_mean": (select, "mean"), f"{select}_std": (select, "std"),
                                               "map_mean": ("map", "mean"), "map_std": ("map", "std")})
    out = out.reset_index(drop=True)
    out = out.iloc[sorted(range(len(out)), key=lambda i: _sort_key(out["value"].iloc[i]))].reset_index(drop=True)
    eligible = out["n"] >= min_seeds
    if not eligible.any():
        raise DataError(f"no value of {parameter!r} has min_seeds={min_seeds} runs (most: {int(out['n'].max())}); "
                        "run more seeds or lower min_seeds")
    out["selected"] = eligible & (out[f"{select}_mean"] == out.loc[eligible, f"{select}_mean"].max())
    out.attrs.update(parameter=parameter, select=select)
    return out


def study_plan(runs, parameters, base: str = "base") -> dict[str, dict]:
    """``{parameter: where}`` for a one-at-a-time study: ``where`` holds every other parameter of
    ``parameters`` at its value in the run named ``base`` (the last part of its ``run_dir``). ``runs``: a
    DataFrame of :func:`~.collect.collect` or a results folder. Raises DataError when no run is named
    ``base`` (the names found are listed) or ``parameters`` is empty."""
    from pathlib import Path

    from .collect import collect

    parameters = list(parameters)
    if not parameters:
        raise DataError("no parameter to study: name one or more (e.g. loss_params.tau)")
    root = runs if isinstance(runs, (str, os.PathLike)) else None
    if root is not None:
        runs = collect(root)
    if len(runs) == 0 or "run_dir" not in runs:
        raise DataError(f"no completed run{f' below {str(root)!r}' if root is not None else ''} (a run directory "
                        "with metrics.json): run the study's grid first")
    names = [Path(str(d)).name for d in runs["run_dir"]]
    if base not in names:
        raise DataError(f"no run named {base!r} (the base of a one-at-a-time study) among {sorted(names)[:12]}"
                        f"{' ...' if len(names) > 12 else ''}; name it with --base")
    cfg = runs["config"].iloc[names.index(base)]
    cfg = cfg if isinstance(cfg, dict) else {}
    return {p: {q: _value(cfg, q) for q in parameters if q != p} for p in parameters}


def write_sensitivity(root, studies: dict[str, dict | None], out=None, *, select: str = "val_map",
                      figure: bool = True, min_seeds: int = 1, runs=None) -> list:
    """Write ``sensitivity.md`` (and one ``sensitivity_<parameter>.csv`` per study) into ``out`` (default:
    ``root``) from the runs below ``root``: ``studies`` maps each swept parameter to its ``where`` (the
    other parameters held at their reference values). The Markdown names the runs' folder, the git commit,
    the selection metric and the chosen value of each parameter; every number comes from the runs.
    ``figure``: also ``sensitivity.png`` (:func:`~.figures.sensitivity_figure`, one panel per parameter).
    ``runs``: the runs below ``root`` when the caller has collected them already (read once).
    Returns the files written. Errors as :func:`sensitivity_table`; every table is made before any file
    is written."""
    from pathlib import Path

    from ..utils import atomic_write_text, git_commit
    from .collect import collect
    from .tables import to_markdown

    root = Path(root)
    out = Path(out) if out is not None else root
    runs = collect(root) if runs is None else runs
    lines = ["<!-- written by hashlib_vit.results.sensitivity.write_sensitivity; do not edit -->",
             f"# Sensitivity, selected on {select} (validation split; the query mAP is shown, never used)", "",
             f"Runs: `{root}` ({len(runs)} completed), package commit {git_commit() or 'unknown'}."
             + (f" Only values with at least {min_seeds} runs (seeds) can be chosen." if min_seeds > 1 else ""), ""]
    files, tables = [], {p: sensitivity_table(runs, p, select=select, where=w, min_seeds=min_seeds)
                         for p, w in studies.items()}
    for parameter, where in studies.items():
        t = tables[parameter]
        chosen = t.loc[t["selected"], "value"].tolist()
        shown = t.assign(**{c: t[c].round(4) for c in t.columns if c.endswith(("_mean", "_std"))})
        lines += [f"## `{parameter}` (others: {where or 'as run'}) — chosen: {chosen[0]!r}", "", to_markdown(shown), ""]
        files.append(atomic_write_text(out / f"sensitivity_{parameter.replace('.', '_')}.csv", t.to_csv(index=False)))
    if figure:
        from .figures import _save, sensitivity_figure

        files.append(_save(sensitivity_figure(list(tables.values()), title=str(root)), out / "sensitivity.png"))
        lines += ["![sensitivity](sensitivity.png)", ""]
    files.insert(0, atomic_write_text(out / "sensitivity.md", "\n".join(lines) + "\n"))
    return files


def sensitivity_main(args) -> int:
    """``hashlib-vit sensitivity ROOT --param P [--param P ...] [--base base] [--out DIR] [--select val_map]
    [--min-seeds N]``."""
    from .collect import collect

    _check_select(args.select, "--select ")  # before any run is read
    runs = collect(args.root)  # read once, for the plan and the tables
    studies = study_plan(runs if len(runs) else args.root, args.param, base=args.base)  # empty: the error names root
    files = write_sensitivity(args.root, studies, args.out, select=args.select, figure=not args.no_figures,
                              min_seeds=args.min_seeds, runs=runs)
    for f in files:
        print(f)
    return 0


def _check_select(select: str, name: str) -> None:
    """ConfigError unless ``select`` is a validation metric (:data:`SELECTION_METRICS`); ``name``: how the
    caller spells the option (``"select="``, ``"--select "``)."""
    if select not in SELECTION_METRICS:
        raise ConfigError(f"{name}{select!r} is not a selection metric; allowed: {', '.join(SELECTION_METRICS)} "
                          "(measured on the validation split; the query mAP is never used to choose)")


def _sort_key(v) -> tuple:
    if isinstance(v, bool) or v is None or v == _UNSET:
        return (2, str(v))
    if isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v)):
        return (0, float(v))
    return (1, str(v))


__all__ = ["SELECTION_METRICS", "sensitivity_table", "study_plan", "write_sensitivity", "sensitivity_main"]
