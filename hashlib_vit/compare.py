"""Same-backbone comparisons: train several losses (x bit lengths) with one budget and seed.

Every run goes through :func:`hashlib_vit.experiment.run_experiment` and writes its own run directory
``<root>/<loss>_<bits>bits`` (``method`` = the loss name), so tables are built from run directories
only. :func:`comparison_table` adds the chance level (mAP of random codes on the same queries and
database) and flags runs that did not beat it clearly ("collapsed"); :func:`code_diagnostics`
measures what a collapse looks like (outputs near 0, nearly the same for every input).

Command line (the grids recorded under ``results/``)::

    python -m hashlib_vit.compare --losses dpsh,dsh,hashnet --bits 32 --epochs 30 --root results/loss_zoo_digits/base
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import torch

from .data import get_protocol
from .errors import ConfigError, bad_choice
from .experiment import RunConfig, RunResult, run_experiment
from .losses import LOSSES
from .utils import atomic_write_json, resolve_path

COLLAPSE_FACTOR = 1.5  # mAP below 1.5 x the random-code mAP counts as "at chance"


def as_list(value, name: str, item=str) -> list:
    """A list parameter as given by a notebook, YAML or the command line: a list, a YAML/JSON list in a
    string (``papermill -p losses '["dpsh","csq"]'``) or a comma-separated string (``dpsh,csq``)."""
    import yaml

    if isinstance(value, str):
        parsed = yaml.safe_load(value) if value.strip().startswith("[") else value.split(",")
        value = parsed
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value:
        raise ConfigError(f"{name}={value!r} must be a non-empty list, e.g. {name}=[...] or a comma-separated string")
    try:
        return [item(v.strip()) if isinstance(v, str) else item(v) for v in value]
    except (TypeError, ValueError):
        raise ConfigError(f"{name}={value!r}: every entry must be a {item.__name__}") from None


def as_dict(value, name: str) -> dict:
    """A dict parameter, also from a YAML/JSON string (``papermill -p loss_params '{"dpsh": {...}}'``)."""
    import yaml

    if isinstance(value, str):
        value = yaml.safe_load(value) if value.strip() else {}
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{name}={value!r} must be a dict")
    return dict(value)


def run_name(loss: str, bits: int) -> str:
    return f"{loss}_{bits}bits"


@torch.no_grad()
def code_diagnostics(result: RunResult, max_items: int = 2000) -> dict:
    """How the trained model's outputs look on the query split (collapse shows here first).

    * ``mean_abs_u``: mean |u| (a pairwise loss stuck at the saddle u = 0 gives values near 0);
    * ``input_spread``: mean over bits of the std of u across inputs, divided by the mean |u|
      (near 0: the output hardly depends on the input);
    * ``distinct_db_codes``: number of different binary codes in the database;
    * ``bit_balance``: mean over bits of |mean of the bit| in the database (0: balanced, 1: constant).
    """
    from .data import make_batches
    from .experiment import transforms_for

    model = result.model
    model.eval()
    device = next(model.parameters()).device
    _, ev_tf = transforms_for(result.data.protocol, model)
    us = []
    seen = 0
    for x, _, _ in make_batches(result.data.query, 256, ev_tf, train=False, device=device).epoch(0):
        us.append(model(x).u.float().cpu())
        seen += len(x)
        if seen >= max_items:
            break
    u = torch.cat(us)
    mean_abs = float(u.abs().mean())
    spread = float(u.std(0).mean()) / max(mean_abs, 1e-12)
    db = np.asarray(result.db_codes)
    return {"mean_abs_u": round(mean_abs, 6), "input_spread": round(spread, 4),
            "distinct_db_codes": int(len(np.unique(db, axis=0))),
            "bit_balance": round(float(np.abs(db.astype(np.float64).mean(0)).mean()), 4)}


def collapsed_loss_profile(losses: list[str], bits: int, labels: torch.Tensor, scales=None, seed: int = 0,
                           multi_label: bool = False):
    """Each loss on an *input-independent* model: every item gets the same output ``u = c v``.

    ``v`` is a fixed random ±1 direction, ``c`` runs over ``scales``; ``labels`` is a real batch's
    label matrix. For a pairwise likelihood (DPSH, HashNet) the value is smallest at ``c = 0`` when
    the batch has few similar pairs: that is the saddle a from-scratch ViT (whose CLS output hardly
    depends on the input at initialisation) can fall into. Also returned: the norm of the gradient
    with respect to ``u`` (times n, i.e. per item) and ``item_grad_across``, the norm of its
    item-specific part (gradient minus its batch mean) orthogonal to ``v``: the only part that can
    give different items different codes. For every pairwise loss it is exactly 0 at any ``c`` (the
    gradient of item i is a multiple of the common output: pairs of identical outputs carry no
    direction); for the center, target and classifier losses it is of order one. Returns a DataFrame
    (loss, scale, value, grad_norm, item_grad_across).
    """
    import pandas as pd

    from .losses import build_loss
    from .models import HashOutput

    scales = np.linspace(0.0, 2.0, 21) if scales is None else scales
    g = torch.Generator().manual_seed(seed)
    v = torch.where(torch.rand(bits, generator=g) < 0.5, -1.0, 1.0)
    n, c = labels.shape
    rows = []
    for name in losses:
        torch.manual_seed(seed)
        loss = build_loss(name, bits, c, multi_label)
        for sc in scales:
            u = (float(sc) * v).expand(n, bits).clone().requires_grad_(True)
            res = loss(HashOutput(u=u), labels, torch.arange(n))
            (grad,) = torch.autograd.grad(res.total, u)
            # the part of the gradient that differs between items and points away from the common
            # direction v: the only part that can give different items different codes
            item = grad - grad.mean(0, keepdim=True)
            vhat = v / v.norm()
            across = item - (item @ vhat)[:, None] * vhat[None, :]
            rows.append({"loss": name, "scale": float(sc), "value": res.total.item(),
                         "grad_norm": float(grad.norm()) * n, "item_grad_across": float(across.norm()) * n})
    return pd.DataFrame(rows)


def run_comparison(losses: list[str], bits_list: list[int], *, root: str, loss_params: dict | None = None,
                   data=None, diagnostics: bool = True, **common) -> list[dict]:
    """Train every loss at every bit length with the same ``common`` RunConfig parameters.

    ``loss_params``: per-loss hyper-parameters ``{loss: {name: value}}``. Returns one row per run
    (its metrics, plus :func:`code_diagnostics` written to ``diagnostics.json`` in the run directory).
    All names are checked before the first run starts.
    """
    loss_params = dict(loss_params or {})
    if isinstance(losses, str) or not losses:
        raise ConfigError(f"losses={losses!r} must be a non-empty list of loss names, e.g. ['dpsh', 'csq']")
    if isinstance(bits_list, (int, str)) or not bits_list:
        raise ConfigError(f"bits_list={bits_list!r} must be a non-empty list of code lengths, e.g. [16, 32]")
    for name in list(losses) + list(loss_params):
        if name not in LOSSES:
            raise bad_choice("losses", name, LOSSES.names())
    configs = []
    for loss in losses:
        for bits in bits_list:
            cfg = RunConfig.from_dict({**common, "loss": loss, "bits": bits, "method": loss,
                                       "loss_params": loss_params.get(loss, {}),
                                       "run_dir": str(Path(root) / run_name(loss, bits))})
            configs.append(cfg.validate())
    if data is None:
        c = configs[0]
        data = get_protocol(c.protocol).load(c.data_root, seed=c.split_seed, **c.data_options)
    rows = []
    for cfg in configs:
        res = run_experiment(cfg, data=data)
        row = dict(res.metrics)
        if diagnostics:
            diag = code_diagnostics(res)
            row.update(diag)
            atomic_write_json(resolve_path(cfg.run_dir) / "diagnostics.json", diag)
        row["run_dir"] = str(res.run_dir)
        rows.append(row)
        del res
    return rows


def collapse_note(map_value: float, map_random: float, factor: float = COLLAPSE_FACTOR) -> str:
    """'' for a run that clearly beats random codes, else a short note saying it is at chance."""
    if map_value is None or map_random is None or (isinstance(map_value, float) and math.isnan(map_value)):
        return "not evaluated"
    if map_value < factor * map_random:
        return f"at chance level (mAP < {factor:g} x random codes)"
    return ""


def comparison_table(rows_or_root):
    """One row per run: method, bits, mAP, random-code mAP, ratio, a collapse note, diagnostics.

    Accepts the rows returned by :func:`run_comparison` or a folder of run directories (read with
    :func:`hashlib_vit.results.collect_runs`, diagnostics from ``diagnostics.json`` when present).
    """
    import pandas as pd

    from .results import collect_runs

    if isinstance(rows_or_root, (str, Path)):
        df = collect_runs(rows_or_root)
        if len(df):
            diags = []
            for rd in df["run_dir"]:
                p = Path(rd) / "diagnostics.json"
                diags.append(json.loads(p.read_text()) if p.is_file() else {})
            df = pd.concat([df.reset_index(drop=True), pd.DataFrame(diags)], axis=1)
    else:
        df = pd.DataFrame(list(rows_or_root))
    if not len(df):
        return df
    df = df.copy()
    df["map_over_random"] = (df["map"] / df["map_random"]).round(2)
    df["note"] = [collapse_note(m, r) for m, r in zip(df["map"], df["map_random"])]
    cols = ["method", "backbone", "protocol", "bits", "epochs", "seed", "pretrained", "map", "map_random",
            "map_over_random", "note", "mean_abs_u", "input_spread", "distinct_db_codes", "bit_balance", "final_loss",
            "train_time_s"]
    cols = [c for c in cols if c in df.columns]
    return df[cols].sort_values(["method", "bits"]).reset_index(drop=True)


def map_vs_bits_figure(table, ax=None, title: str | None = None):
    """mAP against code length, one line per loss, with the random-code level dashed."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 3.6))
    sns.lineplot(data=table, x="bits", y="map", hue="method", marker="o", ax=ax)
    chance = table.groupby("bits")["map_random"].mean()
    ax.plot(chance.index, chance.values, "k--", lw=1, label="random codes")
    ax.set_xticks(sorted(table["bits"].unique()))
    ax.set_ylim(0, 1)
    ax.set_xlabel("code length K (bits)")
    ax.set_ylabel("mAP")
    ax.legend(fontsize=8, ncols=2)
    if title:
        ax.set_title(title)
    return ax.figure


def markdown_table(df) -> str:
    """A plain Markdown table (no extra dependency); floats with 4 significant digits."""
    def fmt(v):
        if isinstance(v, float):
            return "" if math.isnan(v) else f"{v:.4g}"
        return str(v).replace("|", "\\|")

    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def summarize(root: str | Path) -> "pd.DataFrame":
    """Tables of every variant folder below ``root`` (each holding run directories) in one frame,
    written to ``root/summary.csv`` and ``root/summary.md`` (with the config differences per variant)."""
    import pandas as pd

    root = resolve_path(root)
    parts = []
    for variant in sorted(p for p in root.iterdir() if p.is_dir()):
        t = comparison_table(variant)
        if not len(t):
            continue
        cfgs = [json.loads((Path(rd) / "config.json").read_text()) for rd in
                sorted(str(m.parent) for m in variant.rglob("metrics.json"))]
        t.insert(0, "variant", variant.name)
        t["lr"] = cfgs[0]["lr"]
        t["batch_size"] = cfgs[0]["batch_size"]
        t["loss_params"] = [json.dumps(c["loss_params"]) for c in cfgs] if len(cfgs) == len(t) else ""
        parts.append(t)
    if not parts:
        raise ConfigError(f"no completed run directories below {root}")
    df = pd.concat(parts, ignore_index=True)
    atomic_write_json(root / "summary.json", json.loads(df.to_json(orient="records")))
    cols = ["variant", "method", "bits", "epochs", "lr", "batch_size", "loss_params", "map", "map_random", "note",
            "mean_abs_u", "input_spread", "distinct_db_codes", "final_loss"]
    md = markdown_table(df[[c for c in cols if c in df.columns]])
    from .utils import atomic_write_text

    atomic_write_text(root / "summary.md", "<!-- written by python -m hashlib_vit.compare --summarize; do not edit -->\n"
                      + md + "\n")
    return df


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hashlib_vit.compare", description=__doc__.split("\n")[0])
    p.add_argument("--summarize", metavar="ROOT", help="only collect ROOT/<variant>/<run> into ROOT/summary.md")
    p.add_argument("--losses", help="comma-separated loss names")
    p.add_argument("--bits", default="32", help="comma-separated code lengths")
    p.add_argument("--root", help="folder for the run directories <loss>_<bits>bits")
    p.add_argument("--loss-params", default="{}", help='JSON {loss: {hyper-parameter: value}}')
    p.add_argument("--params", default="{}", help="JSON of further RunConfig parameters (lr, batch_size, ...)")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--backbone", default="vit32_tiny")
    p.add_argument("--protocol", default="digits")
    args = p.parse_args(argv)
    import pandas as pd

    if args.summarize:
        with pd.option_context("display.width", 200, "display.max_columns", 30):
            print(summarize(args.summarize).to_string())
        return 0
    if not args.losses or not args.root:
        p.error("--losses and --root are needed to run a comparison")
    common = {"protocol": args.protocol, "backbone": args.backbone, "epochs": args.epochs, "progress": False,
              **json.loads(args.params)}
    rows = run_comparison(args.losses.split(","), [int(b) for b in args.bits.split(",")], root=args.root,
                          loss_params=json.loads(args.loss_params), **common)
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print(comparison_table(rows).to_string())
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())


__all__ = ["as_list", "as_dict", "run_comparison", "collapsed_loss_profile", "summarize", "comparison_table", "map_vs_bits_figure", "code_diagnostics", "collapse_note",
           "run_name", "COLLAPSE_FACTOR"]
