"""Reading checkpoints without Lightning: the safe loader and the model description they carry.

``load_model`` (inference) and the CLI read checkpoints through here, so neither needs more than
``torch`` to open one.
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from .errors import CheckpointError
from .models import ModelDescription

__all__ = ["safe_load_checkpoint", "saved_description", "averaged_weights", "DESCRIPTION_KEY", "WEIGHTS_KEY"]

#: Where a checkpoint keeps its network's ``ModelDescription.to_dict()``: checkpoint[KEY[0]][KEY[1]].
DESCRIPTION_KEY = ("mobilenet_lab", "model_config")
#: Where a checkpoint says its ``state_dict`` is an average of the weights (``mobilenet_lab.ema.EMA``).
WEIGHTS_KEY = "mobilenet_lab_weights"


def saved_description(checkpoint: dict[str, Any]) -> ModelDescription | None:
    """The checkpoint's ModelDescription (None if it has none); older, partial dicts take the defaults.

    Raises:
        ValueError: the stored description is not valid.
    """
    saved = (checkpoint.get(DESCRIPTION_KEY[0]) or {}).get(DESCRIPTION_KEY[1])
    return ModelDescription.from_dict(saved) if saved else None


def averaged_weights(checkpoint: dict[str, Any]) -> str | None:
    """What averaged the checkpoint's ``state_dict`` ("EMA of the weights (decay 0.999, 720 updates)"), else None.

    Lightning's ``WeightAveraging`` saves the average as ``state_dict`` and the live weights as
    ``current_model_state``; :class:`mobilenet_lab.ema.EMA` also records its settings.
    """
    if "averaging_state" not in checkpoint:
        return None
    info = checkpoint.get(WEIGHTS_KEY) or {}
    updates = info.get("updates", checkpoint["averaging_state"].get("n_averaged"))
    updates = f"{int(updates)} updates" if updates is not None else "averaged"
    if info.get("kind") == "ema":
        return f"EMA of the weights (decay {info.get('decay')}, {updates})"
    return f"averaged weights (Lightning WeightAveraging, {updates})"


def safe_load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """Loads a checkpoint with ``weights_only=True``: tensors and plain containers only, no code runs.

    Raises:
        CheckpointError: missing, truncated, not a checkpoint, or refused by the safe loader.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint {path} does not exist; pass the path of a .ckpt file "
            "(runs write them under checkpoints/<run name>/<version>/)"
        )

    def not_readable(why: str = "") -> CheckpointError:
        return CheckpointError(
            f"{path} is not a readable checkpoint (truncated or not a PyTorch file{why}); "
            "use another checkpoint, e.g. last.ckpt of the run"
        )

    if not _looks_like_torch_file(path):
        raise not_readable()
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        # The safe unpickler names the global it refused ("unsupported GLOBAL posix.system"); any
        # other unpickling error means the bytes are not a (complete) pickle at all.
        refused = re.search(r"GLOBAL ([\w.]+)", str(err))
        if refused is None:
            raise not_readable(": not a valid pickle") from None
        raise CheckpointError(
            f"refusing to load {path}: it holds objects other than tensors and plain "
            f"containers, which could run code (it references {refused.group(1)})"
        ) from None
    except Exception as err:  # noqa: BLE001 - RuntimeError, EOFError, KeyError...: all mean "not readable"
        raise not_readable(f": {type(err).__name__}") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"{path} is a PyTorch file but not a Lightning checkpoint (no state_dict)")
    return checkpoint


def _looks_like_torch_file(path: Path) -> bool:
    """``torch.save`` writes a zip archive (PyTorch >= 1.6) or, in the legacy format, a pickle (PROTO opcode)."""
    if zipfile.is_zipfile(path):
        return True
    with open(path, "rb") as f:
        return f.read(1) == b"\x80"
