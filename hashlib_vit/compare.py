"""Same-backbone comparisons: train several losses (x bit lengths) with one budget and seed.

Every run goes through :func:`hashlib_vit.experiment.run_experiment` and writes its own run directory
``<root>/<loss>_<bits>bits`` (``method`` = the loss name), so tables are built from run directories
only (:func:`hashlib_vit.results.tables.chance_level_table` adds the chance level and flags collapsed
runs; :func:`hashlib_vit.results.analysis.code_diagnostics` measures what a collapse looks like).

Command line (the grids recorded under ``results/``)::

    python -m hashlib_vit.compare --losses dpsh,dsh,hashnet --bits 32 --epochs 30 --root results/loss_zoo_digits/base
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from .data import get_protocol
from .errors import ConfigError, bad_choice
from .experiment import RunConfig, run_experiment
from .losses import LOSSES
from .results.analysis import code_diagnostics
from .results.tables import chance_level_table, loss_zoo_summary
from .utils import atomic_write_json, resolve_path


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


def run_comparison(losses: list[str], bits_list: list[int], *, root: str, loss_params: dict | None = None,
                   data=None, diagnostics: bool = True, **common) -> list[dict]:
    """Train every loss at every bit length with the same ``common`` RunConfig parameters.

    ``loss_params``: per-loss hyper-parameters ``{loss: {name: value}}``. Returns one row per run
    (its metrics, plus :func:`~hashlib_vit.results.analysis.code_diagnostics` written to ``diagnostics.json`` in the run directory).
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
            print(loss_zoo_summary(args.summarize).to_string())
        return 0
    if not args.losses or not args.root:
        p.error("--losses and --root are needed to run a comparison")
    common = {"protocol": args.protocol, "backbone": args.backbone, "epochs": args.epochs, "progress": False,
              **json.loads(args.params)}
    rows = run_comparison(args.losses.split(","), [int(b) for b in args.bits.split(",")], root=args.root,
                          loss_params=json.loads(args.loss_params), **common)
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print(chance_level_table(rows).to_string())
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())


__all__ = ["as_dict", "as_list", "main", "run_comparison", "run_name"]
