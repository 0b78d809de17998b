"""Training-free hashing baselines on frozen backbone features: LSH, PCA + sign, PCA + random rotation, ITQ.

Every learned method should be shown against the floor its own backbone gives for free. These methods
are *fitted* (in closed form or by a few cheap iterations) on the training split's backbone features and
never change the network:

=========  ===========================================================================================
``lsh``    signed random projections: ``sign(W^T (x - mu))``, ``W`` i.i.d. N(0, 1) (Charikar, STOC 2002,
           §3 "random hyperplane" hashing; Goemans & Williamson 1995). Any number of bits (K may exceed D).
``pca_sign`` the top-K principal directions of the centred training features, then sign (the "PCA-Direct"
           baseline of Gong & Lazebnik, ITQ, TPAMI 2013, §3 / Table 1).
``pca_rr`` PCA to K dims, then a seeded random orthogonal rotation, then sign ("PCA-RR", Gong & Lazebnik
           2013, §3.1: the random-rotation baseline that ITQ starts from and improves on).
``itq``    Iterative Quantization (Gong & Lazebnik, CVPR 2011; TPAMI 2013, §3.1): PCA to K dims, then
           alternate ``B = sign(VR)`` and the orthogonal Procrustes update of ``R`` (50 iterations).
=========  ===========================================================================================

Each is a class with ``fit(features (n, D) float) -> self`` and ``encode(features) -> int8 ±1 (n, b)``
(sign(0) = +1, as :func:`hashlib_vit.models.sign_codes`); arithmetic is float64 numpy; everything random
is drawn from ``numpy.random.default_rng(seed)``. They live in their own registry, :data:`TRAINING_FREE`,
beside :data:`hashlib_vit.losses.LOSSES`: ``RunConfig(loss="itq")`` runs one through
:func:`hashlib_vit.experiment.run_experiment` (via :func:`hashlib_vit.baselines.run_training_free`, which
skips training), and :func:`hashlib_vit.baselines.baseline_table` fits every method x bits on features
extracted once (for notebooks). This module is the methods alone (numpy); the run-level code that
extracts features and writes run directories is :mod:`hashlib_vit.baselines`.
"""
from __future__ import annotations

from typing import ClassVar

import numpy as np

from ..errors import ConfigError, DataError
from ..registry import Registry

__all__ = ["TRAINING_FREE", "TrainingFreeHash", "LSH", "PCASign", "PCARandomRotation", "ITQ",
           "build_training_free", "random_orthogonal", "pca_components", "check_training_free_config",
           "backbone_feature_dim"]


# ----------------------------------------------------------------------------- helpers
def _as_features(features, name: str = "features", dim: int | None = None) -> np.ndarray:
    """A validated float64 ``(n, D)`` copy of ``features`` (numpy array or torch tensor)."""
    try:
        import torch

        if isinstance(features, torch.Tensor):
            features = features.detach().cpu().float().numpy()
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    x = np.asarray(features)
    if x.dtype == object or not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise DataError(f"{name} must be a numeric (n, D) array, got dtype {x.dtype}")
    if x.ndim != 2:
        raise DataError(f"{name} must be a 2-D (n, D) array of feature vectors, got shape {x.shape}")
    if x.shape[0] == 0:
        raise DataError(f"{name} is empty (0 rows, shape {x.shape}); expected at least one feature vector")
    if x.shape[1] == 0:
        raise DataError(f"{name} has 0 feature dimensions (shape {x.shape}); expected D >= 1")
    x = x.astype(np.float64)
    bad = ~np.isfinite(x)
    if bad.any():
        rows = np.flatnonzero(bad.any(1))
        raise DataError(f"{name} contains {int(bad.sum())} NaN/inf value(s) in {len(rows)} row(s) (first: row "
                        f"{int(rows[0])}); expected finite features (a diverged or broken backbone?)")
    if dim is not None and x.shape[1] != dim:
        raise DataError(f"{name} has D={x.shape[1]} dimensions but the method was fitted on D={dim}")
    return x


def _sign(u: np.ndarray) -> np.ndarray:
    """int8 ±1 with sign(0) = +1 (the package's binarisation, :func:`hashlib_vit.models.sign_codes`)."""
    return np.where(u >= 0, 1, -1).astype(np.int8)


def random_orthogonal(k: int, rng: np.random.Generator) -> np.ndarray:
    """A Haar-distributed random orthogonal ``(k, k)`` float64 matrix: QR of a Gaussian matrix with the
    signs of ``diag(R)`` moved into ``Q`` (Mezzadri, "How to generate random matrices from the classical
    compact groups", Notices AMS 2007, §5), so ``Q Q^T = I`` to rounding (~1e-15)."""
    g = rng.standard_normal((int(k), int(k)))
    q, r = np.linalg.qr(g)
    d = np.sign(np.diag(r))
    d[d == 0] = 1.0
    return q * d  # scales column j by d_j


def pca_components(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(mean (D,), components (k, D), explained_variance (k,))`` of float64 features ``x`` (n, D).

    The components are the eigenvectors of the sample covariance ``Xc^T Xc / (n - 1)`` (``Xc`` = centred
    ``x``) with the ``k`` largest eigenvalues, in decreasing order: the rows of scikit-learn's
    ``PCA(k).components_`` up to the sign of each row. Sign convention (deterministic, independent of the
    LAPACK build): each component's entry of largest absolute value is positive (the first such entry on
    a tie). Needs ``k <= min(n, D)``; components beyond the rank of ``Xc`` (at most ``n - 1``) carry zero
    variance and are an arbitrary orthonormal completion.
    """
    n, d = x.shape
    mean = x.mean(0)
    xc = x - mean
    cov = xc.T @ xc / max(n - 1, 1)
    evals, evecs = np.linalg.eigh(cov)  # ascending
    order = np.argsort(-evals, kind="stable")[:k]
    comps = evecs[:, order].T.copy()
    lead = comps[np.arange(k), np.argmax(np.abs(comps), axis=1)]
    comps *= np.where(lead < 0, -1.0, 1.0)[:, None]
    return mean, comps, np.clip(evals[order], 0.0, None)


# ----------------------------------------------------------------------------- the methods
class TrainingFreeHash:
    """Base class: ``fit(features) -> self``, ``project(features) -> float64 (n, b)``, ``encode -> int8 ±1``.

    ``bits`` = K, ``seed`` seeds every random draw, ``params`` are checked against ``defaults`` (the same
    role as a loss's hyper-parameters: ``RunConfig.loss_params``). Subclasses implement ``_fit`` and
    ``_project``. Errors (:class:`~hashlib_vit.errors.DataError`): empty input, NaN/inf features, a
    feature dimension different from the one fitted; (:class:`~hashlib_vit.errors.ConfigError`): bits too
    large for the data (PCA-based methods need ``K <= min(n, D)``), encoding before fitting.
    """

    name: ClassVar[str] = ""
    defaults: ClassVar[dict] = {}
    source: ClassVar[str] = ""
    uses_pca: ClassVar[bool] = True

    def __init__(self, bits: int, *, seed: int = 0, **params):
        if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or bits < 1:
            raise ConfigError(f"bits={bits!r} must be an integer >= 1")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise ConfigError(f"seed={seed!r} must be an integer")
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            raise ConfigError(f"loss_params {unknown} are not parameters of training-free method {self.name!r}; "
                              f"allowed: {sorted(self.defaults) or 'none'}")
        self.bits = int(bits)
        self.seed = int(seed)
        self.params = {**self.defaults, **params}
        self.check_params(self.params)
        self.dim: int | None = None
        self.n_fit: int | None = None

    @classmethod
    def check_params(cls, params: dict) -> None:
        """Raise ConfigError for a bad parameter value (the names are checked by ``__init__``)."""

    def check_bits(self, n: int, d: int) -> None:
        if self.uses_pca and self.bits > min(n, d):
            raise ConfigError(f"bits={self.bits} is too many for {self.name!r}: a PCA-based method needs bits <= "
                              f"min(n, D) = min({n}, {d}) = {min(n, d)} (n training features of dimension D); "
                              "use fewer bits, more training items or a wider backbone (lsh allows any bits)")

    def fit(self, features) -> "TrainingFreeHash":
        """Fit on training features ``(n, D)`` (float; numpy or torch). Returns ``self``."""
        x = _as_features(features, "training features")
        self.check_bits(*x.shape)
        self.dim, self.n_fit = x.shape[1], x.shape[0]
        self._fit(x)
        return self

    def project(self, features) -> np.ndarray:
        """The continuous codes ``(n, b)`` float64 whose signs are the binary codes."""
        if self.dim is None:
            raise ConfigError(f"training-free method {self.name!r} must be fitted (fit(train_features)) before "
                              "encoding")
        return self._project(_as_features(features, "features", dim=self.dim))

    def encode(self, features) -> np.ndarray:
        """Binary codes int8 ±1 ``(n, b)`` (sign(0) = +1) of features ``(n, D)``."""
        return _sign(self.project(features))

    def fit_info(self) -> dict:
        """Small JSON-able facts about the fit (recorded in metrics.json under ``fit_info``)."""
        return {}

    def _fit(self, x: np.ndarray) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _project(self, x: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError


class LSH(TrainingFreeHash):
    """Signed random projections (SimHash): ``b = sign(W^T (x - mu))`` with ``W`` (D, K) i.i.d. N(0, 1).

    Charikar, "Similarity estimation techniques from rounding algorithms", STOC 2002, §3: for a random
    hyperplane, ``Pr[h(x) = h(y)] = 1 - theta(x, y) / pi``, so the fraction of equal bits estimates the
    angle. ``center=True`` (default) subtracts the training mean ``mu`` first (as the ITQ paper does for
    every method, §4; ViT CLS features share a large common component that would otherwise fix many bits);
    ``center=False`` is Charikar's plain form (angles about the origin). Any K is allowed (independent
    hyperplanes), also K > D.
    """

    name = "lsh"
    defaults = {"center": True}
    source = "Charikar, STOC 2002, §3 (random hyperplane / signed random projections)"
    uses_pca = False

    @classmethod
    def check_params(cls, params):
        if not isinstance(params["center"], bool):
            raise ConfigError(f"loss_params center={params['center']!r} must be true or false")

    def _fit(self, x):
        self.mean = x.mean(0) if self.params["center"] else np.zeros(x.shape[1])
        self.W = np.random.default_rng(self.seed).standard_normal((x.shape[1], self.bits))

    def _project(self, x):
        return (x - self.mean) @ self.W


class PCASign(TrainingFreeHash):
    """``b = sign(C (x - mu))``: the top-K principal components ``C`` (K, D) of the centred training
    features (see :func:`pca_components` for the order and sign convention). Deterministic (no seed).
    "PCA-Direct" in Gong & Lazebnik, TPAMI 2013, §3 and §4."""

    name = "pca_sign"
    source = "PCA-Direct baseline, Gong & Lazebnik, ITQ, TPAMI 2013, §3-4"

    def _fit(self, x):
        self.mean, self.components, self.explained_variance = pca_components(x, self.bits)
        self.total_variance = float(x.var(0, ddof=1).sum()) if len(x) > 1 else 0.0

    def _project(self, x):
        return (x - self.mean) @ self.components.T

    def fit_info(self):
        tot = self.total_variance
        return {"explained_variance_ratio": round(float(self.explained_variance.sum() / tot), 6) if tot > 0
                else None}


class PCARandomRotation(PCASign):
    """``b = sign(R^T C (x - mu))``: PCA to b dims then a seeded Haar-random orthogonal rotation ``R`` (b, b)
    (:func:`random_orthogonal`). "PCA-RR", Gong & Lazebnik, TPAMI 2013, §3.1 (the random-rotation
    baseline; a rotation spreads the variance of the leading components over all bits)."""

    name = "pca_rr"
    source = "PCA-RR baseline, Gong & Lazebnik, ITQ, TPAMI 2013, §3.1"

    def _fit(self, x):
        super()._fit(x)
        self.R = random_orthogonal(self.bits, np.random.default_rng(self.seed))

    def _project(self, x):
        return super()._project(x) @ self.R


class ITQ(PCASign):
    """Iterative Quantization (Gong & Lazebnik, CVPR 2011; TPAMI 2013, §3.1, eq. 2 and the two steps below it).

    ``V = (X - mu) C^T`` (n, b) is the PCA projection of the centred training features. ITQ minimises the
    quantization loss ``Q(B, R) = ||B - V R||_F^2`` over codes ``B`` in {-1, +1}^(n x K) and orthogonal
    ``R`` (b, b) by alternating, from a seeded Haar-random orthogonal ``R_0``:

    * fix R, update B: ``B = sign(V R)`` (sign(0) = +1);
    * fix B, update R (orthogonal Procrustes): take the SVD of the K x K matrix ``B^T V = S Omega S_hat^T``
      and set ``R = S_hat S^T`` (the paper's notation; the same as ``R = U W^T`` for ``V^T B = U Sigma W^T``,
      which maximises ``tr(R^T V^T B)`` and therefore minimises Q for fixed B).

    Each half-step cannot increase Q, so ``loss_history`` (Q after each full iteration, entry 0 at R_0) is
    non-increasing. ``iterations`` (default 50, as in the paper) full iterations are run; encoding is
    ``sign((x - mu) C^T R)``. The iterations' small products ((n, b) x (b, b)) run on one BLAS thread
    (threadpoolctl): measured on a 2-core machine at load 9, 50 iterations at n=500, K=64 took 12-20 s
    with OpenBLAS's 2 threads and 0.8-0.95 s with one (same process, alternated).
    """

    name = "itq"
    defaults = {"iterations": 50}
    source = "Gong & Lazebnik, Iterative Quantization, CVPR 2011 / TPAMI 2013, §3.1"

    @classmethod
    def check_params(cls, params):
        it = params["iterations"]
        if isinstance(it, bool) or not isinstance(it, (int, np.integer)) or it < 0:
            raise ConfigError(f"loss_params iterations={it!r} must be an integer >= 0")

    def _fit(self, x):
        super()._fit(x)
        v = PCASign._project(self, x)
        from threadpoolctl import threadpool_limits  # a scikit-learn dependency

        with threadpool_limits(limits=1, user_api="blas"):
            self._iterate(v)

    def _iterate(self, v: np.ndarray) -> None:
        r = random_orthogonal(self.bits, np.random.default_rng(self.seed))
        z = v @ r
        b = _sign(z).astype(np.float64)  # B = sign(V R)
        history = [float(np.sum((b - z) ** 2))]
        for _ in range(int(self.params["iterations"])):
            s, _, s_hat_t = np.linalg.svd(b.T @ v)  # B^T V = S Omega S_hat^T
            r = s_hat_t.T @ s.T  # R = S_hat S^T
            z = v @ r
            b = _sign(z).astype(np.float64)
            history.append(float(np.sum((b - z) ** 2)))
        self.R = r
        self.loss_history = history

    def _project(self, x):
        return PCASign._project(self, x) @ self.R

    def fit_info(self):
        n = max(self.n_fit or 1, 1)
        return {**super().fit_info(), "iterations": int(self.params["iterations"]),
                "quantization_loss_per_item_first": round(self.loss_history[0] / n, 6),
                "quantization_loss_per_item_last": round(self.loss_history[-1] / n, 6)}


TRAINING_FREE: Registry[type[TrainingFreeHash]] = Registry("loss")
TRAINING_FREE.register("lsh", LSH)
TRAINING_FREE.register("pca_sign", PCASign)
TRAINING_FREE.register("pca_rr", PCARandomRotation)
TRAINING_FREE.register("itq", ITQ)


def build_training_free(name: str, bits: int, *, seed: int = 0, **params) -> TrainingFreeHash:
    """An unfitted training-free method by registry name (``lsh``, ``pca_sign``, ``pca_rr``, ``itq``).

    Unknown names or parameters raise :class:`~hashlib_vit.errors.ConfigError` listing the allowed ones.
    """
    return TRAINING_FREE.get(name)(bits, seed=seed, **params)


# ----------------------------------------------------------------------------- run-level glue
def backbone_feature_dim(backbone: str, img_size: int | None = None) -> int:
    """The pooled feature dimension D of a backbone name, without building its weights (presets: the
    width; alexnet: 4096; other timm models: built on the ``meta`` device)."""
    from ..models.backbones import VIT_PRESETS

    if backbone in VIT_PRESETS:
        return VIT_PRESETS[backbone].embed_dim
    if backbone == "alexnet":
        return 4096
    from ..models.backbones import meta_network

    return int(meta_network(backbone, img_size).num_features)


def check_training_free_config(cfg) -> None:
    """Checks of a :class:`~hashlib_vit.experiment.RunConfig` naming a training-free method, made by
    ``RunConfig.validate`` before any data is loaded: loss_params names and values, the head (none is
    used: it must stay ``cls_linear``), and bits <= D for the PCA-based methods. Raises ConfigError."""
    cls = TRAINING_FREE.get(cfg.loss)
    cls(cfg.bits, seed=cfg.seed, **cfg.loss_params)  # names and values of loss_params
    if cfg.head != "cls_linear":
        raise ConfigError(f"head={cfg.head!r}: loss={cfg.loss!r} is training-free and hashes the backbone's own "
                          "feature (no head is used); leave head='cls_linear' (the default)")
    if cls.uses_pca:
        d = backbone_feature_dim(cfg.backbone, cfg.img_size)
        if cfg.bits > d:
            raise ConfigError(f"bits={cfg.bits} is too many for loss={cfg.loss!r} on backbone={cfg.backbone!r}: a "
                              f"PCA-based method needs bits <= the feature dimension D={d} (and <= the number of "
                              "training items)")
