"""Training-free baselines at the run level: backbone features -> fitted codes -> evaluation -> run directory.

The methods themselves (LSH, PCA + sign, PCA + random rotation, ITQ) are :mod:`hashlib_vit.losses.training_free`;
here they meet the rest of the flow: :func:`extract_features` (a backbone's CLS / pooled features of a split,
in split order), :func:`run_training_free` (the branch of :func:`hashlib_vit.experiment.run_experiment` for
``loss`` in ``TRAINING_FREE``) and :func:`baseline_table` (every method x bits on features extracted once,
for notebooks).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import ConfigError
from .losses.training_free import TRAINING_FREE, TrainingFreeHash, backbone_feature_dim, build_training_free

def extract_features(model, split, transform, *, batch_size: int = 256, device=None, amp_dtype=None,
                     progress: bool = False, desc: str = "features") -> tuple[np.ndarray, np.ndarray, str]:
    """Backbone features of every item of ``split``, in split order, under ``torch.no_grad``.

    ``model`` is a :class:`~hashlib_vit.models.HashModel`; the feature is the one its forward returns as
    ``HashOutput.features``: the CLS token after the final norm for ViTs (``"cls"``), the pooled feature for
    CNNs (``"pooled"``). ``transform`` is the *eval* transform (no augmentation). Returns
    ``(features float32 (N, D), labels float32 (N, C), kind)``; the model's train/eval mode is restored.
    """
    import torch

    from .data import make_batches
    from .retrieval.encode import map_in_order

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
    from .data import protocol_transforms
    from .results import run_metrics
    from .retrieval import evaluate
    from .train import amp_dtype

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

    from .data import PROTOCOLS, protocol_transforms
    from .results import random_codes_map
    from .models import build_model
    from .retrieval import map_at_k
    from .train import TrainConfig, amp_dtype
    from .utils import resolve_device, seed_everything

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


__all__ = ["extract_features", "run_training_free", "TrainingFreeRun", "baseline_table"]
