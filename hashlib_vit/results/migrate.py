"""One-off migration of run directories' ``metrics.json`` from schema 1 to schema 2.

    python -m hashlib_vit.results.migrate results            # rewrite in place, print what was done
    python -m hashlib_vit.results.migrate results --dry-run  # only report

For every metrics.json below the folder (validated by :func:`~.rundir.read_metrics`):

* schema 2 already: left alone;
* schema 1 with the engine's ``curves`` block: stamped ``"schema_version": 2`` (nothing recomputed);
* schema 1 without curves but with ``codes.npz``: curves computed ONCE here with the evaluation engine
  (:func:`hashlib_vit.retrieval.evaluate`, ``curves=True``, ``empty_radius="exclude"``, the run's ``topk``:
  the same call as :func:`hashlib_vit.results.rundir.run_metrics`), then stamped schema 2;
* schema 1 without curves and without codes: left unchanged and reported (tables then show no curve for
  that run; nothing anywhere recomputes curves).
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path


from ..utils import atomic_write_json
from .rundir import SCHEMA_VERSION, check_curves, find_runs, read_metrics


def curves_from_codes(codes_path: str | os.PathLike, topk) -> dict:
    """The ``curves`` block of a run from its ``codes.npz`` (query/db codes and labels) with the evaluation
    engine; ``topk``: the run's metrics ``topk`` (int, or ``"all"`` for the whole database)."""
    from ..retrieval import evaluate

    from .rundir import read_codes

    args = tuple(read_codes(codes_path))  # checked: DataError naming the file and the key
    k = None if topk in (None, "all") else int(topk)
    cv = evaluate(*args, topk=k, curves=True, tie_aware=False, empty_radius="exclude")
    return {"pr_hamming": cv["pr_hamming"], "pr_rank": cv["pr_rank"], "empty_radius": "exclude"}


def migrate_run(run_dir: str | os.PathLike, *, dry_run: bool = False) -> str:
    """Migrate one run directory; returns what happened: ``schema 2 already``, ``stamped``,
    ``curves from codes.npz`` or ``no curves, no codes.npz: left as schema 1``."""
    path = Path(run_dir) / "metrics.json"
    m = read_metrics(path)
    if m.get("schema_version", 1) == SCHEMA_VERSION:
        return "schema 2 already"
    if "curves" in m:
        action = "stamped"
    elif (Path(run_dir) / "codes.npz").is_file():
        m["curves"] = check_curves(curves_from_codes(Path(run_dir) / "codes.npz", m["topk"]), str(path))
        action = "curves from codes.npz"
    else:
        return "no curves, no codes.npz: left as schema 1"
    if not dry_run:
        atomic_write_json(path, {"schema_version": SCHEMA_VERSION, **m})
    return action


def migrate(root: str | os.PathLike, *, dry_run: bool = False) -> dict[str, str]:
    """:func:`migrate_run` for every run directory below ``root``; ``{run_dir: action}``."""
    return {str(rd.path): migrate_run(rd.path, dry_run=dry_run) for rd in find_runs(root)}


def main(argv: list[str] | None = None) -> int:
    """``python -m hashlib_vit.results.migrate ROOT [--dry-run]``: migrate and print one line per run."""
    p = argparse.ArgumentParser(prog="python -m hashlib_vit.results.migrate", description=__doc__.split("\n")[0])
    p.add_argument("root", help="folder searched for run directories (every metrics.json below it)")
    p.add_argument("--dry-run", action="store_true", help="report only, write nothing")
    args = p.parse_args(argv)
    done = migrate(args.root, dry_run=args.dry_run)
    for run, action in done.items():
        print(f"{action:45s} {run}")
    counts: dict[str, int] = {}
    for action in done.values():
        counts[action] = counts.get(action, 0) + 1
    print("; ".join(f"{n} {a}" for a, n in sorted(counts.items())) or "no run directories")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())


__all__ = ["curves_from_codes", "migrate", "migrate_run"]
