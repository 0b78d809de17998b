"""A trained model back from its run directory: ``config.json`` + ``env.json`` + ``checkpoint.pt``.

``run_experiment`` writes the run's resolved configuration (``config.json``), where its weights and input
normalisation came from (``env.json`` ``weights_info``) and, when checkpointing is on, the model's state
(``checkpoint.pt``, :mod:`hashlib_vit.train`). :func:`load_run_model` rebuilds the same
``backbone -> neck -> hash layers`` from the configuration (no weights file needed: every parameter comes
from the checkpoint) and loads the state, so ``encode`` gives the run's codes again. State dicts written
before the neck composition load too (:func:`~hashlib_vit.models.hashmodel.upgrade_state_dict`).
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from ..errors import DataError
from ..models import HashModel, build_model

CHECKPOINT_FILE = "checkpoint.pt"


def model_state(state: dict) -> dict:
    """The HashModel state dict inside a checkpoint's ``"model"`` entry: the prefix ``model.`` of a model
    trained through ``models.partial.PartialModel`` (``freeze_blocks``) is removed."""
    if state and all(k.startswith("model.") for k in state):
        return {k[len("model."):]: v for k, v in state.items()}
    return dict(state)


def load_run_model(run_dir: str | os.PathLike, *, checkpoint: str | os.PathLike | None = None) -> HashModel:
    """Rebuild the model of a run directory and load its trained state; returns it in eval mode on the CPU.

    ``run_dir``: a directory written by :func:`hashlib_vit.experiment.run_experiment` with checkpointing on
    (``checkpoint_every_epochs`` / ``checkpoint_every_steps``); ``checkpoint``: another checkpoint file
    (default ``run_dir/checkpoint.pt``). The model is built by :func:`hashlib_vit.models.build_model` from
    ``config.json`` (backbone, bits, head, img_size, model_params; no pretrained weights are read) with the
    input mean/std of ``env.json``'s ``weights_info``, then loads the checkpoint's ``"model"`` state
    strictly. Raises :class:`DataError` naming the file when the directory has no ``config.json`` or no
    checkpoint, or the state does not fit the configuration.
    """
    from .rundir import RunDir
    from ..train import load_checkpoint

    rd = RunDir(run_dir)
    cfg = rd.config()
    ckpt_path = Path(checkpoint) if checkpoint is not None else rd.file(CHECKPOINT_FILE)
    if not ckpt_path.is_file():
        raise DataError(f"{ckpt_path} does not exist: run {rd.path} kept no checkpoint (train it with "
                        "checkpoint_every_epochs >= 1 to reload its model)")
    ckpt = load_checkpoint(ckpt_path)
    model = build_model(cfg["backbone"], cfg["bits"], cfg["head"], img_size=cfg.get("img_size"), weights=None,
                        **(cfg.get("model_params") or {}))
    info = rd.env().get("weights_info", {}) if rd.file("env.json").is_file() else {}
    if info.get("mean") and info.get("std"):
        model.backbone.mean, model.backbone.std = tuple(info["mean"]), tuple(info["std"])
        model.mean.copy_(torch.tensor(info["mean"]).view(1, 3, 1, 1))
        model.std.copy_(torch.tensor(info["std"]).view(1, 3, 1, 1))
    try:
        model.load_state_dict(model_state(ckpt["model"]), strict=True)
    except RuntimeError as err:
        raise DataError(f"checkpoint {ckpt_path} does not fit the model of {rd.file('config.json')} "
                        f"(head={cfg['head']!r}, backbone={cfg['backbone']!r}): {str(err).splitlines()[0]}") from None
    return model.eval()


__all__ = ["load_run_model", "model_state"]
