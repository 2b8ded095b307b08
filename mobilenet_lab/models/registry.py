"""Model registry: ``list_models`` and ``create_model`` with validated, user-facing errors."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

__all__ = ["register_model", "list_models", "create_model", "check_model_args", "model_options"]

_MODELS: dict[str, Callable[..., nn.Module]] = {}
WEIGHTS = (None, "torchvision")


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Registers a keyword-only builder under its function name; duplicate names are refused."""
    name = fn.__name__
    if name in _MODELS:
        raise ValueError(f"a model named {name!r} is already registered")
    _MODELS[name] = fn
    return fn


def list_models() -> list[str]:
    """Names of the registered models, sorted."""
    _load_builtin_models()
    return sorted(_MODELS)


def model_options(name: str) -> dict[str, Any]:
    """The builder's keyword arguments and their defaults."""
    builder = _builder(name)
    return {p.name: p.default for p in inspect.signature(builder).parameters.values()}


def _builder(name: str) -> Callable[..., nn.Module]:
    _load_builtin_models()
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; valid models: {', '.join(sorted(_MODELS))}")
    return _MODELS[name]


def create_model(
    name: str,
    *,
    num_classes: int = 1000,
    width_mult: float = 1.0,
    stem: str = "imagenet",
    dropout: float | None = None,
    weights: str | None = None,
    **version_options: Any,
) -> nn.Module:
    """Builds a registered MobileNet.

    Args:
        name: One of :func:`list_models`.
        num_classes: Output classes.
        width_mult: Width multiplier (> 0).
        stem: ``"imagenet"`` or ``"cifar"``.
        dropout: Dropout before the classifier; ``None`` keeps the version's default.
        weights: ``None`` (random init) or ``"torchvision"`` (ImageNet weights fetched through
            torchvision's weights API and converted; the classifier is re-initialised when
            ``num_classes != 1000``).
        **version_options: Options of that version (e.g. ``activation`` for V1,
            ``downsamples_removed`` for all).
    """
    check_model_args(name, num_classes=num_classes, width_mult=width_mult, dropout=dropout, weights=weights,
                     **version_options)
    kwargs: dict[str, Any] = dict(num_classes=num_classes, width_mult=width_mult, stem=stem, **version_options)
    if dropout is not None:
        kwargs["dropout"] = dropout
    model = _builder(name)(**kwargs)
    model.config = {"name": name, **kwargs}
    if weights == "torchvision":
        from .torchvision import load_torchvision_weights

        load_torchvision_weights(model, name)
    return model


def check_model_args(
    name: str,
    *,
    num_classes: int = 1000,
    width_mult: float = 1.0,
    dropout: float | None = None,
    weights: str | None = None,
    **version_options: Any,
) -> None:
    """Raises ``ValueError`` naming the problem and the valid values, without building anything."""
    builder = _builder(name)
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    if not width_mult > 0:
        raise ValueError(f"width_mult must be > 0 (e.g. 0.25, 0.5, 0.75, 1.0, 1.4), got {width_mult!r}")
    if dropout is not None and not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
    if weights not in WEIGHTS:
        raise ValueError(f"unknown weights {weights!r}; valid: None, 'torchvision'")
    allowed = set(inspect.signature(builder).parameters)
    unknown = set(version_options) - allowed
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join(sorted(unknown))} for {name}; valid: {', '.join(sorted(allowed))}"
        )
    from .base import STEMS, NUM_DOWNSAMPLINGS

    stem = version_options.get("stem", "imagenet")
    if stem not in STEMS:
        raise ValueError(f"unknown stem {stem!r}; valid stems: {', '.join(STEMS)}")
    removed = version_options.get("downsamples_removed")
    if removed is not None and not 0 <= removed <= NUM_DOWNSAMPLINGS:
        raise ValueError(f"downsamples_removed must be in 0..{NUM_DOWNSAMPLINGS}, got {removed}")


def _load_builtin_models() -> None:
    # Importing the version modules runs their @register_model decorators.
    from . import mobilenet_v1, mobilenet_v2, mobilenet_v3  # noqa: F401
