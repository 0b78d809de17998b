"""The papers' reported numbers: ONE copy, ``hashlib_vit/reference/paper_results.csv``.

Every value there is transcribed from METHODS.md (§2.6 TransHash Tables 1-3 and the average stated in its
text, §3.6 AE-ViT, §4.6 OrthoHash, §6 DeepHash-pytorch / cisip-FIRe / OrthoHash README) with its source,
table, backbone, pretraining, protocol, metric and topK. Nothing in the package types a paper number:
the functions here read, select and reshape the CSV.
"""
from __future__ import annotations

import os
from importlib import resources

from ..errors import DataError

TRANSHASH = "TransHash (Chen et al., ICMR 2022)"  # the ``source`` of the TransHash paper's rows
TRANSHASH_CITATION = ("Chen, Zhang, Liu et al., TransHash: Transformer-based Hamming Hashing for Efficient Image "
                      "Retrieval, ICMR 2022 (DOI 10.1145/3512527.3531405), Tables 1-3; transcribed in METHODS.md §2.6")
TRANSHASH_FAMILIES = ("cifar10", "nuswide", "imagenet100")  # the column groups of its Tables 1 and 2
TRANSHASH_BITS = (16, 32, 48, 64)
_TRANSHASH_TABLES = {1: "Table 1", 2: "Table 2 (ablation)", 3: "Table 3 (groups)"}
_REQUIRED = ("source", "table", "method", "method_key", "backbone", "pretraining", "dataset", "protocol", "family",
             "metric", "topk", "bits", "value", "note")


def reference_results(path: str | os.PathLike | None = None) -> "pd.DataFrame":  # noqa: F821
    """The papers' reported numbers, one row per value with its source (columns :data:`_REQUIRED`).

    ``value`` is a float (mAP in [0, 1]); ``bits`` an int, or ``"mean"`` for a mean over the paper's code
    lengths. ``path``: another CSV of the same columns (default: the package's paper_results.csv).
    Raises DataError naming the file when a column is missing or a value is not a number in [0, 1]."""

    from ..utils import read_csv

    if path is None:
        where = "hashlib_vit/reference/paper_results.csv"
        text = resources.files("hashlib_vit.reference").joinpath("paper_results.csv").read_text()
    else:
        where, text = str(path), None
    df = read_csv(where, "reference results", required=_REQUIRED, text=text, dtype=str, keep_default_na=False)
    try:
        df["value"] = df["value"].astype(float)
    except ValueError as e:
        raise DataError(f"{where}: column 'value' holds a non-number ({e})") from None
    bad = df[~df["value"].between(0, 1)]
    if len(bad):
        raise DataError(f"{where}: line {int(bad.index[0]) + 2}: value {bad['value'].iloc[0]} is not in [0, 1]")
    df["bits"] = [int(b) if b.isdigit() else b for b in df["bits"]]
    return df


def paper_value(method: str, family: str, bits, *, table: str | None = None, source: str | None = None,
                reference=None) -> float | None:
    """One reported value: ``method`` (the CSV's method name), data-set ``family`` (``cifar10``,
    ``nuswide``, ``imagenet100``, ``coco``), ``bits`` (int or ``"mean"``), optionally one ``table`` and
    ``source``. None when the paper reports none; DataError when the selection is ambiguous."""
    ref = reference_results() if reference is None else reference
    hit = ref[(ref["method"] == method) & (ref["family"] == family) & (ref["bits"] == bits)]
    if table is not None:
        hit = hit[hit["table"] == table]
    if source is not None:
        hit = hit[hit["source"] == source]
    if len(hit) > 1:
        raise DataError(f"paper_value({method!r}, {family!r}, {bits!r}) matches {len(hit)} rows of the reference "
                        f"CSV (tables {sorted(set(hit['table']))}); give table= or source=")
    return float(hit["value"].iloc[0]) if len(hit) else None


def paper_grid(method: str, *, source: str | None = None, reference=None) -> "pd.DataFrame":  # noqa: F821
    """One method's reported values as a grid: rows ``"<dataset> (<metric>@<topK>)"``, columns bits."""
    ref = reference_results() if reference is None else reference
    rows = ref[ref["method"] == method]
    if source is not None:
        rows = rows[rows["source"] == source]
    if not len(rows):
        raise DataError(f"the reference CSV has no row with method={method!r}"
                        + (f" and source={source!r}" if source else ""))
    label = [f"{d} ({m}@{int(k):,})" if k.isdigit() else f"{d} ({m})"
             for d, m, k in zip(rows["dataset"], rows["metric"], rows["topk"])]
    grid = rows.assign(setting=label).pivot_table(index="setting", columns="bits", values="value", sort=False)
    grid.columns.name = "bits"
    grid.index.name = f"{method}: {rows['backbone'].iloc[0]}, {rows['source'].iloc[0]}"
    return grid


def transhash_reported(table: int = 1, reference=None) -> "pd.DataFrame":  # noqa: F821
    """The TransHash paper's Table 1 (main results) or 2 (ablations) in long format: ``method``,
    ``dataset`` (family), ``bits``, ``map`` (NaN where the paper reports none), ``source``; one row per
    cell of the paper's table (method x 3 data sets x 4 code lengths). Table 2 holds the full model
    (whose row repeats Table 1's) and the ablations ``w/o C``, ``w/o P``, ``w/o Q``.
    Table 3 (CIFAR-10 mAP by bits and number of groups G = 2..6; G = 2 is the full model of Table 1):
    columns ``dataset``, ``bits``, ``groups``, ``map`` (NaN: "did not converge"), ``source``."""
    import pandas as pd

    ref = reference_results() if reference is None else reference
    th = ref[ref["source"] == TRANSHASH]
    main = th[(th["table"] == _TRANSHASH_TABLES[1])]
    if table == 3:
        g2 = main[(main["method"] == "TransHash") & (main["family"] == "cifar10")].assign(groups=2)
        tab3 = th[th["table"] == _TRANSHASH_TABLES[3]]
        tab3 = tab3.assign(groups=[int(m.split("G=")[1]) for m in tab3["method"]])
        have = pd.concat([g2, tab3])[["bits", "groups", "value"]].astype({"bits": int})
        grid = pd.MultiIndex.from_product([TRANSHASH_BITS, range(2, 7)], names=["bits", "groups"]).to_frame(index=False)
        out = grid.merge(have, on=["bits", "groups"], how="left").rename(columns={"value": "map"})
        return out.assign(dataset="cifar10", source=TRANSHASH_CITATION)[["dataset", "bits", "groups", "map", "source"]]
    if table == 1:
        rows = main
    elif table == 2:
        rows = pd.concat([main[main["method"] == "TransHash"], th[th["table"] == _TRANSHASH_TABLES[2]]])
    else:
        raise DataError(f"table={table!r}: the TransHash paper has Tables 1, 2 and 3")
    methods = list(dict.fromkeys(rows["method"]))
    grid = pd.MultiIndex.from_product([methods, TRANSHASH_FAMILIES, TRANSHASH_BITS],
                                      names=["method", "dataset", "bits"]).to_frame(index=False)
    have = rows[["method", "family", "bits", "value"]].rename(columns={"family": "dataset", "value": "map"})
    have = have.astype({"bits": int})
    out = grid.merge(have, on=["method", "dataset", "bits"], how="left")
    return out.assign(source=TRANSHASH_CITATION)


__all__ = ["TRANSHASH", "TRANSHASH_CITATION", "TRANSHASH_BITS", "TRANSHASH_FAMILIES", "paper_grid", "paper_value",
           "reference_results", "transhash_reported"]
