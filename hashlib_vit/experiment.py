"""One experiment end to end: protocol -> data -> model -> loss -> train -> encode -> metrics -> run_dir.

Notebooks, the CLI and the batch runner all go through :func:`run_experiment`, so every run writes
the same run directory (see :mod:`hashlib_vit.results`).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .data import PROTOCOLS, ProtocolData, TensorTransform, make_batches, protocol_transforms
from .errors import ConfigError, DataError, bad_choice
from .losses import LOSSES, TRAINING_FREE, build_loss
from .models import MODELS, HashModel, build_model
from .results import RunDir
from .retrieval import encode, evaluate
from .distributed import current, env_world_size, init_distributed
from .train import TrainConfig, amp_dtype, check_checkpoint, train
from .utils import env_info, resolve_device, resolve_path, seed_everything


# parameters that may change between a run and its resumption (they do not alter the trained model)
RESUMABLE_CHANGES = frozenset({"resume", "progress", "checkpoint_every_steps", "checkpoint_every_epochs", "device",
                               "run_dir", "data_root", "save_codes", "eval_batch_size", "eval_every", "topk",
                               "method", "cache_dir"})
CHECKPOINT_FILE = "checkpoint.pt"


def data_option_names(protocol: str) -> tuple[str, ...]:
    """The keyword options a protocol's loader takes besides data_root and seed (RunConfig.data_options)."""
    import inspect

    params = inspect.signature(PROTOCOLS.get(protocol).loader).parameters.values()
    return tuple(p.name for p in params if p.kind is p.KEYWORD_ONLY or (
        p.kind is p.POSITIONAL_OR_KEYWORD and p.name not in ("protocol", "data_root", "seed")))


@dataclass
class RunConfig:
    """The shared parameter vocabulary of notebooks, configs and the CLI (see DESIGN.md)."""

    protocol: str = "digits"
    data_root: str | None = None
    backbone: str = "vit32_tiny"
    head: str = "cls_linear"
    loss: str = "csq"
    bits: int = 32
    epochs: int = 30
    batch_size: int = 32
    lr: float = 1e-3
    seed: int = 0
    device: str = "auto"
    run_dir: str | None = "results/runs/latest"
    weights: str | None = None  # local pretrained file, "hub", or None (train from scratch)
    method: str | None = None  # display name in tables; default: derived from head and loss
    split_seed: int = 0  # the data split's seed (kept fixed across training seeds)
    # further options of the protocol's loader, e.g. {"missing": "skip"} or {"list_dir": "..."} for the
    # list-file protocols (NUS-WIDE, COCO, ImageNet-100); see data_option_names(protocol)
    data_options: dict = field(default_factory=dict)
    img_size: int | None = None  # model input size; default: the backbone's
    loss_params: dict = field(default_factory=dict)
    model_params: dict = field(default_factory=dict)
    backbone_lr: float | None = None
    optimizer: str = "adamw"
    momentum: float = 0.9  # SGD momentum
    weight_decay: float = 1e-4
    schedule: str = "cosine"
    step_epochs: int = 30  # schedule="step": multiply the lr by step_gamma every step_epochs epochs
    step_gamma: float = 0.1
    warmup_steps: int = 50
    grad_clip: float | None = None
    amp: str = "auto"
    compile: bool = False
    eval_every: int = 0  # evaluate every N epochs (0: only after the last); the last epoch is reported
    eval_batch_size: int = 256
    topk: int | str | None = "protocol"  # "protocol": the protocol's mAP cut-off; None: whole database
    save_codes: bool = True
    progress: bool = True
    checkpoint_every_steps: int = 0  # write run_dir/checkpoint.pt every N steps (0: off)
    checkpoint_every_epochs: int = 0  # ... and/or every N epochs (0: off); a final one is written when on
    resume: bool = False  # continue from run_dir/checkpoint.pt when it exists (same split and config only)
    # partial fine-tuning (docs/training.md "Partial fine-tuning with a feature cache", hashlib_vit.models.partial):
    freeze_blocks: int | str = 0  # freeze embeddings + the first N blocks (0: none; "all"/-1: as many as the head allows)
    feature_cache: bool = False  # train on the cached tokens after block N (computed once, fp16 on disk)
    cache_views: int = 1  # cached views per training image: 1 = the un-augmented eval view, k >= 2 = k augmented views
    cache_dir: str | None = None  # default: <project>/.cache/features

    @classmethod
    def from_dict(cls, params: dict[str, Any]) -> "RunConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(params) - known)
        if unknown:
            raise ConfigError(f"unknown parameter(s) {unknown}; known: {sorted(known)}")
        return cls(**params)

    def validate(self) -> "RunConfig":
        """Check names and values before any data is loaded or any training starts."""
        if self.protocol not in PROTOCOLS:
            raise bad_choice("protocol", self.protocol, PROTOCOLS.names())
        if self.loss not in LOSSES and self.loss not in TRAINING_FREE:
            raise bad_choice("loss", self.loss, LOSSES.names() + TRAINING_FREE.names())
        if self.head not in MODELS:
            raise bad_choice("head", self.head, MODELS.names())
        from .models.backbones import check_backbone_name

        check_backbone_name(self.backbone)  # presets, CNNs, timm names with or without a pretrained tag
        for name in ("bits", "epochs", "batch_size"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"{name}={v!r} must be an integer >= 1")
        if self.batch_size < 2:
            raise ConfigError(f"batch_size={self.batch_size} must be >= 2 (pair losses need pairs)")
        if not isinstance(self.lr, (int, float)) or self.lr <= 0:
            raise ConfigError(f"lr={self.lr!r} must be a positive number")
        if not isinstance(self.loss_params, dict) or not isinstance(self.model_params, dict):
            raise ConfigError("loss_params and model_params must be dicts of name -> value")
        if not isinstance(self.data_options, dict):
            raise ConfigError(f"data_options={self.data_options!r} must be a dict of name -> value")
        allowed = data_option_names(self.protocol)
        unknown = sorted(set(self.data_options) - set(allowed))
        if unknown:
            raise ConfigError(f"data_options {unknown} are not options of protocol={self.protocol!r}'s loader; "
                              f"allowed: {list(allowed)}")
        if self.loss in TRAINING_FREE:  # LSH / PCA / ITQ (losses/training_free.py): params, head, bits <= D
            from .losses.training_free import check_training_free_config

            check_training_free_config(self)
        unknown = sorted(set(self.loss_params) - set(LOSSES.get(self.loss).defaults)) if self.loss in LOSSES else []
        if unknown:
            raise ConfigError(f"loss_params {unknown} are not hyper-parameters of loss={self.loss!r}; "
                              f"allowed: {sorted(LOSSES.get(self.loss).defaults)}")
        self.train_config().validate()
        from .models.aem import parse_aem

        parse_aem(self.model_params.get("aem", "off"))  # AE-ViT's branch list, checked before any data is loaded
        check = getattr(MODELS.get(self.head), "validate", None)  # a head builder may check its model_params early
        if check is not None:
            check(self.bits, **self.model_params)
        if not isinstance(self.resume, bool):
            raise ConfigError(f"resume={self.resume!r} must be true or false")
        if (self.resume or self.train_config().checkpointing) and not self.run_dir:
            raise ConfigError("checkpoint_every_steps / checkpoint_every_epochs / resume need a run_dir "
                              "(the checkpoint is run_dir/checkpoint.pt)")
        self._validate_partial()
        if self.device not in ("auto", "cpu") and not str(self.device).startswith("cuda"):
            raise bad_choice("device", self.device, ("auto", "cpu", "cuda", "cuda:N"))
        return self

    def _validate_partial(self) -> None:
        """freeze_blocks / feature_cache / cache_views, checked before any data or weights are loaded."""
        from .models.aem import parse_aem
        from .models.partial import check_freeze_config

        n = check_freeze_config(self.backbone, self.head, self.freeze_blocks, self.img_size)
        if not isinstance(self.feature_cache, bool):
            raise ConfigError(f"feature_cache={self.feature_cache!r} must be true or false")
        if not isinstance(self.cache_views, int) or isinstance(self.cache_views, bool) or self.cache_views < 1:
            raise ConfigError(f"cache_views={self.cache_views!r} must be an integer >= 1 (1: the un-augmented view)")
        if self.feature_cache:
            if n == 0:
                raise ConfigError("feature_cache=True needs freeze_blocks >= 1 (the cached tokens are those after "
                                  "the frozen blocks)")
            if parse_aem(self.model_params.get("aem", "off")):
                raise ConfigError(f"feature_cache=True is not possible with model_params aem="
                                  f"{self.model_params['aem']!r}: AEM sits before the frozen blocks and trains, so the "
                                  "tokens after block N change; use feature_cache=False (freezing alone works)")
            n_views = {**LOSSES.get(self.loss).defaults, **self.loss_params}.get("n_views", 1)
            if n_views > self.cache_views:
                raise ConfigError(f"loss {self.loss!r} with n_views={n_views} needs cache_views >= {n_views} "
                                  f"(distinct views of each image per batch); got cache_views={self.cache_views}")

    def train_config(self) -> TrainConfig:
        return TrainConfig(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, backbone_lr=self.backbone_lr,
                           optimizer=self.optimizer, momentum=self.momentum, weight_decay=self.weight_decay,
                           schedule=self.schedule, step_epochs=self.step_epochs, step_gamma=self.step_gamma,
                           warmup_steps=self.warmup_steps, grad_clip=self.grad_clip, amp=self.amp,
                           compile=self.compile, seed=self.seed, checkpoint_every_steps=self.checkpoint_every_steps,
                           checkpoint_every_epochs=self.checkpoint_every_epochs)

    def fingerprint(self) -> dict:
        """The parameters a checkpoint must agree on to be resumed (everything that changes training)."""
        # the partial fine-tuning fields count only when set, so checkpoints written before they existed still resume
        unset = {"freeze_blocks": 0, "feature_cache": False, "cache_views": 1}
        return {k: v for k, v in asdict(self).items()
                if k not in RESUMABLE_CHANGES and not (k in unset and v == unset[k])}

    def method_name(self) -> str:
        if self.method:
            return self.method
        return self.loss if self.head == "cls_linear" else f"{self.loss}+{self.head}"


def merge_overrides(params: dict[str, Any], overrides: dict | str | None, *, where: str = "overrides") -> dict:
    """``params`` (what a notebook sets explicitly) with ``overrides`` (any further RunConfig field) on top.

    ``overrides`` is the notebooks' ``overrides: dict = {}`` parameter, e.g. ``{"weight_decay": 1e-4,
    "warmup_steps": 500, "backbone_lr": 3e-3}``; a JSON/YAML string (``papermill -p overrides '{...}'``) is
    parsed. Dict-valued fields (``loss_params``, ``model_params``, ``data_options``) merge key by key.
    Returns a new dict; nothing is validated beyond names and conflicts (:func:`config_from_notebook` does).

    Raises ConfigError for a name that is not a RunConfig field, and for an override that conflicts with an
    explicit parameter of a different value (naming both values: set that one through the parameter).
    """
    if isinstance(overrides, str):
        import yaml

        try:
            overrides = yaml.safe_load(overrides) if overrides.strip() else {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{where}={overrides!r} is not a valid YAML/JSON mapping: {e}") from None
    overrides = {} if overrides is None else overrides
    if not isinstance(overrides, dict):
        raise ConfigError(f"{where}={overrides!r} must be a dict of RunConfig field -> value")
    known = [f.name for f in fields(RunConfig)]
    unknown = sorted(set(overrides) - set(known))
    if unknown:
        raise ConfigError(f"{where}: {unknown} are not RunConfig fields; allowed: {', '.join(known)}")
    out = dict(params)
    for name, value in overrides.items():
        if name not in params:
            out[name] = dict(value) if isinstance(value, dict) else value
            continue
        given = params[name]
        if isinstance(given, dict) and isinstance(value, dict):
            clash = sorted(k for k in set(given) & set(value) if given[k] != value[k])
            if clash:
                raise ConfigError(f"{where}[{name!r}] sets {({k: value[k] for k in clash})} but the notebook "
                                  f"sets {name}={({k: given[k] for k in clash})} explicitly; change that parameter")
            out[name] = {**given, **value}
        elif given != value:
            raise ConfigError(f"{where}[{name!r}]={value!r} conflicts with the explicit notebook parameter "
                              f"{name}={given!r}; set {name} through its own parameter, not in {where}")
    return out


def config_from_notebook(params: dict[str, Any], overrides: dict | str | None = None) -> RunConfig:
    """The validated RunConfig a notebook trains: its explicit ``params`` plus ``overrides`` on top.

    One general way to set every recipe field (optimizer, momentum, weight decay, warm-up, schedule,
    backbone_lr, grad_clip, img_size, amp, ...) from any training notebook without a parameter per field:
    see :func:`merge_overrides` for the rules (unknown names and conflicting values raise ConfigError).
    Raises ConfigError from :meth:`RunConfig.validate` for bad values, before any data is loaded.
    """
    return RunConfig.from_dict(merge_overrides(params, overrides)).validate()


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


def random_codes_map(data: ProtocolData, bits: int, topk, seed: int = 0) -> float:
    """mAP of random ±1 codes on the same query/database (the chance level)."""
    from .retrieval import map_at_k

    g = np.random.default_rng(seed)
    q = np.where(g.random((len(data.query), bits)) < 0.5, -1, 1).astype(np.int8)
    d = np.where(g.random((len(data.database), bits)) < 0.5, -1, 1).astype(np.int8)
    return map_at_k(q, d, data.query.labels.numpy(), data.database.labels.numpy(), topk=topk)


def run_metrics(cfg: RunConfig, model: HashModel, data: ProtocolData, topk, qc, dc, ql, dl, ev: dict,
                device) -> dict:
    """The ``metrics.json`` fields every run shares, learned or training-free: names, the evaluation
    ``ev`` (:func:`~hashlib_vit.retrieval.evaluate` of the final codes), the Hamming-radius and rank PR
    curves (computed here from the codes ``qc``/``dc`` and labels ``ql``/``dl``; precision over the
    queries that retrieve something at each radius, ``empty_radius="exclude"``: stored with the run so
    tables and figures need no codes.npz), the random-codes chance level, seeds, and the weights' record."""
    cv = evaluate(qc, dc, ql, dl, topk=topk, curves=True, tie_aware=False, empty_radius="exclude")
    return {
        "method": cfg.method_name(),
        "backbone": cfg.backbone,
        "head": cfg.head,
        "loss": cfg.loss,
        "protocol": cfg.protocol,
        "bits": cfg.bits,
        "topk": "all" if topk is None else int(topk),
        **{k: v for k, v in ev.items() if k != "topk"},
        "curves": {"pr_hamming": cv["pr_hamming"], "pr_rank": cv["pr_rank"], "empty_radius": "exclude"},
        "map_random": random_codes_map(data, cfg.bits, topk, seed=cfg.seed),
        "seed": cfg.seed,
        "split_seed": cfg.split_seed,
        "pretrained": model.backbone.pretrained,
        "weights": {k: model.backbone.weights_info.get(k) for k in ("source", "name", "sha256")},
        "device": str(device),
    }


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
        cfg = RunConfig.from_dict({**asdict(config), **params})
    cfg.validate()
    protocol = PROTOCOLS.get(cfg.protocol)
    dist_info = init_distributed(cfg.device) if env_world_size() > 1 else current()
    device = resolve_device(cfg.device)
    if dist_info.enabled and device.type == "cuda":
        device = torch.device("cuda", dist_info.local_rank)
    run_path = resolve_path(cfg.run_dir) if cfg.run_dir else None
    ckpt_path = run_path / CHECKPOINT_FILE if run_path else None
    resuming = bool(cfg.resume and ckpt_path is not None and ckpt_path.exists())

    if data is None:
        data = protocol.load(cfg.data_root, seed=cfg.split_seed, **cfg.data_options)
    elif data.protocol.name != protocol.name or data.seed != cfg.split_seed:
        raise ConfigError(f"data was loaded for protocol={data.protocol.name!r}, split_seed={data.seed}, but the run "
                          f"asks for protocol={protocol.name!r}, split_seed={cfg.split_seed}")
    topk = protocol.topk if cfg.topk == "protocol" else cfg.topk
    n_db = data.sizes()["database"]
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
        if resuming:
            check_checkpoint(ckpt_path, fingerprint, only_given=True)  # before anything is overwritten
            rd = RunDir(run_path).prepare(overwrite=False)
            for name in ("metrics.json", "codes.npz"):  # a resumed run is not complete until it says so
                rd.file(name).unlink(missing_ok=True)
        else:
            rd = RunDir(run_path).prepare()
            if ckpt_path.exists():
                ckpt_path.unlink()  # a fresh run never resumes an older run's checkpoint
        rd.write_json("config.json", {**asdict(cfg), "resolved_device": str(device),
                                      "world_size": dist_info.world_size})
    if rd:
        env = env_info(device)
        env["split_checksums"] = data.checksums
        env["split_seed"] = cfg.split_seed
        env["protocol"] = protocol.summary()
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
                      device=device, amp_dtype=amp_dtype(cfg.train_config(), device))

    last_eval: dict = {}  # the most recent evaluation, reused when it was made after the last epoch

    def evaluate_now(epoch: int) -> dict:
        t = time.perf_counter()
        qc, ql = codes_of(data.query)
        dc, dl = codes_of(data.database)
        ev = evaluate(qc, dc, ql, dl, topk=topk)
        last_eval.update(epoch=epoch, codes=(qc, ql, dc, dl), ev=ev, seconds=time.perf_counter() - t)
        return last_eval

    def eval_fn(epoch: int) -> dict:
        return {"map": evaluate_now(epoch)["ev"]["map"]}

    t0 = time.perf_counter()
    history = train(train_model, loss, train_batches, cfg.train_config(), device=device,
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
        "train_time_s": round(train_time, 3),
        "resumed_from_step": (history.get("resumed_from") or {}).get("step"),
        "world_size": dist_info.world_size,
        "eval_time_s": round(eval_time, 3),
    }
    if rd:
        if history["evals"]:
            rd.write_json("evals.json", history["evals"])
        if cfg.save_codes:
            rd.write_codes(query_codes=qc, query_labels=ql, db_codes=dc, db_labels=dl)
        rd.write_metrics(metrics)
    return RunResult(cfg, metrics, history, model, data, qc, dc, rd.path if rd else None)


__all__ = ["RunConfig", "RunResult", "config_from_notebook", "data_option_names", "merge_overrides", "run_experiment",
           "random_codes_map", "run_metrics", "transforms_for"]
