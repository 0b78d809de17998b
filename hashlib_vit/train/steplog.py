"""The per-step record of training: the CSV log and the buffer that brings step values to the host.

* :class:`StepLog`: one CSV row per global step, each written line flushed to disk, so a killed run
  keeps every row written before the kill; :meth:`StepLog.rows_until` trims it on resume.
* :class:`StepBuffer`: the loop appends each step's values as they are — the loss and its parts and
  the grad norm stay *device* tensors, the lr and the time are host values — and the buffer brings
  them to the host in one go at :meth:`StepBuffer.flush`: one ``torch.stack(...).tolist()`` (and,
  under torchrun, one ``all_reduce``) per flush instead of a device synchronisation per value per
  step. The loop flushes every ``log_every_steps`` steps, before every checkpoint, at ``max_steps``
  and at the end of each epoch. A flush writes one CSV row per buffered step, appends the rows to
  the history, moves the progress bar, and checks each step with a :class:`~.divergence.DivergenceGuard`:
  the first non-finite loss or grad norm, or loss far above its early value, stops training
  (:class:`~hashlib_vit.errors.DivergenceError`, a FloatingPointError, naming its step, epoch and batch
  and the last good checkpoint). Since a flush precedes every checkpoint, no checkpoint is ever
  written after a diverged step.
  Steps still in the buffer when a run dies (an exception, a kill) have no row; a resume replays
  them from the last checkpoint, which always has all its rows.
"""
from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Callable

import torch

from ..errors import DataError
from ..utils import atomic_write_text, make_dirs, raise_write_error
from . import distributed as D
from .divergence import DivergenceGuard


def _parse_cell(key: str, text: str):
    if text == "":
        return None
    if key in ("step", "epoch"):
        return int(text)
    try:
        return float(text)
    except ValueError:
        return text


def _is_int(text: str) -> bool:
    try:
        int(text or 0)
        return True
    except ValueError:
        return False


class StepLog:
    """Per-step CSV log (``path`` None: write nothing). The header is the first row's keys (or the
    existing file's header when appending after a resume); each row is flushed to disk at once."""

    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path else None
        self._file = None
        self._writer = None
        self._fields: list[str] | None = None

    def write(self, row: dict) -> None:
        """Append one row (keys missing from the header are ignored; missing keys are empty).

        Raises :class:`~hashlib_vit.errors.DiskFullError` / :class:`~hashlib_vit.errors.WriteError`
        naming the log when the disk is full or the folder is not writable (the rows already written
        stay; a resume cuts the log back to its checkpoint's step)."""
        if self.path is None:
            return
        try:
            if self._writer is None:
                make_dirs(self.path.parent)
                new = not self.path.exists() or self.path.stat().st_size == 0
                self._file = open(self.path, "a", newline="")
                self._fields = self._existing_header() if not new else list(row)
                self._writer = csv.DictWriter(self._file, fieldnames=self._fields, extrasaction="ignore")
                if new:
                    self._writer.writeheader()
            self._writer.writerow(row)
            self._file.flush()
        except OSError as e:
            raise_write_error(e, self.path, what="step log")

    def _existing_header(self) -> list[str]:
        with open(self.path, newline="") as f:
            return next(csv.reader(f))

    def rows_until(self, step: int, *, rewrite: bool = True) -> list[dict]:
        """Rewrite the log (atomically) to hold exactly the complete rows with ``step <= step`` and
        return them (parsed: ``step``/``epoch`` int, numbers float, empty cells None). Used on resume:
        rows written after the checkpoint are dropped and the replayed steps write them again, so the
        log has every step exactly once. ``rewrite=False``: only read and check (before a resume
        touches the run directory). Raises DataError when the log does not hold steps ``1..step``
        (missing, damaged, or belonging to another run)."""
        if self.path is None:
            return []
        if not self.path.exists():
            if step > 0:
                raise DataError(f"{self.path} is missing but the checkpoint is at step {step}: cannot resume the log")
            return []
        try:
            lines = self.path.read_bytes().decode("utf-8").splitlines(keepends=True)
        except (OSError, UnicodeDecodeError) as e:
            raise DataError(f"training log {self.path} cannot be read as UTF-8 text ({e}); it is damaged") from None
        if not lines:
            return []
        try:
            header = next(csv.reader([lines[0]]))
        except csv.Error as e:
            raise DataError(f"training log {self.path}, line 1: not a CSV header ({e})") from None
        if "step" not in header:
            raise DataError(f"training log {self.path}, line 1: column 'step' missing; found {header}")
        kept, rows = [lines[0]], []
        for n, line in enumerate(lines[1:], start=2):
            if not line.endswith("\n"):
                break  # a line cut by the kill
            try:
                cells = next(csv.reader([line]), [])
            except csv.Error:
                break  # a line garbled by the kill
            if len(cells) != len(header):
                break
            try:
                row = {k: _parse_cell(k, v) for k, v in zip(header, cells)}
            except ValueError:
                bad = next(k for k, v in zip(header, cells) if k in ("step", "epoch") and not _is_int(v))
                raise DataError(f"training log {self.path}, line {n}, column {bad!r}: "
                                f"{cells[header.index(bad)]!r}; expected a whole number") from None
            if row["step"] is None:
                raise DataError(f"training log {self.path}, line {n}, column 'step': empty; expected a whole number")
            if row["step"] > step:
                break
            kept.append(line)
            rows.append(row)
        if (rows[-1]["step"] if rows else 0) != step or [r["step"] for r in rows] != list(range(1, step + 1)):
            raise DataError(f"{self.path} holds steps {rows[0]['step'] if rows else None}..{rows[-1]['step'] if rows else None}"
                            f" but the checkpoint is at step {step}: the log does not belong to this checkpoint")
        if rewrite:
            atomic_write_text(self.path, "".join(kept))
        return rows

    def close(self) -> None:
        if self._file:
            self._file.close()
            self._file = None
            self._writer = None


class StepBuffer:
    """The steps since the last flush, with their device values (see the module docstring).

    ``every``: the regular flush interval in steps (``log_every_steps``). ``log``: where the rows go (rank 0's :class:`StepLog`; other ranks pass one with no path).
    ``history``: the list the rows are appended to (the loop's ``history["steps"]``). ``bar``: a tqdm
    bar (or anything with ``update(n)`` and ``set_postfix``). ``info``: this process under torchrun.
    ``batch_size``: global images per step (for ``images_per_s``). ``start_step`` / ``elapsed0``: the
    step and training seconds the run (re)starts from; ``time_s`` of a row is ``elapsed0`` plus the
    host seconds since the buffer was made (on CUDA the host runs ahead of the device; the last row
    of every flush is stamped after the flush's synchronisation, so it is exact). ``guard``: the
    divergence check (default: non-finite values only, see :mod:`.divergence`).
    """

    def __init__(self, log: StepLog, history: list, bar, info: D.DistInfo, *, every: int, batch_size: int,
                 start_step: int = 0, elapsed0: float = 0.0, guard: DivergenceGuard | None = None):
        self.log, self.history, self.bar, self.info, self.every = log, history, bar, info, every
        self.batch_size, self.start_step, self.elapsed0 = batch_size, start_step, elapsed0
        self.guard = guard if guard is not None else DivergenceGuard(None, history, info)
        self.t0 = time.perf_counter()
        self._rows: list[dict] = []  # host values + "_values": the step's device tensors

    def __len__(self) -> int:
        return len(self._rows)

    def elapsed(self) -> float:
        """Training seconds so far (``elapsed0`` + host seconds since the start)."""
        return self.elapsed0 + time.perf_counter() - self.t0

    def append(self, *, step: int, epoch: int, batch: int, total: torch.Tensor, parts: dict[str, torch.Tensor],
               grad_norm: torch.Tensor | None, lr: float, weight: float = 1.0) -> None:
        """Record global step `step` (1-based) without synchronising: ``total`` and ``parts`` (0-d
        tensors, the loss's), ``grad_norm`` (0-d tensor or None), ``lr`` (float). Under torchrun the
        logged loss is the sum over processes of ``value * weight`` (``weight``: 1/world_size for a
        loss every process computes on the global batch, the shard's share of the global batch for
        a per-shard loss); the grad norm is rank 0's (all ranks hold the same gradients)."""
        values = [total, *parts.values()] + ([] if grad_norm is None else [grad_norm])
        self._rows.append({"step": step, "epoch": epoch, "batch": batch, "parts": list(parts), "lr": lr,
                           "clipped": grad_norm is not None, "t": time.perf_counter(), "weight": weight,
                           "_values": values})

    def due(self, step: int) -> bool:
        """Whether global step `step` is a regular flush point (every ``every`` steps)."""
        return step % self.every == 0

    def _host_values(self) -> list[float]:
        """ONE device-to-host transfer of every buffered value (float64), all-reduced under torchrun."""
        flat = [v for r in self._rows for v in r["_values"]]
        dev = flat[0].device
        stacked = torch.stack([v.detach().to(device=dev, dtype=torch.float64).reshape(()) for v in flat])
        if self.info.enabled:
            weights = []
            for r in self._rows:  # the loss values weighted; the grad norm counted once (rank 0's)
                n_loss = 1 + len(r["parts"])
                weights += [r["weight"]] * n_loss + ([float(self.info.is_main)] if r["clipped"] else [])
            stacked = stacked * torch.tensor(weights, dtype=torch.float64, device=dev)
            torch.distributed.all_reduce(stacked)
        return stacked.tolist()

    def flush(self, describe_last_checkpoint: Callable[[], str]) -> None:
        """Bring the buffered steps to the host, write their rows and empty the buffer.

        Raises DivergenceError (a FloatingPointError) at the first step the guard refuses — a
        non-finite loss or grad norm, a loss far above its early value — (rows before it are
        written), naming the step, epoch, batch and ``describe_last_checkpoint()``."""
        if not self._rows:
            return
        values = self._host_values()
        self._rows[-1]["t"] = time.perf_counter()  # after the synchronisation: exact
        rows, pos = self._rows, 0
        self._rows = []
        for r in rows:
            n = 1 + len(r["parts"]) + int(r["clipped"])
            vals, pos = values[pos:pos + n], pos + n
            grad_norm = vals[-1] if r["clipped"] else None
            self.guard.check({**r, "loss": vals[0]}, grad_norm, describe_last_checkpoint)
            row = self._row(r, vals, grad_norm)
            self.history.append(row)
            self.log.write(row)
        self.bar.update(len(rows))
        self.bar.set_postfix(loss=f"{self.history[-1]['loss']:.4f}", img_s=f"{self.history[-1]['images_per_s']:.0f}",
                             epoch=self.history[-1]["epoch"], refresh=False)

    def _row(self, r: dict, vals: list[float], grad_norm: float | None) -> dict:
        """The log row of buffered step ``r`` with its host values ``vals`` (loss, parts, grad norm)."""
        elapsed = r["t"] - self.t0
        return {"step": r["step"], "epoch": r["epoch"], "loss": vals[0],
                **{f"loss_{k}": v for k, v in zip(r["parts"], vals[1:])},
                "lr": r["lr"], "grad_norm": grad_norm, "time_s": round(self.elapsed0 + elapsed, 4),
                "images_per_s": round((r["step"] - self.start_step) * self.batch_size / max(elapsed, 1e-9), 2)}


__all__ = ["StepLog", "StepBuffer"]
