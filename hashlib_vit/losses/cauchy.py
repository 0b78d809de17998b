"""The Cauchy (Bayesian) pairwise hashing loss: DCH (Cao et al., CVPR 2018) and TransHash (Chen et al.,
ICMR 2022). METHODS.md §2.3 (TransHash), §2.4 (ablations), §5.4 (DCH = §2.3 with one head).

For one head with continuous codes ``H`` (n, k):

* cosine Hamming surrogate ``D_S(h_i, h_j) = k/2 (1 - cos(h_i, h_j))`` in ``[0, k]`` (equals the Hamming
  distance for ±1 vectors), with ``cos <= 1 - 1e-2`` and ``||h|| >= 1e-4`` so that ``D_S > 0`` [C/I];
* Cauchy probability ``P(s_ij = 1) = gamma / (gamma + D_S)``; the pair loss is the weighted negative
  log-likelihood of the Bernoulli on ``s_ij``:
  ``w_ij [ s_ij log(D_S/gamma) + log(1 + gamma/D_S) ]`` with ``w`` = :func:`balanced_pair_weights`
  (``|S|/|S1|`` for similar, ``|S|/|S0|`` for dissimilar pairs, rebuilt from every mini-batch's labels,
  ordered pairs i != j), averaged over the ``n(n-1)`` ordered pairs [I: mean reduction];
* Cauchy quantization prior ``q_i = log(1 + D_S(|h_i|, 1)/gamma)``, averaged over the batch (the same
  clamped ``D_S``, as in the common DCH implementation);
* ``w/o C`` ablation (``likelihood="sigmoid"``, DHN-style): ``w_ij [softplus(alpha h_i.h_j) - alpha s_ij h_i.h_j]``,
  ``alpha = 0.5`` [I]; the quantization prior is unchanged.

TransHash applies this to the global head and to every local head (pairs compare the same group index)
and sums: ``L = l(h_g) + sum_g l(h_l^g) + lambda (q(h_g) + sum_g q(h_l^g))``. ``w/o Q`` is ``lambda_q=0``.

``gamma_scale`` [I] (TransHash's short local heads): ``"fixed"`` uses one ``gamma`` for every head (the paper
states none); ``"bits"`` gives each head ``gamma * k_head / K`` (``K`` = the whole code), so ``gamma / k`` —
where the Cauchy probability of a pair sits on the head's own distance range ``[0, k]`` — is the same for
the b/2-bit global head and every b/(2G)-bit local head. With one head both are the same.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from .base import HashLoss, LossResult, balanced_pair_weights, off_diagonal_mask, pair_similarity

COS_MAX = 1.0 - 1e-2  # the reference DCH implementation clamps the cosine at 0.99
NORM_MIN = 1e-4
LIKELIHOODS = ("cauchy", "sigmoid")
GAMMA_SCALES = ("fixed", "bits")


def cosine_hamming(a: torch.Tensor, b: torch.Tensor | None = None, *, cos_max: float = COS_MAX,
                   norm_min: float = NORM_MIN) -> torch.Tensor:
    """``D_S = k/2 (1 - cos)`` between the rows of ``a`` (n, k) and ``b`` (m, k) -> (n, m).

    ``k`` is the bit length of the compared vectors (METHODS §2.3 reading of Eq. 7). The norms are
    clamped at ``norm_min`` and the cosine to ``[-1, cos_max]``, so ``D_S >= k/2 (1 - cos_max) > 0``.
    """
    b = a if b is None else b
    k = a.shape[1]
    an = a / a.norm(dim=1, keepdim=True).clamp_min(norm_min)
    bn = b / b.norm(dim=1, keepdim=True).clamp_min(norm_min)
    cos = (an @ bn.T).clamp(-1.0, cos_max)
    return 0.5 * k * (1.0 - cos)


def cauchy_pair_nll(d: torch.Tensor, s: torch.Tensor, gamma: float) -> torch.Tensor:
    """Element-wise ``-log Bernoulli(s; gamma/(gamma+d)) = s log(d/gamma) + log(1 + gamma/d)`` (unweighted)."""
    return s * torch.log(d / gamma) + torch.log1p(gamma / d)


def sigmoid_pair_nll(a: torch.Tensor, s: torch.Tensor, alpha: float) -> torch.Tensor:
    """``w/o C``: ``softplus(alpha h_i.h_j) - alpha s_ij h_i.h_j`` (-log of a sigmoid Bernoulli), (n, n)."""
    theta = alpha * (a @ a.T)
    return F.softplus(theta) - s * theta


def cauchy_quantization(h: torch.Tensor, gamma: float, **clamps) -> torch.Tensor:
    """Per-sample Cauchy prior ``q_i = log(1 + D_S(|h_i|, 1)/gamma)`` -> (n,)."""
    ones = torch.ones(1, h.shape[1], dtype=h.dtype, device=h.device)
    d = cosine_hamming(h.abs(), ones, **clamps)[:, 0]
    return torch.log1p(d / gamma)


def pair_weights(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Similarity ``s`` (n, n), balanced weights ``w`` (zero on the diagonal) and the off-diagonal mask."""
    n = labels.shape[0]
    s = pair_similarity(labels)
    mask = off_diagonal_mask(n, labels.device)
    return s, balanced_pair_weights(s, mask), mask


def head_pair_loss(h: torch.Tensor, s: torch.Tensor, w: torch.Tensor, mask: torch.Tensor, *,
                   likelihood: str = "cauchy", gamma: float = 20.0, alpha: float = 0.5) -> torch.Tensor:
    """Weighted pair NLL of one head, mean over the ordered off-diagonal pairs."""
    if likelihood == "cauchy":
        nll = cauchy_pair_nll(cosine_hamming(h), s, gamma)
    elif likelihood == "sigmoid":
        nll = sigmoid_pair_nll(h, s, alpha)
    else:
        raise ConfigError(f"likelihood={likelihood!r} is not a known value; allowed: {', '.join(LIKELIHOODS)}")
    return (w * nll)[mask].mean()


class _CauchyBase(HashLoss):
    defaults = {"gamma": 20.0, "lambda_q": 0.1, "likelihood": "cauchy", "alpha": 0.5, "gamma_scale": "fixed"}

    def __init__(self, bits, num_classes, multi_label=False, **hp):
        super().__init__(bits, num_classes, multi_label, **hp)
        hpv = self.hparams
        if hpv["likelihood"] not in LIKELIHOODS:
            raise ConfigError(f"loss_params likelihood={hpv['likelihood']!r} is not a known value; "
                              f"allowed: {', '.join(LIKELIHOODS)}")
        if not float(hpv["gamma"]) > 0:
            raise ConfigError(f"loss_params gamma={hpv['gamma']!r} must be > 0 (Cauchy scale)")
        if hpv["gamma_scale"] not in GAMMA_SCALES:
            raise ConfigError(f"loss_params gamma_scale={hpv['gamma_scale']!r} is not a known value; "
                              f"allowed: {', '.join(GAMMA_SCALES)}")
        if float(hpv["lambda_q"]) < 0:
            raise ConfigError(f"loss_params lambda_q={hpv['lambda_q']!r} must be >= 0")

    def heads_of(self, out) -> tuple[torch.Tensor, ...]:
        raise NotImplementedError

    def head_gammas(self, heads) -> list[float]:
        """The Cauchy scale of each head: ``gamma``, or ``gamma * k_head / K`` with ``gamma_scale="bits"``."""
        gamma = float(self.hparams["gamma"])
        if self.hparams["gamma_scale"] == "fixed":
            return [gamma] * len(heads)
        total = sum(h.shape[1] for h in heads)
        return [gamma * h.shape[1] / total for h in heads]

    def forward(self, out, labels, index=None):
        hp = self.hparams
        heads = [h.to(torch.promote_types(h.dtype, torch.float32)) for h in self.heads_of(out)]
        s, w, mask = pair_weights(labels)
        gammas = self.head_gammas(heads)
        pairs = [head_pair_loss(h, s, w, mask, likelihood=hp["likelihood"], gamma=g, alpha=float(hp["alpha"]))
                 for h, g in zip(heads, gammas)]
        quant = sum(cauchy_quantization(h, g).mean() for h, g in zip(heads, gammas))
        pair_global = pairs[0]
        pair_local = sum(pairs[1:]) if len(pairs) > 1 else torch.zeros((), device=pair_global.device)
        total = pair_global + pair_local + float(hp["lambda_q"]) * quant
        parts = {"pair": pair_global.detach(), "quant": quant.detach()}
        if len(pairs) > 1:
            parts = {"pair_global": pair_global.detach(), "pair_local": pair_local.detach(), "quant": quant.detach()}
        return LossResult(total, parts)


class DCHLoss(_CauchyBase):
    """DCH (METHODS §5.4): the Cauchy loss on the whole code ``u`` as one head. Defaults gamma=20, lambda_q=0.1."""

    name = "dch"

    def heads_of(self, out):
        return (out.u,)


class TransHashLoss(_CauchyBase):
    """TransHash (METHODS §2.3): the Cauchy loss on the global head and on each local head of ``out.heads``.
    Defaults gamma=2 (chosen on validation; DCH keeps its 20), lambda_q=0.1, gamma_scale="fixed".

    With an ordinary one-head model it reduces to DCH. Ablations: ``lambda_q=0`` (w/o Q),
    ``likelihood="sigmoid"`` with ``alpha`` (w/o C); w/o P is the model option ``local_stream=False``.
    """

    name = "transhash"
    # [I] the paper states neither: gamma 2 (with one gamma for every head) chosen on the validation split over
    # the DCH default 20 (docs/defaults.md; configs/studies/transhash_*_digits.yaml); lambda_q 0.1 kept
    defaults = {**_CauchyBase.defaults, "gamma": 2.0}

    def heads_of(self, out):
        return tuple(out.heads) if out.heads else (out.u,)


__all__ = ["cosine_hamming", "cauchy_pair_nll", "sigmoid_pair_nll", "cauchy_quantization", "pair_weights",
           "head_pair_loss", "DCHLoss", "TransHashLoss", "COS_MAX", "NORM_MIN", "LIKELIHOODS"]
