"""``load_model``: a trained checkpoint as a deployable ``nn.Module`` with its preprocessing inside."""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from torch import nn

from .checkpoint import averaged_weights, safe_load_checkpoint, saved_description
from .data.normalize import normalize
from .errors import CheckpointError
from .models import create_model

__all__ = ["Classifier", "load_model"]


class Classifier(nn.Module):
    """Normalisation + network: float32 RGB in [0, 1], N x 3 x H x W, to logits.

    Attributes:
        class_names: Name of each output class.
        image_size: The side the network was trained at (feed images resized to it).
        mean, std: The per-channel normalisation applied inside.
        config: The network's ModelDescription as a plain dict (``create_model(**config)``).
        weights: Which weights the network holds: "trained weights", or the average a fit saved
            instead (e.g. "EMA of the weights (decay 0.999, 720 updates)").
    """

    def __init__(
        self,
        model: nn.Module,
        mean: Sequence[float],
        std: Sequence[float],
        class_names: Sequence[str],
        image_size: int,
    ) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
        self.class_names = list(class_names)
        self.image_size = image_size
        self.config = dict(getattr(model, "config", {}))
        self.weights = "trained weights"

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(normalize(images, self.mean, self.std))


def load_model(ckpt_path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Classifier:
    """Loads a ``fit`` checkpoint (safely: ``weights_only``) as an eval-mode :class:`Classifier`."""
    checkpoint = safe_load_checkpoint(ckpt_path, map_location=map_location)
    try:
        description = saved_description(checkpoint)
    except ValueError as err:
        raise CheckpointError(f"{ckpt_path}: its model description is not valid ({err})") from None
    if description is None:
        raise CheckpointError(f"{ckpt_path} was not written by mobilenet_lab's fit (no model description)")
    meta = checkpoint["mobilenet_lab"]
    model = create_model(description)
    state = {k[len("model.") :]: v for k, v in checkpoint["state_dict"].items() if k.startswith("model.")}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise CheckpointError(
            f"{ckpt_path}: weights do not fit the saved architecture ({str(err).splitlines()[0]})"
        ) from None
    mean = meta.get("mean") or (0.0, 0.0, 0.0)
    std = meta.get("std") or (1.0, 1.0, 1.0)
    names = meta.get("class_names") or [str(i) for i in range(model.num_classes)]
    classifier = Classifier(model, mean, std, names, int(meta.get("image_size", 32)))
    classifier.weights = averaged_weights(checkpoint) or classifier.weights  # an EMA run's state_dict is the EMA
    return classifier.eval()
