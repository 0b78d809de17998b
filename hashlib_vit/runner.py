"""The one grid runner: expand a YAML grid into runs and execute them on one of four executors.

    hashlib-vit run-grid configs/grids/smoke.yaml [--dry-run] [--force] [--executor local --workers 2]
    python -m hashlib_vit.runner configs/grids/loss_zoo.yaml --no-progress

A grid file is a YAML mapping that names its **target**, what one run executes:

* ``notebook: notebooks/00_quickstart.ipynb`` — the notebook runs under papermill with the run's
  parameters (a list of notebooks is swept like a parameter); the executed notebook is kept in the run
  directory; a failing run records the failing cell;
* ``target: experiment`` — :func:`hashlib_vit.experiment.run_experiment` runs in-process with the run's
  parameters as its RunConfig (flat field names, dotted keys into dict fields such as
  ``loss_params.gamma`` / ``model_params.aem``, sections such as ``train.lr``, and ``preset``: a method
  preset of ``configs/methods`` below the run's own values, :func:`hashlib_vit.config.build_config`);
  no notebook is involved.

::

    target: experiment                        # or notebook: notebooks/X.ipynb
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
    executor: {kind: local, workers: 2}       # optional, default sequential (see below)
    timeout: 3600                             # optional per-cell timeout in seconds (notebook target)

Every run gets ``run_dir = <output>/<run name>``; run names come deterministically from the swept
values (:func:`default_run_name`, e.g. ``loss-csq_bits-16``) for every target, so rerunning a grid finds
its earlier runs: a run whose ``metrics.json`` exists and whose recorded parameters (and status) in
``grid_params.json`` equal the current ones is skipped (``force`` reruns it). Notebooks that write several
run directories below their ``run_dir`` count as complete when they finished and left a metrics.json
below it. A failing run is recorded (status; ``error``: exception name and message; for notebooks
``error_cell``, the failing cell's index in the executed notebook, and ``error_source``, its first line;
``error.txt`` in the run directory) and the grid goes on. The summary ``<output>/grid_summary.csv`` is
rewritten atomically whenever a run's state changes.

**Executors** (the grid's ``executor`` mapping, or ``run_grid(executor=...)`` / ``--executor``, which
replaces it; the same grid file runs on a laptop and on a cluster, only the executor differs):

* ``{kind: sequential}`` — one run after the other in this process (the default);
* ``{kind: local, workers: N}`` — N worker processes (spawn context); each sets torch's threads to
  cores / N;
* ``{kind: slurm, partition: gpu, gpus_per_node: 1, cpus_per_task: 8, timeout_min: 600, mem_gb: 64,
  slurm_additional_parameters: {...}}`` — one SLURM job per run through **submitit**
  (``submitit.AutoExecutor(folder=<output>/.submitit, cluster="slurm")``); the other keys are submitit's
  generic parameters or its SLURM ones (``account``, ``qos``, ``constraint``, ``setup``, ... with or without
  the ``slurm_`` prefix);
* ``{kind: submitit-local, ...}`` — the same through submitit's local cluster (one process per job on this
  machine): how the SLURM path is tested without a cluster.

The parent process submits the jobs, waits for them and records every job's outcome (job id included) in
grid_summary.csv; a job that fails or a submission that fails (no ``sbatch``, a rejected request) is a
failed run and the grid goes on. Keep the parent alive while the jobs run (e.g. in tmux on the login
node): each job records its own completion in its run directory, so after the parent is stopped the same
command skips the completed runs, but it submits again the runs whose jobs had not finished (Ctrl-C
cancels the grid's pending jobs). submitit is an optional dependency (``pip install hashlib_vit[cluster]``).

**Validation** happens before anything is written: unknown grid keys; every parameter name (notebook:
the notebook's ``parameters`` cell via :func:`papermill.inspect_notebook`, with declared types, registry
names and ``overrides``; experiment: a RunConfig field or a dotted key into a dict field); a sweep axis
that sets only bookkeeping fields that cannot change the result (``device``, ``progress``, ``run_dir``,
...: :func:`hashlib_vit.config.field_role` ``"record"``); for the experiment target every run's RunConfig
is built and validated, all of them before the first run starts; the executor's kind and keys, and
submitit's presence when it is used.
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
from .typecheck import coerce, fits, infer_type, parse_annotation
from .results.collect import read_summary  # the grid summary's one reader
from .utils import atomic_write_text, make_dirs, resolve_path, to_jsonable

GRID_KEYS = {"notebook", "target", "executor", "output", "name", "fixed", "sweep", "runs", "timeout",
             "description", "kernel"}
TARGETS = ("notebook", "experiment")
EXECUTORS = ("sequential", "local", "submitit-local", "slurm")
SUMMARY_NAME = "grid_summary.csv"
PARAMS_NAME = "grid_params.json"
SUBMITIT_FOLDER = ".submitit"
INSTALL_CLUSTER = 'pip install "hashlib_vit[cluster]" (or: pip install submitit)'


# ----------------------------------------------------------------------------- grid spec
@dataclass
class Run:
    """One planned run: a notebook execution (``notebook`` set) or an in-process experiment (``notebook`` None,
    ``target="experiment"``). ``params``: everything the run is given, ``run_dir`` included."""

    name: str
    notebook: Path | None
    params: dict[str, Any]
    swept: dict[str, Any] = field(default_factory=dict)  # the values that vary across the grid
    target: str = "notebook"

    @property
    def run_dir(self) -> Path:
        return Path(self.params["run_dir"])

    def config(self):
        """The RunConfig of an experiment-target run (not validated; :func:`validate_grid` validates)."""
        if self.target != "experiment":
            raise ConfigError(f"run {self.name!r} targets a notebook; its RunConfigs are built by the notebook "
                              "(hashlib_vit.reproduce.notebook_run_configs)")
        return run_config(self.params)


@dataclass
class Grid:
    """An expanded grid: its file (None for a grid mapping), output root, runs in grid order, target,
    executor mapping (:func:`executor_spec`), the notebook target's per-cell ``timeout`` (seconds) and
    ``kernel``, and each sweep axis with the parameter names it sets."""

    path: Path | None
    output: Path
    runs: list[Run]
    timeout: int | None = None
    kernel: str = "python3"
    description: str = ""
    target: str = "notebook"
    executor: dict = field(default_factory=lambda: {"kind": "sequential"})
    sweep_axes: dict[str, list[str]] = field(default_factory=dict)  # axis -> the parameter names it sets

    @property
    def summary_path(self) -> Path:
        return self.output / SUMMARY_NAME

    @property
    def label(self) -> str:
        return str(self.path) if self.path is not None else "<grid mapping>"


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
    """``loss-csq_bits-16_seed-0``: key-value pairs of the swept values in grid order (every target)."""
    if not swept:
        return "run"
    parts = []
    for k, v in swept.items():
        if k == "notebook":
            parts.append(_slug(Path(v).stem))
        else:
            parts.append(f"{k}-{_slug(v)}")
    return "_".join(parts)


# ----------------------------------------------------------------------------- RunConfig bridge
def run_config(params: dict):
    """The RunConfig of an experiment-target run's parameters: flat field names, dotted keys into dict fields
    (``loss_params.gamma``) or sections (``train.lr``), and optionally ``preset`` (a method preset of
    ``configs/methods``, below the run's own parameters: :func:`hashlib_vit.config.build_config`).
    Raises ConfigError for an unknown name, an unknown preset, or (with a preset) a bad value."""
    from .config import RunConfig, build_config

    params = dict(params)
    if "preset" in params:
        preset = params.pop("preset")
        return build_config(params, preset=preset)
    return RunConfig.from_dict(params)


def param_role(name: str) -> str:
    """``"result"`` / ``"eval"`` / ``"record"`` of a run parameter (:func:`hashlib_vit.config.field_role`;
    ``preset`` changes the result). Raises ConfigError for a name that is not a configuration field."""
    from .config import field_role as role

    return "result" if name == "preset" else role(name)


# ----------------------------------------------------------------------------- executors
def executor_spec(spec: Any, where: str = "executor") -> dict:
    """A checked executor mapping ``{"kind": ..., ...}`` from a grid's ``executor`` value or a kind name.

    ``sequential`` takes no other key, ``local`` takes ``workers`` (int >= 1, default 2); ``slurm`` and
    ``submitit-local`` take submitit parameters (checked by :func:`submitit_parameters` when they are used).
    Raises ConfigError naming the kind or key and the allowed ones."""
    if spec is None:
        return {"kind": "sequential"}
    if isinstance(spec, str):
        spec = {"kind": spec}
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}={spec!r} must be a mapping such as {{kind: local, workers: 2}} or a kind name; "
                          f"kinds: {', '.join(EXECUTORS)}")
    kind = spec.get("kind", "sequential")
    if kind not in EXECUTORS:
        raise ConfigError(f"{where}: kind={kind!r} is not a known executor; allowed: {', '.join(EXECUTORS)}")
    spec = {**spec, "kind": kind}
    if kind == "sequential" and set(spec) - {"kind"}:
        raise ConfigError(f"{where}: kind sequential takes no other key, got {sorted(set(spec) - {'kind'})}")
    if kind == "local":
        extra = sorted(set(spec) - {"kind", "workers"})
        if extra:
            raise ConfigError(f"{where}: unknown key(s) {extra} for kind local; allowed: kind, workers")
        w = spec.setdefault("workers", 2)
        if not isinstance(w, int) or isinstance(w, bool) or w < 1:
            raise ConfigError(f"{where}: workers={w!r} must be an integer >= 1")
    return spec


def _import_submitit():
    try:
        import submitit
    except ImportError:
        raise ConfigError(f"the slurm / submitit-local executors need submitit, which is not installed: "
                          f"{INSTALL_CLUSTER}") from None
    return submitit


def submitit_parameters(spec: dict, where: str = "executor") -> dict:
    """The ``executor.update_parameters(...)`` keywords of a slurm / submitit-local executor mapping.

    submitit's generic names (timeout_min, mem_gb, gpus_per_node, cpus_per_task, nodes, tasks_per_node,
    name, ...) pass as they are; ``partition`` and every other SLURM parameter of submitit (account, qos,
    constraint, setup, additional_parameters, array_parallelism, ...) may be given with or without the
    ``slurm_`` prefix. Raises ConfigError (submitit missing, unknown key naming the allowed ones, a generic
    value of the wrong type) before anything is submitted."""
    submitit = _import_submitit()
    from submitit.auto.auto import AutoExecutor
    from submitit.slurm.slurm import SlurmExecutor

    generic = AutoExecutor._typed_parameters()
    slurm = SlurmExecutor._valid_parameters()
    del submitit
    out: dict[str, Any] = {}
    bad = []
    for k, v in spec.items():
        if k == "kind":
            continue
        if k in generic:
            want = (int, float) if generic[k] is float else generic[k]
            if not isinstance(v, want) or (want is int and isinstance(v, bool)):
                raise ConfigError(f"{where}: {k}={v!r} must be a {generic[k].__name__}")
            out[k] = v
        elif k.startswith("slurm_") and k[6:] in slurm:
            out[k] = v
        elif k in slurm:
            out[f"slurm_{k}"] = v
        else:
            bad.append(k)
    if bad:
        raise ConfigError(f"{where}: unknown key(s) {sorted(bad)} for kind {spec['kind']}; allowed: kind, "
                          f"{', '.join(sorted(generic))}, and submitit's SLURM parameters (with or without slurm_): "
                          f"{', '.join(sorted(slurm))}")
    return out


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def load_grid(path: str | os.PathLike | dict, *, output: str | os.PathLike | None = None) -> Grid:
    """Read a grid file (or take a grid mapping) and expand it into runs; nothing is inspected, validated
    against a notebook or RunConfig, or executed here (:func:`validate_grid` does the checks).

    Raises ConfigError for an unknown key (naming it, the file and the allowed keys), a missing output,
    a missing or doubly given target, a malformed sweep or runs list, and duplicate run names."""
    if isinstance(path, dict):
        spec, path = dict(path), None
        where = "grid <mapping>"
    else:
        from .config import load_yaml

        path = Path(path)
        spec = load_yaml(path, what="grid file")
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
    has_notebook = notebooks is not None or "notebook" in sweep or any("notebook" in r for r in explicit)
    target = spec.get("target", "notebook" if has_notebook else None)
    if target not in TARGETS:
        raise ConfigError(f"{where}: target={target!r}; give 'notebook: notebooks/X.ipynb' (papermill) or "
                          f"'target: experiment' (hashlib_vit.experiment.run_experiment in-process)")
    if target == "experiment" and has_notebook:
        raise ConfigError(f"{where}: target experiment runs no notebook; remove 'notebook' or use target notebook")
    if "notebook" in sweep:
        if notebooks is not None:
            raise ConfigError(f"{where}: give the notebook either as 'notebook' or in 'sweep', not both")
    elif isinstance(notebooks, list):
        sweep = {"notebook": notebooks, **sweep}
        notebooks = None
    if "run_dir" in fixed or "run_dir" in sweep:
        raise ConfigError(f"{where}: 'run_dir' is set by the runner (<output>/<run name>); do not give it")
    executor = executor_spec(spec.get("executor"), f"{where}, executor")
    template = spec.get("name")

    runs: list[Run] = []

    def add(params: dict, swept: dict, name: str | None, label: str):
        nb = params.pop("notebook", notebooks) if target == "notebook" else None
        if target == "notebook" and not nb:
            raise ConfigError(f"{where}: {label} has no notebook (set 'notebook' at the top of the grid)")
        if name is None:
            if template:
                try:
                    name = str(template).format(**{**params, **swept, **({"notebook": Path(nb).stem} if nb else {})})
                except (KeyError, IndexError, ValueError) as e:
                    raise ConfigError(f"{where}: name template {template!r} cannot be filled for {label}: {e!r}") from None
                name = re.sub(r"[^A-Za-z0-9._+=-]+", "-", name).strip("-")
            else:
                name = default_run_name(swept)
        if "run_dir" in params:
            raise ConfigError(f"{where}: {label} sets 'run_dir'; it is set by the runner (<output>/<run name>)")
        runs.append(Run(name=name, notebook=resolve_path(nb) if nb else None,
                        params={**params, "run_dir": str(output_dir / name)}, swept=swept, target=target))

    keys = list(sweep)
    # dict-valued parameters are plain values, not linked groups
    linked = {k for k in keys if all(isinstance(v, dict) for v in sweep[k])} - set(DICT_PARAMS)
    for k in keys:
        if k not in linked and any(isinstance(v, dict) for v in sweep[k]) and k not in DICT_PARAMS:
            raise ConfigError(f"{where}: sweep.{k} mixes mappings and plain values; a linked dimension lists only "
                              f"mappings of parameter: value (e.g. {{protocol: cifar10, data_root: ...}})")
    axes = {k: (sorted({p for v in sweep[k] for p in v if p != "name"}) if k in linked else [k]) for k in keys}
    # the product of no sweep is one run of `fixed` alone: a grid of that run, unless explicit runs are listed
    for combo in itertools.product(*(sweep[k] for k in keys)) if keys or not explicit else ():
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
    for key in ("timeout", "kernel"):
        if target == "experiment" and key in spec:
            raise ConfigError(f"{where}: {key!r} applies to notebook cells; target experiment runs no notebook "
                              f"(a time limit per run: the executor's timeout_min on slurm / submitit-local)")
    return Grid(path=path, output=output_dir, runs=runs, timeout=timeout, kernel=str(spec.get("kernel", "python3")),
                description=str(spec.get("description", "")), target=target, executor=executor, sweep_axes=axes)


# ----------------------------------------------------------------------------- validation
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
               if not fits(v, field_info(k)["type"])]
        if bad:
            return "values of the wrong type: " + ", ".join(bad)
        RunConfig.from_dict(merged).train.validate()
    except ConfigError as e:
        return str(e)
    return None


def declared_type(info: dict) -> Any:
    """The declared type of one notebook parameter from papermill's inspection record (its annotation
    text, else the type of its default's literal)."""
    text = info.get("inferred_type_name") or "None"
    if text.strip() != "None":
        return parse_annotation(text)
    try:
        return infer_type(ast.literal_eval(str(info.get("default", ""))))
    except (ValueError, SyntaxError):
        return Any


def notebook_parameters(notebook: Path) -> dict[str, dict]:
    import papermill

    if not notebook.is_file():
        raise ConfigError(f"notebook {str(notebook)!r} does not exist")
    return papermill.inspect_notebook(str(notebook))


def _check_sweep_axes(grid: Grid, declared: set[str] | None = None) -> None:
    """A sweep axis whose parameters are all bookkeeping (field_role "record": device, progress, run_dir, ...)
    runs the same experiment several times: ConfigError naming the axis. Notebook parameters that are not
    RunConfig fields (e.g. ``compare_plain``) count as changing the result."""
    for axis, names in grid.sweep_axes.items():
        if axis == "notebook":
            continue
        roles = []
        for n in names:
            try:
                roles.append(param_role(n))
            except ConfigError:
                roles.append("result")  # a notebook's own parameter, or an unknown name reported elsewhere
        if roles and all(r == "record" for r in roles):
            raise ConfigError(f"grid {grid.label}: sweep axis {axis!r} sets only {names}, which do not change the "
                              f"result (bookkeeping fields: field_role 'record'); the runs would repeat one "
                              f"experiment. Set them under 'fixed' or sweep a parameter that changes the result")


def _validate_experiment_runs(grid: Grid) -> list[str]:
    """Build and validate every experiment-target run's RunConfig; one problem text per run."""
    problems = []
    for r in grid.runs:
        where = f"grid {grid.label}, run {r.name!r}"
        unknown = []
        for name in r.params:
            try:
                param_role(name)
            except ConfigError as e:  # names the close matches ("did you mean epochs?")
                unknown.append(str(e).split(" (fields:")[0])
        if unknown:
            from .config import field_names

            problems.append(f"{where}: {'; '.join(unknown)} (fields: {', '.join(field_names())}, and preset; dotted "
                            "keys into a mapping field such as loss_params.gamma)")
            continue
        try:
            r.config().validate()
        except ConfigError as e:
            problems.append(f"{where}: {e}")
    return problems


def validate_grid(grid: Grid, *, check_registries: bool = True) -> None:
    """Check every run before anything runs: sweep axes that cannot change the result; for the notebook
    target every parameter name and value against its notebook's parameters cell (declared types, registry
    names, ``overrides``); for the experiment target every run's RunConfig, built and validated.
    Raises ConfigError listing the problems (up to 20), each naming the grid, run and parameter."""
    _check_sweep_axes(grid)
    if grid.target == "experiment":
        problems = _validate_experiment_runs(grid)
    else:
        problems = _validate_notebook_runs(grid, check_registries=check_registries)
    if problems:
        shown = problems[:20] + ([f"... and {len(problems) - 20} more"] if len(problems) > 20 else [])
        raise ConfigError("invalid grid parameters:\n  " + "\n  ".join(shown))


def _validate_notebook_runs(grid: Grid, *, check_registries: bool = True) -> list[str]:
    declared_by_nb: dict[Path, dict] = {}
    problems: list[str] = []
    for r in grid.runs:
        if r.notebook not in declared_by_nb:
            declared_by_nb[r.notebook] = notebook_parameters(r.notebook)
            if not declared_by_nb[r.notebook]:
                raise ConfigError(f"grid {grid.label}: notebook {str(r.notebook)!r} has no 'parameters' cell "
                                  f"(papermill finds no parameters to set)")
            if "run_dir" not in declared_by_nb[r.notebook]:
                raise ConfigError(f"grid {grid.label}: notebook {str(r.notebook)!r} declares no 'run_dir' "
                                  f"parameter, so its runs cannot be given their own run directories")
        declared = declared_by_nb[r.notebook]
        for name, value in r.params.items():
            where = f"grid {grid.label}, run {r.name!r}, parameter {name!r}"
            if name not in declared:
                problems.append(f"{where}: not a parameter of {r.notebook.name}; it declares: "
                                f"{', '.join(sorted(declared))}")
                continue
            try:  # the check the notebook's first cell makes (hashlib_vit.notebook.check_parameters)
                value = coerce(name, value, declared_type(declared[name]), where=f"{where}:")
            except ConfigError as e:
                problems.append(f"{e} (default {declared[name].get('default')})")
                continue
            if check_registries:
                msg = _registry_check(name, value)
                if msg:
                    problems.append(f"{where}: {value!r} {msg}")
            if name == "overrides":
                msg = _overrides_check(r.params)
                if msg:
                    problems.append(f"{where}: {msg}")
    return problems


# ----------------------------------------------------------------------------- summary
def _summary_row(run: Run, status: str, **extra) -> dict:
    row = {"run": run.name, "status": status, "target": run.target,
           "notebook": _rel(run.notebook) if run.notebook is not None else None, "run_dir": _rel(run.run_dir)}
    for k, v in run.swept.items():
        if k != "notebook":
            row[k] = v if isinstance(v, (int, float, str, bool)) or v is None else json.dumps(v, sort_keys=True)
    row.update({"seconds": None, "map": None, "error_cell": None, "error": None, "error_source": None,
                "job_id": None})
    row.update(extra)
    return row


def write_summary(path: Path, rows: list[dict]) -> Path:
    import pandas as pd

    return atomic_write_text(path, pd.DataFrame(rows).to_csv(index=False))


# ----------------------------------------------------------------------------- one run
def _metrics_files(rd: Path) -> list[Path]:
    """metrics.json in the run directory, or below it (notebooks such as the loss zoo write one run
    directory per loss and code length under their run_dir)."""
    if (rd / "metrics.json").is_file():
        return [rd / "metrics.json"]
    return sorted(rd.rglob("metrics.json")) if rd.is_dir() else []


def _metrics_problem(rd: Path) -> str | None:
    """None when the run left metrics.json at or below ``rd`` and every one of them is valid
    (:func:`hashlib_vit.results.read_metrics`); else what is wrong (naming the file and the key)."""
    from .errors import DataError
    from .results.rundir import read_metrics

    files = _metrics_files(rd)
    if not files:
        return f"no metrics.json at or below {rd}"
    for f in files:
        try:
            read_metrics(f)
        except DataError as e:
            return str(e)
    return None


def _has_metrics(rd: Path) -> bool:
    return bool(_metrics_files(rd))


def run_is_complete(run: Run) -> bool:
    """The run finished (valid metrics.json at or below its run_dir, :func:`hashlib_vit.results.read_metrics`)
    with this run's parameters: the same target and the same values of every parameter but the bookkeeping
    ones (field_role ``"record"``: device, data_root, progress, ...), which never make a finished run
    incomplete (the same grid resumes on a machine with another device or data folder). A damaged
    ``grid_params.json`` or metrics.json makes the run incomplete (it runs again), with a warning naming the
    file and the field."""
    import warnings

    from .errors import DataError
    from .utils import read_json

    rd = run.run_dir
    if not (rd / PARAMS_NAME).is_file():
        return False
    try:
        recorded = read_json(rd / PARAMS_NAME, "grid run record")
    except DataError as e:
        warnings.warn(f"{e}; run {run.name!r} runs again", UserWarning, stacklevel=2)
        return False
    status = recorded.pop("status", None)
    if not isinstance(recorded.get("parameters"), dict) or _comparable(recorded) != _comparable(_params_record(run)):
        return False
    if status is None and not (rd / "metrics.json").is_file():  # record without a status: the notebook's metrics
        return False
    if status is not None and (status != "completed" or not _has_metrics(rd)):
        return False
    problem = _metrics_problem(rd)
    if problem is not None:
        warnings.warn(f"{problem}; run {run.name!r} runs again", UserWarning, stacklevel=2)
        return False
    return True


def _comparable(record: dict) -> dict:
    """A params record without the bookkeeping parameters (field_role "record")."""
    def bookkeeping(name: str) -> bool:
        try:
            return param_role(name) == "record"
        except ConfigError:  # a notebook's own parameter
            return False

    params = {k: v for k, v in record["parameters"].items() if not bookkeeping(k)}
    return {**record, "parameters": params}


def _rel(path: Path) -> str:
    """A path relative to the project root when it lies inside it (records survive moving the checkout)."""
    from .utils import project_root

    root = project_root()
    try:
        return str(Path(path).resolve().relative_to(root)) if root else str(path)
    except ValueError:
        return str(path)


def _params_record(run: Run) -> dict:
    """What decides whether an earlier run can be reused: the target (the notebook) and every parameter but
    run_dir."""
    params = to_jsonable({k: v for k, v in run.params.items() if k != "run_dir"})
    if run.target == "experiment":
        return {"target": "experiment", "parameters": params}
    return {"notebook": _rel(run.notebook), "parameters": params}


def _record(run: Run, status: str) -> None:
    atomic_write_text(run.run_dir / PARAMS_NAME,
                      json.dumps({**_params_record(run), "status": status}, indent=2, sort_keys=True) + "\n")


def _error_fields(exc: BaseException) -> dict:
    try:
        from papermill.exceptions import PapermillExecutionError
    except ImportError:  # papermill is needed by the notebook target only
        PapermillExecutionError = ()  # noqa: N806
    if PapermillExecutionError and isinstance(exc, PapermillExecutionError):
        first = next((ln for ln in str(exc.source or "").splitlines() if ln.strip()), "")
        return {"error_cell": int(exc.cell_index), "error": f"{exc.ename}: {exc.evalue}",
                "error_source": first[:120]}
    return {"error_cell": None, "error": f"{type(exc).__name__}: {exc}"}


_DATA_CACHE: dict = {}


def _shared_data(cfg):
    """The protocol's splits for ``cfg``, loaded once per process and reused by the next run with the same
    protocol, data_root, split seed and loader options (as one notebook loads its data once for many runs)."""
    from .data import PROTOCOLS

    key = json.dumps([cfg.protocol, cfg.data_root, cfg.split_seed, to_jsonable(cfg.data_options)], sort_keys=True)
    if key not in _DATA_CACHE:
        _DATA_CACHE.clear()  # keep one data set in memory
        _DATA_CACHE[key] = PROTOCOLS.get(cfg.protocol).load(cfg.data_root, seed=cfg.split_seed, **cfg.data_options)
    return _DATA_CACHE[key]


def _run_experiment_target(run: Run) -> None:
    from .experiment import run_experiment

    params = dict(run.params)
    params.setdefault("progress", False)  # the grid has its own progress bar
    cfg = run_config(params).validate()
    run_experiment(cfg, data=_shared_data(cfg))


def execute_run(run: Run, *, kernel: str = "python3", timeout: int | None = None, cwd: Path | None = None) -> dict:
    """Execute one run into its run directory: its notebook under papermill, or ``run_experiment`` in this
    process (experiment target). Any failure is caught and recorded (``grid_params.json`` status, ``error.txt``).
    Returns a summary fragment: status (completed / failed), seconds, map, error fields.

    A finished run's files are never removed here: completeness is the ``grid_params.json`` status (set to
    "running" first), ``run_experiment`` replaces its results only once the run is known to start, and a
    notebook executes into ``<stem>.running.ipynb``, renamed to ``<name>`` when it completes and to
    ``<stem>.failed.ipynb`` when it fails (a finished run's executed notebook stays)."""
    rd = run.run_dir
    make_dirs(rd, "run directory")
    _record(run, "running")
    t0 = time.perf_counter()
    try:
        if run.target == "experiment":
            _run_experiment_target(run)
        else:
            _run_notebook_target(run, kernel, timeout, cwd)
    except KeyboardInterrupt:
        raise
    except Exception as e:  # noqa: BLE001 - any failure of one run is recorded, the grid goes on
        fields = _error_fields(e)
        atomic_write_text(rd / "error.txt", "".join(traceback.format_exception(type(e), e, e.__traceback__)))
        _record(run, "failed")
        return {"status": "failed", "seconds": round(time.perf_counter() - t0, 2), **fields}
    seconds = round(time.perf_counter() - t0, 2)
    if not _has_metrics(rd):
        _record(run, "failed")
        return {"status": "failed", "seconds": seconds, "error_cell": None,
                "error": f"the {run.target} finished but wrote no metrics.json at or below run_dir"}
    problem = _metrics_problem(rd)
    if problem is not None:
        _record(run, "failed")
        return {"status": "failed", "seconds": seconds, "error_cell": None,
                "error": f"the {run.target} finished but its metrics.json is not valid: {problem}"}
    _record(run, "completed")
    return {"status": "completed", "seconds": seconds, "map": _read_map(rd)}


# cells a batch run leaves out: the lessons' exercises and their worked solutions (docs/course.md) teach, they
# are not part of the run, and a solution may train (lesson 02's ablation) or read committed results
BATCH_SKIPPED_TAGS = ("exercise", "solution")


def batch_notebook(path: str | os.PathLike):
    """The notebook at ``path`` as a grid run executes it: an ``nbformat`` node without the cells tagged
    :data:`BATCH_SKIPPED_TAGS` (nbconvert's ``TagRemovePreprocessor``). Raises FileNotFoundError / nbformat's
    validation errors for a missing or malformed file."""
    import nbformat
    from nbconvert.preprocessors import TagRemovePreprocessor

    nb = nbformat.read(str(path), as_version=4)
    nb, _ = TagRemovePreprocessor(remove_cell_tags=set(BATCH_SKIPPED_TAGS), enabled=True).preprocess(nb, {})
    return nb


def _run_notebook_target(run: Run, kernel: str, timeout: int | None, cwd: Path | None) -> None:
    """papermill into ``<stem>.running.ipynb``; renamed to the notebook's name when it completes, to
    ``<stem>.failed.ipynb`` when it raises (then re-raised). The lesson's exercises are left out
    (:func:`batch_notebook`)."""
    import papermill

    rd, name = run.run_dir, run.notebook.name
    running = rd / f"{run.notebook.stem}.running.ipynb"
    try:
        papermill.execute_notebook(batch_notebook(run.notebook), str(running), parameters=run.params, kernel_name=kernel,
                                   progress_bar=False, log_output=False, cwd=str(cwd or Path.cwd()),
                                   execution_timeout=timeout)
    except BaseException:
        if running.exists():
            os.replace(running, rd / f"{run.notebook.stem}.failed.ipynb")
        raise
    os.replace(running, rd / name)
    (rd / f"{run.notebook.stem}.failed.ipynb").unlink(missing_ok=True)


def _read_map(rd: Path):
    """The run's mAP from its (validated) metrics.json; None when the run directory holds several runs
    below it (a loss zoo) or its metrics.json is missing or damaged (such a run is never complete:
    :func:`run_is_complete`)."""
    from .errors import DataError
    from .results.rundir import read_metrics

    if not (rd / "metrics.json").is_file():
        return None
    try:
        return read_metrics(rd / "metrics.json")["map"]
    except DataError:
        return None


def _set_threads(threads: int | None) -> None:
    """Worker processes: torch's intra-op threads (and the notebooks' kernels, through OMP_NUM_THREADS)."""
    if not threads:
        return
    os.environ["OMP_NUM_THREADS"] = str(threads)
    import torch

    torch.set_num_threads(threads)


def _job_entry(run: Run, kernel: str, timeout: int | None, cwd: str, threads: int | None) -> dict:
    """What one local worker process or one submitit job executes."""
    _set_threads(threads)
    return execute_run(run, kernel=kernel, timeout=timeout, cwd=Path(cwd))


# ----------------------------------------------------------------------------- executors
class _Book:
    """The parent's record of a grid in progress: rows, the atomic summary and the progress bar."""

    def __init__(self, grid: Grid, rows: list[dict], bar):
        self.grid, self.rows, self.bar = grid, rows, bar

    def update(self, i: int, **fields) -> None:
        self.rows[i].update(fields)
        write_summary(self.grid.summary_path, self.rows)

    def finish(self, i: int, res: dict) -> None:
        self.update(i, **res)
        r = self.grid.runs[i]
        if res.get("status") == "failed":
            where = f" (cell {res.get('error_cell')})" if res.get("error_cell") is not None else ""
            self.bar.write(f"run {r.name} failed{where}: {res.get('error')}")
        self.bar.set_postfix_str(r.name)
        self.bar.update(1)

    def interrupt(self, indices) -> None:
        for i in indices:
            self.rows[i].update(status="interrupted", error="KeyboardInterrupt")
        write_summary(self.grid.summary_path, self.rows)


def _run_sequential(grid: Grid, book: _Book, todo: list[int], spec: dict, cwd: Path) -> None:
    for i in todo:
        r = grid.runs[i]
        book.bar.set_postfix_str(r.name)
        try:
            res = execute_run(r, kernel=grid.kernel, timeout=grid.timeout, cwd=cwd)
        except KeyboardInterrupt:
            book.interrupt([i])
            raise
        book.finish(i, res)


def _run_local(grid: Grid, book: _Book, todo: list[int], spec: dict, cwd: Path) -> None:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    workers = min(spec["workers"], len(todo))
    threads = max(1, _cores() // workers)
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))
    futures = {pool.submit(_job_entry, grid.runs[i], grid.kernel, grid.timeout, str(cwd), threads): i for i in todo}
    done: set[int] = set()
    try:
        for fut in as_completed(futures):
            i = futures[fut]
            try:
                res = fut.result()
            except Exception as e:  # noqa: BLE001 - a worker that died (e.g. killed for memory) fails its run
                res = {"status": "failed", "error": f"worker process: {type(e).__name__}: {e}"}
                _safe_record(grid.runs[i], "failed")
            done.add(i)
            book.finish(i, res)
    except KeyboardInterrupt:
        pool.shutdown(wait=False, cancel_futures=True)
        book.interrupt([i for i in todo if i not in done])
        raise
    pool.shutdown(wait=True)


def _safe_record(run: Run, status: str) -> None:
    try:
        if run.run_dir.is_dir():
            _record(run, status)
    except OSError:
        pass


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    return lines[-1][:500] if lines else ""


def _run_submitit(grid: Grid, book: _Book, todo: list[int], spec: dict, cwd: Path) -> None:
    submitit = _import_submitit()
    params = submitit_parameters(spec)
    local = spec["kind"] == "submitit-local"
    # submitit-local runs every job at once on this machine: share the cores; on SLURM the job's own CPUs
    threads = max(1, _cores() // max(1, len(todo))) if local else params.get("cpus_per_task")
    jobs: dict[int, Any] = {}
    try:
        try:
            ex = submitit.AutoExecutor(folder=str(grid.output / SUBMITIT_FOLDER), cluster="local" if local else "slurm")
            job_name = re.sub(r"[^A-Za-z0-9._-]+", "-", f"grid-{Path(grid.label).stem}").strip("-")
            ex.update_parameters(**{"name": job_name, **params})
        except Exception as e:  # noqa: BLE001 - an executor that cannot be set up fails every run, recorded
            for i in todo:
                book.finish(i, {"status": "failed", "error": f"submission failed: {type(e).__name__}: {e}"})
            return
        for i in todo:
            r = grid.runs[i]
            book.bar.set_postfix_str(f"submitting {r.name}")
            try:
                job = ex.submit(_job_entry, r, grid.kernel, grid.timeout, str(cwd), threads)
            except Exception as e:  # noqa: BLE001 - sbatch missing or rejecting: this run fails, the grid goes on
                book.finish(i, {"status": "failed", "error": f"submission failed: {type(e).__name__}: {_last_line(e)}"})
                continue
            jobs[i] = job
            book.update(i, status="submitted", job_id=str(job.job_id))
        poll = 0.5 if local else 15.0
        while jobs:
            for i, job in list(jobs.items()):
                if not job.done():
                    continue
                try:
                    res = job.result()
                except Exception as e:  # noqa: BLE001 - the job itself failed (killed, timed out, node failure)
                    res = {"status": "failed", "error": f"job {job.job_id} failed: {type(e).__name__}: {_last_line(e)}"}
                    _safe_record(grid.runs[i], "failed")
                del jobs[i]
                book.finish(i, {**res, "job_id": str(job.job_id)})
            if jobs:
                time.sleep(poll)
    except KeyboardInterrupt:
        for job in jobs.values():
            try:
                job.cancel(check=False)
            except Exception:  # noqa: BLE001 - best effort
                pass
        book.interrupt(list(jobs))
        raise


_EXECUTE = {"sequential": _run_sequential, "local": _run_local, "submitit-local": _run_submitit,
            "slurm": _run_submitit}


def resolve_executor(grid_spec: dict | None, executor: str | dict | None = None, workers: int | None = None) -> dict:
    """The executor a grid runs on: ``executor`` (a kind name or mapping) replaces the grid's own; ``workers``
    sets the local executor's worker count (and selects ``local`` when no kind is given). Checked as
    :func:`executor_spec`; submitit's presence and parameters are checked too when it is used."""
    if executor is not None:
        spec = executor_spec(executor, "executor (override)")
    else:
        spec = executor_spec(grid_spec)
    if workers is not None:
        if executor is None and spec["kind"] != "local":
            spec = {"kind": "local"}
        if spec["kind"] != "local":
            raise ConfigError(f"workers={workers!r} applies to the local executor only, not kind {spec['kind']}")
        spec = executor_spec({**spec, "workers": workers}, "executor (override)")
    if spec["kind"] in ("slurm", "submitit-local"):
        submitit_parameters(spec)
    return spec


def run_grid(grid: Grid | str | os.PathLike | dict, *, output: str | os.PathLike | None = None, force: bool = False,
             dry_run: bool = False, progress: bool = True, validate: bool = True, only: list[str] | None = None,
             executor: str | dict | None = None, workers: int | None = None):
    """Validate, then execute every run of a grid; returns the summary as a DataFrame (one row per run:
    run, status, target, notebook, run_dir, the swept values, seconds, map, error_cell, error, error_source,
    job_id).

    ``grid``: a Grid, a grid file or a grid mapping (a notebook can run a grid in-process).
    ``force``: rerun completed runs too. ``dry_run``: validate and list the runs, execute nothing.
    ``only``: run names (or glob patterns) to execute; the summary still lists every run of the grid.
    ``executor`` / ``workers``: replace the grid's executor (see :func:`resolve_executor`).
    ``progress``: a progress bar (:func:`~hashlib_vit.utils.progress_bar`) over the runs with the current run's name.
    Raises ConfigError before anything is written for every invalid grid, parameter or executor.
    """
    import fnmatch

    import pandas as pd
    from .utils import progress_bar

    if not isinstance(grid, Grid):
        grid = load_grid(grid, output=output)
    spec = resolve_executor(grid.executor, executor, workers)
    selected = {r.name for r in grid.runs if not only or any(fnmatch.fnmatch(r.name, p) for p in only)}
    if not selected:
        raise ConfigError(f"grid {grid.label}: no run name matches {only}")
    if validate:
        validate_grid(grid)
    complete = [not force and run_is_complete(r) for r in grid.runs]
    rows = [_summary_row(r, "skipped" if c else "pending", map=_read_map(r.run_dir) if c else None)
            for r, c in zip(grid.runs, complete)]
    if dry_run:
        return pd.DataFrame(rows)
    make_dirs(grid.output, "grid output folder")
    write_summary(grid.summary_path, rows)
    from .utils import project_root

    cwd = project_root() or Path.cwd()
    todo = [i for i, r in enumerate(grid.runs) if r.name in selected and not complete[i]]
    bar = progress_bar(enabled=progress, total=len(selected), desc=f"grid {Path(grid.label).stem}", unit="run")
    bar.update(len(selected) - len(todo))
    try:
        if todo:
            _EXECUTE[spec["kind"]](grid, _Book(grid, rows, bar), todo, spec, cwd)
    finally:
        bar.close()
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- command line
def grid_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("grid", help="grid YAML file (see hashlib_vit.runner)")
    p.add_argument("--output", default=None, help="override the grid's output root")
    p.add_argument("--force", action="store_true", help="rerun runs that are already complete")
    p.add_argument("--dry-run", action="store_true", help="validate and list the runs; execute nothing")
    p.add_argument("--only", nargs="+", default=None, metavar="NAME", help="run only these run names / glob patterns")
    p.add_argument("--executor", default=None, choices=EXECUTORS,
                   help="replace the grid's executor: sequential, local (worker processes), slurm or submitit-local")
    p.add_argument("--workers", type=int, default=None, help="worker processes of the local executor")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def grid_main(args) -> int:
    try:
        summary = run_grid(args.grid, output=args.output, force=args.force, dry_run=args.dry_run,
                           progress=not args.no_progress, only=args.only, executor=getattr(args, "executor", None),
                           workers=getattr(args, "workers", None))
    except KeyboardInterrupt:
        print(f"\ninterrupted: the summary so far is in {load_grid(args.grid, output=args.output).summary_path}; "
              f"run the same command again to resume (completed runs are skipped)", file=sys.stderr)
        return 130
    import pandas as pd

    with pd.option_context("display.max_rows", 500, "display.width", 200, "display.max_colwidth", 60):
        cols = [c for c in summary.columns if c not in ("notebook", "run_dir", "target")
                and not (c in ("job_id", "error_cell", "error_source") and summary[c].isna().all())]
        print(summary[cols].to_string(index=False))
    if not args.dry_run:
        print(f"summary: {load_grid(args.grid, output=args.output).summary_path}")
    return 1 if (summary["status"] == "failed").any() else 0


def main(argv: list[str] | None = None) -> int:
    from .errors import HashlibVitError

    parser = grid_arguments(argparse.ArgumentParser(prog="python -m hashlib_vit.runner",
                                                   description="run a grid of notebooks or experiments"))
    args = parser.parse_args(argv)
    try:
        return grid_main(args)
    except HashlibVitError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


__all__ = ["Grid", "Run", "load_grid", "validate_grid", "run_grid", "run_is_complete", "execute_run",
           "default_run_name", "read_summary", "run_config", "param_role", "executor_spec", "resolve_executor",
           "submitit_parameters", "SUMMARY_NAME", "EXECUTORS", "TARGETS"]

if __name__ == "__main__":
    sys.exit(main())
