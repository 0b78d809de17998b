"""Every figure the package draws (matplotlib / seaborn); each function returns the Figure it drew.

* data: :func:`class_samples_grid`; training: :func:`training_curve` (THE training-curve plot: loss per
  step or epoch and mAP per evaluation, of one run or several runs / variants; :func:`run_log` reads a
  run for it; :func:`training_curve_panels`: one per group of runs; :func:`plot_training_curves`: the
  tables' figure of a whole results folder, one panel per protocol × bits, each a :func:`training_curve`);
* retrieval: :func:`retrieval_grid` (ranking from the evaluation engine), :func:`search_result_grid`,
  :func:`query_result_figure` (one search by image: distances and labels);
* results: :func:`map_vs_bits` (the one mAP-vs-code-length figure, with the random-code level when known),
  :func:`plot_pr_curves`, :func:`plot_precision_at_n` — curves read from metrics.json (schema 2), never
  recomputed — and :func:`make_figures` (all of them for ``build_tables``);
* results of one run or a few: :func:`map_against_random` (trained vs random codes);
* hyper-parameters: :func:`sensitivity_figure` (one panel per parameter of a sensitivity study);
* methods: :func:`mgvt_diagram` and :func:`cauchy_likelihood` (TransHash), :func:`plot_aem_maps` / :func:`aem_maps_of_run` (AE-ViT),
  :func:`plot_codebooks` (SL-ViT / OrthoHash).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .collect import row_keys


def _floats(values) -> list[float]:
    """Curve values as floats; None (e.g. a radius at which no query retrieves anything) -> NaN."""
    return [float("nan") if v is None else float(v) for v in values]


def curves_of(metrics: dict) -> dict:
    """The PR (Hamming radius) and precision@N curves of one run, read from its metrics' ``curves`` block
    (written by the evaluation engine, :func:`hashlib_vit.retrieval.evaluate` with ``curves=True``).
    ``{"pr": {"radius", "precision", "recall"} | None, "pn": {"n", "precision"} | None, "source"}``;
    ``source`` is ``metrics.json`` or ``none`` (a schema-1 run without curves: nothing is recomputed)."""
    c = metrics.get("curves") if isinstance(metrics, dict) else None
    if not isinstance(c, dict):
        return {"pr": None, "pn": None, "source": "none"}
    h, r = c["pr_hamming"], c["pr_rank"]
    return {"pr": {"radius": [int(x) for x in h["radius"]], "precision": _floats(h["precision"]),
                   "recall": _floats(h["recall"])},
            "pn": {"n": [int(x) for x in r["rank"]], "precision": _floats(r["precision"])},
            "source": "metrics.json"}


def run_curves(run_dir: str | os.PathLike) -> dict:
    """:func:`curves_of` the metrics.json of one run directory (validated by ``read_metrics``)."""
    from .rundir import read_metrics

    return curves_of(read_metrics(Path(run_dir) / "metrics.json"))


def collect_curves(runs) -> tuple["pd.DataFrame", "pd.DataFrame", list[str]]:  # noqa: F821
    """Long tables of PR and P@N curves of every run of ``runs`` (a :func:`~.collect.collect` frame: its
    ``curves`` column), with the run's row keys, protocol, bits, seed and run_dir; plus notes naming
    the runs that have no curves."""
    import pandas as pd

    pr_rows, pn_rows, notes = [], [], []
    keys = [k for k in row_keys(runs) + ["protocol", "bits", "seed", "run_dir"] if k in runs]
    for _, r in runs.iterrows():
        c = curves_of({"curves": r.get("curves")})
        meta = {k: r[k] for k in keys}
        if c["pr"]:
            pr_rows += [{**meta, "radius": a, "precision": p, "recall": q}
                        for a, p, q in zip(c["pr"]["radius"], c["pr"]["precision"], c["pr"]["recall"])]
            pn_rows += [{**meta, "n": a, "precision": p} for a, p in zip(c["pn"]["n"], c["pn"]["precision"])]
        else:
            notes.append(f"{r['run_dir']}: no curves in metrics.json (schema-1 run; see "
                         "python -m hashlib_vit.results.migrate)")
    return pd.DataFrame(pr_rows), pd.DataFrame(pn_rows), notes


def collect_training_logs(runs, max_points: int = 400) -> "pd.DataFrame":  # noqa: F821
    """Every run's training log (:meth:`RunDir.train_log`: step, epoch, loss) with its row keys; thinned to
    ``max_points`` per run."""
    import pandas as pd

    from .rundir import RunDir

    frames = []
    keys = [k for k in row_keys(runs) + ["protocol", "bits", "seed", "run_dir"] if k in runs]
    for _, r in runs.iterrows():
        rd = RunDir(r["run_dir"])
        if rd.log_path() is None:  # a training-free run has no training log
            continue
        log = rd.train_log()[["step", "epoch", "loss"]]  # the checked reader (DataError naming the file)
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


def map_vs_bits(runs, value: str = "map", *, ax=None, title: str | None = None, chance: bool = True):
    """mAP against code length, one line per setting (``method · backbone``; mean over seeds, band = std),
    one panel per protocol, with the random-code level (``map_random``, mean per bits) dashed when
    ``chance`` and the runs recorded it. ``runs``: a :func:`~.collect.collect` frame or the
    :func:`~.tables.chance_level_table` rows (needs ``method``, ``bits`` and ``value``). ``ax``: draw
    into this axes (one protocol only). Returns the figure."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    d = runs.copy()
    d["setting"] = _label(d) if "backbone" in d else d["method"].astype(str)
    protocols = sorted(d["protocol"].astype(str).unique()) if "protocol" in d else [None]
    if ax is not None and len(protocols) > 1:
        raise ValueError(f"ax= draws one panel but the runs hold {len(protocols)} protocols {protocols}")
    if ax is None:
        fig, axes = plt.subplots(1, len(protocols), figsize=(5.5 * len(protocols), 3.6), squeeze=False)
        axes = list(axes[0])
    else:
        fig, axes = ax.figure, [ax]
    for a, proto in zip(axes, protocols):
        sub = d if proto is None else d[d["protocol"].astype(str) == proto]
        sns.lineplot(data=sub, x="bits", y=value, hue="setting", marker="o", errorbar="sd", ax=a)
        if chance and "map_random" in sub and sub["map_random"].notna().any():
            level = sub.groupby("bits")["map_random"].mean()
            a.plot(level.index, level.values, "k--", lw=1, label="random codes")
        a.set_xticks(sorted(sub["bits"].unique()))
        a.set_ylim(0, 1)
        a.set_xlabel("code length b (bits)")
        a.set_ylabel("mAP")
        a.legend(fontsize=8, ncols=2)
        a.set_title(" · ".join(x for x in (title, proto if len(protocols) > 1 else None) if x)
                    or (proto or ""))
    if ax is None:
        fig.suptitle("mAP vs code length (mean ± std over seeds)" if title is None else "", y=1.02)
        fig.tight_layout()
    return fig


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
    """Precision of the top N items (Hamming ranking) against N, one panel per protocol × bits."""
    import seaborn as sns

    d = pn.assign(setting=_label(pn))
    g = sns.relplot(data=d, x="n", y="precision", hue="setting", col="bits", row="protocol", kind="line",
                    marker="o", errorbar="sd", height=3, aspect=1.1)
    g.set_axis_labels("N (top items)", "precision@N")
    g.figure.suptitle("Precision@N (Hamming ranking; mean ± std over seeds)", y=1.03)
    return g.figure


def plot_training_curves(logs):
    """The tables' training-curve figure: :func:`training_curve` once per protocol × bits panel, one line
    per setting (``method · backbone``), the loss per step averaged over the setting's seeds. ``logs``:
    :func:`collect_training_logs` of a results folder. Returns the figure."""
    import matplotlib.pyplot as plt

    d = logs.assign(setting=_label(logs))
    panels = sorted({(str(p), int(b)) for p, b in zip(d["protocol"], d["bits"])})
    ncol = min(len(panels), 4)
    nrow = -(-len(panels) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.2 * ncol, 3 * nrow), squeeze=False)
    for ax, (proto, bits) in zip(axes.flat, panels):
        sub = d[(d["protocol"].astype(str) == proto) & (d["bits"].astype(int) == bits)]
        runs = {name: g.groupby("step", as_index=False)["loss"].mean() for name, g in sub.groupby("setting")}
        training_curve(runs, ax=ax, title=f"{proto} · {bits} bits")
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    fig.suptitle("Training loss per step (mean over seeds)", y=1.02)
    fig.tight_layout()
    return fig


def _save(fig, path: Path) -> Path:
    import io

    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format=path.suffix.lstrip(".") or "png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    from ..utils import atomic_write_bytes

    return atomic_write_bytes(path, buf.getvalue())


def sensitivity_figure(tables, *, title: str | None = None):
    """One panel per table of :func:`hashlib_vit.results.sensitivity.sensitivity_table` (four per row): the selection
    metric (mean, error bar = std over seeds when n > 1) and the query mAP (hollow, read only) at each value
    of the parameter (categorical x axis, in the table's order); the selected value is ringed."""
    import matplotlib.pyplot as plt

    tables = list(tables)
    ncols = min(4, len(tables))
    nrows = -(-len(tables) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 3.0 * nrows), squeeze=False, sharey=True)
    for ax in axes.flat[len(tables):]:
        ax.set_visible(False)
    for ax, t in zip(axes.flat, tables):
        select = t.attrs.get("select", "val_map")
        x = np.arange(len(t))
        ax.errorbar(x, t[f"{select}_mean"], yerr=t[f"{select}_std"].fillna(0), fmt="o-", color="C0", capsize=3,
                    label=f"{select} (selects)")
        ax.plot(x, t["map_mean"], "s--", mfc="none", color="C1", label="query mAP (not used)")
        sel = t["selected"].to_numpy(bool)
        ax.plot(x[sel], t.loc[sel, f"{select}_mean"], "o", ms=14, mfc="none", mec="C3", mew=2, label="chosen")
        ax.set_xticks(x, [str(v) for v in t["value"]], rotation=30)
        ax.set_xlabel(t.attrs.get("parameter", "value").replace("loss_params.", ""))
        ax.grid(alpha=0.3)
    for row in axes:
        row[0].set_ylabel("mAP")
    axes[0][0].legend(fontsize=7, loc="lower left")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def make_figures(runs, out: str | os.PathLike) -> tuple[dict[str, Path], list[str]]:
    """Every figure that the available files allow, saved as PNG under ``out``; notes say what was skipped."""
    out = Path(out)
    made, notes = {}, []
    if len(runs) == 0:
        return made, ["no completed runs: no figures"]
    made["map_vs_bits"] = _save(map_vs_bits(runs), out / "map_vs_bits.png")
    pr, pn, cnotes = collect_curves(runs)
    notes += cnotes
    if len(pr):
        made["pr_curves"] = _save(plot_pr_curves(pr), out / "pr_curves.png")
    else:
        notes.append("precision-recall figure skipped: no run has curves in metrics.json")
    if len(pn):
        made["precision_at_n"] = _save(plot_precision_at_n(pn), out / "precision_at_n.png")
    else:
        notes.append("precision@N figure skipped: no run has curves in metrics.json")
    logs = collect_training_logs(runs)
    if len(logs):
        made["training_curves"] = _save(plot_training_curves(logs), out / "training_curves.png")
    else:
        notes.append("training-curve figure skipped: no train_log.csv")
    return made, notes




# ----------------------------------------------------------------------------- data, training, retrieval
def _img(x) -> np.ndarray:
    """uint8 (3,H,W) or float [0,1] tensor -> HWC float array for imshow."""
    x = x.detach().cpu()
    x = x.float() / 255.0 if str(x.dtype) == "torch.uint8" else x.float()
    return x.permute(1, 2, 0).clamp(0, 1).numpy()


def class_samples_grid(split, class_names: list[str], per_class: int = 8, seed: int = 0):
    """A grid with ``per_class`` sample images of every class (rows = classes); ``split`` is a data
    split with multi-hot ``labels`` (n, C) and ``images`` (or ``load_images`` for file-backed splits)."""
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(seed)
    labels = split.labels.numpy() > 0  # items carrying label c (multi-label items can appear in several rows)
    n_cls = len(class_names)
    fig, axes = plt.subplots(n_cls, per_class, figsize=(per_class * 0.9, n_cls * 0.9), squeeze=False)
    for c in range(n_cls):
        pos = np.flatnonzero(labels[:, c])
        pick = rng.choice(pos, size=min(per_class, len(pos)), replace=False) if len(pos) else []
        # in-memory splits hold .images; file-backed ones (list-file data sets) decode on demand
        ims = split.images[pick] if hasattr(split, "images") else (split.load_images(pick, 96) if len(pick) else [])
        for j, ax in enumerate(axes[c]):
            ax.axis("off")
            if j < len(pick):
                ax.imshow(_img(ims[j]))
        axes[c, 0].set_title(class_names[c], fontsize=8, loc="left")
    fig.tight_layout()
    return fig


def _as_log(steps):
    """A training log as a DataFrame, from a path, a DataFrame or a list of per-step dicts."""
    import pandas as pd

    if isinstance(steps, (str, os.PathLike)):
        from ..utils import read_csv

        return read_csv(steps, "training log", required=("step",), numeric="*")  # DataError naming file, line
    return steps.copy() if isinstance(steps, pd.DataFrame) else pd.DataFrame(list(steps))


def run_log(run) -> tuple["pd.DataFrame", list[dict], str | None]:  # noqa: F821
    """``(steps, evals, name)`` of one run for :func:`training_curve`.

    ``run``: a :class:`~.rundir.RunDir` or a run-directory path (its ``train_log()`` and ``curves()``), a
    :class:`~hashlib_vit.experiment.RunResult` (its ``history``), a train_log.csv path, a DataFrame or a
    list of per-step dicts (no evaluations). ``name``: the run's method when known, else None."""
    from .rundir import RunDir

    if isinstance(run, (str, os.PathLike)) and Path(run).is_dir():
        run = RunDir(run)
    if isinstance(run, RunDir):
        name = run.metrics()["method"] if run.completed else run.path.name
        return run.train_log(), run.curves().to_dict("records"), name
    if hasattr(run, "history") and hasattr(run, "metrics"):  # a RunResult
        return _as_log(run.history["steps"]), list(run.history.get("evals") or []), run.metrics.get("method")
    return _as_log(run), [], None


def training_curve(runs, evals=None, *, columns=("loss",), per_epoch: bool = False, label: str | None = None,
                   title: str = "training", ax=None, logy: bool = False, bound: dict | None = None):
    """THE training-curve plot: loss per step (raw, faint, and smoothed) or its mean per epoch, and the
    mAP of the periodic evaluations on a second axis; for one run or several runs / variants on one axes.

    ``runs``: one run as :func:`run_log` takes it (RunDir, run-directory path, RunResult, train_log.csv
    path, DataFrame, list of per-step dicts), or several as ``{label: run}`` or a list of runs (labelled
    by their method). The log needs ``step`` (and ``epoch`` for ``per_epoch``) and the ``columns`` to
    draw (e.g. ``["loss", "loss_quant"]``). ``evals``: evaluations (``step``/``epoch``, ``map``) of a
    single log given without them (``RunResult.history["evals"]``); runs given as RunDir or RunResult
    bring their own. ``per_epoch``: mean per epoch on an epoch axis (for comparing runs); ``label``:
    legend prefix of a single run; ``logy``: log-scale loss axis; ``bound``: ``{name: Series or array}``
    extra dashed lines on the loss axis (same x as the log, e.g. a bound derived from its columns).
    Raises ValueError naming a column the log lacks. Returns the figure."""
    import matplotlib.pyplot as plt
    import pandas as pd

    several = isinstance(runs, dict) or (isinstance(runs, (list, tuple)) and len(runs) > 0
                                         and not isinstance(runs[0], dict))
    items = list(runs.items()) if isinstance(runs, dict) else [(None, r) for r in runs] if several else [(label, runs)]
    if ax is None:
        fig, ax = plt.subplots(figsize=(6, 3.2))
    else:
        fig = ax.figure
    ax2 = None
    for k, (name, run) in enumerate(items):
        df, run_evals, method = run_log(run)
        run_evals = run_evals or (list(evals) if evals is not None and not several else [])
        name = name if name is not None else (method if several else None)
        missing = [c for c in columns if c not in df]
        if missing:
            raise ValueError(f"training log has no column(s) {missing}; it has {list(df.columns)}")
        prefix = f"{name} " if name else ""
        for i, col in enumerate(columns):
            color = f"C{k}" if several else (None if name else f"C{i}")
            text = col if len(columns) > 1 or name else "loss"
            if per_epoch:
                e = df.groupby("epoch")[col].mean()
                (line,) = ax.plot(e.index, e.values, color=color, label=f"{prefix}{text}".strip())
            else:
                (line,) = ax.plot(df["step"], df[col].rolling(max(len(df) // 30, 1), min_periods=1).mean(),
                                  color=color, label=f"{prefix}{text} (smoothed)".strip())
                ax.plot(df["step"], df[col], alpha=0.3, color=line.get_color(),
                        label=f"{prefix}{text} (per step)".strip() if not name else None)
        for bname, values in (bound or {}).items():
            v = pd.Series(np.asarray(values, dtype=float), index=df.index)
            x, y = (df["epoch"].unique(), v.groupby(df["epoch"]).mean()) if per_epoch else (df["step"], v)
            ax.plot(x, y, "k--", lw=1, label=bname)
        if run_evals:
            ev = pd.DataFrame(run_evals)
            ax2 = ax2 or ax.twinx()
            ax2.plot(ev["epoch" if per_epoch else "step"], ev["map"], "o-",
                     color=f"C{k}" if several else ("C1" if len(columns) == 1 else "k"),
                     label=f"{prefix}mAP".strip() if several else "mAP")
    ax.set_xlabel("epoch" if per_epoch else "step")
    ax.set_ylabel("loss")
    if logy:
        ax.set_yscale("log")
    ax.set_title(title)
    if ax2 is not None:
        ax2.set_ylabel("mAP")
        ax2.set_ylim(0, 1)
        ax2.legend(loc="upper right", fontsize=8)
    ax.legend(loc="upper left" if ax2 is not None else "best", fontsize=8)
    fig.tight_layout()
    return fig


def _metrics_of(run) -> dict:
    """metrics of a RunResult, a RunDir / run-directory path, or a metrics dict."""
    from .rundir import RunDir

    if isinstance(run, dict):
        return run
    if hasattr(run, "metrics") and not isinstance(run, RunDir):
        return run.metrics
    return RunDir(run).metrics()


def map_against_random(runs, *, ax=None, title: str | None = None):
    """The mAP of trained codes next to the mAP of random codes on the same queries and database (the
    chance level, metrics ``map_random``): one bar per run, its random level as a dashed tick over it.

    ``runs``: one run (RunResult, RunDir, run-directory path or metrics dict) or ``{label: run}`` (a
    single run is labelled by its method). Raises ValueError naming a run without ``map_random``.
    Returns the figure; the y axis is mAP in [0, 1]."""
    import matplotlib.pyplot as plt

    items = runs.items() if isinstance(runs, dict) and "map" not in runs else [(None, runs)]
    names, maps, rand = [], [], []
    for name, run in items:
        m = _metrics_of(run)
        if m.get("map_random") is None:
            raise ValueError(f"run {name or m.get('method')!r} has no 'map_random' in its metrics (random-codes level)")
        names.append(name if name is not None else str(m["method"]))
        maps.append(float(m["map"]))
        rand.append(float(m["map_random"]))
    if ax is None:
        fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(names), 3))
    else:
        fig = ax.figure
    x = np.arange(len(names))
    ax.bar(x, maps, color="C0", label="trained codes")
    ax.hlines(rand, x - 0.4, x + 0.4, colors="k", linestyles="--", lw=1.5, label="random codes")
    for i, (v, r) in enumerate(zip(maps, rand)):
        ax.annotate(f"{v:.3f}\n({v / r:.1f}x)" if r > 0 else f"{v:.3f}", (i, v), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x, names, rotation=0 if len(names) < 4 else 30)
    ax.set(ylim=(0, 1.1), ylabel="mAP", title=title or "trained vs random codes")
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    return fig


def cauchy_likelihood(bits: int, gammas=(5, 10, 20), used: float | None = None):
    """TransHash's Cauchy similarity probability ``P(similar | D) = gamma / (gamma + D)`` (DCH, Cao et al.
    CVPR 2018, eq. 6; TransHash §3.3) against the Hamming distance D of ``bits``-bit codes, for each
    ``gammas`` (``used`` marked), next to the sigmoid likelihood of ±1 codes ``sigmoid(0.5 (K - 2D))``
    (DPSH/DHN; the ablation "w/o C"). Returns the figure."""
    import matplotlib.pyplot as plt

    d = np.linspace(0, bits, 200)
    fig, ax = plt.subplots(figsize=(6, 3.2))
    for g in gammas:
        ax.plot(d, g / (g + d), label=f"Cauchy, γ={g:g}" + (" (used)" if used is not None and g == used else ""))
    ax.plot(d, 1 / (1 + np.exp(-0.5 * (bits - 2 * d))), "k--", label="sigmoid(0.5·h_i·h_j), ±1 codes (w/o C)")
    ax.set(xlabel=f"Hamming distance D between {bits}-bit codes", ylabel="P(similar | D)", ylim=(0, 1.02))
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_codebooks(num_classes: int, bits: int, methods=("bernoulli", "hadamard", "maxhd"), seed: int = 0):
    """The fixed ±1 class codes of OrthoHash / SL-ViT (:func:`hashlib_vit.losses.orthohash.make_codebook`),
    one heat map (class x bit) per method; a method that cannot build ``num_classes`` x ``bits`` codes
    (e.g. Hadamard needs 2b >= C) gets an empty panel titled "not available". Distances:
    :func:`~.analysis.codebook_distances`. Returns the figure."""
    import matplotlib.pyplot as plt

    from ..errors import ConfigError
    from ..losses.orthohash import make_codebook

    fig, axes = plt.subplots(1, len(methods), figsize=(3.7 * len(methods), 2.6), squeeze=False)
    for ax, method in zip(axes[0], methods):
        try:
            cb = make_codebook(method, num_classes, bits, seed=seed)
        except (ConfigError, ValueError):
            ax.set_axis_off()
            ax.set_title(f"{method}: not available")
            continue
        ax.imshow(cb.numpy(), cmap="coolwarm", aspect="auto", interpolation="nearest")
        ax.set(title=method, xlabel="bit", ylabel="class")
    fig.tight_layout()
    return fig


def training_curve_panels(runs, panel: str = "method", label: str = "bits", *, per_epoch: bool = True,
                          ncols: int = 4, columns=("loss",)):
    """:func:`training_curve` once per panel: the runs of a :func:`~.collect.collect` frame (its ``run_dir``
    column) grouped by ``panel`` (one axes each, in order of appearance), one line per value of ``label``
    (e.g. the code length) — several runs / variants side by side. Returns the figure."""
    import matplotlib.pyplot as plt

    for col in (panel, label, "run_dir"):
        if col not in runs:
            raise ValueError(f"runs have no column {col!r}; they have {list(runs.columns)}")
    names = list(dict.fromkeys(runs[panel]))
    ncol = max(min(len(names), ncols), 1)
    nrow = -(-len(names) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.2 * ncol, 2.4 * nrow), squeeze=False)
    for ax, name in zip(axes.flat, names):
        sub = runs[runs[panel] == name]
        suffix = "b" if label == "bits" else ""
        training_curve({f"{v}{suffix}": rd for v, rd in zip(sub[label], sub["run_dir"])}, per_epoch=per_epoch,
                       columns=columns, ax=ax, title=str(name))
    for ax in axes.flat[len(names):]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def search_result_grid(query_images, db_images, ids: np.ndarray, distances: np.ndarray, relevant: np.ndarray,
                       title: str = "Top-k from the index (green = shares a label with the query)"):
    """Rows: a query image, then the images of its search results with their Hamming distance;
    ``ids`` / ``distances`` (Q, k) int (a :class:`~hashlib_vit.retrieval.index.SearchResult`; -1 = no
    result) and ``relevant`` (Q, k) bool mark correct results (green frame) and wrong ones (red)."""
    import matplotlib.pyplot as plt

    nq, k = ids.shape
    fig, axes = plt.subplots(nq, k + 1, figsize=((k + 1) * 0.95, nq * 1.1), squeeze=False)
    for r in range(nq):
        ax = axes[r, 0]
        ax.imshow(_img(query_images[r]))
        ax.set_title("query", fontsize=8)
        ax.set_xticks([]), ax.set_yticks([])
        for s in ax.spines.values():
            s.set_edgecolor("black"), s.set_linewidth(2)
        for j in range(k):
            ax = axes[r, j + 1]
            ax.set_xticks([]), ax.set_yticks([])
            if ids[r, j] < 0:
                ax.axis("off")
                continue
            ax.imshow(_img(db_images[int(ids[r, j])]))
            ok = bool(relevant[r, j])
            ax.set_title(f"d={distances[r, j]}", fontsize=7, color="green" if ok else "red")
            for s in ax.spines.values():
                s.set_edgecolor("green" if ok else "red"), s.set_linewidth(2)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def query_result_figure(query_image, result_images, distances, labels, *, query_label: str | None = None,
                        relevant=None, title: str | None = None, ncols: int = 6):
    """One search: the query image, then its results, each titled with its Hamming distance and label.

    ``query_image``: uint8 (3, H, W) or float [0, 1] tensor; ``result_images``: a sequence of such images
    (n results, ranked); ``distances``: n ints; ``labels``: n strings (the results' class names);
    ``relevant``: optional n bools (green frame = shares a label with the query, red = not); ``ncols``:
    panels per row. Used by :class:`hashlib_vit.results.query_search.QuerySearch` (query by image)."""
    import matplotlib.pyplot as plt

    n = len(distances)
    cols = max(1, min(ncols, n + 1))
    rows = -(-(n + 1) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.35, rows * 1.8), squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([]), ax.set_yticks([])
        ax.axis("off")
    ax = axes.flat[0]
    ax.axis("on")
    ax.imshow(_img(query_image))
    ax.set_title("query" + (f"\n{query_label}" if query_label else ""), fontsize=8)
    for s in ax.spines.values():
        s.set_edgecolor("black"), s.set_linewidth(2)
    for j in range(n):
        ax = axes.flat[j + 1]
        ax.axis("on")
        ax.imshow(_img(result_images[j]))
        color = "black" if relevant is None else ("green" if relevant[j] else "red")
        ax.set_title(f"d={int(distances[j])}\n{labels[j]}", fontsize=7, color=color)
        for s in ax.spines.values():
            s.set_edgecolor(color), s.set_linewidth(2 if relevant is not None else 0.5)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def retrieval_grid(data, query_codes: np.ndarray, db_codes: np.ndarray, n_queries: int = 5, k: int = 10,
                   seed: int = 0):
    """Rows: a random query image (``seed``) then its top-k database images by Hamming distance (ties by
    database index), ranked by the retrieval engine's exact index (:class:`~hashlib_vit.retrieval.index.
    HashIndex`, ``flat``); green frame = shares a label with the query, red = not."""
    from ..retrieval.index import HashIndex

    rng = np.random.default_rng(seed)
    qs = rng.choice(len(query_codes), size=min(n_queries, len(query_codes)), replace=False)
    found = HashIndex.from_codes(np.asarray(db_codes)).search(np.asarray(query_codes)[qs], k)
    ql, dl = data.query.labels.numpy(), data.database.labels.numpy()
    relevant = (ql[qs][:, None, :] * dl[np.clip(found.ids, 0, None)]).sum(-1) > 0
    return search_result_grid(data.query.images[qs], data.database.images, found.ids, found.distances, relevant,
                              title="Top-k by Hamming distance (green = shares a label with the query)")


# ----------------------------------------------------------------------------- methods
def mgvt_diagram(bits: int = 32, groups: int = 2, depth: int = 24, n_patches: int = 49, local_stream: bool = True):
    """TransHash / MGVT (Chen et al., ICMR 2022, §3, Fig. 2): shared trunk, global stream, local stream over
    G token groups, per-feature hash heads and the concatenated code. Returns the matplotlib figure."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    g = groups if local_stream else 0
    top = 1.2 + 0.9 * (max(g, 1) - 1) if g else 0.6
    height = top + 1.1
    fig, ax = plt.subplots(figsize=(12, 1.2 * height))
    ax.set_xlim(0, 12.4)
    ax.set_ylim(0, height)
    ax.axis("off")

    def box(x, y, w, h, text, color, fs=9):
        ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.04", fc=color, ec="0.3", lw=1))
        ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=fs)

    def arrow(x0, y0, x1, y1):
        ax.add_patch(FancyArrowPatch((x0, y0), (x1, y1), arrowstyle="-|>", mutation_scale=12, color="0.3", lw=1))

    box(0.1, top, 1.4, 0.8, "image\n→ N patches\n+ CLS + pos", "#eeeeee")
    box(1.9, top, 1.9, 0.8, f"shared trunk\nblocks 1..{depth - 1}\n(siamese: shared weights)", "#d9e8fb")
    arrow(1.5, top + 0.4, 1.9, top + 0.4)
    box(4.4, top, 2.0, 0.8, "global block F_g\n+ LN_g (copy of\nlast block / norm)", "#fde2c8")
    arrow(3.8, top + 0.4, 4.4, top + 0.4)
    gb = bits // 2 if local_stream else bits
    box(6.9, top, 1.5, 0.8, f"CLS → f_g\naffine → {gb} bits", "#fff3b0")
    arrow(6.4, top + 0.4, 6.9, top + 0.4)
    lb = bits // (2 * g) if g else 0
    ys = [top - 1.0 - 0.9 * i for i in range(g)]
    if g:
        sizes = [len(a) for a in np.array_split(np.arange(n_patches), g)]
        box(1.9, ys[-1], 1.9, ys[0] - ys[-1] + 0.7,
            f"split patch tokens\ninto G={g} contiguous\ngroups ({'+'.join(map(str, sizes))})\neach prefixed by CLS",
            "#e6f4e6", fs=8.5)
        arrow(2.85, top, 2.85, ys[0] + 0.7)
        for i, y in enumerate(ys):
            box(4.4, y, 2.0, 0.7, f"local block F_l + LN_l\n(one shared copy) · group {i + 1}", "#d8f0d8", fs=8.5)
            arrow(3.8, y + 0.35, 4.4, y + 0.35)
            box(6.9, y, 1.5, 0.7, f"CLS → f_l^{i + 1}\naffine → {lb} bits", "#fff3b0", fs=8.5)
            arrow(6.4, y + 0.35, 6.9, y + 0.35)
    yc = (top + (ys[-1] if g else top)) / 2
    parts = "; ".join(["h_g"] + [f"h_l^{i + 1}" for i in range(g)])
    box(9.0, yc, 3.2, 0.8, f"u = [{parts}]  ({bits} bits)\ncode b = sign(u)", "#f3d9fa")
    arrow(8.4, top + 0.4, 9.0, yc + 0.5)
    for y in ys:
        arrow(8.4, y + 0.35, 9.0, yc + 0.3)
    ax.text(9.0, yc - 0.5, "loss per head (same group across a pair):\nweighted Cauchy pair NLL + λ·Cauchy prior",
            fontsize=8.5, va="top")
    title = "MGVT (TransHash)" + ("" if local_stream else " — w/o P (global stream only)")
    ax.set_title(f"{title}: K={bits} bits, G={g} groups, {depth} blocks, {n_patches} patch tokens", fontsize=11)
    fig.tight_layout()
    return fig


def plot_aem_maps(model, images, titles=None):
    """What AE-ViT's attention-enhanced module learned (METHODS.md §3): per image (columns) the image, AEM's
    spatial attention ``a_s`` and the size of its change ``||X' - X||`` per patch (both upsampled to the
    image); a last column shows the learned gate ``gamma`` and the channel attention. ``images``: float
    (n, 3, H, W) in [0, 1]. Returns the figure."""
    import matplotlib.pyplot as plt
    import torch

    from ..models.aem import aem_maps

    maps = aem_maps(model, images)
    n = images.shape[0]
    rows = [("image", None)]
    if maps["spatial"] is not None:
        rows.append(("spatial attention $a_s$", maps["spatial"]))
    rows.append((r"change $\|X'-X\|$", maps["change"]))
    fig, axes = plt.subplots(len(rows), n + 1, figsize=(1.7 * (n + 1), 1.8 * len(rows)), squeeze=False)
    size = images.shape[-1]
    for c in range(n):
        img = images[c].detach().cpu().float().permute(1, 2, 0).numpy()
        for r, (name, m) in enumerate(rows):
            ax = axes[r, c]
            ax.imshow(img)
            if m is not None:
                up = torch.nn.functional.interpolate(m[c][None, None], size=(size, size), mode="nearest")[0, 0]
                ax.imshow(up.numpy(), cmap="inferno", alpha=0.6)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(name, fontsize=8)
            if r == 0 and titles is not None:
                ax.set_title(str(titles[c]), fontsize=8)
    gamma = maps["gamma"].numpy()
    axg = axes[0, n]
    axg.hist(gamma, bins=20, color="tab:blue")
    axg.set_title(r"gate $\gamma$ (all 0 at init)", fontsize=8)
    axg.tick_params(labelsize=6)
    if maps["channel"] is not None and len(rows) > 1:
        axc = axes[1, n]
        mean_c = maps["channel"].mean(0).numpy()
        axc.bar(np.arange(len(mean_c)), np.sort(mean_c)[::-1], color="tab:orange", width=1.0)
        axc.set_title("channel attention $a_c$\n(mean over images, sorted)", fontsize=8)
        axc.tick_params(labelsize=6)
    for r in range(2 if maps["channel"] is not None and len(rows) > 1 else 1, len(rows)):
        axes[r, n].axis("off")
    fig.tight_layout()
    return fig


def aem_maps_of_run(result, n_show: int = 6, seed: int = 0):
    """:func:`plot_aem_maps` of a trained AE-ViT run (``result``: a RunResult) on ``n_show`` query images
    drawn with ``seed``, passed through the run's evaluation transform, titled with their class names.
    Returns the figure."""
    import torch

    from ..data import protocol_transforms

    data = result.data
    _, ev_tf = protocol_transforms(data.protocol, result.model.img_size)  # the run's evaluation transform
    pick = np.random.default_rng(seed).choice(len(data.query), size=min(n_show, len(data.query)), replace=False)
    images = ev_tf(data.query.images[torch.as_tensor(pick)], train=False)
    return plot_aem_maps(result.model, images, titles=[data.class_names[c] for c in data.query.classes[pick]])


__all__ = ["aem_maps_of_run", "cauchy_likelihood", "class_samples_grid", "collect_curves", "collect_training_logs",
           "curves_of", "make_figures", "map_against_random", "map_vs_bits", "mgvt_diagram", "plot_aem_maps",
           "plot_codebooks", "plot_pr_curves", "plot_precision_at_n", "plot_training_curves", "retrieval_grid",
           "run_curves", "run_log", "search_result_grid", "training_curve", "training_curve_panels"]
