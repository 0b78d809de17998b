"""The ONE collector: run directories below a folder -> a DataFrame with one row per completed run.

Tables, figures, notebooks, ``hashlib-vit reproduce`` and the CLI read runs only through :func:`collect`
(and failed grid runs through :func:`failed_runs`).
"""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

from ..config import flatten
from ..errors import DataError
from .analysis import collapse_note
from .rundir import RunDir, find_runs

ROW_KEYS = ["method", "backbone", "pretraining", "training"]
FAMILIES = (("cifar10", "cifar10"), ("nuswide", "nuswide"), ("imagenet", "imagenet100"), ("coco", "coco"),
            ("digits", "digits"))
CODE_STATISTICS = ("mean_abs_u", "input_spread", "distinct_db_codes", "bit_balance")  # diagnostics.json


# fields a table already shows as a row or column key (or averages over: seed), so they never make a variant
TABLE_KEYS = frozenset({"seed", "method", "backbone", "head", "loss", "weights", "epochs", "batch_size", "img_size",
                        "bits", "protocol"})


def variant_fields() -> list[str]:
    """The configuration fields that tell runs of one table row apart: every field whose role is
    ``result`` or ``eval`` (:mod:`hashlib_vit.config`) that the table does not already show
    (:data:`TABLE_KEYS`). Bookkeeping fields (role ``record``: ``resume``, ``checkpoint_every_*``,
    ``device``, ``run_dir``, ...) never split a row, so a resumed seed is averaged with its siblings."""
    from ..config import fields_with_role

    return [k for k in fields_with_role("result", "eval") if k not in TABLE_KEYS]


def family_of(protocol: str) -> str:
    """``cifar10-2`` -> ``cifar10``, ``nuswide21`` -> ``nuswide``: the data set a protocol draws from."""
    p = str(protocol).lower()
    for prefix, fam in FAMILIES:
        if p.startswith(prefix):
            return fam
    return p


def method_key(name: Any) -> str:
    """Normalised method name for matching ours with the papers' (``Greedy-Hash`` -> ``greedyhash``)."""
    return "".join(ch for ch in str(name).lower() if ch.isalnum())


def row_keys(df) -> list[str]:
    """The columns that name one table row: :data:`ROW_KEYS`, plus ``variant`` when some run has one."""
    return ROW_KEYS + (["variant"] if "variant" in df and (df["variant"] != "").any() else [])


def _read_optional(rd: RunDir, name: str) -> dict:
    """An optional JSON object of the run directory: {} when it is absent; a damaged one (not JSON, not an
    object, a bad field of diagnostics.json) is named in a warning and read as {}."""
    if not rd.file(name).is_file():
        return {}
    try:
        return rd.diagnostics() if name == "diagnostics.json" else rd.read_json(name, dict)
    except DataError as e:
        warnings.warn(f"{e}; the run's row is made without it", UserWarning, stacklevel=3)
        return {}


def _pretraining(metrics: dict, config: dict) -> str:
    pre = metrics.get("pretrained")
    if pre in (False, None, "false", "none", "") and not config.get("weights"):
        return "none (from scratch)"
    w = config.get("weights")
    return f"pretrained ({Path(str(w)).name})" if w and w != "hub" else "pretrained (timm hub)"


def _training(metrics: dict, config: dict, env: dict) -> str:
    n_train = (env.get("protocol") or {}).get("train")
    if metrics.get("training") == "none":  # training-free (LSH / PCA / ITQ): fitted on the train features
        n_fit = metrics.get("n_fit", n_train)
        return "none" + (f" (fit on {n_fit} train imgs)" if n_fit else "")
    epochs = metrics.get("epochs", config.get("epochs"))
    parts = [f"{epochs} ep" if epochs is not None else "? ep"]
    if n_train:
        parts.append(f"{n_train} train imgs")
    if config.get("batch_size"):
        parts.append(f"batch {config['batch_size']}")
    if config.get("img_size"):
        parts.append(f"{config['img_size']} px")
    return ", ".join(parts)


def collect(root: str | os.PathLike, *, on_error: str = "skip") -> "pd.DataFrame":  # noqa: F821
    """One row per completed run directory below ``root`` (every ``metrics.json``), sorted by path.

    Columns: every field of metrics.json (validated by :func:`~.rundir.read_metrics`; ``curves`` holds the
    engine's curves, NaN for a schema-1 run without them; ``map_random`` the random-code chance level),
    ``schema_version`` (1 or 2), ``pretraining`` and ``training`` (readable setting strings), ``family``
    (data set), ``run_dir``, ``git_commit``, ``config`` (the config.json dict), ``note`` (''; or that the
    run is at chance level, :func:`~.analysis.collapse_note`; ``not evaluated`` without ``map_random``),
    the code statistics of ``diagnostics.json`` when the run has one (:data:`CODE_STATISTICS`, else NaN),
    and ``variant`` (the config values that tell runs of one table row apart, :func:`_add_variants`).

    A run whose metrics.json is damaged (not JSON, a required key missing, a wrong type or range:
    :func:`~.rundir.read_metrics`) is, with ``on_error="skip"`` (the default), left out with a
    ``UserWarning`` naming the file and the key, so that one damaged run does not hide the others; the
    messages are kept in ``df.attrs["skipped"]`` (tables list them in their notes and provenance.json).
    When metrics.json files exist but none is usable, DataError names them all. ``on_error="raise"``:
    DataError at the first damaged file. A damaged optional file (config.json, env.json,
    diagnostics.json) is named in a warning and the row is made without it.
    """
    import pandas as pd

    if on_error not in ("skip", "raise"):
        from ..errors import bad_choice

        raise bad_choice("on_error", on_error, ("skip", "raise"))
    rows, skipped = [], []
    found = find_runs(root)
    for rd in found:
        try:
            m = rd.metrics()
        except DataError as e:
            if on_error == "raise":
                raise
            skipped.append(str(e))
            warnings.warn(f"run skipped: {e}", UserWarning, stacklevel=2)
            continue
        cfg = flatten(_read_optional(rd, "config.json"))  # sectioned (this version) or flat (older runs)
        env = _read_optional(rd, "env.json")
        row = dict(m)
        row["schema_version"] = m.get("schema_version", 1)
        row.setdefault("method", cfg.get("method") or cfg.get("loss"))
        row.setdefault("backbone", cfg.get("backbone"))
        row.setdefault("seed", cfg.get("seed"))
        row["pretraining"] = _pretraining(m, cfg)
        row["training"] = _training(m, cfg, env)
        row["family"] = family_of(m.get("protocol", ""))
        row["run_dir"] = str(rd.path)
        row["git_commit"] = env.get("git_commit")
        row["config"] = cfg
        row["note"] = collapse_note(m.get("map"), m.get("map_random"))
        diag = _read_optional(rd, "diagnostics.json")
        row.update({k: diag[k] for k in CODE_STATISTICS if k in diag})
        rows.append(row)
    if found and not rows:
        raise DataError(f"none of the {len(found)} run directories below {str(root)!r} has a usable metrics.json: "
                        + "; ".join(skipped))
    df = pd.DataFrame(rows)
    if len(df):
        df["bits"] = df["bits"].astype(int)
        for k in CODE_STATISTICS + ("map_random",):
            if k not in df:
                df[k] = float("nan")
        df = _add_variants(df)
    df.attrs["skipped"] = skipped
    return df


def _add_variants(df):
    """When runs of one (method, backbone, pretraining, training) row differ in a :func:`variant_fields`
    value (e.g. lr or loss_params), name the difference in a ``variant`` column (``lr=0.01``) so they are
    not averaged together."""
    considered = set(variant_fields())
    variants = [""] * len(df)
    for _, idx in df.groupby(ROW_KEYS, dropna=False).groups.items():
        cfgs = [df.at[i, "config"] or {} for i in idx]
        keys = sorted({k for c in cfgs for k in c} & considered)
        varying = [k for k in keys if len({json.dumps(c.get(k), sort_keys=True) for c in cfgs}) > 1]
        for i, c in zip(idx, cfgs):
            variants[df.index.get_loc(i)] = ", ".join(
                f"{k}={json.dumps(c.get(k), sort_keys=True, separators=(',', ':'))}" for k in varying)
    df = df.copy()
    df["variant"] = variants
    return df


#: The status of a run in a grid summary (``grid_summary.csv``) and its ``grid_params.json``.
STATUSES = ("pending", "submitted", "completed", "skipped", "failed", "interrupted")


def read_summary(path: str | os.PathLike):
    """A grid's ``grid_summary.csv`` as a DataFrame (one row per run, the columns of :func:`run_grid`), checked
    (:func:`hashlib_vit.utils.read_csv`).

    Raises DataError naming the file, the line and the column when it is missing, not UTF-8 CSV (garbage
    bytes, an unterminated quote), a line has more or fewer fields than the header (truncated), a column
    ``run``/``status``/``run_dir`` is missing, ``run`` is empty, ``status`` is not one of
    :data:`STATUSES`, ``seconds`` is not a number >= 0, ``map`` not a number in [0, 1] or ``error_cell``
    not a whole number (empty cells allowed)."""
    import numpy as np

    from ..errors import DataError
    from ..utils import read_csv

    df = read_csv(path, "grid summary", required=("run", "status", "run_dir"), numeric=("seconds", "map"),
                  integer=("error_cell",), choices={"status": STATUSES})
    for col, ok, expected in (("run", df["run"].notna(), "a run name"),
                              ("seconds", df["seconds"].isna() | (df["seconds"] >= 0) if "seconds" in df else None,
                               "a number >= 0"),
                              ("map", df["map"].isna() | df["map"].between(0, 1) if "map" in df else None,
                               "a number in [0, 1]")):
        if ok is not None and not ok.all():
            i = int(np.flatnonzero(~ok.to_numpy())[0])
            value = df[col].iloc[i]
            value = value.item() if isinstance(value, np.generic) else value
            raise DataError(f"grid summary {path}, data row {i + 1} (run {df['run'].iloc[i]!r}), column {col!r}: "
                            f"{value!r}; expected {expected}")
    return df


def failed_runs(root: str | os.PathLike) -> "pd.DataFrame":  # noqa: F821
    """Rows of every ``grid_summary.csv`` below ``root`` whose status is not completed/skipped. Each summary
    is read by :func:`read_summary` (DataError naming the file, the line and the column
    of a damaged one)."""
    import pandas as pd

    frames = []
    for p in sorted(Path(root).rglob("grid_summary.csv")):
        s = read_summary(p)
        s = s[~s["status"].isin(["completed", "skipped"])]
        if len(s):
            frames.append(s.assign(summary=str(p)))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


__all__ = ["CODE_STATISTICS", "ROW_KEYS", "STATUSES", "collect", "failed_runs", "read_summary", "family_of", "TABLE_KEYS", "variant_fields", "method_key",
           "row_keys"]
