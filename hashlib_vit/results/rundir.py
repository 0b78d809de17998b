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
import os
import zipfile
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..errors import DataError
from ..utils import atomic_write_bytes, atomic_write_json, make_dirs

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


def _check_range(where: str, m: dict, error=DataError) -> None:
    """The values' ranges: mAP a finite number in [0, 1], bits >= 1, epochs >= 0, topk >= 1 or 'all'."""
    mp = m["map"]
    if not np.isfinite(mp) or not 0 <= mp <= 1:
        raise error(f"{where}: key 'map' is {mp!r}; expected a number in [0, 1]")
    if m["bits"] < 1:
        raise error(f"{where}: key 'bits' is {m['bits']!r}; expected an integer >= 1")
    if m["epochs"] < 0:
        raise error(f"{where}: key 'epochs' is {m['epochs']!r}; expected an integer >= 0")
    topk = m["topk"]
    if (isinstance(topk, str) and topk != "all") or (isinstance(topk, int) and topk < 1):
        raise error(f"{where}: key 'topk' is {topk!r}; expected an integer >= 1 or 'all'")


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
    _check_range(where, m, error)
    if version == 2 or "curves" in m:
        if version == 2 and "curves" not in m:
            raise error(f"{where}: required key 'curves' missing (schema 2 stores the evaluation engine's curves)")
        check_curves(m["curves"], where, error)
    return version


def read_metrics(path: str | os.PathLike) -> dict:
    """The validated contents of one ``metrics.json`` (schema 1 or 2, see the module docstring).

    Raises DataError naming the file (and the key) when it is missing, not JSON (with the line and column),
    not a JSON object, or a required key is missing or has the wrong type or range (e.g. ``bits`` a string,
    ``map`` ``"high"`` or 1.5, a ``curves`` list that is not a list): :func:`validate_metrics`."""
    from ..utils import read_json

    p = Path(path)
    if not p.is_file() and not p.parent.is_dir():
        raise DataError(f"metrics.json of a run {p} does not exist (is {p.parent} a run directory?)")
    m = read_json(p, "metrics.json of a run", expect=None)
    validate_metrics(m, str(p))
    return m


_CODE_KEYS = ("query_codes", "db_codes", "query_labels", "db_labels")


def read_codes(path: str | os.PathLike) -> "RunCodes":
    """A run's ``codes.npz`` (:meth:`RunDir.write_codes`), checked; returns :class:`RunCodes`.

    Raises DataError naming the file and the key when it is missing or not an npz (truncated, corrupt), a key
    of ``query_codes``/``db_codes``/``query_labels``/``db_labels`` is missing, codes are not 2-D int8 ±1,
    the two code lengths differ, or labels and codes disagree in rows."""
    p = Path(path)
    try:
        with np.load(p, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise DataError(f"{p} does not exist (the run was made with save_codes=False, or is not complete)") from None
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise DataError(f"{p} is not a readable .npz file ({type(e).__name__}: {e}); truncated or corrupt") from None
    missing = [k for k in _CODE_KEYS if k not in arrays]
    if missing:
        raise DataError(f"{p}: key(s) {missing} missing; found {sorted(arrays)}, expected {list(_CODE_KEYS)}")
    for k in ("query_codes", "db_codes"):
        a = arrays[k]
        if a.ndim != 2 or a.dtype != np.int8:
            raise DataError(f"{p}: {k!r} is {a.dtype} with shape {a.shape}; expected a 2-D int8 array (n, bits)")
        bad = a[(a != 1) & (a != -1)]
        if bad.size:
            raise DataError(f"{p}: {k!r} holds {int(bad[0])}; expected only -1 and +1")
    q, d = arrays["query_codes"], arrays["db_codes"]
    if q.shape[1] != d.shape[1]:
        raise DataError(f"{p}: 'query_codes' have {q.shape[1]} bits but 'db_codes' {d.shape[1]}; expected equal")
    for codes_key, labels_key in (("query_codes", "query_labels"), ("db_codes", "db_labels")):
        if len(arrays[labels_key]) != len(arrays[codes_key]):
            raise DataError(f"{p}: {labels_key!r} has {len(arrays[labels_key])} rows but {codes_key!r} has "
                            f"{len(arrays[codes_key])}; expected one label row per code")
    return RunCodes(**{k: arrays[k] for k in _CODE_KEYS})


class RunCodes(NamedTuple):
    """The codes of a run (:meth:`RunDir.codes`): int8 ±1 codes (n, b) and their labels."""

    query_codes: np.ndarray
    db_codes: np.ndarray
    query_labels: np.ndarray
    db_labels: np.ndarray


class RunDir:
    """One run directory (see the module docstring); writes are atomic (temp file, then rename)."""

    def __init__(self, path: "str | os.PathLike | RunDir"):
        self.path = Path(path.path if isinstance(path, RunDir) else path)

    def file(self, name: str) -> Path:
        """The path of ``name`` inside the run directory."""
        return self.path / name

    def prepare(self, *, overwrite: bool = True) -> "RunDir":
        """Create the folder; a previous run's metrics are removed so a crash can't look completed."""
        make_dirs(self.path, "run directory")
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

    def read_json(self, name: str, expect: type | None = None):
        """A JSON file of the run directory (:func:`hashlib_vit.utils.read_json`); DataError naming the file
        when it is missing (is the folder a run directory?), not JSON (line and column) or its top level is
        not ``expect`` (``dict``, ``list``; None: any)."""
        from ..utils import read_json

        p = self.file(name)
        if not p.exists():
            raise DataError(f"{p} does not exist (is {self.path} a run directory?)")
        return read_json(p, f"{name} of a run", expect=expect)

    def metrics(self) -> dict:
        """metrics.json, validated by :func:`read_metrics`."""
        return read_metrics(self.file("metrics.json"))

    def config(self) -> dict:
        """``config.json`` as flat ``{field: value}``: the full resolved parameters of the run (the sectioned
        file of this version and the flat files of older runs alike, :func:`hashlib_vit.config.flatten`)."""
        from ..config import flatten

        return flatten(self.read_json("config.json", dict))

    def env(self) -> dict:
        """env.json: versions, device, git commit, split checksums."""
        return self.read_json("env.json", dict)

    # ------------------------------------------------------------------------- readers for notebooks
    def codes(self) -> RunCodes:
        """The run's final codes and labels from ``codes.npz``, checked.

        Returns :class:`RunCodes`: ``query_codes`` (n_q, b) and ``db_codes`` (n_db, b) int8 in {-1, +1},
        ``query_labels``/``db_labels`` (n, C) multi-hot or (n,) class indices, as the run wrote them
        (:meth:`write_codes`). Raises DataError naming codes.npz and the field when the file is missing or
        not an npz, a key is missing, codes are not 2-D int8 ±1, the two code lengths differ, labels and
        codes disagree in rows, or the code length / numbers of items disagree with metrics.json."""
        p = self.file("codes.npz")
        codes = read_codes(p)  # names a missing file the same way
        q, d = codes.query_codes, codes.db_codes
        if self.completed:
            m = self.metrics()
            for what, found, key in (("bits", q.shape[1], "bits"), ("query items", len(q), "n_query"),
                                     ("database items", len(d), "n_database")):
                if key in m and m[key] != found:
                    raise DataError(f"{p}: {found} {what}, but metrics.json says {key}={m[key]}; the files are "
                                    f"from different runs")
        return codes

    def data(self, data_root: str | os.PathLike | None = None, **data_options):
        """The run's protocol splits rebuilt from config.json (protocol, data_root, split_seed, data_options),
        checked against the split checksums that env.json recorded.

        ``data_root`` / ``data_options``: where the data lies on this machine, when it moved (the options
        are merged over the recorded ones). Returns a :class:`~hashlib_vit.data.ProtocolData`. Raises
        DataError naming env.json and the split when a rebuilt split's sha256 differs from the recorded one
        (another data set, seed or list file), or when env.json records no checksums."""
        from ..data import get_protocol

        cfg = self.config()
        recorded = self.env().get("split_checksums")
        if not isinstance(recorded, dict) or not recorded:
            raise DataError(f"{self.file('env.json')}: key 'split_checksums' is {recorded!r}; expected the sha256 of "
                            "every split (written by run_experiment)")
        root = cfg.get("data_root") if data_root is None else data_root
        options = {**(cfg.get("data_options") or {}), **data_options}
        data = get_protocol(cfg["protocol"]).load(root, seed=cfg.get("split_seed", 0), **options)
        for split, want in recorded.items():
            got = data.checksums.get(split)
            if got != want:
                raise DataError(f"{self.file('env.json')}: split {split!r} of protocol {cfg['protocol']!r} "
                                f"(data_root={root!r}, split_seed={cfg.get('split_seed', 0)}) rebuilds with sha256 "
                                f"{got}; the run recorded {want}: this is not the data the run used")
        return data

    def evals(self) -> list[dict]:
        """evals.json: the periodic evaluations, a list of ``{"epoch", "step", "map"}`` (an empty list when
        the run evaluated only at the end). Raises DataError naming the file and the entry when one lacks a
        key or holds a non-number."""
        if not self.file("evals.json").is_file():
            return []
        evals = self.read_json("evals.json", list)
        where = self.file("evals.json")
        for i, e in enumerate(evals):
            for key, types in (("epoch", int), ("step", int), ("map", _NUMBER)):
                v = e.get(key) if isinstance(e, dict) else None
                if not isinstance(v, types) or isinstance(v, bool):
                    raise DataError(f"{where}: entry {i} key {key!r} is {v!r}; expected a number")
        return evals

    def curves(self) -> "pd.DataFrame":  # noqa: F821
        """The evaluations per epoch as a DataFrame with columns ``epoch`` (int), ``step`` (int), ``map``
        (float) and ``source`` (``evals.json`` for periodic evaluations, ``metrics.json`` for the final one
        when it is not already there); sorted by epoch. mAP@K with the run's K (metrics ``topk``)."""
        import pandas as pd

        rows = [{**e, "source": "evals.json"} for e in self.evals()]
        if self.completed:
            m = self.metrics()
            if not any(r["epoch"] == m["epochs"] for r in rows):
                log = self.train_log() if self.log_path() else None
                step = int(log["step"].iloc[-1]) if log is not None and len(log) else 0
                rows.append({"epoch": m["epochs"], "step": step, "map": float(m["map"]), "source": "metrics.json"})
        df = pd.DataFrame(rows, columns=["epoch", "step", "map", "source"])
        return df.astype({"epoch": "int64", "step": "int64", "map": "float64"}).sort_values("epoch").reset_index(drop=True)

    def log_path(self) -> Path | None:
        """The run's non-empty training log: train_log.csv, or train_log.csv.gz (archived runs keep a
        compressed copy); None when there is neither (a training-free run, or one that never stepped)."""
        for name in ("train_log.csv", "train_log.csv.gz"):  # archived runs keep a compressed copy
            if self.file(name).is_file() and self.file(name).stat().st_size > 0:
                return self.file(name)
        return None

    def train_log(self) -> "pd.DataFrame":  # noqa: F821
        """train_log.csv (or train_log.csv.gz) as a DataFrame, one row per training step: ``step`` and
        ``epoch`` int64, every other column (``loss``, ``loss_<part>``, ``lr``, ``grad_norm``, ``time_s``,
        ``images_per_s``) float64 (empty cells: NaN). Raises DataError naming the file and the column when
        the file is missing, lacks ``step``/``epoch``/``loss``, or holds a non-number."""
        p = self.log_path()
        if p is None:
            raise DataError(f"{self.file('train_log.csv')} does not exist or is empty (a training-free run "
                            "has no training log)")
        from ..utils import read_csv

        log = read_csv(p, "training log", required=("step", "epoch", "loss"), integer=("step", "epoch"), numeric="*")
        for col in ("step", "epoch"):
            if log[col].isna().any():
                i = int(np.flatnonzero(log[col].isna().to_numpy())[0])
                raise DataError(f"training log {p}, data row {i + 1}, column {col!r}: empty; expected a whole number")
        return log.astype({c: "int64" if c in ("step", "epoch") else "float64" for c in log.columns})

    def diagnostics(self) -> dict:
        """diagnostics.json (runs made with ``code_stats=True``): :func:`~.analysis.code_diagnostics` of the
        final model. Raises DataError naming the file and the key when one is missing or not a number."""
        d = self.read_json("diagnostics.json", dict)
        for key in ("mean_abs_u", "input_spread", "distinct_db_codes", "bit_balance"):
            v = d.get(key) if isinstance(d, dict) else None
            if not isinstance(v, _NUMBER) or isinstance(v, bool):
                raise DataError(f"{self.file('diagnostics.json')}: key {key!r} is {v!r}; expected a number")
        return d

    def files(self) -> "pd.DataFrame":  # noqa: F821
        """What the run directory holds: ``name`` and ``bytes`` of every file (folders end in ``/`` with
        bytes NaN), sorted by name."""
        import pandas as pd

        rows = [{"name": p.name + ("/" if p.is_dir() else ""), "bytes": p.stat().st_size if p.is_file() else None}
                for p in sorted(self.path.iterdir())]
        return pd.DataFrame(rows, columns=["name", "bytes"]).set_index("name")

    def summary(self) -> dict:
        """The facts :meth:`describe` prints, as a dict: method, backbone, weights (source and name),
        pretrained, bits, protocol, n_query, n_database, topk, epochs, steps, train_time_s, device, map,
        map_random (the random-codes level), map_ratio. Reads metrics.json (validated), env.json and the
        training log when present; DataError when the run is not complete."""
        m = self.metrics()
        env = self.env() if self.file("env.json").is_file() else {}
        log = self.train_log() if self.log_path() else None
        w = m.get("weights") or {}
        rnd = m.get("map_random")
        return {"method": m["method"], "backbone": m["backbone"],
                "weights": f"{w.get('source', 'none')}" + (f" ({w['name']})" if w.get("name") else ""),
                "pretrained": m["pretrained"], "bits": m["bits"], "protocol": m["protocol"],
                "n_query": m.get("n_query"), "n_database": m.get("n_database"), "topk": m["topk"],
                "epochs": m["epochs"], "steps": int(log["step"].iloc[-1]) if log is not None and len(log) else 0,
                "train_time_s": m.get("train_time_s"), "device": m.get("device") or env.get("device"),
                "map": m["map"], "map_random": rnd,
                "map_ratio": m["map"] / rnd if isinstance(rnd, _NUMBER) and rnd > 0 else None}

    def describe(self) -> str:
        """A short human summary of a completed run (see :meth:`summary`), e.g.::

            csq: vit32_test (weights: none (vit32_test), from scratch), 8 bits, protocol digits
            100 queries, 1,697 database items; 2 epochs, 32 steps in 6.9 s on cpu
            mAP@all 0.103 (random codes 0.103, 1.0x)
        """
        s = self.summary()
        t = "?" if s["train_time_s"] is None else f"{s['train_time_s']:.1f} s"
        n = lambda v: "?" if v is None else f"{v:,}"  # noqa: E731
        ratio = "" if s["map_ratio"] is None else f", {s['map_ratio']:.1f}x"
        rnd = "?" if s["map_random"] is None else f"{s['map_random']:.3f}"
        return (f"{s['method']}: {s['backbone']} (weights: {s['weights']}, "
                f"{'pretrained' if s['pretrained'] else 'from scratch'}), {s['bits']} bits, protocol {s['protocol']}\n"
                f"{n(s['n_query'])} queries, {n(s['n_database'])} database items; {s['epochs']} epochs, "
                f"{s['steps']:,} steps in {t} on {s['device']}\n"
                f"mAP@{s['topk']} {s['map']:.3f} (random codes {rnd}{ratio})")

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"


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
    tables and figures need no codes.npz), the random-codes chance level, seeds, the images skipped at load
    (``skipped_images``), and the weights' record."""
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
        # listed images left out with data_options missing="skip": {split: count} ({} when none was skipped)
        "skipped_images": {n: v["count"] for n, v in data.skipped().items()} if hasattr(data, "skipped") else {},
        "pretrained": model.backbone.pretrained,
        "weights": {k: model.backbone.weights_info.get(k) for k in ("source", "name", "sha256")},
        "device": str(device),
    }


__all__ = ["REQUIRED_METRICS", "SCHEMA_VERSION", "RunCodes", "RunDir", "check_curves", "find_runs", "random_codes_map",
           "read_codes", "read_metrics", "run_metrics", "validate_metrics"]
