"""Run directories: the contract between a run and everything that reads results.

Every run writes, atomically::

    run_dir/config.json    the full resolved parameters (written first)
    run_dir/env.json       versions, device, git commit, split checksums
    run_dir/train_log.csv  one line per training step (flushed as it goes)
    run_dir/evals.json     periodic evaluations (epoch, mAP)
    run_dir/metrics.json   the final metrics (written last: its presence marks a completed run)
    run_dir/codes.npz      optional: query/database codes and labels

``metrics.json`` holds at least: method, backbone, protocol, bits, topk, map, epochs, seed, pretrained.
Tables are built only from these files (:func:`collect_runs`).
"""
from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np

from .errors import DataError
from .utils import atomic_write_bytes, atomic_write_json

REQUIRED_METRICS = ("method", "backbone", "protocol", "bits", "topk", "map", "epochs", "seed", "pretrained")


class RunDir:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def file(self, name: str) -> Path:
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
        return atomic_write_json(self.file(name), obj)

    def write_metrics(self, metrics: dict) -> Path:
        missing = [k for k in REQUIRED_METRICS if k not in metrics]
        if missing:
            raise ValueError(f"metrics.json is missing required field(s) {missing}")
        return self.write_json("metrics.json", metrics)

    def write_codes(self, **arrays: np.ndarray) -> Path:
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        return atomic_write_bytes(self.file("codes.npz"), buf.getvalue())

    @property
    def completed(self) -> bool:
        return self.file("metrics.json").is_file()

    def read_json(self, name: str) -> dict:
        p = self.file(name)
        try:
            return json.loads(p.read_text())
        except FileNotFoundError:
            raise DataError(f"{p} does not exist (is {self.path} a run directory?)") from None
        except json.JSONDecodeError as e:
            raise DataError(f"{p} is not valid JSON: {e}") from None

    def metrics(self) -> dict:
        return self.read_json("metrics.json")

    def config(self) -> dict:
        """``config.json`` as flat ``{field: value}`` (sectioned files and the flat ones of older runs alike)."""
        from .config import flatten

        return flatten(self.read_json("config.json"))

    def env(self) -> dict:
        return self.read_json("env.json")


def find_runs(root: str | os.PathLike) -> list[RunDir]:
    """Every completed run directory (one holding metrics.json) below `root`, sorted by path."""
    root = Path(root)
    return [RunDir(p.parent) for p in sorted(root.rglob("metrics.json"))]


def collect_runs(root: str | os.PathLike):
    """A pandas DataFrame with one row per completed run below `root` (metrics + run_dir)."""
    import pandas as pd

    rows = []
    for rd in find_runs(root):
        m = rd.metrics()
        m["run_dir"] = str(rd.path)
        rows.append(m)
    return pd.DataFrame(rows)
