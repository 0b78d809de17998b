"""HSC-Loss of AE-ViT (METHODS.md §4.4; the form is inferred [I], only "contrastive + classification" is known).

With ``h = tanh(u)`` (the code is ``sign(u) = sign(h)``) and a linear classifier ``o = W h + c`` owned
by the loss::

    L_HSC = L_SC + alpha * L_cls + beta * L_q

* ``L_SC`` — supervised contrastive (SupCon) term on the L2-normalised codes, in-batch:
  ``-1/|I'| sum_{i in I'} sum_{p in P(i)} w_ip log( exp(h~_i.h~_p / tau) / sum_{a != i} exp(h~_i.h~_a / tau) )``
  with ``P(i) = {j != i : y_i.y_j > 0}`` (or the same image, for two views), anchors ``I'`` = those with
  a positive, ``w_ip = 1/|P(i)|`` or, with ``pos_weight="jaccard"``, the Jaccard overlap of the label
  sets normalised over ``P(i)``. ``contrastive="dsh"`` replaces it by the DSH margin term (§5.1) on ``h``.
* ``L_cls`` — cross-entropy (single-label) or BCE-with-logits averaged over classes (multi-label).
* ``L_q`` — the quantization term, ``quant="l2"``: ``mean((|h| - 1)^2)``; ``"l1"``: ``mean(||h| - 1|)`` (DSH's
  regulariser, §5.1); ``"log_cosh"``: ``mean(log cosh(|h| - 1))`` (quadratic near the vertices, linear far).
* ``beta_warmup``: ``beta`` rises linearly from 0 to its value over the first ``beta_warmup`` training
  steps (``beta * min(1, step / beta_warmup)``; 0 = from the first step).

``n_views=2`` is standard two-view SupCon: every image appears twice in the batch (two augmentations)
with the same index; :class:`hashlib_vit.data.views.MultiViewBatches` builds such batches and
``run_experiment`` uses it automatically when the loss asks for it (``loss.n_views``).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import ConfigError
from .base import HashLoss, LossResult, off_diagonal_mask, pair_similarity

CONTRASTIVE = ("supcon", "dsh")
QUANT_FORMS = ("l2", "l1", "log_cosh")
POS_WEIGHTS = ("uniform", "jaccard")


def positive_weights(labels: torch.Tensor, index: torch.Tensor | None = None, pos_weight: str = "uniform"
                     ) -> torch.Tensor:
    """``(n, n)`` weights of the positives of every anchor (row), each non-empty row summing to 1.

    Positives: ``j != i`` sharing a label with ``i`` or, when ``index`` is given, being another view of
    the same image. ``pos_weight="jaccard"`` weights a positive by ``|y_i AND y_j| / |y_i OR y_j|`` (two
    views of one image weigh 1). Rows without positives are all zero (the anchor is skipped).
    """
    if pos_weight not in POS_WEIGHTS:
        raise ConfigError(f"pos_weight={pos_weight!r}; expected one of {POS_WEIGHTS}")
    n = labels.shape[0]
    y = labels.float()
    off = off_diagonal_mask(n, labels.device)
    same = torch.zeros(n, n, dtype=torch.bool, device=labels.device)
    if index is not None:
        index = index.to(labels.device)
        same = index[:, None] == index[None, :]
    pos = ((pair_similarity(y) > 0) | same) & off
    if pos_weight == "jaccard":
        inter = y @ y.T
        union = y.sum(1, keepdim=True) + y.sum(1)[None, :] - inter
        w = torch.where(union > 0, inter / union.clamp_min(1e-12), torch.zeros_like(inter))
        w = torch.where(same, torch.ones_like(w), w)
    else:
        w = torch.ones(n, n, device=labels.device)
    w = w * pos
    total = w.sum(1, keepdim=True)
    return torch.where(total > 0, w / total.clamp_min(1e-12), torch.zeros_like(w))


def supcon_loss(h: torch.Tensor, labels: torch.Tensor, tau: float = 0.2, index: torch.Tensor | None = None,
                pos_weight: str = "uniform") -> torch.Tensor:
    """The SupCon term ``L_SC`` on codes ``h`` ``(n, b)`` (any real values; they are L2-normalised).

    Invariant to a positive rescaling of ``h``; anchors without a positive are skipped; 0 (with a
    gradient path) when no anchor has a positive. With identical codes and labels it equals ``log(n-1)``.
    """
    if tau <= 0:
        raise ConfigError(f"tau={tau!r} must be > 0")
    n = h.shape[0]
    z = F.normalize(h.float(), dim=1)
    logits = z @ z.T / tau
    off = off_diagonal_mask(n, h.device)
    logits = logits.masked_fill(~off, float("-inf"))
    w = positive_weights(labels, index, pos_weight)
    anchors = w.sum(1) > 0
    if not bool(anchors.any()):
        return z.sum() * 0.0
    log_prob = (logits - torch.logsumexp(logits, dim=1, keepdim=True)).masked_fill(~off, 0.0)  # diagonal unused
    per_anchor = -(w * log_prob).sum(1)
    return per_anchor[anchors].mean()


def quantization_term(h: torch.Tensor, form: str = "l2") -> torch.Tensor:
    """``L_q`` of codes ``h`` ``(n, b)`` in ``(-1, 1)``: the mean over all entries of ``(|h| - 1)^2`` (``"l2"``),
    ``||h| - 1|`` (``"l1"``) or ``log cosh(|h| - 1)`` (``"log_cosh"``); 0 exactly at the hypercube vertices.
    Raises ConfigError for another ``form``."""
    e = h.float().abs() - 1
    if form == "l2":
        return e.pow(2).mean()
    if form == "l1":
        return e.abs().mean()
    if form == "log_cosh":  # log cosh x = |x| + softplus(-2|x|) - log 2, stable for any x
        a = e.abs()
        return (a + F.softplus(-2 * a) - math.log(2.0)).mean()
    raise ConfigError(f"quant={form!r}; expected one of {QUANT_FORMS}")


def dsh_contrastive(h: torch.Tensor, labels: torch.Tensor, margin: float | None = None,
                    index: torch.Tensor | None = None) -> torch.Tensor:
    """DSH's pair term (§5.1) on ``h``: mean over ordered pairs ``i != j`` of
    ``1/2 s ||h_i - h_j||^2 + 1/2 (1 - s) max(m - ||h_i - h_j||^2, 0)``, ``m = 2K`` by default."""
    n, k = h.shape
    m = 2.0 * k if margin is None else float(margin)
    h = h.float()
    d2 = (h[:, None, :] - h[None, :, :]).pow(2).sum(-1)
    s = pair_similarity(labels)
    if index is not None:
        index = index.to(h.device)
        s = torch.maximum(s, (index[:, None] == index[None, :]).float())
    pair = 0.5 * s * d2 + 0.5 * (1 - s) * F.relu(m - d2)
    return pair[off_diagonal_mask(n, h.device)].mean()


class HSCLoss(HashLoss):
    """HSC-Loss = contrastive (SupCon on tanh codes, or DSH) + alpha * classification + beta * quantization."""

    name = "hsc"
    # [I] every value; tau, alpha, beta, quant and beta_warmup chosen on the validation split by the studies of
    # docs/defaults.md (configs/studies/hsc_*_digits.yaml); one view for compute parity with the other losses
    defaults = {"tau": 1.0, "alpha": 3.0, "beta": 0.3, "contrastive": "supcon", "pos_weight": "uniform",
                "n_views": 1, "margin": None, "quant": "log_cosh", "beta_warmup": 240}

    # the heads HSC is known to fail with, and why (docs/defaults.md, "The defect")
    unsuited_heads = {"cls_linear": "the affine head lets the tanh codes saturate towards one vertex from scratch "
                                    "(measured: SupCon alone at exactly the random-codes mAP); use the BN hash layer, "
                                    "--head cls_bn or --preset aevit_hsc (docs/defaults.md)"}

    def __init__(self, bits, num_classes, multi_label=False, **hp):
        super().__init__(bits, num_classes, multi_label, **hp)
        hpv = self.hparams
        if hpv["contrastive"] not in CONTRASTIVE:
            raise ConfigError(f"loss_params contrastive={hpv['contrastive']!r}; expected one of {CONTRASTIVE}")
        if hpv["pos_weight"] not in POS_WEIGHTS:
            raise ConfigError(f"loss_params pos_weight={hpv['pos_weight']!r}; expected one of {POS_WEIGHTS}")
        if hpv["quant"] not in QUANT_FORMS:
            raise ConfigError(f"loss_params quant={hpv['quant']!r}; expected one of {QUANT_FORMS}")
        for key, least, meaning in (("n_views", 1, "(1 or 2)"), ("beta_warmup", 0, "(training steps)")):
            v = hpv[key]
            if not isinstance(v, int) or isinstance(v, bool) or v < least:
                raise ConfigError(f"loss_params {key}={v!r} must be an integer >= {least} {meaning}")
        for key in ("tau", "alpha", "beta"):
            v = hpv[key]
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v < 0 or \
                    (key == "tau" and v == 0):
                raise ConfigError(f"loss_params {key}={v!r} must be a {'positive' if key == 'tau' else 'non-negative'} "
                                  "number")
        self.classifier = nn.Linear(self.bits, self.num_classes)

    @property
    def n_views(self) -> int:
        """How many augmented views of each image a training batch must hold (read by run_experiment)."""
        return int(self.hparams["n_views"])

    def codes(self, out) -> torch.Tensor:
        return torch.tanh(out.u.float())

    def beta_now(self) -> float:
        """``beta`` at the current training step (``self.step``, set by the loop): the linear warm-up."""
        beta, warm = float(self.hparams["beta"]), self.hparams["beta_warmup"]
        return beta if warm == 0 else beta * min(1.0, self.step / warm)

    def _check_views(self, index: torch.Tensor | None, n: int) -> None:
        v = self.n_views
        if v == 1:
            return
        if index is None:
            raise ConfigError(f"loss hsc with n_views={v} needs the batch indices (each image {v} times)")
        _, counts = torch.unique(index, return_counts=True)
        if not bool((counts == v).all()):
            raise ConfigError(f"loss hsc with n_views={v}: every image must appear {v} times in the batch (same "
                              f"index); got counts {sorted(set(counts.tolist()))}. Feed the batches through "
                              "hashlib_vit.data.views.MultiViewBatches (run_experiment does this automatically).")

    def forward(self, out, labels, index=None):
        h = self.codes(out)
        self._check_views(index, h.shape[0])
        hp = self.hparams
        same_image = index if self.n_views > 1 else None
        if hp["contrastive"] == "supcon":
            con = supcon_loss(h, labels, hp["tau"], same_image, hp["pos_weight"])
        else:
            con = dsh_contrastive(h, labels, hp["margin"], same_image)
        logits = self.classifier(h)
        if self.multi_label:
            cls = F.binary_cross_entropy_with_logits(logits, labels.float())
        else:
            cls = F.cross_entropy(logits, labels.argmax(1))
        quant = quantization_term(h, hp["quant"])
        total = con + hp["alpha"] * cls + self.beta_now() * quant
        return LossResult(total, {"contrastive": con.detach(), "cls": cls.detach(), "quant": quant.detach()})


__all__ = ["HSCLoss", "supcon_loss", "dsh_contrastive", "positive_weights", "quantization_term"]
