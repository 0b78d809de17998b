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

Each is a class with ``fit(features (n, D) float) -> self`` and ``encode(features) -> int8 ±1 (n, K)``
(sign(0) = +1, as :func:`hashlib_vit.models.sign_codes`); arithmetic is float64 numpy; everything random
is drawn from ``numpy.random.default_rng(seed)``. They live in their own registry, :data:`TRAINING_FREE`,
beside :data:`hashlib_vit.losses.LOSSES`: ``RunConfig(loss="itq")`` runs one through
:func:`hashlib_vit.experiment.run_experiment` (via :func:`run_training_free`, which skips training), and
:func:`baseline_table` fits every method x bits on features extracted once (for notebooks).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from ..errors import ConfigError, DataError
from ..registry import Registry

__all__ = ["TRAINING_FREE", "TrainingFreeHash", "LSH", "PCASign", "PCARandomRotation", "ITQ",
           "build_training_free", "random_orthogonal", "pca_components", "check_training_free_config",
           "backbone_feature_dim", "extract_features", "run_training_free", "TrainingFreeRun", "baseline_table"]


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
    """Base class: ``fit(features) -> self``, ``project(features) -> float64 (n, K)``, ``encode -> int8 ±1``.

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
        """The continuous codes ``(n, K)`` float64 whose signs are the binary codes."""
        if self.dim is None:
            raise ConfigError(f"training-free method {self.name!r} must be fitted (fit(train_features)) before "
                              "encoding")
        return self._project(_as_features(features, "features", dim=self.dim))

    def encode(self, features) -> np.ndarray:
        """Binary codes int8 ±1 ``(n, K)`` (sign(0) = +1) of features ``(n, D)``."""
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
    """``b = sign(R^T C (x - mu))``: PCA to K dims then a seeded Haar-random orthogonal rotation ``R`` (K, K)
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

    ``V = (X - mu) C^T`` (n, K) is the PCA projection of the centred training features. ITQ minimises the
    quantization loss ``Q(B, R) = ||B - V R||_F^2`` over codes ``B`` in {-1, +1}^(n x K) and orthogonal
    ``R`` (K, K) by alternating, from a seeded Haar-random orthogonal ``R_0``:

    * fix R, update B: ``B = sign(V R)`` (sign(0) = +1);
    * fix B, update R (orthogonal Procrustes): take the SVD of the K x K matrix ``B^T V = S Omega S_hat^T``
      and set ``R = S_hat S^T`` (the paper's notation; the same as ``R = U W^T`` for ``V^T B = U Sigma W^T``,
      which maximises ``tr(R^T V^T B)`` and therefore minimises Q for fixed B).

    Each half-step cannot increase Q, so ``loss_history`` (Q after each full iteration, entry 0 at R_0) is
    non-increasing. ``iterations`` (default 50, as in the paper) full iterations are run; encoding is
    ``sign((x - mu) C^T R)``. The iterations' small products ((n, K) x (K, K)) run on one BLAS thread
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
    import timm
    import torch

    kwargs = {"img_size": img_size} if img_size and backbone.startswith(("vit_", "deit", "eva", "beit")) else {}
    with torch.device("meta"):
        return int(timm.create_model(backbone, pretrained=False, num_classes=0, **kwargs).num_features)


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


def extract_features(model, split, transform, *, batch_size: int = 256, device=None, amp_dtype=None,
                     progress: bool = False, desc: str = "features") -> tuple[np.ndarray, np.ndarray, str]:
    """Backbone features of every item of ``split``, in split order, under ``torch.no_grad``.

    ``model`` is a :class:`~hashlib_vit.models.HashModel`; the feature is the one its forward returns as
    ``HashOutput.features``: the CLS token after the final norm for ViTs (``"cls"``), the pooled feature for
    CNNs (``"pooled"``). ``transform`` is the *eval* transform (no augmentation). Returns
    ``(features float32 (N, D), labels float32 (N, C), kind)``; the model's train/eval mode is restored.
    """
    import torch

    from ..data import make_batches
    from ..retrieval.encode import map_in_order

    def features(m, x):
        t = m.backbone(m.normalize(x))
        return (t[:, 0] if t.ndim == 3 else t).float()  # as HashModel.forward's HashOutput.features

    dev = torch.device(device) if device is not None else next(model.parameters()).device
    batches = make_batches(split, batch_size, transform, train=False, device=dev)
    feats, labels = map_in_order(model, batches, features, device=dev, progress=progress, desc=desc,
                                 amp_dtype=amp_dtype)
    kind = "cls" if getattr(model.backbone, "is_vit", False) else "pooled"
    return feats.numpy(), labels.float().numpy(), kind


@dataclass
class TrainingFreeRun:
    """What :func:`run_training_free` returns to ``run_experiment``."""

    metrics: dict
    query_codes: np.ndarray
    db_codes: np.ndarray
    method: TrainingFreeHash
    history: dict = field(default_factory=lambda: {"steps": [], "evals": []})


def _split_features(model, data, cfg, device, ev_tf, amp) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    out = {}
    for name in ("train", "query", "database"):
        f, y, kind = extract_features(model, getattr(data, name), ev_tf, batch_size=cfg.eval_batch_size,
                                      device=device, amp_dtype=amp, progress=cfg.progress, desc=f"features {name}")
        out[name] = (f, y)
    out["_kind"] = kind  # type: ignore[assignment]
    return out


def run_training_free(cfg, data, model, device, rd, *, topk) -> TrainingFreeRun:
    """The training-free branch of :func:`hashlib_vit.experiment.run_experiment` (``cfg.loss`` in
    :data:`TRAINING_FREE`): no training (``cfg.epochs`` is ignored and recorded as ``epochs_ignored``).

    Extracts the backbone features of train / query / database with the protocol's eval transform (no
    augmentation) under ``torch.no_grad`` in batches of ``cfg.eval_batch_size`` on ``device`` (autocast as
    the encoder uses it), fits the method on the training features, encodes query and database and
    evaluates them with :func:`hashlib_vit.retrieval.evaluate` exactly as learned runs are evaluated. Writes
    ``codes.npz`` (when ``save_codes``) and ``metrics.json`` into ``rd`` (a prepared
    :class:`~hashlib_vit.results.RunDir`, or None); no ``train_log.csv``. ``metrics.json`` has the keys of a
    learned run plus ``training: "none"``, ``fit_time_s``, ``feature_time_s``, ``feature_dim``,
    ``feature`` (``"cls"`` / ``"pooled"``), ``fit_info``; ``train_time_s`` is 0 and ``final_loss`` null.
    """
    from ..data import protocol_transforms
    from ..experiment import run_metrics
    from ..retrieval import evaluate
    from ..train import amp_dtype

    protocol = data.protocol
    method = build_training_free(cfg.loss, cfg.bits, seed=cfg.seed, **cfg.loss_params)
    _, ev_tf = protocol_transforms(protocol, model.img_size)
    t0 = time.perf_counter()
    feats = _split_features(model, data, cfg, device, ev_tf, amp_dtype(cfg.train_config(), device))
    feature_time = time.perf_counter() - t0
    t0 = time.perf_counter()
    method.fit(feats["train"][0])
    fit_time = time.perf_counter() - t0
    t0 = time.perf_counter()
    (qf, ql), (df, dl) = feats["query"], feats["database"]
    qc, dc = method.encode(qf), method.encode(df)
    ev = evaluate(qc, dc, ql, dl, topk=topk)
    eval_time = time.perf_counter() - t0
    metrics = {
        **run_metrics(cfg, model, data, topk, qc, dc, ql, dl, ev, device),
        "training": "none",
        "epochs": 0,
        "epochs_ignored": cfg.epochs,
        "feature": feats["_kind"],
        "feature_dim": int(qf.shape[1]),
        "n_fit": int(len(feats["train"][0])),
        "fit_info": method.fit_info(),
        "selection": "training-free: fitted on the training split's features (no model selection)",
        "final_loss": None,
        "train_time_s": 0,
        "feature_time_s": round(feature_time, 3),
        "fit_time_s": round(fit_time, 4),
        "eval_time_s": round(eval_time, 3),
    }
    if rd:
        if cfg.save_codes:
            rd.write_codes(query_codes=qc, query_labels=ql, db_codes=dc, db_labels=dl)
        rd.write_metrics(metrics)
    return TrainingFreeRun(metrics, qc, dc, method)


def baseline_table(backbone: str = "vit32_tiny", weights=None, protocol: str = "digits", bits=(16, 32, 64),
                   methods=("lsh", "pca_sign", "pca_rr", "itq"), *, data_root=None, data=None, img_size=None,
                   seed: int = 0, split_seed: int = 0, device: str = "auto", batch_size: int = 256,
                   topk: Any = "protocol", params: dict | None = None, data_options: dict | None = None,
                   amp: str = "auto", progress: bool = False) -> "pd.DataFrame":  # noqa: F821
    """mAP of training-free methods x bit lengths on one backbone's features, extracted ONCE (notebooks).

    Loads the protocol's splits (or uses ``data``), builds the backbone (``weights``: a local file,
    ``"hub"`` or None = random init, recorded in the ``pretrained`` column), extracts train / query /
    database features once (:func:`extract_features`, eval transform, no_grad), then fits and evaluates
    every ``method`` at every ``bits`` (mAP with the protocol's cut-off, same engine as the runs). A
    ``random`` row per bit length gives the chance level (random ±1 codes). ``params``: per-method
    parameters, e.g. ``{"itq": {"iterations": 50}}``. Returns a DataFrame with columns method, bits, map,
    fit_time_s, feature_dim, feature, backbone, pretrained, protocol, topk, n_fit, feature_time_s; one row per
    (method, bits). ``amp``: autocast of the feature extraction as ``RunConfig.amp`` (``"auto"``: bf16 on CUDA).
    Errors (ConfigError / DataError) for bad names, parameters or bits > D are raised before any data is
    loaded; bits > n (too few training items for PCA) when the splits are known, before extraction.
    """
    import pandas as pd

    from ..data import PROTOCOLS, protocol_transforms
    from ..experiment import random_codes_map
    from ..models import build_model
    from ..retrieval import map_at_k
    from ..train import TrainConfig, amp_dtype
    from ..utils import resolve_device, seed_everything

    TrainConfig(amp=amp).validate()
    params = dict(params or {})
    methods = list(methods)
    for m in methods:
        TRAINING_FREE.get(m)
    unknown = sorted(set(params) - set(methods))
    if unknown:
        raise ConfigError(f"params names method(s) {unknown} that are not in methods={methods}")
    bits = [bits] if isinstance(bits, int) else list(bits)
    for m in methods:
        for b in bits:
            TRAINING_FREE.get(m)(b, seed=seed, **params.get(m, {}))  # names / values checked up front
    pca = [m for m in methods if TRAINING_FREE.get(m).uses_pca]
    if pca:
        d = backbone_feature_dim(backbone, img_size)
        if max(bits) > d:
            raise ConfigError(f"bits={max(bits)} is too many for {pca} on backbone={backbone!r}: PCA-based methods "
                              f"need bits <= the feature dimension D={d}")
    proto = PROTOCOLS.get(protocol)
    if data is None:
        data = proto.load(data_root, seed=split_seed, **(data_options or {}))
    elif data.protocol.name != proto.name:
        raise ConfigError(f"data was loaded for protocol={data.protocol.name!r}, not protocol={protocol!r}")
    if pca and max(bits) > len(data.train):
        raise ConfigError(f"bits={max(bits)} is too many for {pca}: PCA-based methods need bits <= the number of "
                          f"training items n={len(data.train)}")
    k = proto.topk if topk == "protocol" else topk
    dev = resolve_device(device)
    seed_everything(seed)
    model = build_model(backbone, bits[0], "cls_linear", img_size=img_size, weights=weights).to(dev)
    _, ev_tf = protocol_transforms(proto, model.img_size)
    t0 = time.perf_counter()
    autocast = amp_dtype(TrainConfig(amp=amp), dev)
    feats = {}
    for name in ("train", "query", "database"):
        f, y, kind = extract_features(model, getattr(data, name), ev_tf, batch_size=batch_size, device=dev,
                                      amp_dtype=autocast, progress=progress, desc=f"features {name}")
        feats[name] = (f, y)
    feature_time = time.perf_counter() - t0
    (tf, _), (qf, ql), (df, dl) = feats["train"], feats["query"], feats["database"]
    common = {"feature_dim": int(tf.shape[1]), "feature": kind, "backbone": backbone,
              "pretrained": model.backbone.pretrained, "protocol": protocol, "topk": "all" if k is None else int(k),
              "n_fit": int(len(tf)), "feature_time_s": round(feature_time, 3)}
    rows = []
    for b in bits:
        rows.append({"method": "random", "bits": b, "map": random_codes_map(data, b, k, seed=seed),
                     "fit_time_s": 0.0, **common})
        for m in methods:
            meth = build_training_free(m, b, seed=seed, **params.get(m, {}))
            t0 = time.perf_counter()
            meth.fit(tf)
            fit_time = time.perf_counter() - t0
            rows.append({"method": m, "bits": b, "map": map_at_k(meth.encode(qf), meth.encode(df), ql, dl, topk=k),
                         "fit_time_s": round(fit_time, 4), **common})
    return pd.DataFrame(rows)
