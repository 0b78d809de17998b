"""Results: the run directory and its API, then collect -> tables -> figures -> analysis.

* :mod:`.rundir`    — :class:`RunDir` (what a run writes, atomically), :func:`find_runs`, :func:`read_metrics`
  (the one validating reader of metrics.json, schema 1 and 2);
* :mod:`.collect`   — :func:`collect` (one row per completed run) and :func:`failed_runs`;
* :mod:`.tables`    — aggregation over seeds, wide tables, the paper-vs-ours and loss-zoo tables, formats,
  :func:`build_tables` and the ``hashlib-vit tables`` command;
* :mod:`.figures`   — every figure the package draws;
* :mod:`.analysis`  — code statistics and the collapse profile;
* :mod:`.sensitivity` — :func:`~.sensitivity.sensitivity_table`: one hyper-parameter's values, chosen on
  the validation split (``val_map``);
* :mod:`.reference` — the papers' numbers (one copy: ``hashlib_vit/reference/paper_results.csv``);
* :mod:`.migrate`   — ``python -m hashlib_vit.results.migrate``: schema-1 metrics.json -> schema 2.

Import arrows: rundir <- collect <- tables <- figures; analysis and reference stand beside them. Submodules
are imported by name (``from hashlib_vit.results.tables import build_tables``); the run-directory API is
re-exported here because every run writes one.
"""
from .rundir import REQUIRED_METRICS, SCHEMA_VERSION, RunCodes, RunDir, find_runs, random_codes_map, read_metrics, run_metrics

__all__ = ["REQUIRED_METRICS", "SCHEMA_VERSION", "RunCodes", "RunDir", "find_runs", "random_codes_map", "read_metrics",
           "run_metrics"]
