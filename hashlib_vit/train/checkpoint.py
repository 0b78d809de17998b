"""Checkpoints of the training loop: what is saved, how it is written, and when one is refused.

A checkpoint (``torch.save`` of plain tensors and values, loadable with ``weights_only=True``) holds
the model, the loss (its buffers: memory banks, step-driven schedules), the optimiser, the grad
scaler, every RNG state (:func:`rng_state`), the position (epoch, batch, global step), the elapsed
training time, the evaluations so far (JSON) and a fingerprint (JSON: split checksums and the
configuration fields of role ``result``). It is written atomically (:func:`save_checkpoint`), so a
kill at any moment leaves the previous checkpoint or the new one. :func:`check_checkpoint` refuses a
checkpoint whose fingerprint differs from the current run's, naming every difference.

:class:`Checkpointer` is the loop's view of one run's checkpoint file: it restores a run from it,
writes new ones (rank 0 only, then a barrier) and describes the last good one for error messages.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError, DataError
from ..utils import atomic_write
from . import distributed as D

CHECKPOINT_VERSION = 1


def rng_state() -> dict:
    """Every RNG a training step can touch (torch CPU, numpy, Python ``random``, and CUDA when it is
    initialised), as tensors and plain values (``weights_only`` loadable)."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"key": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": {"version": int(py_state[0]), "state": torch.tensor(py_state[1], dtype=torch.int64),
                   "gauss": py_state[2]},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore the RNG states of :func:`rng_state` (CUDA only when the device count is the same)."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["state"].tolist()), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)


def save_checkpoint(path: str | Path, state: dict) -> Path:
    """``torch.save`` through a temporary file in the same folder, fsync, then ``os.replace``:
    a kill at any moment leaves either the previous checkpoint or the new one, never half of one.

    A full disk raises :class:`~hashlib_vit.errors.DiskFullError` naming ``path``, the free bytes and the
    bytes written before the disk filled (not torch's chained ``unexpected pos`` error); the temporary
    file is removed and the previous checkpoint stays. A killed write's temporary file
    (``.<name>.<host>-<pid>-<random>.tmp``) is removed by the next write to the folder
    (:func:`~hashlib_vit.utils.clean_stale_temps`)."""
    return atomic_write(path, lambda f: torch.save(state, f))


def load_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint written by :func:`save_checkpoint` (``weights_only=True``: no pickled code).

    Raises DataError when the file is missing, cannot be read, or is not a hashlib_vit checkpoint
    of version ``CHECKPOINT_VERSION``."""
    path = Path(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise DataError(f"checkpoint {path} does not exist") from None
    except Exception as e:  # noqa: BLE001 - torch raises several kinds for a damaged file
        raise DataError(f"checkpoint {path} cannot be read ({type(e).__name__}: {e})") from None
    if not isinstance(ckpt, dict) or ckpt.get("version") != CHECKPOINT_VERSION:
        raise DataError(f"checkpoint {path} is not a hashlib_vit checkpoint of version {CHECKPOINT_VERSION}")
    return ckpt


def _flatten(d, prefix=""):
    out = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}."))
    else:
        out[prefix[:-1]] = d
    return out


def fingerprint_differences(saved: dict, current: dict) -> list[str]:
    """``key: checkpoint <saved> vs now <current>`` for every leaf (dotted key) that differs, both
    JSON-normalised; a key present on one side only shows ``'<absent>'`` on the other."""
    a = _flatten(json.loads(json.dumps(saved, default=str)))
    b = _flatten(json.loads(json.dumps(current, default=str)))
    return [f"{k}: checkpoint {a.get(k, '<absent>')!r} vs now {b.get(k, '<absent>')!r}"
            for k in sorted(set(a) | set(b)) if a.get(k, "<absent>") != b.get(k, "<absent>")]


def check_checkpoint(path: str | Path, fingerprint: dict, *, only_given: bool = False) -> dict:
    """Load `path` and refuse it (ConfigError naming every difference) unless it was written for the
    same split checksums and configuration as ``fingerprint`` (``only_given``: compare only the
    top-level keys present in ``fingerprint``). Returns the checkpoint dict."""
    ckpt = load_checkpoint(path)
    saved = _json_field(ckpt, "fingerprint", dict, path)
    if only_given:
        saved = {k: v for k, v in saved.items() if k in fingerprint}
    diffs = fingerprint_differences(saved, fingerprint)
    if diffs:
        raise ConfigError(f"checkpoint {path} was written for a different run and cannot be resumed; "
                          f"differences: {'; '.join(diffs)}. Use another run_dir, or resume=False to start over.")
    return ckpt


def _json_field(ckpt: dict, key: str, kind: type, path) -> object:
    """``ckpt[key]``, a JSON text of a ``kind`` value, parsed; DataError naming the file and the field."""
    text = ckpt.get(key)
    try:
        value = json.loads(text) if isinstance(text, str) else None
    except json.JSONDecodeError:
        value = None
    if not isinstance(value, kind):
        raise DataError(f"checkpoint {path}: field {key!r} is {'missing' if key not in ckpt else 'damaged'} "
                        f"(expected the JSON text of a {kind.__name__}); the file was not written by this version "
                        "or was damaged — resume=False starts over")
    return value


def check_fields(ckpt: dict, path, objects) -> None:
    """The fields :meth:`Checkpointer.restore` reads, checked before any is loaded: ``step``, ``epoch``,
    ``batch`` integers >= 0, ``elapsed_s`` a number >= 0, ``evals`` (JSON list), ``rng`` (torch, numpy and
    python states) and a state dict for each of ``objects``. DataError naming the file and the field."""
    def bad(field, expected):
        return DataError(f"checkpoint {path}: field {field!r} is {'missing' if field not in ckpt else 'damaged'} "
                         f"(expected {expected}, found {type(ckpt.get(field)).__name__}); resume=False starts over")

    for key in ("step", "epoch", "batch"):
        v = ckpt.get(key)
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise bad(key, "an integer >= 0")
    if isinstance(ckpt.get("elapsed_s"), bool) or not isinstance(ckpt.get("elapsed_s"), (int, float)):
        raise bad("elapsed_s", "a number of seconds")
    _json_field(ckpt, "evals", list, path)
    rng = ckpt.get("rng")
    if not isinstance(rng, dict) or not {"torch", "numpy", "python"} <= set(rng):
        raise bad("rng", "the torch, numpy and python random states")
    for key in objects:
        if not isinstance(ckpt.get(key), dict):
            raise bad(key, f"the state dict of the {key}")


class Checkpointer:
    """One run's checkpoint file, seen from the training loop.

    ``objects``: the stateful pieces saved under their keys (``model`` — the unwrapped model, not
    DDP's wrapper —, ``loss``, ``optimizer``, ``scaler``; a disabled grad scaler is saved as ``{}``).
    ``path`` None: nothing is ever written. Only ``writer`` (rank 0) writes; every rank waits at a
    barrier after a write, so no rank runs ahead of a checkpoint.
    """

    def __init__(self, path: str | Path | None, fingerprint: dict, objects: dict[str, object], *,
                 writer: bool = True, info: D.DistInfo = D.SINGLE):
        self.path = Path(path) if path is not None else None
        self.fingerprint, self.objects = fingerprint, objects
        self.writer, self.info = writer, info
        self.last_step: int | None = None  # the step of the last checkpoint written or resumed from

    def exists(self) -> bool:
        """Whether there is a checkpoint to resume from (rank 0 decides; every rank gets its answer)."""
        return bool(D.broadcast_object(self.path is not None and self.path.exists(), self.info))

    def restore(self) -> dict:
        """Load the checkpoint into the objects (refused unless its fingerprint matches, see
        :func:`check_checkpoint`), restore the RNG states, and return the position:
        ``{"step", "epoch", "batch", "elapsed_s", "evals"}`` (``evals``: the list of evaluations)."""
        ckpt = check_checkpoint(self.path, self.fingerprint)
        check_fields(ckpt, self.path, self.objects)
        for key, obj in self.objects.items():
            if key != "scaler" or ckpt.get(key):
                obj.load_state_dict(ckpt[key])
        set_rng_state(ckpt["rng"])
        self.last_step = int(ckpt["step"])
        return {"step": int(ckpt["step"]), "epoch": int(ckpt["epoch"]), "batch": int(ckpt["batch"]),
                "elapsed_s": float(ckpt["elapsed_s"]), "evals": json.loads(ckpt["evals"])}

    def save(self, *, step: int, epoch: int, batch: int, elapsed_s: float, evals: list) -> None:
        """Write the checkpoint of the position *before* (epoch, batch), after global step `step`."""
        if self.writer and self.path is not None:
            state = {key: self._state(obj) for key, obj in self.objects.items()}
            save_checkpoint(self.path, {
                "version": CHECKPOINT_VERSION, "step": step, "epoch": epoch, "batch": batch,
                "elapsed_s": elapsed_s, **state, "rng": rng_state(), "evals": json.dumps(evals),
                "fingerprint": json.dumps(self.fingerprint, default=str)})
        self.last_step = step
        D.barrier(self.info)

    @staticmethod
    def _state(obj) -> dict:
        if isinstance(obj, torch.amp.GradScaler) and not obj.is_enabled():
            return {}
        return obj.state_dict()

    def describe_last(self) -> str:
        """A sentence naming the last good checkpoint (for error messages)."""
        if self.last_step is None:
            return "no checkpoint has been written (set checkpoint_every_steps to keep one)"
        return f"the last good checkpoint is {self.path} (step {self.last_step}; resume=True continues from it)"


__all__ = ["CHECKPOINT_VERSION", "rng_state", "set_rng_state", "save_checkpoint", "load_checkpoint",
           "fingerprint_differences", "check_checkpoint", "check_fields", "Checkpointer"]
