"""Paper-style mAP tables and figures, built only from run directories.

    hashlib-vit tables results/cifar10_scratch --out results/tables/cifar10_scratch

* :func:`collect` — one row per completed run directory below a root (``metrics.json`` + ``config.json``
  + ``env.json``), with the columns a table needs (method, backbone, pretraining, protocol, bits, seed,
  training scale, mAP).
* :func:`aggregate` — mean ± spread (sample standard deviation) and the number of seeds per setting.
* :func:`wide_table` — rows are methods (method, backbone, pretraining, training), columns are
  data set × bits, cells ``0.812 ± 0.004 (n=3)``; written as CSV, Markdown and LaTeX.
* :func:`comparison_table` — our rows next to the papers' reported numbers
  (``hashlib_vit/reference/paper_results.csv``, transcribed from METHODS.md with the source of every
  value), with each difference in setting stated (backbone, pretraining, protocol, training scale).
* figures (seaborn): mAP vs bits, Hamming-radius precision–recall, precision@N, training curves.
* :func:`build_tables` — all of the above into one output folder, with ``provenance.json``.
"""
from __future__ import annotations

import json
import math
import os
import platform
import sys
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from .errors import DataError
from .results import RunDir, find_runs
from .utils import atomic_write_json, atomic_write_text, git_commit

ROW_KEYS = ["method", "backbone", "pretraining", "training"]
# config keys that never distinguish settings (seeds are averaged; the rest is bookkeeping)
IGNORED_CONFIG = {"seed", "run_dir", "device", "progress", "save_codes", "eval_every", "eval_batch_size", "method",
                  "data_root", "bits", "protocol", "resolved_device", "compile", "amp", "weights", "backbone",
                  "loss", "head", "epochs", "batch_size"}
FAMILIES = (("cifar10", "cifar10"), ("nuswide", "nuswide"), ("imagenet", "imagenet100"), ("coco", "coco"),
            ("digits", "digits"))


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


# ----------------------------------------------------------------------------- collection
def _read_optional(rd: RunDir, name: str) -> dict:
    try:
        return rd.read_json(name)
    except DataError:
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


def collect(root: str | os.PathLike) -> "pd.DataFrame":  # noqa: F821
    """One row per completed run directory below ``root`` (every ``metrics.json``), sorted by path.

    Columns: every field of metrics.json, plus ``pretraining`` and ``training`` (readable setting
    strings), ``family`` (data set), ``run_dir``, ``git_commit`` and ``config`` (the config.json dict).
    """
    import pandas as pd

    rows = []
    for rd in find_runs(root):
        m = rd.metrics()
        cfg = _read_optional(rd, "config.json")
        env = _read_optional(rd, "env.json")
        row = dict(m)
        row.setdefault("method", cfg.get("method") or cfg.get("loss"))
        row.setdefault("backbone", cfg.get("backbone"))
        row.setdefault("seed", cfg.get("seed"))
        row["pretraining"] = _pretraining(m, cfg)
        row["training"] = _training(m, cfg, env)
        row["family"] = family_of(m.get("protocol", ""))
        row["run_dir"] = str(rd.path)
        row["git_commit"] = env.get("git_commit")
        row["config"] = cfg
        rows.append(row)
    df = pd.DataFrame(rows)
    if len(df):
        df["bits"] = df["bits"].astype(int)
        df = _add_variants(df)
    return df


def _add_variants(df):
    """When runs of one (method, backbone, pretraining, training) row differ in other config values
    (e.g. lr or loss_params), name the difference in a ``variant`` column so they are not averaged."""
    variants = [""] * len(df)
    for _, idx in df.groupby(ROW_KEYS, dropna=False).groups.items():
        cfgs = [df.at[i, "config"] or {} for i in idx]
        keys = sorted({k for c in cfgs for k in c} - IGNORED_CONFIG)
        varying = [k for k in keys if len({json.dumps(c.get(k), sort_keys=True) for c in cfgs}) > 1]
        for i, c in zip(idx, cfgs):
            variants[df.index.get_loc(i)] = ", ".join(
                f"{k}={json.dumps(c.get(k), sort_keys=True, separators=(',', ':'))}" for k in varying)
    df = df.copy()
    df["variant"] = variants
    return df


def failed_runs(root: str | os.PathLike) -> "pd.DataFrame":  # noqa: F821
    """Rows of every ``grid_summary.csv`` below ``root`` whose status is not completed/skipped."""
    import pandas as pd

    frames = []
    for p in sorted(Path(root).rglob("grid_summary.csv")):
        s = pd.read_csv(p)
        s = s[~s["status"].isin(["completed", "skipped"])]
        if len(s):
            frames.append(s.assign(summary=str(p)))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


# ----------------------------------------------------------------------------- aggregation
def _row_keys(df) -> list[str]:
    return ROW_KEYS + (["variant"] if "variant" in df and (df["variant"] != "").any() else [])


def aggregate(runs, value: str = "map") -> "pd.DataFrame":  # noqa: F821
    """Mean, spread (sample std, ddof=1; NaN for one seed), min, max and number of seeds per setting."""
    import pandas as pd

    if runs is None or len(runs) == 0:
        return pd.DataFrame(columns=ROW_KEYS + ["protocol", "bits", "mean", "std", "min", "max", "n", "seeds", "topk"])
    keys = _row_keys(runs) + ["protocol", "bits"]
    g = runs.groupby(keys, dropna=False, sort=True)
    out = g[value].agg(["mean", "std", "min", "max", "count"]).rename(columns={"count": "n"}).reset_index()
    out["seeds"] = g["seed"].apply(lambda s: ",".join(str(x) for x in sorted(s.dropna().unique()))).values
    out["topk"] = g["topk"].first().values if "topk" in runs else None
    return out


def fmt_cell(mean: float, std: float, n: int, digits: int = 3) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return ""
    if n and n >= 2 and std is not None and not math.isnan(std):
        return f"{mean:.{digits}f} ± {std:.{digits}f} (n={n})"
    return f"{mean:.{digits}f} (n={n})"


def _bits_order(values) -> list:
    nums = sorted(v for v in values if not isinstance(v, str))
    return nums + sorted(v for v in values if isinstance(v, str))


def wide_table(agg, *, digits: int = 3, mean_over_bits: bool = False) -> "pd.DataFrame":  # noqa: F821
    """Rows: method settings; columns: (data set, bits); cells ``mean ± std (n=seeds)``.

    ``mean_over_bits``: add a ``mean`` column per data set (the mean over the bit lengths shown, of the
    per-setting means), for papers that report only that.
    """
    import pandas as pd

    if len(agg) == 0:
        return pd.DataFrame()
    rows = _row_keys(agg)
    a = agg.copy()
    a["cell"] = [fmt_cell(m, s, n, digits) for m, s, n in zip(a["mean"], a["std"], a["n"])]
    if mean_over_bits:
        mb = a.groupby(rows + ["protocol"], dropna=False)["mean"].mean().reset_index()
        mb["bits"] = "mean"
        mb["cell"] = [f"{m:.{digits}f}" for m in mb["mean"]]
        a = pd.concat([a, mb], ignore_index=True)
    t = a.pivot_table(index=rows, columns=["protocol", "bits"], values="cell", aggfunc="first", dropna=False)
    protocols = sorted(a["protocol"].unique())
    cols = [(p, b) for p in protocols for b in _bits_order(a.loc[a["protocol"] == p, "bits"].unique())]
    t = t.reindex(columns=pd.MultiIndex.from_tuples(cols, names=["protocol", "bits"])).fillna("")
    return t[(t != "").any(axis=1)]  # pivot_table(dropna=False) makes every combination of the row keys


# ----------------------------------------------------------------------------- the papers' numbers
def reference_results(path: str | os.PathLike | None = None) -> "pd.DataFrame":  # noqa: F821
    """The papers' reported numbers (METHODS.md §2.6, §3.6, §4.6, §6), one row per value with its source."""
    import pandas as pd

    if path is None:
        with resources.files("hashlib_vit.reference").joinpath("paper_results.csv").open("r") as f:
            df = pd.read_csv(f, dtype=str, keep_default_na=False)
    else:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    df["value"] = df["value"].astype(float)
    df["bits"] = [int(b) if b.isdigit() else b for b in df["bits"]]
    return df


def _short_source(src: str) -> str:
    """``TransHash (Chen et al., ICMR 2022)`` -> ``TransHash`` (the reference CSV keeps the full source)."""
    return src.split(" (")[0]


def _diff_text(ref: "pd.Series", ours: "pd.DataFrame") -> str:  # noqa: F821
    """State each difference in setting between one paper value and our runs in the same column."""
    parts = []
    our_bb = ", ".join(sorted(ours["backbone"].astype(str).unique()))
    parts.append(f"backbone: paper {ref['backbone']} vs ours {our_bb}")
    our_pre = ", ".join(sorted(ours["pretraining"].astype(str).unique()))
    parts.append(f"pretraining: paper {ref['pretraining']} vs ours {our_pre}")
    our_proto = sorted(ours["protocol"].astype(str).unique())
    our_topk = sorted({str(t) for t in ours.get("topk", [])})
    paper_proto = ref["protocol"] or f"{ref['dataset']} (split not stated)"
    paper_metric = ref["metric"] + (f"@{ref['topk']}" if ref["topk"] else "")
    if ref["protocol"] and [ref["protocol"]] == our_proto and (not ref["topk"] or [str(ref["topk"])] == our_topk):
        parts.append(f"protocol: same ({ref['protocol']}, {paper_metric})")
    else:
        parts.append(f"protocol: paper {paper_proto} {paper_metric} vs ours {', '.join(our_proto)} "
                     f"mAP@{', '.join(our_topk)}")
    if ref["bits"] == "mean":
        bits = ", ".join(str(b) for b in sorted(ours["bits"].unique()))
        parts.append(f"bits: paper's mean over its tested code lengths vs our mean over {bits} bits")
    our_train = "; ".join(sorted(ours["training"].astype(str).unique()))
    parts.append(f"training: paper's full published recipe vs ours {our_train}")
    return "; ".join(parts)


def comparison_table(runs, reference=None, *, select: str = "matched", digits: int = 3,
                     mean_over_bits: bool | None = None) -> "pd.DataFrame":  # noqa: F821
    """Our rows (mean ± std over seeds) followed by the papers' values in the same columns.

    Paper values go under one of our (protocol, bits) columns when their data set family matches
    (``cifar10-1`` lands under ``cifar10`` with the protocol difference stated) and the bits are equal
    (``mean`` values under a per-data-set ``mean`` column). ``select``: ``matched`` — paper rows of
    methods we ran (matched by normalised method / loss name); ``all`` — every paper row that fits a
    column; ``none`` — ours only. Columns ``source``, ``backbone``, ``pretraining``, ``protocol``,
    ``training`` and ``differences`` state each row's setting.
    """
    import pandas as pd

    if select not in ("matched", "all", "none"):
        raise DataError(f"select={select!r} must be 'matched', 'all' or 'none'")
    if runs is None or len(runs) == 0:
        return pd.DataFrame()
    ref = reference_results() if reference is None else reference
    agg = aggregate(runs)
    keys = _row_keys(runs)
    cols = sorted({(p, b) for p, b in zip(agg["protocol"], agg["bits"])}, key=lambda x: (x[0], x[1]))
    ours_keys = {method_key(x) for col in ("method", "loss") if col in runs for x in runs[col].dropna().unique()}
    cand = ref.iloc[0:0]
    if select != "none":
        fams = {family_of(c[0]) for c in cols}
        cand = ref[ref["family"].isin(fams)]
        if select == "matched":
            cand = cand[cand["method_key"].isin(ours_keys - {""})]
    if mean_over_bits is None:
        mean_over_bits = bool((cand["bits"] == "mean").any())
    if mean_over_bits:
        cols += [(p, "mean") for p in sorted({c[0] for c in cols})]
    fam_of_col = {c: family_of(c[0]) for c in cols}
    our_bits = {c[1] for c in cols}
    cand = cand[cand["bits"].isin(our_bits)]

    table_rows = []
    wt = wide_table(agg, digits=digits, mean_over_bits=mean_over_bits)
    for idx, row in wt.iterrows():
        idx = idx if isinstance(idx, tuple) else (idx,)
        meta = dict(zip(wt.index.names, idx))
        sub = runs
        for k, v in meta.items():
            sub = sub[sub[k].astype(str) == str(v)]
        label = meta["method"] + (f" [{meta['variant']}]" if meta.get("variant") else "")
        d = {"source": "ours", "method": label, "backbone": meta["backbone"], "pretraining": meta["pretraining"],
             "protocol": ", ".join(f"{p} mAP@{t}" for p, t in sorted({(p, str(t)) for p, t in
                                                                      zip(sub["protocol"], sub["topk"])})),
             "training": meta["training"], "differences": ""}
        for c in cols:
            d[c] = row.get(c, "")
        table_rows.append(d)

    # group paper values by (source, method, backbone, pretraining, protocol/metric) into one row each
    if len(cand):
        cand = cand.assign(_proto=[(r["protocol"] or r["dataset"]) + " " + r["metric"] +
                                   (f"@{r['topk']}" if r["topk"] else "") for _, r in cand.iterrows()])
        group_keys = ["source", "table", "method", "backbone", "pretraining", "family", "note"]
        for (src, _tab, meth, bb, pre, fam, _note), grp in cand.groupby(group_keys, sort=False):
            ours_same = runs[runs["family"] == fam]
            mk = grp["method_key"].iloc[0]
            mine = ours_same[[method_key(m) == mk or method_key(l) == mk for m, l in
                              zip(ours_same["method"], ours_same.get("loss", ours_same["method"]))]] if mk else ours_same
            mine = mine if len(mine) else ours_same
            for proto_text, g2 in grp.groupby("_proto", sort=False):
                d = {"source": _short_source(src), "method": meth, "backbone": bb, "pretraining": pre,
                     "protocol": proto_text, "training": "as published",
                     "differences": _diff_text(g2.iloc[0], mine)}
                notes = sorted({n for n in g2["note"] if n})
                if notes:
                    d["differences"] += "; note: " + " / ".join(notes)
                filled = False
                for c in cols:
                    if fam_of_col[c] != fam:
                        d[c] = ""
                        continue
                    hit = g2[g2["bits"] == c[1]] if c[1] != "mean" else g2[g2["bits"] == "mean"]
                    d[c] = f"{hit['value'].iloc[0]:.4g}" if len(hit) else ""
                    filled |= bool(len(hit))
                if filled:
                    table_rows.append(d)
    out = pd.DataFrame(table_rows)
    meta_cols = ["source", "method", "backbone", "pretraining", "protocol", "training"]
    out = out[meta_cols + cols + ["differences"]]
    out.columns = [c if isinstance(c, str) else f"{c[0]} {c[1]}{'' if c[1] == 'mean' else ' bits'}" for c in out.columns]
    return out


# ----------------------------------------------------------------------------- formats
def _flat_columns(df) -> "pd.DataFrame":  # noqa: F821
    """MultiIndex rows/columns -> plain columns ("cifar10 32 bits")."""
    import pandas as pd

    d = df.copy()
    if isinstance(d.columns, pd.MultiIndex):
        d.columns = [f"{p} {b}{'' if b == 'mean' else ' bits'}" for p, b in d.columns]
    if isinstance(d.index, pd.MultiIndex) or d.index.name:
        d = d.reset_index()
    return d


def to_markdown(df) -> str:
    d = _flat_columns(df).astype(str)
    esc = lambda s: s.replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = ["| " + " | ".join(esc(str(c)) for c in d.columns) + " |", "|" + "---|" * len(d.columns)]
    lines += ["| " + " | ".join(esc(v) for v in row) + " |" for row in d.itertuples(index=False)]
    return "\n".join(lines) + "\n"


_LATEX_ESC = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
              "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\\": r"\textbackslash{}", "±": r"$\pm$",
              "≈": r"$\approx$", "–": "--", "λ": r"$\lambda$"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_ESC.get(ch, ch) for ch in str(text))


def to_latex(df, caption: str = "", label: str = "") -> str:
    """A booktabs table (needs ``\\usepackage{booktabs}``); long text columns are set as p{} columns."""
    d = _flat_columns(df).astype(str)
    spec = "".join("p{5cm}" if c == "differences" else ("l" if i < 1 or not any(ch.isdigit() for ch in c) else "r")
                   for i, c in enumerate(d.columns))
    out = ["\\begin{table}[t]", "\\centering", "\\small", f"\\begin{{tabular}}{{{spec}}}", "\\toprule",
           " & ".join(latex_escape(c) for c in d.columns) + " \\\\", "\\midrule"]
    out += [" & ".join(latex_escape(v) for v in row) + " \\\\" for row in d.itertuples(index=False)]
    out += ["\\bottomrule", "\\end{tabular}"]
    if caption:
        out.append(f"\\caption{{{latex_escape(caption)}}}")
    if label:
        out.append(f"\\label{{{label}}}")
    out.append("\\end{table}")
    return "\n".join(out) + "\n"


def write_table(df, out_stem: str | os.PathLike, caption: str = "") -> list[Path]:
    """``<stem>.csv``, ``<stem>.md`` and ``<stem>.tex``, each written atomically."""
    stem = Path(out_stem)
    flat = _flat_columns(df)
    return [atomic_write_text(stem.with_suffix(".csv"), flat.to_csv(index=False)),
            atomic_write_text(stem.with_suffix(".md"), (f"{caption}\n\n" if caption else "") + to_markdown(df)),
            atomic_write_text(stem.with_suffix(".tex"), to_latex(df, caption=caption, label=f"tab:{stem.name}"))]


# ----------------------------------------------------------------------------- curves
def hamming_pr_curve(query_codes, db_codes, query_labels, db_labels, chunk: int = 256) -> dict:
    """Precision and recall of the items within Hamming radius r, for r = 0..K, averaged over queries.

    precision(r): mean over queries with at least one item within r (NaN when there is none; the same
    convention as the evaluation engine's ``empty_radius="exclude"``); recall(r): mean over queries with
    at least one relevant item. Works from distance histograms (Q x (K+1)), never a Q x N float matrix
    beyond one chunk.
    """
    import torch

    qc, dc, ql, dl = _prepare_codes(query_codes, db_codes, query_labels, db_labels)
    bits = dc.shape[1]
    dcf = dc
    hist_all = torch.zeros(qc.shape[0], bits + 1, dtype=torch.float64)
    hist_rel = torch.zeros_like(hist_all)
    for s in range(0, qc.shape[0], chunk):
        q = qc[s:s + chunk].float()
        dist = ((bits - q @ dcf.T) / 2).round().long()
        rel = ((ql[s:s + chunk] @ dl.T) > 0).double()
        hist_all[s:s + chunk].scatter_add_(1, dist, torch.ones_like(rel))
        hist_rel[s:s + chunk].scatter_add_(1, dist, rel)
    ca, cr = hist_all.cumsum(1), hist_rel.cumsum(1)
    total_rel = cr[:, -1:]
    has = ca > 0
    n_has = has.sum(0)
    prec = torch.where(has, cr / ca.clamp(min=1), torch.zeros_like(ca)).sum(0) / n_has.clamp(min=1)
    prec = torch.where(n_has > 0, prec, torch.full_like(prec, float("nan")))  # no query retrieves anything
    valid = (total_rel[:, 0] > 0)
    rec = (cr[valid] / total_rel[valid]).mean(0) if valid.any() else torch.zeros(bits + 1, dtype=torch.float64)
    return {"radius": list(range(bits + 1)), "precision": prec.tolist(), "recall": rec.tolist()}


def precision_at_n(query_codes, db_codes, query_labels, db_labels, ns: Iterable[int] | None = None,
                   chunk: int = 256) -> dict:
    """Mean precision of the top-N items (Hamming ranking, ties by database index) for each N."""
    import torch

    qc, dc, ql, dl = _prepare_codes(query_codes, db_codes, query_labels, db_labels)
    n_db, bits = dc.shape
    if ns is None:
        ns = [n for n in (1, 5, 10, 20, 50, 100, 200, 500, 1000, 1500, 2000) if n <= n_db]
    ns = [int(n) for n in ns if 1 <= int(n) <= n_db]
    top = max(ns)
    dcf = dc.float()
    hits = torch.zeros(len(ns), dtype=torch.float64)
    for s in range(0, qc.shape[0], chunk):
        q = qc[s:s + chunk].float()
        dist = ((bits - q @ dcf.T) / 2).round().to(torch.int32)
        order = torch.sort(dist, dim=1, stable=True).indices[:, :top]
        rel = torch.gather((ql[s:s + chunk] @ dl.T) > 0, 1, order).double().cumsum(1)
        hits += torch.stack([rel[:, n - 1].sum() / n for n in ns])
    return {"n": ns, "precision": (hits / qc.shape[0]).tolist()}


def _floats(values) -> list[float]:
    """Curve values as floats; None (e.g. a radius at which no query retrieves anything) -> NaN."""
    return [float("nan") if v is None else float(v) for v in values]


def _curve_from_metrics(m: dict, kind: str) -> dict | None:
    """A curve stored by the evaluation engine in metrics.json, in any of the shapes we know."""
    candidates = {"pr": ("pr_hamming", "pr_curve", "hamming_pr", "pr"),
                  "pn": ("pr_rank", "precision_at_n", "p_at_n", "precision_at_topn", "pn_curve")}[kind]
    for container in (m, m.get("curves") or {}):
        for name in candidates:
            c = container.get(name) if isinstance(container, dict) else None
            if isinstance(c, dict):
                if kind == "pr" and {"precision", "recall"} <= set(c):
                    return {"radius": c.get("radius", list(range(len(c["precision"])))),
                            "precision": _floats(c["precision"]), "recall": _floats(c["recall"])}
                if kind == "pn":
                    for rank_key in ("n", "rank"):
                        if {rank_key, "precision"} <= set(c):
                            return {"n": [int(x) for x in c[rank_key]], "precision": _floats(c["precision"])}
                    if c and all(str(k).isdigit() for k in c):  # {"100": 0.8, ...}
                        ks = sorted(c, key=int)
                        return {"n": [int(k) for k in ks], "precision": [float(c[k]) for k in ks]}
    if kind == "pn":  # scalar precision_at_N entries of the evaluation engine (>= 2 points make a curve)
        import re

        pts = sorted((int(mt.group(1)), float(v)) for k, v in m.items()
                     if (mt := re.fullmatch(r"precision_at_(\d+)", str(k))) and isinstance(v, (int, float)))
        if len(pts) >= 2:
            return {"n": [p[0] for p in pts], "precision": [p[1] for p in pts]}
    return None


def _engine_curves(args) -> dict | None:
    """Curves from the package's evaluation engine (``evaluate(..., curves=True)``) when it has them."""
    import inspect

    from .retrieval import evaluate

    try:
        if "curves" not in inspect.signature(evaluate).parameters:
            return None
    except (TypeError, ValueError):  # pragma: no cover
        return None
    kw = {"empty_radius": "exclude"} if "empty_radius" in inspect.signature(evaluate).parameters else {}
    return evaluate(*args, topk=None, curves=True, **kw)  # precision over queries that retrieve something


def _prepare_codes(query_codes, db_codes, query_labels, db_labels):
    """±1 codes as float tensors and labels as multi-hot float tensors (class indices accepted)."""
    import torch

    def codes(x, name):
        t = torch.as_tensor(np.asarray(x)).float()
        if t.ndim != 2 or not bool(((t == 1) | (t == -1)).all()):
            raise DataError(f"{name} must be a 2-D array of ±1 codes")
        return t

    qc, dc = codes(query_codes, "query_codes"), codes(db_codes, "db_codes")
    ql, dl = np.asarray(query_labels), np.asarray(db_labels)
    if ql.ndim == 1 and dl.ndim == 1:
        c = int(max(ql.max(), dl.max())) + 1
        ql, dl = np.eye(c)[ql], np.eye(c)[dl]
    return qc, dc, torch.as_tensor(ql).float(), torch.as_tensor(dl).float()


def run_curves(run_dir: str | os.PathLike, *, recompute: bool = True) -> dict:
    """PR (Hamming radius) and precision@N curves of one run: from metrics.json when the evaluation
    engine stored them (``pr_hamming``, ``pr_rank`` or ``precision_at_N`` entries), else recomputed from
    codes.npz — with the package engine's ``evaluate(..., curves=True)`` when this version has it, else
    with :func:`hamming_pr_curve` / :func:`precision_at_n`. ``{"pr", "pn", "source"}``."""
    rd = RunDir(run_dir)
    m = rd.metrics()
    pr, pn = _curve_from_metrics(m, "pr"), _curve_from_metrics(m, "pn")
    source = "metrics.json" if (pr or pn) else "none"
    codes_file = rd.file("codes.npz")
    if recompute and (pr is None or pn is None) and codes_file.is_file():
        with np.load(codes_file) as z:
            args = (z["query_codes"], z["db_codes"], z["query_labels"], z["db_labels"])
        engine = _engine_curves(args)
        if pr is None:
            pr = (_curve_from_metrics(engine, "pr") if engine else None) or hamming_pr_curve(*args)
        if pn is None:
            pn = (_curve_from_metrics(engine, "pn") if engine else None) or precision_at_n(*args)
        source = "codes.npz" if source == "none" else source + "+codes.npz"
    return {"pr": pr, "pn": pn, "source": source}


def collect_curves(runs) -> tuple["pd.DataFrame", "pd.DataFrame", list[str]]:  # noqa: F821
    """Long tables of PR and P@N curves for every run (with its method/protocol/bits/seed) + notes."""
    import pandas as pd

    pr_rows, pn_rows, notes = [], [], []
    keys = [k for k in _row_keys(runs) + ["protocol", "bits", "seed", "run_dir"] if k in runs]
    for _, r in runs.iterrows():
        c = run_curves(r["run_dir"])
        meta = {k: r[k] for k in keys}
        if c["pr"]:
            pr_rows += [{**meta, "radius": a, "precision": p, "recall": q}
                        for a, p, q in zip(c["pr"]["radius"], c["pr"]["precision"], c["pr"]["recall"])]
        if c["pn"]:
            pn_rows += [{**meta, "n": a, "precision": p} for a, p in zip(c["pn"]["n"], c["pn"]["precision"])]
        if not (c["pr"] and c["pn"]):
            notes.append(f"{r['run_dir']}: no curves in metrics.json and no codes.npz")
    return pd.DataFrame(pr_rows), pd.DataFrame(pn_rows), notes


def collect_training_logs(runs, max_points: int = 400) -> "pd.DataFrame":  # noqa: F821
    """Every run's train_log.csv[.gz] (step, loss, ...) with its row keys; thinned to ``max_points`` per run."""
    import pandas as pd

    frames = []
    keys = [k for k in _row_keys(runs) + ["protocol", "bits", "seed", "run_dir"] if k in runs]
    for _, r in runs.iterrows():
        # train_log.csv as written by the run, or train_log.csv.gz (archived runs keep a compressed copy)
        p = next((q for q in (Path(r["run_dir"]) / n for n in ("train_log.csv", "train_log.csv.gz"))
                  if q.is_file() and q.stat().st_size > 0), None)
        if p is None:
            continue
        log = pd.read_csv(p)
        if "loss" not in log or "step" not in log:
            continue
        log = log[["step", "epoch", "loss"] if "epoch" in log else ["step", "loss"]]
        if len(log) > max_points:  # smooth, then thin, so long runs stay readable
            log = log.assign(loss=log["loss"].rolling(max(len(log) // max_points, 1), min_periods=1).mean())
            log = log.iloc[np.linspace(0, len(log) - 1, max_points).astype(int)]
        for k in keys:
            log[k] = r[k]
        frames.append(log)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


# ----------------------------------------------------------------------------- figures
def _label(df):
    return df["method"].astype(str) + " · " + df["backbone"].astype(str)


def plot_map_vs_bits(runs, value: str = "map"):
    """mAP against code length per method (mean over seeds, bars = std), one panel per protocol."""
    import seaborn as sns

    d = runs.assign(setting=_label(runs))
    g = sns.relplot(data=d, x="bits", y=value, hue="setting", col="protocol", kind="line", marker="o",
                    errorbar="sd", height=3.2, aspect=1.2, facet_kws={"sharey": False})
    g.set_axis_labels("bits", "mAP")
    for ax in g.axes.flat:
        ax.set_xticks(sorted(d["bits"].unique()))
    g.figure.suptitle("mAP vs code length (mean ± std over seeds)", y=1.03)
    return g.figure


def plot_pr_curves(pr):
    """Precision vs recall over Hamming radius (mean over seeds), one panel per protocol × bits."""
    import seaborn as sns

    keys = [k for k in ("method", "backbone", "protocol", "bits", "radius") if k in pr]
    m = pr.groupby(keys, as_index=False)[["precision", "recall"]].mean()
    m["setting"] = _label(m)
    g = sns.relplot(data=m, x="recall", y="precision", hue="setting", col="bits", row="protocol", kind="line",
                    sort=False, marker=".", height=3, aspect=1.1)
    g.figure.suptitle("Precision–recall over Hamming radius 0..K", y=1.03)
    return g.figure


def plot_precision_at_n(pn):
    import seaborn as sns

    d = pn.assign(setting=_label(pn))
    g = sns.relplot(data=d, x="n", y="precision", hue="setting", col="bits", row="protocol", kind="line",
                    marker="o", errorbar="sd", height=3, aspect=1.1)
    g.set_axis_labels("N (top items)", "precision@N")
    g.figure.suptitle("Precision@N (Hamming ranking; mean ± std over seeds)", y=1.03)
    return g.figure


def plot_training_curves(logs):
    import seaborn as sns

    d = logs.assign(setting=_label(logs))
    g = sns.relplot(data=d, x="step", y="loss", hue="setting", col="bits", row="protocol", kind="line",
                    errorbar="sd", height=3, aspect=1.2, facet_kws={"sharey": False})
    g.figure.suptitle("Training loss per step (mean ± std over seeds)", y=1.03)
    return g.figure


def _save(fig, path: Path) -> Path:
    import io

    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format=path.suffix.lstrip(".") or "png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    from .utils import atomic_write_bytes

    return atomic_write_bytes(path, buf.getvalue())


def make_figures(runs, out: str | os.PathLike) -> tuple[dict[str, Path], list[str]]:
    """Every figure that the available files allow, saved as PNG under ``out``; notes say what was skipped."""
    out = Path(out)
    made, notes = {}, []
    if len(runs) == 0:
        return made, ["no completed runs: no figures"]
    made["map_vs_bits"] = _save(plot_map_vs_bits(runs), out / "map_vs_bits.png")
    pr, pn, cnotes = collect_curves(runs)
    notes += cnotes
    if len(pr):
        made["pr_curves"] = _save(plot_pr_curves(pr), out / "pr_curves.png")
    else:
        notes.append("precision-recall figure skipped: no run has curves in metrics.json or codes.npz")
    if len(pn):
        made["precision_at_n"] = _save(plot_precision_at_n(pn), out / "precision_at_n.png")
    else:
        notes.append("precision@N figure skipped: no run has curves in metrics.json or codes.npz")
    logs = collect_training_logs(runs)
    if len(logs):
        made["training_curves"] = _save(plot_training_curves(logs), out / "training_curves.png")
    else:
        notes.append("training-curve figure skipped: no train_log.csv")
    return made, notes


# ----------------------------------------------------------------------------- everything
def provenance(command: str | None = None, **extra) -> dict:
    import torch

    return {"created_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "command": command or " ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
            "git_commit": git_commit(), "machine": platform.node(), "platform": platform.platform(),
            "python": platform.python_version(), "torch": torch.__version__,
            "device": "cuda" if torch.cuda.is_available() else "cpu", **extra}


def build_tables(root: str | os.PathLike, out: str | os.PathLike, *, select: str = "matched", figures: bool = True,
                 command: str | None = None, digits: int = 3) -> dict:
    """Collect the runs below ``root``; write tables, figures and provenance.json under ``out``.

    Writes ``runs.csv`` (one row per run), ``summary_long.csv`` (mean/std/n per setting),
    ``map_table.{csv,md,tex}`` (ours), ``comparison.{csv,md,tex}`` (ours + papers, differences stated),
    ``failed_runs.csv`` (when grid summaries list failures), ``figures/*.png`` and ``provenance.json``.
    Returns the DataFrames and paths.
    """
    root, out = Path(root), Path(out)
    if not root.is_dir():
        raise DataError(f"results folder {str(root)!r} does not exist")
    runs = collect(root)
    if len(runs) == 0:
        raise DataError(f"no completed run directory (no metrics.json) below {str(root)!r}")
    out.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    plain = runs.drop(columns=["config"])
    files.append(atomic_write_text(out / "runs.csv", plain.to_csv(index=False)))
    agg = aggregate(runs)
    files.append(atomic_write_text(out / "summary_long.csv", agg.to_csv(index=False)))
    wide = wide_table(agg, digits=digits)
    files += write_table(wide, out / "map_table",
                         caption=f"mAP (mean ± std over seeds, n = number of seeds); runs below {root.name}/")
    comp = comparison_table(runs, select=select, digits=digits)
    files += write_table(comp, out / "comparison",
                         caption="Our runs beside the papers' reported numbers (METHODS.md); every difference in "
                                 "setting is stated in the last column")
    failed = failed_runs(root)
    if len(failed):
        files.append(atomic_write_text(out / "failed_runs.csv", failed.to_csv(index=False)))
    made, notes = make_figures(runs, out / "figures") if figures else ({}, ["figures not requested"])
    files += list(made.values())
    prov = provenance(command, results_root=str(root), n_runs=int(len(runs)),
                      run_commits=sorted({str(c) for c in runs["git_commit"].dropna()}),
                      run_devices=sorted({str(c) for c in runs.get("device", []) if c == c}),
                      select=select, notes=notes)
    files.append(atomic_write_json(out / "provenance.json", prov))
    files.append(atomic_write_text(out / "README.md", _readme(root, out, prov, wide, made, len(failed))))
    return {"runs": runs, "summary": agg, "table": wide, "comparison": comp, "failed": failed, "figures": made,
            "notes": notes, "files": files}


def _readme(root: Path, out: Path, prov: dict, wide, figures: dict, n_failed: int) -> str:
    """The output folder's index, written by code (never edited by hand)."""
    pre = sorted({str(x) for x in wide.index.get_level_values("pretraining")}) if len(wide) else []
    lines = [f"# mAP tables: {root.name}", "",
             f"Written by `{prov['command']}` on {prov['created_utc']} (commit `{prov['git_commit']}`, machine "
             f"`{prov['machine']}`, {prov['device']}) from {prov['n_runs']} run directories below `{root}`; "
             f"the runs' own commits: {', '.join(f'`{c}`' for c in prov['run_commits']) or 'not recorded'}. "
             f"Pretraining of our runs: {', '.join(pre)}.", "",
             "Cells: mean ± sample standard deviation over seeds (n = number of seeds).", "",
             to_markdown(wide), "",
             "* `comparison.{csv,md,tex}` — our rows beside the papers' reported numbers, differences stated",
             "* `map_table.{csv,md,tex}` — the table above; `runs.csv`, `summary_long.csv` — per run / per setting",
             "* `provenance.json` — how this folder was made"]
    if n_failed:
        lines.append(f"* `failed_runs.csv` — {n_failed} failed or interrupted run(s) listed by the grid summaries")
    lines += [f"* `{Path(p).relative_to(out)}`" for p in figures.values()]
    lines += [f"* note: {n}" for n in prov.get("notes", [])]
    return "\n".join(lines) + "\n"


def main_from_args(args) -> int:
    command = (f"hashlib-vit tables {args.root} --out {args.out}"
               + (f" --reference {args.reference}" if args.reference != "matched" else "")
               + (" --no-figures" if args.no_figures else ""))
    res = build_tables(args.root, args.out, select=args.reference, figures=not args.no_figures, command=command)
    print(to_markdown(res["table"]))
    for n in res["notes"]:
        print("note:", n)
    print(f"wrote {len(res['files'])} files under {args.out}")
    return 0


__all__ = ["collect", "aggregate", "wide_table", "comparison_table", "reference_results", "build_tables",
           "make_figures", "run_curves", "hamming_pr_curve", "precision_at_n", "to_markdown", "to_latex",
           "write_table", "failed_runs", "family_of", "method_key"]
