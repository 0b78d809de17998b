"""``hashlib-vit`` command line: train one run, or list what is available.

    hashlib-vit train --protocol digits --loss csq --bits 32 --epochs 30 --run-dir results/runs/x
    hashlib-vit train --loss-params '{"lambda1": 0.001}'
    hashlib-vit train --config configs/cifar10_scratch.yaml --loss dpsh --run-dir results/runs/dpsh
    hashlib-vit list protocols|losses|heads|backbones
    hashlib-vit run-grid configs/grids/smoke.yaml [--dry-run] [--force] [--only NAME ...] [--executor local --workers 2]
    hashlib-vit tables results/smoke/runs --out results/smoke [--reference matched|all|none]
    hashlib-vit reproduce --list | NAME [--dry-run] [--weights SPEC] [--data-root DIR] [--output DIR] [--set k=v]
    hashlib-vit student-edition [--out student/] [NOTEBOOKS...]
    hashlib-vit site [--out site/] [--params defaults|smoke] [--edition teacher|student] [--force] [NOTEBOOKS...]

Every option of ``train`` is a field of :class:`hashlib_vit.config.RunConfig` (same names as the
notebook parameters, with dashes); ``--preset NAME`` puts a method preset under them and
``--set KEY=VALUE`` sets any field by flat or dotted key (``--set loss_params.gamma=5``).
``python -m hashlib_vit ...`` is the same command (``torchrun ... -m hashlib_vit train ...``).
"""
from __future__ import annotations

import argparse
import json
import sys


def _train_parser(sub) -> argparse.ArgumentParser:
    from .config import field_info, field_names, parse_value

    p = sub.add_parser("train", help="train and evaluate one run, writing its run directory")
    p.add_argument("--config", dest="config_file", default=None,
                   help="YAML file of parameters (flat, sectioned or dotted keys); options given here override it")
    p.add_argument("--preset", default=None, help="a method preset (configs/methods/NAME.yaml) under the parameters")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="any field by flat or dotted key, e.g. --set loss_params.gamma=5 (repeatable)")
    for name in field_names():
        info = field_info(name)
        p.add_argument("--" + name.replace("_", "-"), dest=name, type=parse_value, default=argparse.SUPPRESS,
                       help=f"{info['doc']} [{info['dotted']}; default: {info['default']!r}]")
    return p


def _train(args) -> int:
    from .config import build_config, load_yaml, parse_value
    from .errors import ConfigError
    from .experiment import run_experiment

    given = {k: v for k, v in vars(args).items() if k not in ("command", "config_file", "preset", "overrides")}
    params = {**(load_yaml(args.config_file, what="--config file") if args.config_file else {}), **given}
    sets = {}
    for item in args.overrides:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise ConfigError(f"--set {item!r} must be KEY=VALUE, e.g. --set loss_params.gamma=5")
        sets[key.strip()] = parse_value(value)
    result = run_experiment(build_config(params, preset=args.preset, overrides=sets))
    print(json.dumps(result.metrics, indent=1))
    return 0


def _course_parsers(sub) -> None:
    """The course commands ``student-edition`` and ``site`` (run by :func:`hashlib_vit.course.course_main`)."""
    sp = sub.add_parser("student-edition", help="the course notebooks with solutions replaced by stubs and "
                                                "outputs cleared (make student)")
    sp.add_argument("notebooks", nargs="*", help="notebooks (default: every notebooks/NN_name.ipynb)")
    sp.add_argument("--out", default="student", help="output folder (default: student/)")
    st = sub.add_parser("site", help="build the course site offline: lessons executed, docs, API reference (make site)")
    st.add_argument("notebooks", nargs="*", help="lesson notebooks (default: every notebooks/NN_name.ipynb)")
    st.add_argument("--out", default="site", help="output folder (default: site/)")
    st.add_argument("--params", default="defaults", choices=["defaults", "smoke"],
                    help="the lessons' own defaults, or configs/smoke/NN_name.yaml for a quick build")
    st.add_argument("--force", action="store_true", help="re-execute every lesson (ignore the cache)")
    st.add_argument("--edition", default="teacher", choices=["teacher", "student"],
                    help="teacher: worked solutions shown (default); student: solutions replaced by stubs")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hashlib-vit", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _train_parser(sub)
    lp = sub.add_parser("list", help="list protocols, losses, heads or backbones")
    lp.add_argument("what", choices=["protocols", "losses", "heads", "backbones"])
    from .runner import grid_arguments

    grid_arguments(sub.add_parser("run-grid", help="run a YAML grid of notebooks (papermill) or in-process "
                                                   "experiments: sequentially, in local workers or on SLURM"))
    from .reproduce import reproduce_arguments

    reproduce_arguments(sub.add_parser("reproduce", help="one paper table: run its grid, then the paper-vs-ours table"))
    tp = sub.add_parser("tables", help="collect run directories into mAP tables and figures")
    tp.add_argument("root", help="folder searched for run directories (every metrics.json below it)")
    tp.add_argument("--out", required=True, help="output folder for tables, figures and provenance.json")
    tp.add_argument("--reference", choices=["matched", "all", "none"], default="matched",
                    help="papers' numbers beside ours: of the methods we ran (matched), all that fit, or none")
    tp.add_argument("--no-figures", action="store_true", help="tables only")
    sp = sub.add_parser("sensitivity", help="a one-at-a-time hyper-parameter study: tables and figure, chosen on "
                                            "the validation split")
    sp.add_argument("root", help="folder of the study's runs (a grid output run with val_per_class)")
    sp.add_argument("--param", action="append", required=True,
                    help="a studied parameter, flat or dotted (loss_params.tau); repeat for each")
    sp.add_argument("--base", default="base", help="name of the base run the others vary from (default: base)")
    sp.add_argument("--out", default=None, help="output folder (default: root)")
    sp.add_argument("--select", default="val_map", help="selection metric (validation split only: val_map)")
    sp.add_argument("--min-seeds", type=int, default=1,
                    help="only values with at least this many runs (seeds) can be chosen; the others are shown")
    sp.add_argument("--no-figures", action="store_true", help="tables only")
    _course_parsers(sub)
    args = parser.parse_args(argv)
    from .errors import HashlibVitError

    try:
        if args.command == "train":
            return _train(args)
        if args.command == "run-grid":
            from .runner import grid_main

            return grid_main(args)
        if args.command == "reproduce":
            from .reproduce import reproduce_main

            return reproduce_main(args)
        if args.command == "tables":
            from .results.tables import tables_main

            return tables_main(args)
        if args.command == "sensitivity":
            from .results.sensitivity import sensitivity_main

            return sensitivity_main(args)
        if args.command in ("student-edition", "site"):
            from .course import course_main

            return course_main(args)
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
