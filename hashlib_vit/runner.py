"""Batch reruns: expand a YAML grid into papermill runs of parameterised notebooks.

    hashlib-vit run-grid configs/grids/smoke.yaml
    python -m hashlib_vit.runner configs/grids/smoke.yaml [--dry-run] [--force]

A grid file is a YAML mapping::

    notebook: notebooks/00_quickstart.ipynb   # or a list of notebooks (then swept like a parameter)
    output: results/smoke/runs                # output root: one run directory per run below it
    name: "{loss}-{bits}b-s{seed}"             # optional run-name template (default: from swept values)
    fixed:                                    # parameters given to every run
      backbone: vit32_test
      epochs: 3
    sweep:                                    # the product over these lists
      loss: [csq, dpsh]
      bits: [16, 32]
      seed: [0]
      dataset:                                # a linked dimension: mappings set together, labelled by name
        - {name: c10, protocol: cifar10, data_root: ../shared/data/cifar10}
        - {name: digits, protocol: digits}
    runs:                                     # optional explicit runs (each merged over `fixed`)
      - {loss: csq, bits: 64, name: csq-64-extra}
    timeout: 3600                             # optional per-cell timeout in seconds (papermill)

Every run gets ``run_dir = <output>/<run name>`` as a notebook parameter; the executed notebook is
saved inside it, next to what the notebook writes (``metrics.json``, ``config.json``, ...), and the
parameters the runner passed are recorded in ``grid_params.json``. Run names come deterministically
from the swept values, so rerunning a grid finds its earlier runs: a run whose ``metrics.json`` exists
and whose recorded parameters (and status) in ``grid_params.json`` equal the current ones is skipped
(an interrupted grid resumes where it stopped). Notebooks that write several run directories below
their ``run_dir`` (e.g. the loss zoo) count as complete when they finished and left a metrics.json
below it. A failing run is recorded (status; ``error_cell``: the failing cell's index in the executed
notebook saved in its run directory; ``error``: exception name and message; ``error_source``: the
cell's first line) and the grid goes on. The summary
``<output>/grid_summary.csv`` is rewritten atomically after every run.

Before anything runs, every parameter name is checked against the notebook's ``parameters`` cell
(:func:`papermill.inspect_notebook`) and every value against the declared type; registry-valued
parameters (protocol, loss, head, backbone) are checked against the registries; ``overrides`` (the
training notebooks' dict of further RunConfig fields) against RunConfig's field names and types, the
run's explicit parameters (no conflicting value) and the training settings' validation.
"""
from __future__ import annotations

import argparse
import ast
import itertools
import json
import os
import re
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .utils import atomic_write_text, resolve_path, to_jsonable

GRID_KEYS = {"notebook", "output", "name", "fixed", "sweep", "runs", "timeout", "description", "kernel"}
SUMMARY_NAME = "grid_summary.csv"
PARAMS_NAME = "grid_params.json"
STATUSES = ("pending", "completed", "skipped", "failed", "interrupted")


# ----------------------------------------------------------------------------- grid spec
@dataclass
class Run:
    """One planned notebook execution."""

    name: str
    notebook: Path
    params: dict[str, Any]  # everything passed to papermill, run_dir included
    swept: dict[str, Any] = field(default_factory=dict)  # the values that vary across the grid

    @property
    def run_dir(self) -> Path:
        return Path(self.params["run_dir"])


@dataclass
class Grid:
    path: Path
    output: Path
    runs: list[Run]
    timeout: int | None = None
    kernel: str = "python3"
    description: str = ""

    @property
    def summary_path(self) -> Path:
        return self.output / SUMMARY_NAME


# parameters whose values are dicts themselves (RunConfig.loss_params / model_params / data_options, and the
# notebooks' overrides)
DICT_PARAMS = ("loss_params", "model_params", "data_options", "overrides")


def _slug(value: Any) -> str:
    if isinstance(value, Path):
        value = value.stem
    if isinstance(value, float):
        text = f"{value:g}"
    elif isinstance(value, (dict, list)):
        text = json.dumps(value, sort_keys=True, separators=(",", ":"))
    else:
        text = str(value)
    text = re.sub(r"[^A-Za-z0-9.+=-]+", "-", text).strip("-.")
    return text or "x"


def default_run_name(swept: dict[str, Any]) -> str:
    """``loss-csq_bits-16_seed-0``: key-value pairs of the swept values in grid order."""
    if not swept:
        return "run"
    parts = []
    for k, v in swept.items():
        if k == "notebook":
            parts.append(_slug(Path(v).stem))
        else:
            parts.append(f"{k}-{_slug(v)}")
    return "_".join(parts)


def _load_yaml(path: Path) -> dict:
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"grid file {str(path)!r} does not exist") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"grid file {str(path)!r} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"grid file {str(path)!r} must hold a mapping (notebook, output, fixed, sweep, runs), "
                          f"got {type(data).__name__}")
    return data


def load_grid(path: str | os.PathLike, *, output: str | os.PathLike | None = None) -> Grid:
    """Read a grid file and expand it into runs (no notebook is inspected or executed here)."""
    path = Path(path)
    spec = _load_yaml(path)
    where = f"grid {str(path)!r}"
    unknown = sorted(set(spec) - GRID_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(GRID_KEYS)}")
    fixed = spec.get("fixed") or {}
    sweep = spec.get("sweep") or {}
    explicit = spec.get("runs") or []
    if not isinstance(fixed, dict):
        raise ConfigError(f"{where}: 'fixed' must be a mapping of parameter: value")
    if not isinstance(sweep, dict):
        raise ConfigError(f"{where}: 'sweep' must be a mapping of parameter: [values]")
    for k, v in sweep.items():
        if not isinstance(v, list) or not v:
            raise ConfigError(f"{where}: sweep.{k} must be a non-empty list of values, got {v!r}")
    if not isinstance(explicit, list) or not all(isinstance(r, dict) for r in explicit):
        raise ConfigError(f"{where}: 'runs' must be a list of mappings of parameter: value")
    out = output if output is not None else spec.get("output")
    if not out:
        raise ConfigError(f"{where}: 'output' (the folder that receives the run directories) is required")
    output_dir = resolve_path(out)
    notebooks = spec.get("notebook")
    if "notebook" in sweep:
        if notebooks is not None:
            raise ConfigError(f"{where}: give the notebook either as 'notebook' or in 'sweep', not both")
    elif isinstance(notebooks, list):
        sweep = {"notebook": notebooks, **sweep}
        notebooks = None
    if "run_dir" in fixed or "run_dir" in sweep:
        raise ConfigError(f"{where}: 'run_dir' is set by the runner (<output>/<run name>); do not give it")
    template = spec.get("name")

    runs: list[Run] = []

    def add(params: dict, swept: dict, name: str | None, label: str):
        nb = params.pop("notebook", notebooks)
        if not nb:
            raise ConfigError(f"{where}: {label} has no notebook (set 'notebook' at the top of the grid)")
        if name is None:
            if template:
                try:
                    name = str(template).format(**{**params, **swept, "notebook": Path(nb).stem})
                except (KeyError, IndexError, ValueError) as e:
                    raise ConfigError(f"{where}: name template {template!r} cannot be filled for {label}: {e!r}") from None
                name = re.sub(r"[^A-Za-z0-9._+=-]+", "-", name).strip("-")
            else:
                name = default_run_name(swept)
        if "run_dir" in params:
            raise ConfigError(f"{where}: {label} sets 'run_dir'; it is set by the runner (<output>/<run name>)")
        nb_path = resolve_path(nb)
        runs.append(Run(name=name, notebook=nb_path, params={**params, "run_dir": str(output_dir / name)},
                        swept=swept))

    keys = list(sweep)
    # dict-valued parameters are plain values, not linked groups
    linked = {k for k in keys if all(isinstance(v, dict) for v in sweep[k])} - set(DICT_PARAMS)
    for k in keys:
        if k not in linked and any(isinstance(v, dict) for v in sweep[k]) and k not in DICT_PARAMS:
            raise ConfigError(f"{where}: sweep.{k} mixes mappings and plain values; a linked dimension lists only "
                              f"mappings of parameter: value (e.g. {{protocol: cifar10, data_root: ...}})")
    for combo in itertools.product(*(sweep[k] for k in keys)):
        params, swept = dict(fixed), {}
        for k, v in zip(keys, combo):
            if k in linked:  # a linked dimension: several parameters set together, labelled by `name`
                v = dict(v)
                label = v.pop("name", None)
                params.update(v)
                swept[k] = str(label) if label is not None else "-".join(_slug(x) for x in v.values())
            else:
                params[k] = v
                swept[k] = v
        add(params, swept, None, f"sweep run {swept}")
    for i, entry in enumerate(explicit):
        entry = dict(entry)
        name = entry.pop("name", None)
        swept = {k: v for k, v in entry.items() if k == "notebook" or fixed.get(k, object()) != v}
        add({**fixed, **entry}, swept, None if name is None else str(name), f"runs[{i}]")

    seen: dict[str, int] = {}
    for i, r in enumerate(runs):
        if r.name in seen:
            raise ConfigError(f"{where}: two runs get the same name {r.name!r} (runs #{seen[r.name]} and #{i}); "
                              f"give a 'name' template or explicit names that tell them apart")
        seen[r.name] = i
    if not runs:
        raise ConfigError(f"{where}: no runs (give 'sweep' and/or 'runs')")
    timeout = spec.get("timeout")
    if timeout is not None and (not isinstance(timeout, int) or timeout <= 0):
        raise ConfigError(f"{where}: timeout={timeout!r} must be a positive integer (seconds per cell)")
    return Grid(path=path, output=output_dir, runs=runs, timeout=timeout, kernel=str(spec.get("kernel", "python3")),
                description=str(spec.get("description", "")))


# ----------------------------------------------------------------------------- validation
def _type_ok(type_name: str, value: Any, default_text: str) -> bool | None:
    """True/False when the declared type can be checked, None when it cannot (accepted)."""
    t = (type_name or "None").strip().strip("'\"")
    if t.startswith("Optional[") and t.endswith("]"):
        return True if value is None else _type_ok(t[9:-1], value, "")
    if value is None and t in ("int", "float", "str", "bool", "list", "dict"):
        # a None default means the parameter is nullable in practice
        return default_text.strip() == "None"
    simple = {
        "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        "str": lambda v: isinstance(v, str),
        "bool": lambda v: isinstance(v, bool),
        "list": lambda v: isinstance(v, list),
        "dict": lambda v: isinstance(v, dict),
    }
    if t in simple:
        return simple[t](value)
    for prefix, kind in (("list[", list), ("List[", list), ("dict[", dict), ("Dict[", dict)):
        if t.startswith(prefix):
            return isinstance(value, kind)
    if t == "None":  # no annotation: infer from the default's literal
        try:
            default = ast.literal_eval(default_text)
        except (ValueError, SyntaxError):
            return None
        if default is None:
            return None
        if isinstance(default, bool):
            return isinstance(value, bool)
        if isinstance(default, int):
            return isinstance(value, int) and not isinstance(value, bool)
        if isinstance(default, float):
            return isinstance(value, (int, float)) and not isinstance(value, bool)
        return isinstance(value, type(default))
    return None


def _registry_check(name: str, value: Any) -> str | None:
    """An error text when a registry-valued parameter names something unknown."""
    if name == "losses" and isinstance(value, list):  # a list of loss names (the loss zoo)
        from .losses import LOSSES

        unknown = [v for v in value if not isinstance(v, str) or v not in LOSSES]
        if unknown:
            return f"names unknown loss(es) {unknown}; allowed: {', '.join(sorted(LOSSES.names()))}"
        return None
    if not isinstance(value, str):
        return None
    if name == "protocol":
        from .data import PROTOCOLS

        if value not in PROTOCOLS:
            return f"is not a known protocol; allowed: {', '.join(sorted(PROTOCOLS.names()))}"
    elif name == "loss":
        from .losses import LOSSES, TRAINING_FREE

        if value not in LOSSES and value not in TRAINING_FREE:
            return f"is not a known loss; allowed: {', '.join(sorted(LOSSES.names() + TRAINING_FREE.names()))}"
    elif name == "head":
        from .models import MODELS

        if value not in MODELS:
            return f"is not a known head; allowed: {', '.join(sorted(MODELS.names()))}"
    elif name == "backbone":
        from .errors import ConfigError
        from .models.backbones import check_backbone_name

        try:
            check_backbone_name(value)
        except ConfigError as err:
            return f"is not a usable backbone: {err} (see `hashlib-vit list backbones`)"
    return None


def _field_type_ok(annotation: str, value: Any) -> bool:
    """``value`` fits a RunConfig field annotation such as ``float | None`` or ``int | str | None``."""
    kinds = {"int": lambda v: isinstance(v, int) and not isinstance(v, bool),
             "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
             "str": lambda v: isinstance(v, str), "bool": lambda v: isinstance(v, bool),
             "dict": lambda v: isinstance(v, dict), "None": lambda v: v is None}
    parts = [t.strip() for t in str(annotation).split("|")]
    return any(kinds.get(t, lambda v: True)(value) for t in parts)


def _overrides_check(params: dict) -> str | None:
    """An error text when a run's ``overrides`` (further RunConfig fields by flat or dotted key, see
    :func:`hashlib_vit.config.apply_overrides`) name unknown fields, conflict with the run's explicit
    parameters, or hold values of the wrong type / invalid training settings; None when they are fine."""
    from .config import RunConfig, apply_overrides, field_info, field_names

    known = set(field_names())
    explicit = {k: v for k, v in params.items() if k in known and k not in DICT_PARAMS}
    try:
        merged = apply_overrides(explicit, params["overrides"])
        given = apply_overrides({}, params["overrides"])
        bad = [f"{k}={v!r} (expected {field_info(k)['type']})" for k, v in given.items()
               if not _field_type_ok(field_info(k)["type"], v)]
        if bad:
            return "values of the wrong type: " + ", ".join(bad)
        RunConfig.from_dict(merged).train.validate()
    except ConfigError as e:
        return str(e)
    return None


def notebook_parameters(notebook: Path) -> dict[str, dict]:
    import papermill

    if not notebook.is_file():
        raise ConfigError(f"notebook {str(notebook)!r} does not exist")
    return papermill.inspect_notebook(str(notebook))


def validate_grid(grid: Grid, *, check_registries: bool = True) -> None:
    """Check every run's parameter names and values against its notebook before anything runs."""
    declared_by_nb: dict[Path, dict] = {}
    problems: list[str] = []
    for r in grid.runs:
        if r.notebook not in declared_by_nb:
            declared_by_nb[r.notebook] = notebook_parameters(r.notebook)
            if not declared_by_nb[r.notebook]:
                raise ConfigError(f"grid {str(grid.path)!r}: notebook {str(r.notebook)!r} has no 'parameters' cell "
                                  f"(papermill finds no parameters to set)")
            if "run_dir" not in declared_by_nb[r.notebook]:
                raise ConfigError(f"grid {str(grid.path)!r}: notebook {str(r.notebook)!r} declares no 'run_dir' "
                                  f"parameter, so its runs cannot be given their own run directories")
        declared = declared_by_nb[r.notebook]
        for name, value in r.params.items():
            where = f"grid {str(grid.path)!r}, run {r.name!r}, parameter {name!r}"
            if name not in declared:
                problems.append(f"{where}: not a parameter of {r.notebook.name}; it declares: "
                                f"{', '.join(sorted(declared))}")
                continue
            info = declared[name]
            ok = _type_ok(info.get("inferred_type_name", "None"), value, str(info.get("default", "")))
            if ok is False:
                problems.append(f"{where}: value {value!r} ({type(value).__name__}) does not have the declared type "
                                f"{info.get('inferred_type_name')} (default {info.get('default')})")
                continue
            if check_registries:
                msg = _registry_check(name, value)
                if msg:
                    problems.append(f"{where}: {value!r} {msg}")
            if name == "overrides":
                msg = _overrides_check(r.params)
                if msg:
                    problems.append(f"{where}: {msg}")
    if problems:
        shown = problems[:20] + ([f"... and {len(problems) - 20} more"] if len(problems) > 20 else [])
        raise ConfigError("invalid grid parameters:\n  " + "\n  ".join(shown))


# ----------------------------------------------------------------------------- summary
def _summary_row(run: Run, status: str, **extra) -> dict:
    row = {"run": run.name, "status": status, "notebook": _rel(run.notebook), "run_dir": _rel(run.run_dir)}
    for k, v in run.swept.items():
        if k != "notebook":
            row[k] = v if isinstance(v, (int, float, str, bool)) or v is None else json.dumps(v, sort_keys=True)
    row.update({"seconds": None, "map": None, "error_cell": None, "error": None, "error_source": None})
    row.update(extra)
    return row


def write_summary(path: Path, rows: list[dict]) -> Path:
    import pandas as pd

    return atomic_write_text(path, pd.DataFrame(rows).to_csv(index=False))


def read_summary(path: str | os.PathLike):
    import pandas as pd

    return pd.read_csv(path)


# ----------------------------------------------------------------------------- execution
def _has_metrics(rd: Path) -> bool:
    """metrics.json in the run directory, or below it (notebooks such as the loss zoo write one run
    directory per loss and code length under their run_dir)."""
    return (rd / "metrics.json").is_file() or (rd.is_dir() and any(rd.rglob("metrics.json")))


def run_is_complete(run: Run) -> bool:
    """The run finished (metrics.json at or below its run_dir) with exactly this run's parameters."""
    rd = run.run_dir
    try:
        recorded = json.loads((rd / PARAMS_NAME).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return False
    status = recorded.pop("status", None)
    if recorded != _params_record(run):
        return False
    if status is None:  # record without a status: completed when the notebook's metrics.json is there
        return (rd / "metrics.json").is_file()
    return status == "completed" and _has_metrics(rd)


def _rel(path: Path) -> str:
    """A path relative to the project root when it lies inside it (records survive moving the checkout)."""
    from .utils import project_root

    root = project_root()
    try:
        return str(Path(path).resolve().relative_to(root)) if root else str(path)
    except ValueError:
        return str(path)


def _params_record(run: Run) -> dict:
    """What decides whether an earlier run can be reused: the notebook and every parameter but run_dir."""
    return {"notebook": _rel(run.notebook),
            "parameters": to_jsonable({k: v for k, v in run.params.items() if k != "run_dir"})}


def _error_fields(exc: BaseException) -> dict:
    from papermill.exceptions import PapermillExecutionError

    if isinstance(exc, PapermillExecutionError):
        first = next((ln for ln in str(exc.source or "").splitlines() if ln.strip()), "")
        return {"error_cell": int(exc.cell_index), "error": f"{exc.ename}: {exc.evalue}",
                "error_source": first[:120]}
    return {"error_cell": None, "error": f"{type(exc).__name__}: {exc}"}


def execute_run(run: Run, *, kernel: str = "python3", timeout: int | None = None, cwd: Path | None = None) -> dict:
    """Execute one run's notebook into its run directory. Returns a summary fragment (status, error...)."""
    import papermill

    rd = run.run_dir
    rd.mkdir(parents=True, exist_ok=True)
    try:  # a stale metrics.json from different parameters must not make a failed run look complete
        (rd / "metrics.json").unlink()
    except FileNotFoundError:
        pass
    def record(status: str) -> None:
        atomic_write_text(rd / PARAMS_NAME, json.dumps({**_params_record(run), "status": status}, indent=2,
                                                       sort_keys=True) + "\n")

    record("running")
    out_nb = rd / run.notebook.name
    t0 = time.perf_counter()
    try:
        papermill.execute_notebook(str(run.notebook), str(out_nb), parameters=run.params, kernel_name=kernel,
                                   progress_bar=False, log_output=False, cwd=str(cwd or Path.cwd()),
                                   execution_timeout=timeout)
    except KeyboardInterrupt:
        raise
    except Exception as e:  # noqa: BLE001 - any failure of one run is recorded, the grid goes on
        fields = _error_fields(e)
        atomic_write_text(rd / "error.txt", "".join(traceback.format_exception_only(type(e), e)))
        record("failed")
        return {"status": "failed", "seconds": round(time.perf_counter() - t0, 2), **fields}
    seconds = round(time.perf_counter() - t0, 2)
    if not _has_metrics(rd):
        record("failed")
        return {"status": "failed", "seconds": seconds, "error_cell": None,
                "error": "the notebook finished but wrote no metrics.json at or below run_dir"}
    record("completed")
    return {"status": "completed", "seconds": seconds, "map": _read_map(rd)}


def _read_map(rd: Path):
    try:
        return json.loads((rd / "metrics.json").read_text()).get("map")
    except (OSError, json.JSONDecodeError):
        return None


def run_grid(grid: Grid | str | os.PathLike, *, output: str | os.PathLike | None = None, force: bool = False,
             dry_run: bool = False, progress: bool = True, validate: bool = True,
             only: list[str] | None = None):
    """Validate, then execute every run of a grid in sequence; returns the summary as a DataFrame.

    ``force``: rerun completed runs too. ``dry_run``: validate and list the runs, execute nothing.
    ``only``: run names (or glob patterns) to execute; the summary still lists every run of the grid.
    """
    import fnmatch

    import pandas as pd
    from tqdm.auto import tqdm

    if not isinstance(grid, Grid):
        grid = load_grid(grid, output=output)
    selected = {r.name for r in grid.runs if not only or any(fnmatch.fnmatch(r.name, p) for p in only)}
    if not selected:
        raise ConfigError(f"grid {str(grid.path)!r}: no run name matches {only}")
    if validate:
        validate_grid(grid)
    rows = [_summary_row(r, "skipped" if (not force and run_is_complete(r)) else "pending",
                         map=_read_map(r.run_dir) if (not force and run_is_complete(r)) else None)
            for r in grid.runs]
    if dry_run:
        return pd.DataFrame(rows)
    grid.output.mkdir(parents=True, exist_ok=True)
    write_summary(grid.summary_path, rows)
    from .utils import project_root

    cwd = project_root() or Path.cwd()
    bar = tqdm(total=len(selected), desc=f"grid {grid.path.stem}", unit="run", disable=not progress)
    try:
        for i, r in enumerate(grid.runs):
            if r.name not in selected:  # --only: the other runs keep their status in the summary
                continue
            bar.set_postfix_str(r.name)
            if rows[i]["status"] == "skipped":
                bar.update(1)
                continue
            try:
                res = execute_run(r, kernel=grid.kernel, timeout=grid.timeout, cwd=cwd)
            except KeyboardInterrupt:
                rows[i].update(status="interrupted", error="KeyboardInterrupt")
                write_summary(grid.summary_path, rows)
                raise
            rows[i].update(res)
            write_summary(grid.summary_path, rows)
            if res["status"] == "failed":
                bar.write(f"run {r.name} failed (cell {res.get('error_cell')}): {res.get('error')}")
            bar.update(1)
    finally:
        bar.close()
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- command line
def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("grid", help="grid YAML file (see hashlib_vit.runner)")
    p.add_argument("--output", default=None, help="override the grid's output root")
    p.add_argument("--force", action="store_true", help="rerun runs that are already complete")
    p.add_argument("--dry-run", action="store_true", help="validate and list the runs; execute nothing")
    p.add_argument("--only", nargs="+", default=None, metavar="NAME", help="run only these run names / glob patterns")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main_from_args(args) -> int:
    try:
        summary = run_grid(args.grid, output=args.output, force=args.force, dry_run=args.dry_run,
                           progress=not args.no_progress, only=args.only)
    except KeyboardInterrupt:
        print(f"\ninterrupted: the summary so far is in {load_grid(args.grid, output=args.output).summary_path}; "
              f"run the same command again to resume (completed runs are skipped)", file=sys.stderr)
        return 130
    import pandas as pd

    with pd.option_context("display.max_rows", 500, "display.width", 200, "display.max_colwidth", 60):
        cols = [c for c in summary.columns if c not in ("notebook", "run_dir")]
        print(summary[cols].to_string(index=False))
    if not args.dry_run:
        print(f"summary: {load_grid(args.grid, output=args.output).summary_path}")
    return 1 if (summary["status"] == "failed").any() else 0


def main(argv: list[str] | None = None) -> int:
    from .errors import HashlibVitError

    parser = add_arguments(argparse.ArgumentParser(prog="python -m hashlib_vit.runner",
                                                   description="run a grid of parameterised notebooks"))
    args = parser.parse_args(argv)
    try:
        return main_from_args(args)
    except HashlibVitError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


__all__ = ["Grid", "Run", "load_grid", "validate_grid", "run_grid", "run_is_complete", "execute_run",
           "default_run_name", "read_summary", "SUMMARY_NAME"]

if __name__ == "__main__":
    sys.exit(main())
