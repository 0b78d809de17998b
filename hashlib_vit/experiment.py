"""One experiment end to end: protocol -> data -> model -> loss -> train -> encode -> metrics -> run_dir.

Notebooks, the CLI and the grid runner all go through :func:`run_experiment` with a
:class:`~hashlib_vit.config.RunConfig` (built by :func:`hashlib_vit.config.build_config`), so every run
writes the same run directory (see :mod:`hashlib_vit.results`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .data import PROTOCOLS, ProtocolData, TensorTransform, make_batches, protocol_transforms
from .config import RunConfig
from .errors import ConfigError, DataError
from .losses import TRAINING_FREE, build_loss
from .models import HashModel, build_model
from .results import RunDir, run_metrics
from .retrieval import encode, evaluate
from .train import StepLog, amp_dtype, check_checkpoint, train
from .train.checkpoint import check_fields
from .train.distributed import current, env_world_size, init_distributed
from .utils import env_info, resolve_device, resolve_path, seed_everything


CHECKPOINT_FILE = "checkpoint.pt"


@dataclass
class RunResult:
    config: RunConfig
    metrics: dict
    history: dict
    model: HashModel
    data: ProtocolData
    query_codes: np.ndarray
    db_codes: np.ndarray
    run_dir: Path | None

    def steps(self):
        """Per-step training log as a pandas DataFrame."""
        import pandas as pd

        return pd.DataFrame(self.history["steps"])


def transforms_for(protocol, model: HashModel) -> tuple[TensorTransform, TensorTransform]:
    """Train / eval transforms: native size for 32-px models, resize 256 -> crop 224 style otherwise."""
    return protocol_transforms(protocol, model.img_size)


def run_experiment(config: RunConfig | dict | None = None, *, data: ProtocolData | None = None,
                   **params) -> RunResult:
    """Run one experiment and write its run directory. Accepts a RunConfig, a dict, or keywords.

    ``data``: the protocol's splits when already loaded (they must match ``protocol`` and
    ``split_seed``); otherwise they are loaded here. Relative ``run_dir`` paths are resolved from the
    project root (see :func:`hashlib_vit.utils.resolve_path`).
    """
    if config is None:
        cfg = RunConfig.from_dict(params)
    elif isinstance(config, dict):
        cfg = RunConfig.from_dict({**config, **params})
    else:
        cfg = config.replace(**params)
    cfg.validate()
    protocol = PROTOCOLS.get(cfg.protocol)
    dist_info = init_distributed(cfg.device) if env_world_size() > 1 else current()
    device = resolve_device(cfg.device)
    if dist_info.enabled and device.type == "cuda":
        device = torch.device("cuda", dist_info.local_rank)
    if cfg.amp == "fp16" and device.type != "cuda":
        raise ConfigError(f"amp='fp16' needs a CUDA device (fp16 autocast has no loss scaler on {device.type}); "
                          "use amp='bf16', 'off' or 'auto' (fp32 off CUDA)")
    run_path = resolve_path(cfg.run_dir) if cfg.run_dir else None
    ckpt_path = run_path / CHECKPOINT_FILE if run_path else None
    resuming = bool(cfg.resume and ckpt_path is not None and ckpt_path.exists())

    if data is None:
        data = protocol.load(cfg.data_root, seed=cfg.split_seed, **cfg.data_options)
    elif data.protocol.name != protocol.name or data.seed != cfg.split_seed:
        raise ConfigError(f"data was loaded for protocol={data.protocol.name!r}, split_seed={data.seed}, but the run "
                          f"asks for protocol={protocol.name!r}, split_seed={cfg.split_seed}")
    if cfg.val_per_class:  # carved from train (seeded, per class); query and database untouched
        from .data.validation import carve_validation

        data = carve_validation(data, cfg.val_per_class, cfg.split_seed)
    topk = protocol.topk if cfg.topk == "protocol" else cfg.topk
    n_db, n_train = data.sizes()["database"], data.sizes()["train"]
    if cfg.loss not in TRAINING_FREE and cfg.batch_size > n_train:
        raise ConfigError(f"batch_size={cfg.batch_size} is larger than the {n_train} training items of protocol "
                          f"{protocol.name!r} that were loaded; use batch_size <= {n_train}")
    if topk is not None and (isinstance(topk, bool) or not isinstance(topk, int) or not 1 <= topk <= n_db):
        what = f"the {protocol.name} protocol's mAP cut-off" if cfg.topk == "protocol" else "the topk parameter"
        raise DataError(f"topk={topk!r} ({what}) must be an integer in 1..{n_db}, the size of the database that "
                        "was loaded; pass topk=None to rank the whole database")  # checked before any training
    seed_everything(cfg.seed)  # the model (and its weights) is built before the run directory is touched
    model = build_model(cfg.backbone, cfg.bits, cfg.head, img_size=cfg.img_size, weights=cfg.weights,
                        **cfg.model_params)
    train_model, cache, loss = model, None, None
    if cfg.loss not in TRAINING_FREE:  # loss, transforms and any feature cache: before the run directory is touched
        loss = build_loss(cfg.loss, cfg.bits, protocol.num_classes, protocol.multi_label, **cfg.loss_params)
        _warn_if_head_unsuited(cfg, loss)
        tr_tf, ev_tf = transforms_for(protocol, model)
        if cfg.freeze_blocks:
            from .models.partial import freeze_prefix

            n_frozen = freeze_prefix(model, cfg.freeze_blocks)
        if cfg.feature_cache:  # train the last blocks + head on cached block-N tokens (data/feature_cache.py)
            from .data.feature_cache import cached_training

            train_batches, train_model, cache = cached_training(
                model, n_frozen, data.train, split_checksum=data.checksums.get("train", ""), train_tf=tr_tf,
                eval_tf=ev_tf, batch_size=cfg.batch_size, views=cfg.cache_views, seed=cfg.seed,
                n_views=getattr(loss, "n_views", 1), cache_dir=resolve_path(cfg.cache_dir), device=device,
                progress=cfg.progress)
        else:
            train_batches = make_batches(data.train, cfg.batch_size, tr_tf, train=True, seed=cfg.seed, device=device)
    fingerprint = {"split_checksums": data.checksums, "config": cfg.fingerprint()}
    rd = None
    if run_path is not None and dist_info.is_main:  # only rank 0 writes the run directory
        if resuming:  # the checkpoint, its fields and the log it continues: checked before anything is overwritten
            ckpt = check_checkpoint(ckpt_path, fingerprint, only_given=True)
            check_fields(ckpt, ckpt_path, ("model", "loss", "optimizer", "scaler"))
            StepLog(run_path / "train_log.csv").rows_until(ckpt["step"], rewrite=False)
            rd = RunDir(run_path).prepare(overwrite=False)
            for name in ("metrics.json", "codes.npz"):  # a resumed run is not complete until it says so
                rd.file(name).unlink(missing_ok=True)
        else:
            rd = RunDir(run_path).prepare()
            if ckpt_path.exists():
                ckpt_path.unlink()  # a fresh run never resumes an older run's checkpoint
        rd.write_json("config.json", {**cfg.to_dict(), "resolved_device": str(device),
                                      "world_size": dist_info.world_size})
    if rd:
        env = env_info(device)
        env["split_checksums"] = data.checksums
        env["split_seed"] = cfg.split_seed
        env["protocol"] = protocol.summary()
        env["skipped_images"] = data.skipped()  # listed images left out with missing="skip", per split
        env["weights_info"] = model.backbone.weights_info  # source, format, path, sha256, mean/std, ...
        rd.write_json("env.json", env)
    if cfg.loss in TRAINING_FREE:  # no training: fit on the backbone's train features, encode, evaluate
        from .baselines import run_training_free

        tf = run_training_free(cfg, data, model.to(device), device, rd, topk=topk)
        return RunResult(cfg, tf.metrics, tf.history, model, data, tf.query_codes, tf.db_codes, rd.path if rd else None)
    if cache is not None and rd:
        rd.write_json("feature_cache.json", cache.info())
    if getattr(loss, "n_views", 1) > 1 and cache is None:  # e.g. HSC two-view SupCon: each image twice, same index
        from .data.views import MultiViewBatches

        train_batches = MultiViewBatches(train_batches, loss.n_views)

    def codes_of(split):
        return encode(model, make_batches(split, cfg.eval_batch_size, ev_tf, train=False, device=device),
                      device=device, amp_dtype=amp_dtype(cfg.train, device))

    last_eval: dict = {}  # the most recent evaluation, reused when it was made after the last epoch

    def validation_map() -> float | None:
        """mAP of the validation items as queries against the rest of train (None without a validation split)."""
        if data.validation is None:
            return None
        vc, vl = codes_of(data.validation)
        tc, tl = codes_of(data.train)
        return float(evaluate(vc, tc, vl, tl, topk=None if topk is None else min(topk, len(tl)))["map"])

    def evaluate_now(epoch: int) -> dict:
        t = time.perf_counter()
        qc, ql = codes_of(data.query)
        dc, dl = codes_of(data.database)
        ev = evaluate(qc, dc, ql, dl, topk=topk)
        last_eval.update(epoch=epoch, codes=(qc, ql, dc, dl), ev=ev, val_map=validation_map(),
                         seconds=time.perf_counter() - t)
        return last_eval

    def eval_fn(epoch: int) -> dict:
        now = evaluate_now(epoch)
        return {"map": now["ev"]["map"], **({} if now["val_map"] is None else {"val_map": now["val_map"]})}

    t0 = time.perf_counter()
    history = train(train_model, loss, train_batches, cfg.train, device=device,
                    eval_fn=eval_fn if cfg.eval_every else None, eval_every=cfg.eval_every,
                    log_path=rd.file("train_log.csv") if rd else None, progress=cfg.progress,
                    checkpoint_path=ckpt_path, resume=cfg.resume, fingerprint=fingerprint, dist_info=dist_info)
    train_time = time.perf_counter() - t0
    if not dist_info.is_main:  # other ranks: training done, rank 0 evaluates and writes
        return RunResult(cfg, {}, history, model, data, np.empty((0, cfg.bits), np.int8),
                         np.empty((0, cfg.bits), np.int8), None)

    final = last_eval if last_eval.get("epoch") == cfg.epochs else evaluate_now(cfg.epochs)
    (qc, ql, dc, dl), ev, eval_time = final["codes"], final["ev"], final["seconds"]
    # curves for the figures (small lists), stored with the run so that tables and plots need no codes.npz:
    # precision over the queries that retrieve something at each radius (empty_radius="exclude")
    metrics = {
        **run_metrics(cfg, model, data, topk, qc, dc, ql, dl, ev, device),
        "epochs": cfg.epochs,
        "selection": "last epoch (no model selection on the query set)",
        "final_loss": history["steps"][-1]["loss"],
        # every hyper-parameter the loss ran with, registry defaults included: a later change of a default
        # (issue 19) must not change what a finished run's config.json appears to say
        "loss_hparams": dict(sorted(loss.hparams.items())),
        "train_time_s": round(train_time, 3),
        "resumed_from_step": (history.get("resumed_from") or {}).get("step"),
        "world_size": dist_info.world_size,
        "eval_time_s": round(eval_time, 3),
    }
    if final["val_map"] is not None:  # for choosing hyper-parameters; the reported mAP stays the query set's
        metrics.update(val_map=final["val_map"], val_per_class=cfg.val_per_class)
    _warn_if_at_chance(metrics, history)
    if rd:
        if history["evals"]:
            rd.write_json("evals.json", history["evals"])
        if cfg.save_codes:
            rd.write_codes(query_codes=qc, query_labels=ql, db_codes=dc, db_labels=dl)
        if cfg.code_stats:  # how the outputs look (mean |u|, input spread, distinct codes, bit balance)
            from .results.analysis import code_diagnostics

            rd.write_json("diagnostics.json", code_diagnostics(RunResult(cfg, metrics, history, model, data, qc, dc,
                                                                         rd.path)))
        rd.write_metrics(metrics)
    return RunResult(cfg, metrics, history, model, data, qc, dc, rd.path if rd else None)


def _warn_if_head_unsuited(cfg: RunConfig, loss) -> None:
    """Warn when the run's head is one the loss names in ``HashLoss.unsuited_heads`` (head -> why)."""
    why = loss.unsuited_heads.get(cfg.head)
    if why:
        import warnings

        warnings.warn(f"loss {cfg.loss!r} with head {cfg.head!r}: {why}", UserWarning, stacklevel=3)


#: mAP at most this multiple of the random-codes mAP is "at chance" (:func:`_warn_if_at_chance`).
CHANCE_RATIO = 1.1


def _warn_if_at_chance(metrics: dict, history: dict) -> None:
    """A UserWarning when the final mAP is at the chance level of random codes (``map <= CHANCE_RATIO *
    map_random``): a run that learned nothing should not complete without a word. A bounded loss (DCH,
    TransHash, HashNet, OrthoHash) with a learning rate far too high saturates instead of exploding, so
    the divergence check (train/divergence.py) cannot see it; this is where it shows."""
    import warnings

    m, r = metrics.get("map"), metrics.get("map_random")
    if m is None or not r or m > CHANCE_RATIO * r:
        return
    steps = history.get("steps") or []
    losses = f" (loss {steps[0]['loss']:.4g} at step 1, {steps[-1]['loss']:.4g} at the end)" if steps else ""
    warnings.warn(f"mAP {m:.4f} is at the chance level of random codes (map_random {r:.4f}): the model learned "
                  f"nothing usable{losses}. Likely causes: a learning rate far too high (a bounded loss saturates "
                  "instead of diverging), too few epochs or steps, or frozen weights with nothing to train",
                  UserWarning, stacklevel=3)


__all__ = ["RunConfig", "RunResult", "run_experiment", "transforms_for"]
