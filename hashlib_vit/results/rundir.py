"""Run directories: the contract between a run and everything that reads results.

Every run writes, atomically::

    run_dir/config.json    the full resolved parameters (written first)
    run_dir/env.json       versions, device, git commit, split checksums
    run_dir/train_log.csv  one line per training step (flushed as it goes)
    run_dir/evals.json     periodic evaluations (epoch, mAP)
    run_dir/metrics.json   the final metrics (written last: its presence marks a completed run)
    run_dir/codes.npz      optional: query/database codes and labels

``metrics.json`` has a schema version:

* **schema 1** (files without ``schema_version``, written before this package stored it): at least
  :data:`REQUIRED_METRICS`; a ``curves`` block when the run was made by an engine that stored curves;
* **schema 2** (``"schema_version": 2``, written by :meth:`RunDir.write_metrics`): the same keys plus the
  ``curves`` block of the evaluation engine (:func:`hashlib_vit.retrieval.evaluate` with ``curves=True``):
  ``{"pr_hamming": {"radius", "precision", "recall"}, "pr_rank": {"rank", "precision", "recall"},
  "empty_radius": "exclude"|"zero"}`` — the precision-recall curve over Hamming radius 0..K and the
  precision/recall at evenly spaced ranks N (precision@N).

Every reader of metrics.json goes through :func:`read_metrics`, which validates either schema.
"""
from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..utils import atomic_write_bytes, atomic_write_json

SCHEMA_VERSION = 2
REQUIRED_METRICS = ("method", "backbone", "protocol", "bits", "topk", "map", "epochs", "seed", "pretrained")
_NUMBER = (int, float)
# key -> (accepted types, what the message says was expected); bool is refused where a number is meant
_TYPES = {"method": (str, "a string"), "backbone": (str, "a string"), "protocol": (str, "a string"),
          "bits": (int, "an integer"), "topk": ((int, str), "an integer or 'all'"),
          "map": (_NUMBER, "a number"), "epochs": (int, "an integer"), "seed": (int, "an integer"),
          "pretrained": ((bool, str), "true/false or the weights' tag")}
_CURVES = {"pr_hamming": ("radius", "precision", "recall"), "pr_rank": ("rank", "precision", "recall")}


def _check_type(where: str, key: str, value, types, expected: str, error=DataError):
    numeric = types in (int, _NUMBER) or (isinstance(types, tuple) and int in types and bool not in types)
    if not isinstance(value, types) or (numeric and isinstance(value, bool)):
        raise error(f"{where}: key {key!r} is {value!r} ({type(value).__name__}); expected {expected}")


def check_curves(curves, where: str, error=DataError) -> dict:
    """Validate a ``curves`` block (see the module docstring); returns it. Raises ``error`` naming
    ``where`` and the key when a curve is missing, not a dict, or its lists differ in length."""
    if not isinstance(curves, dict):
        raise error(f"{where}: key 'curves' is {type(curves).__name__}; expected a dict with "
                    f"{', '.join(_CURVES)} (hashlib_vit.retrieval.evaluate(..., curves=True))")
    for name, cols in _CURVES.items():
        c = curves.get(name)
        if not isinstance(c, dict):
            raise error(f"{where}: key 'curves.{name}' is missing or not a dict; expected keys {list(cols)}")
        lengths = set()
        for col in cols:
            v = c.get(col)
            if not isinstance(v, list):
                raise error(f"{where}: key 'curves.{name}.{col}' is {type(v).__name__}; expected a list")
            for x in v:
                if x is not None and (isinstance(x, bool) or not isinstance(x, _NUMBER)):
                    raise error(f"{where}: key 'curves.{name}.{col}' holds {x!r}; expected numbers (or null)")
            lengths.add(len(v))
        if len(lengths) > 1:
            raise error(f"{where}: the lists of 'curves.{name}' ({', '.join(cols)}) differ in length")
    return curves


def validate_metrics(m, where: str, *, error=DataError) -> int:
    """Check a metrics dict against its schema; returns the schema version (1 or 2).

    Raises ``error`` (DataError for files read back, ConfigError for what a caller is about to write)
    naming ``where``, the key, the value found and what was expected."""
    if not isinstance(m, dict):
        raise error(f"{where}: holds {type(m).__name__}; expected a JSON object of metrics")
    version = m.get("schema_version", 1)
    if version not in (1, 2) or isinstance(version, bool):
        raise error(f"{where}: key 'schema_version' is {version!r}; expected 2 (or no key: schema 1)")
    missing = [k for k in REQUIRED_METRICS if k not in m]
    if missing:
        raise error(f"{where}: required key(s) {missing} missing (schema {version} needs {list(REQUIRED_METRICS)})")
    for key, (types, expected) in _TYPES.items():
        _check_type(where, key, m[key], types, expected, error)
    if version == 2 or "curves" in m:
        if version == 2 and "curves" not in m:
            raise error(f"{where}: required key 'curves' missing (schema 2 stores the evaluation engine's curves)")
        check_curves(m["curves"], where, error)
    return version


def read_metrics(path: str | os.PathLike) -> dict:
    """The validated contents of one ``metrics.json`` (schema 1 or 2, see the module docstring).

    Raises DataError naming the file when it is missing, not JSON, or a required key is missing or has
    the wrong type (e.g. ``bits`` a string, a ``curves`` list that is not a list)."""
    p = Path(path)
    try:
        m = json.loads(p.read_text())
    except FileNotFoundError:
        raise DataError(f"{p} does not exist (is {p.parent} a run directory?)") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{p} is not valid JSON: {e}") from None
    validate_metrics(m, str(p))
    return m


class RunDir:
    """One run directory (see the module docstring); writes are atomic (temp file, then rename)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def file(self, name: str) -> Path:
        """The path of ``name`` inside the run directory."""
        return self.path / name

    def prepare(self, *, overwrite: bool = True) -> "RunDir":
        """Create the folder; a previous run's metrics are removed so a crash can't look completed."""
        self.path.mkdir(parents=True, exist_ok=True)
        if overwrite:
            for name in ("metrics.json", "train_log.csv", "evals.json", "codes.npz"):
                try:
                    (self.path / name).unlink()
                except FileNotFoundError:
                    pass
        return self

    def write_json(self, name: str, obj) -> Path:
        """Write ``obj`` as JSON to ``name`` atomically (temp file, then rename); returns the path."""
        return atomic_write_json(self.file(name), obj)

    def write_metrics(self, metrics: dict) -> Path:
        """Write ``metrics.json`` with ``"schema_version": 2``; ``metrics`` is stamped in place too, so that
        the caller's dict (e.g. ``RunResult.metrics``) equals the file.

        Raises ConfigError (before anything is written or stamped) when a required key is missing or has
        the wrong type, or when the ``curves`` block of the evaluation engine is absent: tables and figures
        read curves only from here and never recompute them."""
        from ..errors import ConfigError

        m = {**metrics, "schema_version": SCHEMA_VERSION}
        validate_metrics(m, f"metrics for {self.file('metrics.json')}", error=ConfigError)
        path = self.write_json("metrics.json", m)
        metrics["schema_version"] = SCHEMA_VERSION
        return path

    def write_codes(self, **arrays: np.ndarray) -> Path:
        """``codes.npz`` (compressed, atomic): ``query_codes``/``db_codes`` (n, b) int8 ±1 and
        ``query_labels``/``db_labels`` (class indices or multi-hot)."""
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        return atomic_write_bytes(self.file("codes.npz"), buf.getvalue())

    @property
    def completed(self) -> bool:
        """True when metrics.json exists (it is written last)."""
        return self.file("metrics.json").is_file()

    def read_json(self, name: str) -> dict:
        """A JSON file of the run directory; DataError naming the file when it is missing or not JSON."""
        p = self.file(name)
        try:
            return json.loads(p.read_text())
        except FileNotFoundError:
            raise DataError(f"{p} does not exist (is {self.path} a run directory?)") from None
        except json.JSONDecodeError as e:
            raise DataError(f"{p} is not valid JSON: {e}") from None

    def metrics(self) -> dict:
        """metrics.json, validated by :func:`read_metrics`."""
        return read_metrics(self.file("metrics.json"))

    def config(self) -> dict:
        """``config.json`` as flat ``{field: value}``: the full resolved parameters of the run (the sectioned
        file of this version and the flat files of older runs alike, :func:`hashlib_vit.config.flatten`)."""
        from ..config import flatten

        return flatten(self.read_json("config.json"))

    def env(self) -> dict:
        """env.json: versions, device, git commit, split checksums."""
        return self.read_json("env.json")


def find_runs(root: str | os.PathLike) -> list[RunDir]:
    """Every completed run directory (one holding metrics.json) below `root`, sorted by path."""
    root = Path(root)
    return [RunDir(p.parent) for p in sorted(root.rglob("metrics.json"))]


# ----------------------------------------------------------------------------- what every run records
def random_codes_map(data, bits: int, topk, seed: int = 0) -> float:
    """mAP of random ±1 codes on the same query/database (the chance level): ``bits``-bit codes drawn with
    ``seed`` for every query and database item of ``data`` (a ProtocolData), ranked with cut-off ``topk``
    (None: the whole database). Returns a float in [0, 1]."""
    from ..retrieval import map_at_k

    g = np.random.default_rng(seed)
    q = np.where(g.random((len(data.query), bits)) < 0.5, -1, 1).astype(np.int8)
    d = np.where(g.random((len(data.database), bits)) < 0.5, -1, 1).astype(np.int8)
    return map_at_k(q, d, data.query.labels.numpy(), data.database.labels.numpy(), topk=topk)


def run_metrics(cfg, model, data, topk, qc, dc, ql, dl, ev: dict,
                device) -> dict:
    """The ``metrics.json`` fields every run shares, learned or training-free: names, the evaluation
    ``ev`` (:func:`~hashlib_vit.retrieval.evaluate` of the final codes), the Hamming-radius and rank PR
    curves (computed here from the codes ``qc``/``dc`` and labels ``ql``/``dl``; precision over the
    queries that retrieve something at each radius, ``empty_radius="exclude"``: stored with the run so
    tables and figures need no codes.npz), the random-codes chance level, seeds, and the weights' record."""
    from ..retrieval import evaluate

    cv = evaluate(qc, dc, ql, dl, topk=topk, curves=True, tie_aware=False, empty_radius="exclude")
    return {
        "method": cfg.method_name(),
        "backbone": cfg.backbone,
        "head": cfg.head,
        "loss": cfg.loss,
        "protocol": cfg.protocol,
        "bits": cfg.bits,
        "topk": "all" if topk is None else int(topk),
        **{k: v for k, v in ev.items() if k != "topk"},
        "curves": {"pr_hamming": cv["pr_hamming"], "pr_rank": cv["pr_rank"], "empty_radius": "exclude"},
        "map_random": random_codes_map(data, cfg.bits, topk, seed=cfg.seed),
        "seed": cfg.seed,
        "split_seed": cfg.split_seed,
        "pretrained": model.backbone.pretrained,
        "weights": {k: model.backbone.weights_info.get(k) for k in ("source", "name", "sha256")},
        "device": str(device),
    }


__all__ = ["REQUIRED_METRICS", "SCHEMA_VERSION", "RunDir", "check_curves", "find_runs", "random_codes_map",
           "read_metrics", "run_metrics", "validate_metrics"]
