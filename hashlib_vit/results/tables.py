"""Paper-style mAP tables, built only from run directories (through :func:`~.collect.collect`).

    hashlib-vit tables results/cifar10_scratch --out results/tables/cifar10_scratch

* :func:`aggregate` — mean ± spread (sample standard deviation) and the number of seeds per setting.
* :func:`wide_table` — rows are methods (method, backbone, pretraining, training), columns are
  data set × bits, cells ``0.812 ± 0.004 (n=3)``; written as CSV, Markdown and LaTeX.
* :func:`paper_comparison_table` — our rows next to the papers' reported numbers
  (:func:`~.reference.reference_results`, the one copy of every paper number, with its source), with
  each difference in setting stated (backbone, pretraining, protocol, training scale).
* :func:`chance_level_table` — the loss-zoo view: one row per run with the random-code mAP, the ratio and
  a collapse note (and :func:`loss_zoo_summary` over variant folders).
* :func:`build_tables` — all of the above plus the figures (:mod:`.figures`) into one output folder,
  with ``provenance.json``; :func:`tables_main` is the ``hashlib-vit tables`` command.
"""
from __future__ import annotations

import json
import math
import os
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path

from ..errors import ConfigError, DataError
from ..utils import atomic_write_json, atomic_write_text, git_commit, make_dirs
from .analysis import collapse_note
from .collect import ROW_KEYS, collect, failed_runs, family_of, method_key, row_keys
from .figures import make_figures
from .reference import reference_results


# ----------------------------------------------------------------------------- aggregation
def aggregate(runs, value: str = "map") -> "pd.DataFrame":  # noqa: F821
    """Mean, spread (sample std, ddof=1; NaN for one seed), min, max and number of seeds per setting."""
    import pandas as pd

    if runs is None or len(runs) == 0:
        return pd.DataFrame(columns=ROW_KEYS + ["protocol", "bits", "mean", "std", "min", "max", "n", "seeds", "topk"])
    keys = row_keys(runs) + ["protocol", "bits"]
    g = runs.groupby(keys, dropna=False, sort=True)
    out = g[value].agg(["mean", "std", "min", "max", "count"]).rename(columns={"count": "n"}).reset_index()
    out["seeds"] = g["seed"].apply(lambda s: ",".join(str(x) for x in sorted(s.dropna().unique()))).values
    out["topk"] = g["topk"].first().values if "topk" in runs else None
    return out


def fmt_cell(mean: float, std: float, n: int, digits: int = 3) -> str:
    """A table cell: ``0.812 ± 0.004 (n=3)``; ``0.812 (n=1)`` without a spread; '' for a missing mean."""
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
    rows = row_keys(agg)
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


def paper_comparison_table(runs, reference=None, *, select: str = "matched", digits: int = 3,
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


# ----------------------------------------------------------------------------- the loss zoo (chance level)
CHANCE_COLUMNS = ["method", "backbone", "protocol", "bits", "epochs", "seed", "pretrained", "map", "map_random",
                  "map_over_random", "note", "mean_abs_u", "input_spread", "distinct_db_codes", "bit_balance",
                  "final_loss", "train_time_s"]


def chance_level_table(rows_or_root) -> "pd.DataFrame":  # noqa: F821
    """One row per run: method, bits, mAP, random-code mAP (``map_random``, the chance level on the same
    queries and database), their ratio, a collapse note (:func:`~.analysis.collapse_note`) and the code
    statistics of ``diagnostics.json`` when present; sorted by method and bits.

    Accepts a list of run rows (dicts of metrics), a folder of run
    directories (read with :func:`~.collect.collect`) or a :func:`~.collect.collect` frame."""
    import pandas as pd

    if isinstance(rows_or_root, (str, Path)):
        df = collect(rows_or_root)
    elif isinstance(rows_or_root, pd.DataFrame):
        df = rows_or_root
    else:
        df = pd.DataFrame(list(rows_or_root))
    if not len(df):
        return df
    df = df.copy()
    df["map_over_random"] = (df["map"] / df["map_random"]).round(2)
    df["note"] = [collapse_note(m, r) for m, r in zip(df["map"], df["map_random"])]
    cols = [c for c in CHANCE_COLUMNS if c in df.columns]
    return df[cols].sort_values(["method", "bits"]).reset_index(drop=True)


def markdown_table(df) -> str:
    """A plain Markdown table of a flat DataFrame; floats with 4 significant digits, NaN empty."""
    def fmt(v):
        if isinstance(v, float):
            return "" if math.isnan(v) else f"{v:.4g}"
        return str(v).replace("|", "\\|")

    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def loss_zoo_summary(root: str | os.PathLike, *, write: bool = True) -> "pd.DataFrame":  # noqa: F821
    """:func:`chance_level_table` of every variant folder below ``root`` (``root/<variant>/<run>``) in one
    frame with the variant's ``lr``, ``batch_size`` and each run's ``loss_params``; with ``write``, also
    written to ``root/summary.json`` and ``root/summary.md``. Raises ConfigError when no run is below
    ``root``."""
    import pandas as pd

    from ..utils import resolve_path

    root = resolve_path(root)
    runs = collect(root) if root.is_dir() else pd.DataFrame()
    if not len(runs):
        raise ConfigError(f"no completed run directories below {root}")
    runs["folder"] = [Path(rd).relative_to(root).parts[0] for rd in runs["run_dir"]]
    parts = []
    for folder, sub in runs.groupby("folder", sort=True):
        if len(Path(sub["run_dir"].iloc[0]).relative_to(root).parts) < 2:
            continue  # a run directly below root belongs to no variant
        t = chance_level_table(sub)
        by_dir = sub.set_index(sub["method"].astype(str) + "|" + sub["bits"].astype(str))
        cfgs = [by_dir.loc[f"{m}|{b}", "config"] for m, b in zip(t["method"], t["bits"])]
        cfgs = [c.iloc[0] if isinstance(c, pd.Series) else c for c in cfgs]
        t.insert(0, "variant", folder)
        t["lr"] = cfgs[0].get("lr")
        t["batch_size"] = cfgs[0].get("batch_size")
        t["loss_params"] = [json.dumps(c.get("loss_params", {})) for c in cfgs]
        parts.append(t)
    if not parts:
        raise ConfigError(f"no variant folder with completed runs below {root} (expected root/<variant>/<run>)")
    df = pd.concat(parts, ignore_index=True)
    if not write:
        return df
    atomic_write_json(root / "summary.json", json.loads(df.to_json(orient="records")))
    cols = ["variant", "method", "bits", "epochs", "lr", "batch_size", "loss_params", "map", "map_random", "note",
            "mean_abs_u", "input_spread", "distinct_db_codes", "final_loss"]
    md = markdown_table(df[[c for c in cols if c in df.columns]])
    atomic_write_text(root / "summary.md", "<!-- written by hashlib_vit.results.tables.loss_zoo_summary; do not edit -->\n" + md + "\n")
    return df


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
    """A Markdown table of ``df`` (MultiIndex rows/columns flattened to ``cifar10 32 bits`` columns)."""
    d = _flat_columns(df).astype(str)
    esc = lambda s: s.replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = ["| " + " | ".join(esc(str(c)) for c in d.columns) + " |", "|" + "---|" * len(d.columns)]
    lines += ["| " + " | ".join(esc(str(v)) for v in row) + " |" for row in d.itertuples(index=False)]  # NaN: str
    return "\n".join(lines) + "\n"


_LATEX_ESC = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
              "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\\": r"\textbackslash{}", "±": r"$\pm$",
              "≈": r"$\approx$", "–": "--", "λ": r"$\lambda$"}


def latex_escape(text: str) -> str:
    """``text`` with LaTeX's special characters (and ±, ≈, –, λ) escaped."""
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


# ----------------------------------------------------------------------------- everything
def provenance(command: str | None = None, **extra) -> dict:
    """How an output folder was made: UTC time, command, git commit, machine, platform, versions, device."""
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

    A run whose metrics.json is damaged is skipped with a warning naming the file and the key
    (:func:`~.collect.collect`); it is listed in ``notes`` (printed by ``hashlib-vit tables``) and in
    provenance.json. Raises DataError when ``root`` does not exist, holds no run, or no usable run, and
    when a grid_summary.csv below it is damaged (:func:`hashlib_vit.results.collect.read_summary`).
    """
    root, out = Path(root), Path(out)
    if not root.is_dir():
        raise DataError(f"results folder {str(root)!r} does not exist")
    runs = collect(root)
    if len(runs) == 0:
        raise DataError(f"no completed run directory (no metrics.json) below {str(root)!r}")
    failed = failed_runs(root)  # read (and checked) before anything is written
    make_dirs(out, "tables folder")
    files: list[Path] = []
    plain = runs.drop(columns=[c for c in ("config", "curves") if c in runs])
    files.append(atomic_write_text(out / "runs.csv", plain.to_csv(index=False)))
    agg = aggregate(runs)
    files.append(atomic_write_text(out / "summary_long.csv", agg.to_csv(index=False)))
    wide = wide_table(agg, digits=digits)
    files += write_table(wide, out / "map_table",
                         caption=f"mAP (mean ± std over seeds, n = number of seeds); runs below {root.name}/")
    comp = paper_comparison_table(runs, select=select, digits=digits)
    files += write_table(comp, out / "comparison",
                         caption="Our runs beside the papers' reported numbers (METHODS.md); every difference in "
                                 "setting is stated in the last column")
    if len(failed):
        files.append(atomic_write_text(out / "failed_runs.csv", failed.to_csv(index=False)))
    made, notes = make_figures(runs, out / "figures") if figures else ({}, ["figures not requested"])
    notes = [f"run skipped: {m}" for m in runs.attrs.get("skipped", [])] + list(notes)
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


def tables_main(args) -> int:
    """``hashlib-vit tables ROOT --out DIR [--reference matched|all|none] [--no-figures]``."""
    command = (f"hashlib-vit tables {args.root} --out {args.out}"
               + (f" --reference {args.reference}" if args.reference != "matched" else "")
               + (" --no-figures" if args.no_figures else ""))
    res = build_tables(args.root, args.out, select=args.reference, figures=not args.no_figures, command=command)
    print(to_markdown(res["table"]))
    for n in res["notes"]:
        print("note:", n)
    print(f"wrote {len(res['files'])} files under {args.out}")
    return 0


__all__ = ["CHANCE_COLUMNS", "aggregate", "build_tables", "chance_level_table", "fmt_cell", "latex_escape",
           "loss_zoo_summary", "markdown_table", "paper_comparison_table", "provenance",
           "tables_main", "to_latex", "to_markdown", "wide_table", "write_table"]
