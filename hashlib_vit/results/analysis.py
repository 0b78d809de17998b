"""What trained codes look like: code statistics and the collapse profile of the losses.

* :func:`query_outputs` — a trained model's continuous outputs ``u`` on the query split (eval mode);
* :func:`code_diagnostics` — the statistics a collapse shows first (outputs near 0, independent of the
  input, few distinct codes, constant bits); written to ``diagnostics.json`` by the loss-zoo runner;
* :func:`collapsed_loss_profile` — each loss on an input-independent model (why pairwise losses can stall);
* :func:`collapse_note` / :data:`COLLAPSE_FACTOR` — a run that does not clearly beat random codes.
"""
from __future__ import annotations

import math

import numpy as np

COLLAPSE_FACTOR = 1.5  # mAP below 1.5 x the random-code mAP counts as "at chance"


def collapse_note(map_value, map_random, factor: float = COLLAPSE_FACTOR) -> str:
    """'' for a run that clearly beats random codes (mAP >= ``factor`` x the random-code mAP of the same
    queries and database), else a short note saying it is at chance; ``not evaluated`` when either is
    missing or NaN."""
    def missing(v):
        return v is None or (isinstance(v, float) and math.isnan(v))

    if missing(map_value) or missing(map_random):
        return "not evaluated"
    if map_value < factor * map_random:
        return f"at chance level (mAP < {factor:g} x random codes)"
    return ""


def query_outputs(result, max_items: int | None = None):
    """The continuous hash outputs ``u`` (float32 CPU tensor, (n, b)) of ``result.model`` on the query
    split of ``result.data``, eval mode, with the run's evaluation transform; at most ``max_items`` items
    (whole batches of 256, so up to 255 more). ``result``: a :class:`~hashlib_vit.experiment.RunResult`."""
    import torch

    from ..data import make_batches, protocol_transforms

    model = result.model.eval()
    device = next(model.parameters()).device
    _, ev_tf = protocol_transforms(result.data.protocol, model.img_size)  # the run's evaluation transform
    us, seen = [], 0
    with torch.no_grad():
        for x, _, _ in make_batches(result.data.query, 256, ev_tf, train=False, device=device).epoch(0):
            us.append(model(x).u.float().cpu())
            seen += len(x)
            if max_items is not None and seen >= max_items:
                break
    return torch.cat(us)


def code_diagnostics(result, max_items: int = 2000) -> dict:
    """How the trained model's outputs look on the query split (collapse shows here first).

    * ``mean_abs_u``: mean |u| (a pairwise loss stuck at the saddle u = 0 gives values near 0);
    * ``input_spread``: mean over bits of the std of u across inputs, divided by the mean |u|
      (near 0: the output hardly depends on the input);
    * ``distinct_db_codes``: number of different binary codes in the database;
    * ``bit_balance``: mean over bits of |mean of the bit| in the database (0: balanced, 1: constant).
    """
    u = query_outputs(result, max_items)
    mean_abs = float(u.abs().mean())
    spread = float(u.std(0).mean()) / max(mean_abs, 1e-12)
    db = np.asarray(result.db_codes)
    return {"mean_abs_u": round(mean_abs, 6), "input_spread": round(spread, 4),
            "distinct_db_codes": int(len(np.unique(db, axis=0))),
            "bit_balance": round(float(np.abs(db.astype(np.float64).mean(0)).mean()), 4)}


def collapsed_loss_profile(losses: list[str], bits: int, labels, scales=None, seed: int = 0,
                           multi_label: bool = False):
    """Each loss on an *input-independent* model: every item gets the same output ``u = c v``.

    ``v`` is a fixed random ±1 direction, ``c`` runs over ``scales``; ``labels`` is a real batch's
    label matrix. For a pairwise likelihood (DPSH, HashNet) the value is smallest at ``c = 0`` when
    the batch has few similar pairs: that is the saddle a from-scratch ViT (whose CLS output hardly
    depends on the input at initialisation) can fall into. Also returned: the norm of the gradient
    with respect to ``u`` (times n, i.e. per item) and ``item_grad_across``, the norm of its
    item-specific part (gradient minus its batch mean) orthogonal to ``v``: the only part that can
    give different items different codes. For every pairwise loss it is exactly 0 at any ``c`` (the
    gradient of item i is a multiple of the common output: pairs of identical outputs carry no
    direction); for the center, target and classifier losses it is of order one. Returns a DataFrame
    (loss, scale, value, grad_norm, item_grad_across).
    """
    import pandas as pd
    import torch

    from ..losses import build_loss
    from ..models import HashOutput

    scales = np.linspace(0.0, 2.0, 21) if scales is None else scales
    g = torch.Generator().manual_seed(seed)
    v = torch.where(torch.rand(bits, generator=g) < 0.5, -1.0, 1.0)
    n, c = labels.shape
    rows = []
    for name in losses:
        torch.manual_seed(seed)
        loss = build_loss(name, bits, c, multi_label)
        for sc in scales:
            u = (float(sc) * v).expand(n, bits).clone().requires_grad_(True)
            res = loss(HashOutput(u=u), labels, torch.arange(n))
            (grad,) = torch.autograd.grad(res.total, u)
            item = grad - grad.mean(0, keepdim=True)
            vhat = v / v.norm()
            across = item - (item @ vhat)[:, None] * vhat[None, :]
            rows.append({"loss": name, "scale": float(sc), "value": res.total.item(),
                         "grad_norm": float(grad.norm()) * n, "item_grad_across": float(across.norm()) * n})
    return pd.DataFrame(rows)


__all__ = ["COLLAPSE_FACTOR", "code_diagnostics", "collapse_note", "collapsed_loss_profile", "query_outputs"]
