"""The divergence check of the training loop: a run whose loss explodes stops, naming the step.

With a learning rate far too high most hashing losses never reach NaN: the loss climbs to 1e6-1e12
and the run would "complete" at chance-level mAP. :class:`DivergenceGuard` sees every step's host
values when :class:`~.steplog.StepBuffer` flushes (no extra device synchronisation) and raises
:class:`~hashlib_vit.errors.DivergenceError` (a ``FloatingPointError``) at the first step where

* the loss is not finite (NaN / inf; always checked);
* the grad norm (logged when ``grad_clip`` is set) is not finite (always checked, except under fp16
  loss scaling, where an overflowing step is skipped by the grad scaler by design);
* the loss is far above its early value (``divergence_factor`` not None):
  ``loss > reference + divergence_factor * max(|reference|, 1)``, where ``reference`` is the lowest
  loss of the first :data:`WINDOW` steps of the run (while the run is inside that window: of the
  steps before this one). The lowest early loss is never inflated by an early blow-up (the first
  step's loss is computed before any update); the scale ``max(|reference|, 1)`` makes the rule hold
  for losses of any sign and for losses near zero, where a relative rise means nothing.

On resume the early window is rebuilt from the step log's rows (``history``), so the rule is the same
as in a run that was never interrupted; under torchrun rank 0's window is broadcast once at the start.
"""
from __future__ import annotations

import math
from typing import Callable

from ..errors import DivergenceError
from . import distributed as D

WINDOW = 10  # steps of the run whose lowest loss is the reference
SCALE_FLOOR = 1.0  # the rise allowed is measured in max(|reference|, SCALE_FLOOR)
CAUSE = ("the likely cause is a learning rate too high (lower lr or backbone_lr, set grad_clip, or use a longer "
         "warm-up: warmup_steps)")


class DivergenceGuard:
    """Checks each logged step (``check``) against the early window of the run.

    ``factor``: ``divergence_factor`` (None: only non-finite values are checked). ``history``: the
    rows already logged (a resumed run's, else empty), whose first :data:`WINDOW` losses seed the
    window. ``overflow_ok``: fp16 loss scaling is on (a non-finite grad norm is then a skipped step).
    """

    def __init__(self, factor: float | None, history: list[dict], info: D.DistInfo = D.SINGLE, *,
                 overflow_ok: bool = False):
        self.factor, self.overflow_ok = factor, overflow_ok
        window = [(r["step"], r["loss"]) for r in history[:WINDOW]]
        self.window: list[tuple[int, float]] = D.broadcast_object(window, info) if info.enabled else window

    @property
    def reference(self) -> float | None:
        """The lowest loss of the window so far (None before the first step)."""
        return min(v for _, v in self.window) if self.window else None

    def limit(self) -> float | None:
        """The highest loss allowed now: ``reference + factor * max(|reference|, 1)`` (None: no limit)."""
        ref = self.reference
        if self.factor is None or ref is None:
            return None
        return ref + self.factor * max(abs(ref), SCALE_FLOOR)

    def check(self, row: dict, grad_norm: float | None, describe_last_checkpoint: Callable[[], str]) -> None:
        """Raise DivergenceError when step ``row`` (``step``, ``epoch``, ``batch``, ``lr``, ``loss``:
        host values) diverges; otherwise add its loss to the window while the window is open."""
        where = f"at step {row['step']} (epoch {row['epoch']}, batch {row['batch']})"
        loss = row["loss"]
        if not math.isfinite(loss):
            raise DivergenceError(f"loss became {loss} {where}; {describe_last_checkpoint()}. "
                                  "Lower the learning rate, set grad_clip, or check the inputs.")
        if grad_norm is not None and not math.isfinite(grad_norm) and not self.overflow_ok:
            raise DivergenceError(f"the gradient norm became {grad_norm} {where} (loss {loss:.6g}); "
                                  f"{describe_last_checkpoint()}. Training is diverging; {CAUSE}.")
        limit = self.limit()
        if limit is not None and loss > limit:
            raise DivergenceError(f"loss {loss:.6g} {where} is far above its early value: {self._rule(limit)}; "
                                  f"lr was {row['lr']:.6g} at that step. Training is diverging; {CAUSE} "
                                  f"(divergence_factor=None turns this check off); {describe_last_checkpoint()}.")
        if len(self.window) < WINDOW:
            self.window.append((row["step"], loss))

    def _rule(self, limit: float) -> str:
        first, last = self.window[0][0], self.window[-1][0]
        steps = f"steps {first}-{last}" if last != first else f"step {first}"
        return (f"the reference is {self.reference:.6g} (the lowest loss of {steps}) and the limit {limit:.6g} = "
                f"reference + divergence_factor {self.factor:g} x max(|reference|, {SCALE_FLOOR:g})")


__all__ = ["DivergenceGuard", "WINDOW", "SCALE_FLOOR"]
