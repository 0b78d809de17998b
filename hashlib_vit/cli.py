"""``hashlib-vit`` command line: train one run, or list what is available.

    hashlib-vit train --protocol digits --loss csq --bits 32 --epochs 30 --run-dir results/runs/x
    hashlib-vit train --loss-params '{"lambda1": 0.001}'
    hashlib-vit train --config configs/cifar10_scratch.yaml --loss dpsh --run-dir results/runs/dpsh
    hashlib-vit list protocols|losses|heads|backbones
    hashlib-vit run-grid configs/grids/smoke.yaml [--dry-run] [--force] [--only NAME ...]
    hashlib-vit tables results/smoke/runs --out results/smoke [--reference matched|all|none]
    hashlib-vit reproduce --list | NAME [--dry-run] [--weights SPEC] [--data-root DIR] [--output DIR] [--set k=v]

Every option of ``train`` is a field of :class:`hashlib_vit.experiment.RunConfig` (same names as the
notebook parameters, with dashes).
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import MISSING, fields


def _parse_value(text: str):
    """JSON when it parses (numbers, null, true, dicts), else the plain string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _train_parser(sub) -> argparse.ArgumentParser:
    from .experiment import RunConfig

    p = sub.add_parser("train", help="train and evaluate one run, writing its run directory")
    p.add_argument("--config", dest="config_file", default=None,
                   help="YAML file of parameters; options given on the command line override it")
    for f in fields(RunConfig):
        default = f.default if f.default is not MISSING else f.default_factory()
        p.add_argument("--" + f.name.replace("_", "-"), dest=f.name, type=_parse_value, default=argparse.SUPPRESS,
                       help=f"(default: {default!r})")
    return p


def load_yaml_params(path: str) -> dict:
    """Parameters from a YAML mapping (the papermill ``-f`` format)."""
    import yaml

    from .errors import ConfigError

    try:
        with open(path) as f:
            params = yaml.safe_load(f) or {}
    except FileNotFoundError:
        raise ConfigError(f"--config {path!r}: no such file") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"--config {path!r} is not valid YAML: {e}") from None
    if not isinstance(params, dict):
        raise ConfigError(f"--config {path!r} must hold a mapping of parameter: value, got {type(params).__name__}")
    return params


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hashlib-vit", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _train_parser(sub)
    lp = sub.add_parser("list", help="list protocols, losses, heads or backbones")
    lp.add_argument("what", choices=["protocols", "losses", "heads", "backbones"])
    from .runner import add_arguments as grid_arguments

    grid_arguments(sub.add_parser("run-grid", help="run a YAML grid of parameterised notebooks with papermill"))
    from .reproduce import add_arguments as reproduce_arguments

    reproduce_arguments(sub.add_parser("reproduce", help="one paper table: run its grid, then the paper-vs-ours table"))
    tp = sub.add_parser("tables", help="collect run directories into mAP tables and figures")
    tp.add_argument("root", help="folder searched for run directories (every metrics.json below it)")
    tp.add_argument("--out", required=True, help="output folder for tables, figures and provenance.json")
    tp.add_argument("--reference", choices=["matched", "all", "none"], default="matched",
                    help="papers' numbers beside ours: of the methods we ran (matched), all that fit, or none")
    tp.add_argument("--no-figures", action="store_true", help="tables only")
    args = parser.parse_args(argv)
    from .errors import HashlibVitError

    try:
        if args.command == "train":
            from .experiment import run_experiment

            given = {k: v for k, v in vars(args).items() if k not in ("command", "config_file")}
            params = {**(load_yaml_params(args.config_file) if args.config_file else {}), **given}
            result = run_experiment(**params)
            print(json.dumps(result.metrics, indent=1))
            return 0
        if args.command == "run-grid":
            from .runner import main_from_args

            return main_from_args(args)
        if args.command == "reproduce":
            from .reproduce import main_from_args

            return main_from_args(args)
        if args.command == "tables":
            from .results.tables import tables_main

            return tables_main(args)
        if args.command == "list":
            if args.what == "protocols":
                from .data import PROTOCOLS

                for name, p in PROTOCOLS.items():
                    print(f"{name:14s} {p.description}")
            elif args.what == "losses":
                from .losses import LOSSES, TRAINING_FREE

                for name, cls in LOSSES.items():
                    print(f"{name:12s} {cls.defaults}")
                print("\ntraining-free (fitted on the backbone's features; no training):")
                for name, cls in TRAINING_FREE.items():
                    print(f"{name:12s} {cls.defaults}")
            elif args.what == "heads":
                from .models import MODELS

                print("\n".join(MODELS.names()))
            else:
                from .models.backbones import VIT_PRESETS, backbone_choices

                for name in backbone_choices():
                    print(f"{name:22s} {VIT_PRESETS[name].description if name in VIT_PRESETS else ''}")
            return 0
        parser.error(f"unknown command {args.command!r}")
    except HashlibVitError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
