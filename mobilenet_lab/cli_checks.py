"""Checks of a parsed ``fit``/``test``/... config before anything is built: one line per mistake."""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

import torch

from .checkpoint import saved_description
from .classifier import architecture_diff
from .errors import UserError
from .run_layout import RunCheckpoint
from .versions import description_of

__all__ = ["check_model", "check_devices", "check_writable", "check_same_architecture", "import_model_class"]


def import_model_class(model: Any) -> type | None:
    if model is None or not getattr(model, "class_path", None):
        return None
    module_name, _, class_name = model.class_path.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), class_name, None)
    except ImportError:
        return None


def check_same_architecture(model: Any, checkpoint: dict[str, Any], ckpt_path: str) -> None:
    """The config's model must be the checkpoint's: LightningCLI would otherwise silently take the latter.

    Compares the checkpoint's model description with the one the config builds.
    """
    cls = import_model_class(model)
    try:
        saved = saved_description(checkpoint)
        ours = description_of(cls, dict(model.get("init_args") or {})) if cls is not None else None
    except ValueError:
        return  # _check_model / the module reports a bad config; a bad checkpoint fails on load
    if saved is None or ours is None:
        return
    # num_classes is linked from the data module after this check: compare the rest.
    diffs = [
        d
        for d in architecture_diff(saved, ours)
        if not d.startswith("num_classes:") or (model.get("init_args") or {}).get("num_classes") is not None
    ]
    if saved.name != ours.name:
        diffs = [f"model: checkpoint {saved.name} vs config {ours.name}"]
    if diffs:
        raise UserError(
            f"{ckpt_path} does not match the config ({'; '.join(diffs)}); use the config the "
            "checkpoint was trained with, or leave out --config to take everything from the checkpoint"
        )


def check_model(model: Any) -> None:
    """Validates the network options with the model description's own checks, before anything is built."""
    cls = import_model_class(model)
    if cls is None or not isinstance(getattr(cls, "model_name", None), str) or not cls.model_name:
        return
    try:
        description_of(cls, {k: v for k, v in (model.get("init_args") or {}).items() if k != "num_classes"})
    except ValueError as err:
        raise UserError(f"model: {err}") from None


def check_devices(trainer: Any) -> None:
    """GPU asked on a machine without one, or more devices than exist: say so before starting."""
    if trainer is None:
        return
    accelerator, devices = str(trainer.get("accelerator") or "auto"), trainer.get("devices", "auto")
    count = None
    if isinstance(devices, int):
        count = devices
    elif isinstance(devices, str) and devices.isdigit():
        count = int(devices)
    elif isinstance(devices, (list, tuple)):
        count = len(devices)
    if accelerator in ("gpu", "cuda"):
        available = torch.cuda.device_count()
        if available == 0:
            raise UserError(
                f"trainer.accelerator={accelerator} but no CUDA GPU is available here; "
                "use --trainer.accelerator cpu (or --config configs/trainer/cpu.yaml)"
            )
        if count is not None and count > available:
            raise UserError(
                f"trainer.devices={count} but only {available} GPU(s) are available; "
                f"use --trainer.devices {available} (or -1 for all)"
            )
    if trainer.get("sync_batchnorm") and accelerator not in ("gpu", "cuda", "auto"):
        raise UserError(
            f"trainer.sync_batchnorm works on GPUs only (accelerator={accelerator}); "
            "use --trainer.sync_batchnorm false on the CPU"
        )
    if trainer.get("sync_batchnorm") and accelerator == "auto" and not torch.cuda.is_available():
        raise UserError(
            "trainer.sync_batchnorm works on GPUs only and none is available here; use --trainer.sync_batchnorm false"
        )
    if accelerator == "cpu" and count is not None and count > (os.cpu_count() or 1):
        raise UserError(
            f"trainer.devices={count} CPU processes but this machine has {os.cpu_count()} cores; "
            "use fewer (each process trains a shard of every batch)"
        )


def check_writable(trainer: Any) -> None:
    folders = []
    if trainer.logger is not None and getattr(trainer.logger, "save_dir", None):
        folders.append(Path(trainer.logger.save_dir))
    folders += [Path(cb.root) for cb in trainer.callbacks if isinstance(cb, RunCheckpoint)]
    for folder in folders:
        probe = folder
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        if not probe.is_dir() or not os.access(probe, os.W_OK):
            raise UserError(
                f"cannot write to {folder} ({probe} is not writable); choose another folder or fix its permissions"
            )
