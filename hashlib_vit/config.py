"""The one run configuration: :class:`RunConfig`, in sections (data, model, loss, train, eval).

Every notebook, the CLI (``hashlib-vit train``), grid files and method presets set the same fields.
Field names are unique across sections, so each field has a **flat name** (``bits``, ``lr``,
``loss_params``: the vocabulary of DESIGN.md, what notebooks and the CLI use) and a **dotted name**
(``model.bits``, ``train.lr``); ``cfg.lr`` and ``cfg.train.lr`` are the same value. Keys into a dict
field are dotted too: ``loss_params.gamma``, ``model_params.aem``.

Each field carries one fact, its **role** (``field(metadata={"role": ...})``):

* ``"result"`` — changes the trained model (and so every number): a checkpoint resumes only under the
  same values (:meth:`RunConfig.fingerprint`), and tables keep runs that differ in it apart;
* ``"eval"`` — changes only the reported metrics, not the model (``topk``): a run may resume with
  another value, tables keep them apart;
* ``"record"`` — bookkeeping (``run_dir``, ``device``, ``progress``, ``resume``, checkpoint cadence,
  ``save_codes``, ...): never distinguishes two runs, never blocks a resume, is never a sweep axis.

Layers, lowest first: the field defaults here < a method preset (``configs/methods/<name>.yaml``,
:func:`load_preset`) < explicit parameters (a notebook's parameters cell, CLI options) < ``overrides``
(dotted keys, :func:`apply_overrides`). Strings papermill or a shell pass for a list, dict or bool field
are parsed by one rule (:func:`parse_value`, :func:`coerce_field`) or refused with a
:class:`~hashlib_vit.errors.ConfigError` before anything runs. :meth:`RunConfig.validate` is the one
validation; :func:`load_yaml` the one YAML loader.
"""
from __future__ import annotations

import json
import math
from dataclasses import MISSING, Field, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .errors import ConfigError, bad_choice
from .typecheck import parse_value  # the one rule for command-line and papermill text (re-exported)

ROLES = ("result", "eval", "record")
SECTIONS = ("data", "model", "loss", "train", "eval")
DICT_FIELDS = ("data_options", "model_params", "loss_params")
NONE_IS_A_VALUE = ("topk", "run_dir")  # fields where an explicit None is a value, not "not set" (build_config)
OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
SCHEDULES = ("cosine", "constant", "step")
AMP_MODES = ("auto", "bf16", "fp16", "off")


def _f(default: Any, role: str, doc: str) -> Any:
    """A config field: its default, its role (see the module docstring) and a one-line description."""
    assert role in ROLES
    meta = {"role": role, "doc": doc}
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class DataConfig:
    """Which retrieval protocol, where its files are, and how its split is drawn (data/protocols.py)."""

    protocol: str = _f("digits", "result", "retrieval protocol (hashlib_vit.data.PROTOCOLS)")
    data_root: str | None = _f(None, "record", "folder of the data set; None: the protocol's default")
    split_seed: int = _f(0, "result", "seed of the query/train/database split (kept fixed across training seeds)")
    val_per_class: int = _f(0, "result", "items of each class moved from train into a validation split, evaluated "
                            "as val_map against the rest of train (0: none; multi-label: x classes items in all)")
    data_options: dict = _f({}, "result", "further options of the protocol's loader, e.g. {'missing': 'skip'}")


@dataclass
class ModelConfig:
    """Backbone (+ weights) -> head -> ``bits`` hash units (models/)."""

    backbone: str = _f("vit32_tiny", "result", "ViT preset, CNN or timm name (with or without a pretrained tag)")
    head: str = _f("cls_linear", "result", "model family: cls_linear, mgvt, hcl, ... (hashlib_vit.models.MODELS)")
    bits: int = _f(32, "result", "code length b (bits per code)")
    weights: str | None = _f(None, "result", "pretrained weights: a local file, 'hub', or None (from scratch)")
    img_size: int | None = _f(None, "result", "input size in pixels; None: the backbone's")
    model_params: dict = _f({}, "result", "options of the head, e.g. {'groups': 2} (MGVT), {'aem': 'all'}")
    freeze_blocks: int | str = _f(0, "result", "freeze embeddings + the first N blocks (0: none; 'all')")
    feature_cache: bool = _f(False, "result", "train on cached block-N tokens (needs freeze_blocks >= 1)")
    cache_views: int = _f(1, "result", "cached views per training image (1: the un-augmented view)")
    cache_dir: str | None = _f(None, "record", "feature-cache folder; None: <project>/.cache/features")


@dataclass
class LossConfig:
    """The hashing objective (losses/): a registered loss or a training-free method, and its hyper-parameters."""

    loss: str = _f("csq", "result", "loss (hashlib_vit.losses.LOSSES) or training-free method (TRAINING_FREE)")
    loss_params: dict = _f({}, "result", "hyper-parameters of the loss over its registry defaults")


@dataclass
class TrainConfig:
    """Optimisation, schedule, precision, checkpoint and log cadence of the one training loop (train/)."""

    epochs: int = _f(30, "result", "training epochs")
    batch_size: int = _f(32, "result", "global batch (split across processes under torchrun)")
    lr: float = _f(1e-3, "result", "learning rate of the new modules (heads, extra blocks, loss classifiers)")
    backbone_lr: float | None = _f(None, "result", "learning rate of the backbone; None: lr")
    optimizer: str = _f("adamw", "result", "adam | adamw | sgd | rmsprop")
    momentum: float = _f(0.9, "result", "SGD / RMSprop momentum")
    weight_decay: float = _f(1e-4, "result", "weight decay (never on norms, biases, tokens)")
    schedule: str = _f("cosine", "result", "cosine | constant | step (after the linear warm-up)")
    step_epochs: int = _f(30, "result", "schedule='step': multiply lr by step_gamma every step_epochs")
    step_gamma: float = _f(0.1, "result", "schedule='step': the factor")
    warmup_steps: int = _f(50, "result", "linear warm-up steps")
    grad_clip: float | None = _f(None, "result", "clip the global grad norm at this value; None: off")
    divergence_factor: float | None = _f(100.0, "record", "stop training when the loss rises above the lowest loss "
                                         "of the first 10 steps by more than this factor times the size of that "
                                         "loss (at least 1; docs/checks.md); None: off")
    amp: str = _f("auto", "result", "auto (bf16 on CUDA, fp32 on CPU) | bf16 | fp16 | off")
    compile: bool = _f(False, "result", "torch.compile the model")
    seed: int = _f(0, "result", "training seed (initialisation, batch order, augmentation)")
    checkpoint_every_steps: int = _f(0, "record", "write run_dir/checkpoint.pt every N steps (0: off)")
    checkpoint_every_epochs: int = _f(0, "record", "... and/or every N epochs (0: off)")
    resume: bool = _f(False, "record", "continue from run_dir/checkpoint.pt when it exists")
    progress: bool = _f(True, "record", "show progress bars")
    log_every_steps: int = _f(10, "record", "bring the step values to the host and write their log rows every N steps "
                              "(also before checkpoints and at the end of each epoch)")

    def validate(self) -> "TrainConfig":
        """Check the training settings; raises ConfigError naming the field, its value and what is allowed."""
        for name in ("epochs", "batch_size", "step_epochs", "log_every_steps"):
            _int_at_least(name, getattr(self, name), 1)
        if self.batch_size < 2:
            raise ConfigError(f"batch_size={self.batch_size!r} must be an integer >= 2 (pair losses need pairs)")
        for name in ("checkpoint_every_steps", "checkpoint_every_epochs", "warmup_steps"):
            _int_at_least(name, getattr(self, name), 0, "(0: off)")
        _int_at_least("seed", self.seed, 0)
        _at_most_seed("seed", self.seed)
        _positive("lr", self.lr)
        if self.backbone_lr is not None:
            _positive("backbone_lr", self.backbone_lr, ", or None (the same as lr)")
        if self.grad_clip is not None:
            _positive("grad_clip", self.grad_clip, ", or None (off)")
        if self.divergence_factor is not None:
            _positive("divergence_factor", self.divergence_factor, ", or None (no divergence check)")
        for name in ("momentum", "weight_decay"):
            v = getattr(self, name)
            if not _is_number(v) or v < 0:
                raise ConfigError(f"{name}={v!r} must be a finite number >= 0")
        if not _is_number(self.step_gamma) or not 0 < self.step_gamma <= 1:
            raise ConfigError(f"step_gamma={self.step_gamma!r} must be a number in (0, 1]")
        if self.optimizer not in OPTIMIZERS:
            raise bad_choice("optimizer", self.optimizer, OPTIMIZERS)
        if self.schedule not in SCHEDULES:
            raise bad_choice("schedule", self.schedule, SCHEDULES)
        if self.amp not in AMP_MODES:
            raise bad_choice("amp", self.amp, AMP_MODES)
        for name in ("compile", "resume", "progress"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name}={getattr(self, name)!r} must be true or false")
        return self

    @property
    def checkpointing(self) -> bool:
        return bool(self.checkpoint_every_steps or self.checkpoint_every_epochs)


@dataclass
class EvalConfig:
    """How the final codes are evaluated (retrieval/engine.py); the last epoch is always the reported one."""

    topk: int | str | None = _f("protocol", "eval", "mAP cut-off K: 'protocol' (its K), an integer, or None (all)")
    eval_every: int = _f(0, "record", "also evaluate every N epochs (0: only after the last)")
    eval_batch_size: int = _f(256, "record", "images per encoding batch")
    save_codes: bool = _f(True, "record", "write codes.npz to the run directory")
    code_stats: bool = _f(False, "record", "also write diagnostics.json: code statistics of the outputs (collapse)")


_SECTION_TYPES = {"data": DataConfig, "model": ModelConfig, "loss": LossConfig, "train": TrainConfig,
                  "eval": EvalConfig}


@dataclass(init=False)
class RunConfig:
    """One run's configuration: run-level fields plus the five sections.

    Construct from flat names (``RunConfig(bits=16, lr=3e-4)``, ``RunConfig.from_dict({...})``), sections
    (``{"train": {"lr": 3e-4}}``) or dotted keys (``{"train.lr": 3e-4, "loss_params.gamma": 5}``);
    read and write either way (``cfg.lr`` is ``cfg.train.lr``; ``cfg.loss`` is the loss *name* — the
    section is ``cfg.objective``, see :attr:`sections`). :meth:`to_dict` gives the sectioned form
    written to ``config.json``; :func:`flatten` reads both it and the flat files of older runs.
    """

    method: str | None = _f(None, "record", "display name in tables; default: from head and loss")
    device: str = _f("auto", "record", "auto | cpu | cuda | cuda:N")
    run_dir: str | None = _f("results/runs/latest", "record", "run directory (relative: from the project root)")
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    objective: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __init__(self, **params: Any) -> None:
        for f in fields(self):
            object.__setattr__(self, f.name, f.default_factory() if f.default is MISSING else f.default)
        plain = {}
        for key, value in params.items():
            section = _SECTION_OF_ATTR.get(key, key)
            if section in _SECTION_TYPES and isinstance(value, _SECTION_TYPES[section]):
                object.__setattr__(self, _ATTR[section], replace(value))
            else:
                plain[section if section in _SECTION_TYPES and isinstance(value, dict) else key] = value
        for key, value in normalize(plain).items():
            setattr(self, key, value)

    # -- flat access -------------------------------------------------------------------------------
    def __getattr__(self, name: str) -> Any:  # only called when normal lookup fails: the flat names
        owner = _FLAT.get(name)
        if owner is None or owner[0] is None:
            raise AttributeError(f"RunConfig has no field {name!r}")
        return getattr(object.__getattribute__(self, _ATTR[owner[0]]), name)

    def __setattr__(self, name: str, value: Any) -> None:
        owner = _FLAT.get(name)
        if owner is not None and owner[0] is not None:
            setattr(getattr(self, _ATTR[owner[0]]), name, value)
        else:
            object.__setattr__(self, name, value)

    @property
    def sections(self) -> dict[str, Any]:
        """``{"data": DataConfig, "model": ..., "loss": LossConfig, "train": ..., "eval": ...}``."""
        return {s: getattr(self, _ATTR[s]) for s in SECTIONS}

    # -- construction ------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, params: dict[str, Any] | None = None, **more: Any) -> "RunConfig":
        """A RunConfig from flat, sectioned or dotted keys (later keys win; dict fields merge per key).

        Raises ConfigError for an unknown name (with the close matches) and for a string that cannot
        be parsed for a list/dict/bool field (:func:`coerce_field`). Values are not validated here:
        call :meth:`validate`.
        """
        return cls(**normalize({**(params or {}), **more}))

    def to_dict(self) -> dict[str, Any]:
        """The sectioned form (``config.json``): run-level fields, then one mapping per section."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in _ATTR.values()}
        out.update({s: asdict(sec) for s, sec in self.sections.items()})
        return out

    def flat(self) -> dict[str, Any]:
        """Every field under its flat name."""
        return {name: getattr(self, name) for name in _FLAT}

    def replace(self, **changes: Any) -> "RunConfig":
        """A copy with ``changes`` (flat, sectioned or dotted keys) applied."""
        return RunConfig.from_dict({**self.flat(), **changes})

    def train_config(self) -> TrainConfig:
        """The training section (the same object: not a copy)."""
        return self.train

    # -- the one validation ------------------------------------------------------------------------
    def validate(self) -> "RunConfig":
        """Check every name and value before any data is loaded, any model built or any file written.

        Raises ConfigError naming the field, the value and what is allowed.
        """
        from .data import PROTOCOLS
        from .losses import LOSSES, TRAINING_FREE
        from .models import MODELS, resolve_model
        from .models.backbones import check_backbone_name

        if self.protocol not in PROTOCOLS:
            raise bad_choice("protocol", self.protocol, PROTOCOLS.names())
        if self.loss not in LOSSES and self.loss not in TRAINING_FREE:
            raise bad_choice("loss", self.loss, LOSSES.names() + TRAINING_FREE.names())
        if self.head not in MODELS:
            raise bad_choice("head", self.head, MODELS.names())
        check_backbone_name(self.backbone)  # presets, CNNs, timm names with or without a pretrained tag
        _int_at_least("bits", self.bits, 1)
        _int_at_least("split_seed", self.split_seed, 0)
        _at_most_seed("split_seed", self.split_seed)
        _int_at_least("val_per_class", self.val_per_class, 0, "(0: no validation split)")
        if self.method is not None and not isinstance(self.method, str):
            raise ConfigError(f"method={self.method!r} must be a display name (a string) or None (from head and loss)")
        _int_at_least("eval_every", self.eval_every, 0, "(0: only after the last epoch)")
        _int_at_least("eval_batch_size", self.eval_batch_size, 1)
        if self.img_size is not None:
            _int_at_least("img_size", self.img_size, 8, "or None (the backbone's)")
        if self.topk not in ("protocol", None):
            _int_at_least("topk", self.topk, 1, "or 'protocol' (the protocol's cut-off) or None (whole database)")
        for name in DICT_FIELDS:
            if not isinstance(getattr(self, name), dict):
                raise ConfigError(f"{name}={getattr(self, name)!r} must be a mapping of name -> value")
        for name in ("save_codes", "code_stats", "feature_cache"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name}={getattr(self, name)!r} must be true or false")
        if self.device not in ("auto", "cpu") and not str(self.device).startswith("cuda"):
            raise bad_choice("device", self.device, ("auto", "cpu", "cuda", "cuda:N"))
        self._validate_data_options()
        self.train.validate()
        self._validate_loss(LOSSES, TRAINING_FREE)
        resolve_model(self.head, self.bits, self.model_params, self.backbone)  # head, model_params, bits, backbone
        if (self.resume or self.train.checkpointing) and not self.run_dir:
            raise ConfigError("checkpoint_every_steps / checkpoint_every_epochs / resume need a run_dir "
                              "(the checkpoint is run_dir/checkpoint.pt)")
        self._validate_partial()
        return self

    def _validate_data_options(self) -> None:
        allowed = data_option_names(self.protocol)
        unknown = sorted(set(self.data_options) - set(allowed))
        if unknown:
            raise ConfigError(f"data_options {unknown} are not options of protocol={self.protocol!r}'s loader; "
                              f"allowed: {list(allowed)}")

    def _validate_loss(self, LOSSES, TRAINING_FREE) -> None:
        if self.loss in TRAINING_FREE:  # LSH / PCA / ITQ (losses/training_free.py): params, head, bits <= D
            from .losses.training_free import check_training_free_config

            check_training_free_config(self)
            return
        allowed = LOSSES.get(self.loss).defaults
        unknown = sorted(set(self.loss_params) - set(allowed))
        if unknown:
            raise ConfigError(f"loss_params {unknown} are not hyper-parameters of loss={self.loss!r}; "
                              f"allowed: {sorted(allowed)}")

    def _validate_partial(self) -> None:
        """freeze_blocks / feature_cache / cache_views, checked before any data or weights are loaded."""
        from .losses import LOSSES
        from .models.aem import parse_aem
        from .models.partial import check_freeze_config

        n = check_freeze_config(self.backbone, self.head, self.freeze_blocks, self.img_size)
        _int_at_least("cache_views", self.cache_views, 1, "(1: the un-augmented view)")
        if not self.feature_cache:
            return
        if n == 0:
            raise ConfigError("feature_cache=True needs freeze_blocks >= 1 (the cached tokens are those after "
                              "the frozen blocks)")
        if parse_aem(self.model_params.get("aem", "off")):
            raise ConfigError(f"feature_cache=True is not possible with model_params aem="
                              f"{self.model_params['aem']!r}: AEM sits before the frozen blocks and trains, so the "
                              "tokens after block N change; use feature_cache=False (freezing alone works)")
        if self.loss in LOSSES:
            n_views = {**LOSSES.get(self.loss).defaults, **self.loss_params}.get("n_views", 1)
            if n_views > self.cache_views:
                raise ConfigError(f"loss {self.loss!r} with n_views={n_views} needs cache_views >= {n_views} "
                                  f"(distinct views of each image per batch); got cache_views={self.cache_views}")

    # -- what identifies a run -----------------------------------------------------------------------
    def fingerprint(self) -> dict:
        """The flat fields a checkpoint must agree on to be resumed: every field whose role is "result".

        The partial fine-tuning fields count only when set, so checkpoints written before they existed
        still resume.
        """
        unset = {"freeze_blocks": 0, "feature_cache": False, "cache_views": 1, "val_per_class": 0}
        return {k: v for k, v in self.flat().items()
                if field_role(k) == "result" and not (k in unset and v == unset[k])}

    def method_name(self) -> str:
        """The display name in tables: ``method``, else the loss (``loss+head`` for other heads)."""
        if self.method:
            return self.method
        return self.loss if self.head == "cls_linear" else f"{self.loss}+{self.head}"


# the section attribute of each section name ("loss" is stored as .objective: cfg.loss is the loss name)
_ATTR = {"data": "data", "model": "model", "loss": "objective", "train": "train", "eval": "eval"}
_SECTION_OF_ATTR = {attr: section for section, attr in _ATTR.items()}  # "objective" -> "loss"
# flat name -> (section or None for run-level fields, dataclass Field)
_FLAT: dict[str, tuple[str | None, Field]] = {}
for _f_ in fields(RunConfig):
    if _f_.name not in _ATTR.values():
        _FLAT[_f_.name] = (None, _f_)
for _s, _t in _SECTION_TYPES.items():
    for _f_ in fields(_t):
        assert _f_.name not in _FLAT, f"field name {_f_.name!r} is defined twice"
        _FLAT[_f_.name] = (_s, _f_)
del _f_, _s, _t


def field_names() -> list[str]:
    """Every flat field name, run-level fields first, then by section."""
    return list(_FLAT)


def field_info(name: str) -> dict[str, Any]:
    """``{"name", "section", "dotted", "type", "default", "role", "doc"}`` of a flat or dotted field name.

    A dotted key into a dict field (``loss_params.gamma``) gives that dict field's record. Raises
    ConfigError for an unknown name, listing close matches.
    """
    flat = _resolve_name(name)[0]
    section, f = _FLAT[flat]
    default = f.default if f.default is not MISSING else f.default_factory()
    return {"name": flat, "section": section, "dotted": f"{section}.{flat}" if section else flat,
            "type": str(f.type), "default": default, "role": f.metadata["role"], "doc": f.metadata["doc"]}


def field_role(name: str) -> str:
    """``"result"``, ``"eval"`` or ``"record"`` (see the module docstring) of a flat or dotted name.

    Raises ConfigError for an unknown name.
    """
    return field_info(name)["role"]


def fields_with_role(*roles: str) -> list[str]:
    """The flat names of the fields whose role is one of ``roles``."""
    return [n for n, (_, f) in _FLAT.items() if f.metadata["role"] in roles]


def _resolve_name(key: str) -> tuple[str, str | None]:
    """``(flat field name, key inside a dict field or None)`` of a flat, sectioned or dotted key."""
    parts = str(key).split(".")
    if parts[0] in _ATTR and len(parts) > 1:  # "train.lr", "loss.loss_params.gamma"
        section, parts = parts[0], parts[1:]
        if parts[0] not in _FLAT or _FLAT[parts[0]][0] != section:
            _unknown(key, parts[0])
    if parts[0] not in _FLAT:
        _unknown(key, parts[0])
    if len(parts) == 1:
        return parts[0], None
    if parts[0] not in DICT_FIELDS or len(parts) != 2 or not parts[1]:
        raise ConfigError(f"{key!r}: only the mapping fields {list(DICT_FIELDS)} take a dotted key "
                          f"(e.g. 'loss_params.gamma'); {parts[0]!r} is a plain field")
    return parts[0], parts[1]


def _unknown(key: str, part: str):
    import difflib

    close = difflib.get_close_matches(part, list(_FLAT), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise ConfigError(f"unknown parameter {key!r}: not a configuration field{hint} (fields: {', '.join(_FLAT)}; sections: "
                      f"{', '.join(SECTIONS)}; dict fields take dotted keys such as 'loss_params.gamma')")


def normalize(params: dict[str, Any], *, where: str = "parameters") -> dict[str, Any]:
    """Flat ``{field: value}`` from flat, sectioned (``{"train": {...}}``) and dotted keys, in order.

    Dotted keys into dict fields merge into that field (``loss_params.gamma`` after ``loss_params``
    updates one key); strings for list/dict/bool/number fields are parsed by :func:`coerce_field`.
    Raises ConfigError for unknown names and unparseable values.
    """
    if not isinstance(params, dict):
        raise ConfigError(f"{where} must be a mapping of field -> value, got {type(params).__name__}")
    out: dict[str, Any] = {}
    for key, value in params.items():
        if key in _ATTR and isinstance(value, dict):  # a whole section ("loss" the field is a string)
            for k, v in value.items():
                _put(out, f"{key}.{k}", v, where)
        elif key in _ATTR and key not in _FLAT:
            raise ConfigError(f"{where}[{key!r}] is a section and must be a mapping, got {value!r}")
        else:
            _put(out, key, value, where)
    return out


def _put(out: dict, key: str, value: Any, where: str) -> None:
    name, sub = _resolve_name(key)
    if sub is None:
        value = coerce_field(name, value, where=where)
        out[name] = dict(value) if isinstance(value, dict) else value
    else:
        out[name] = {**out.get(name, _FLAT[name][1].default_factory()), sub: value}


def coerce_field(name: str, value: Any, *, where: str = "parameters") -> Any:
    """``value`` for field ``name``, with a string parsed when the field holds a mapping or a bool.

    Papermill (``-p loss_params '{...}'``, ``-r compile True``) and shells pass dicts and bools as
    strings; for a dict or bool field they are parsed by :func:`parse_value` and refused (ConfigError
    naming the field, the text and the expected type) when the parse does not give that type. "None"
    / "null" is None for a field that may be None. Other values pass unchanged (numbers arrive parsed
    from papermill and the CLI; :meth:`RunConfig.validate` names a wrong type).
    """
    if not isinstance(value, str):
        return value
    kinds = {t.strip() for t in str(_FLAT[name][1].type).split("|")}
    if "None" in kinds and value.strip() in ("None", "null"):
        return None
    if not kinds & {"dict", "bool"}:  # numbers and names stay as given (validate() names a wrong type)
        return value
    parsed = parse_value(value)
    if (isinstance(parsed, dict) and "dict" in kinds) or (isinstance(parsed, bool) and "bool" in kinds) \
            or (isinstance(parsed, str) and "str" in kinds) or (isinstance(parsed, int) and "int" in kinds):
        return parsed
    raise ConfigError(f"{where}: {name}={value!r} is a string that does not parse as {_FLAT[name][1].type} "
                      f"(write e.g. {_example(kinds)})")


def _example(kinds: set[str]) -> str:
    if "dict" in kinds:
        return "'{\"key\": 1}'"
    if "bool" in kinds:
        return "true or false"
    return "a number"


def apply_overrides(params: dict[str, Any], overrides: dict | str | None, *,
                    where: str = "overrides") -> dict[str, Any]:
    """``params`` (explicit values) with ``overrides`` (flat, sectioned or dotted keys) on top.

    ``overrides`` may be a mapping or its YAML/JSON text (``papermill -p overrides '{...}'``). A key
    into a dict field updates one entry (``loss_params.gamma``). An override that contradicts an
    explicit parameter of a different value raises ConfigError naming both (set it through that
    parameter); unknown names raise ConfigError with close matches. Returns a new flat dict.
    """
    if isinstance(overrides, str):
        parsed = parse_value(overrides) if overrides.strip() else {}
        if not isinstance(parsed, dict):
            raise ConfigError(f"{where}={overrides!r} is not a YAML/JSON mapping of field -> value")
        overrides = parsed
    overrides = {} if overrides is None else overrides
    if not isinstance(overrides, dict):
        raise ConfigError(f"{where}={overrides!r} must be a mapping of field -> value")
    given = normalize(params, where="parameters")
    extra = normalize(overrides, where=where)
    out = dict(given)
    for name, value in extra.items():
        if name not in given:
            out[name] = value
            continue
        mine = given[name]
        if isinstance(mine, dict) and isinstance(value, dict):
            clash = sorted(k for k in set(mine) & set(value) if mine[k] != value[k])
            if clash:
                raise ConfigError(f"{where}[{name!r}] sets {({k: value[k] for k in clash})} but the parameters "
                                  f"set {name}={({k: mine[k] for k in clash})} explicitly; change that parameter")
            out[name] = {**mine, **value}
        elif mine != value:
            raise ConfigError(f"{where}[{name!r}]={value!r} conflicts with the explicit parameter {name}={mine!r}; "
                              f"set {name} through its own parameter, not in {where}")
    return out


def load_yaml(path: str | Path, *, what: str = "YAML file") -> dict[str, Any]:
    """The one YAML loader: a mapping from ``path`` (config files, presets, grid files).

    Raises ConfigError naming the file when it is missing, not valid YAML (with the line), or not a
    mapping. An empty file gives ``{}``.
    """
    import yaml

    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{what} {str(p)!r} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"{what} {str(p)!r} is a directory, not a file") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{what} {str(p)!r} is not valid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{what} {str(p)!r} must hold a mapping of name: value, got {type(data).__name__}")
    return data


def presets_dir() -> Path:
    """``configs/methods`` of the project (where the method presets live)."""
    from .utils import project_root

    root = project_root() or Path.cwd()
    return root / "configs" / "methods"


def preset_names() -> list[str]:
    """The method presets there are (``configs/methods/*.yaml`` stems)."""
    d = presets_dir()
    return sorted(p.stem for p in d.glob("*.yaml")) if d.is_dir() else []


def load_preset(name: str | None) -> dict[str, Any]:
    """A method preset's fields (flat), from ``configs/methods/<name>.yaml`` or a path to a YAML file.

    A preset gives a method's defaults (head, loss, their params, the training recipe); it sits above
    the field defaults and below explicit parameters. ``None`` gives ``{}``. Raises ConfigError for an
    unknown preset (listing those that exist) and for unknown field names inside it.
    """
    if name is None or name == "":
        return {}
    path = Path(name) if str(name).endswith((".yaml", ".yml")) else presets_dir() / f"{name}.yaml"
    if not path.is_file():
        raise bad_choice("preset", name, preset_names())
    return normalize(load_yaml(path, what="method preset"), where=f"preset {str(path)!r}")


def build_config(params: dict[str, Any] | None = None, *, preset: str | None = None,
                 overrides: dict | str | None = None) -> RunConfig:
    """The validated RunConfig of: field defaults < ``preset`` < ``params`` < ``overrides``.

    This is how notebooks and the CLI make their configuration (one rule for all): ``params`` are the
    explicit parameters (flat names; a None value for a field the preset sets means "the preset's"),
    ``overrides`` any further fields by flat, sectioned or dotted key. A parameter given as None means
    "not set" (the preset's value, else the default), except for the fields in ``NONE_IS_A_VALUE``
    (``topk=None``: rank the whole database; ``run_dir=None``: write nothing); an override of None is
    always the value None. Raises ConfigError for unknown
    names, unparseable strings, conflicts between overrides and explicit parameters, and bad values —
    all before any data is loaded or any file written.
    """
    base = load_preset(preset)
    explicit = {k: v for k, v in normalize(params or {}).items() if v is not None or k in NONE_IS_A_VALUE}
    explicit = apply_overrides(explicit, overrides)
    layered = dict(base)
    for k, v in explicit.items():
        layered[k] = {**base[k], **v} if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return RunConfig.from_dict(layered).validate()


def flatten(config: dict[str, Any]) -> dict[str, Any]:
    """Flat ``{field: value}`` of a ``config.json`` dict, sectioned (this version) or flat (older runs).

    Keys that are not configuration fields (``resolved_device``, ``world_size``) are kept as they are.
    """
    out: dict[str, Any] = {}
    for k, v in config.items():
        if k in _ATTR and isinstance(v, dict):
            out.update(v)
        else:
            out[k] = v
    return out


def data_option_names(protocol: str) -> tuple[str, ...]:
    """The keyword options a protocol's loader takes besides data_root and seed (``data_options``)."""
    import inspect

    from .data import PROTOCOLS

    params = inspect.signature(PROTOCOLS.get(protocol).loader).parameters.values()
    return tuple(p.name for p in params if p.kind is p.KEYWORD_ONLY or (
        p.kind is p.POSITIONAL_OR_KEYWORD and p.name not in ("protocol", "data_root", "seed")))


def describe() -> str:
    """A Markdown table of every field: dotted name, default, role and description (docs/configuration.md)."""
    rows = ["| field | default | role | meaning |", "|---|---|---|---|"]
    for name in _FLAT:
        info = field_info(name)
        rows.append(f"| `{info['dotted']}` | `{json.dumps(info['default'])}` | {info['role']} | {info['doc']} |")
    return "\n".join(rows)


# -- small checks -----------------------------------------------------------------------------------
def _is_number(v: Any) -> bool:
    """A finite int or float (not a bool, NaN or infinity)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _int_at_least(name: str, v: Any, lo: int, note: str = "") -> None:
    if not isinstance(v, int) or isinstance(v, bool) or v < lo:
        raise ConfigError(f"{name}={v!r} must be an integer >= {lo}{' ' + note if note else ''}")


#: The largest seed: numpy's generators take seeds below 2**32 (torch's below 2**64).
MAX_SEED = 2**32 - 1


def _at_most_seed(name: str, v: int) -> None:
    if v > MAX_SEED:
        raise ConfigError(f"{name}={v!r} must be an integer in 0..{MAX_SEED} (2**32 - 1, the largest seed numpy takes)")


def _positive(name: str, v: Any, note: str = "") -> None:
    if not _is_number(v) or v <= 0:
        raise ConfigError(f"{name}={v!r} must be a positive finite number{note}")


__all__ = ["RunConfig", "DataConfig", "ModelConfig", "LossConfig", "TrainConfig", "EvalConfig", "ROLES",
           "SECTIONS", "apply_overrides", "build_config", "coerce_field", "data_option_names", "describe",
           "field_info", "field_names", "field_role", "fields_with_role", "flatten", "load_preset", "load_yaml",
           "normalize", "parse_value", "preset_names", "presets_dir"]
