"""Model registry: ``list_models`` and ``create_model`` with validated, user-facing errors.

Imports no model file: each version module registers its builder and its defaults with
``@register_model(ModelDescription(...))``, and ``models/__init__.py`` imports the version modules
(as torchvision's ``_api.py`` and timm's ``_registry.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from .description import ModelDescription, add_version, describe, version_names

__all__ = ["register_model", "list_models", "create_model", "check_model_args", "model_options", "WEIGHTS"]

Builder = Callable[[ModelDescription], nn.Module]
_BUILDERS: dict[str, Builder] = {}
WEIGHTS = (None, "torchvision")


def register_model(
    defaults: ModelDescription, choices: dict[str, tuple[Any, ...]] | None = None
) -> Callable[[Builder], Builder]:
    """Registers a builder (``ModelDescription -> nn.Module``) under ``defaults.name``.

    Args:
        defaults: The version's default description (its name included).
        choices: Valid values of the options only this version has (e.g. V1's ``activation``).
    """

    def register(builder: Builder) -> Builder:
        add_version(defaults, choices)  # refuses a duplicate name
        _BUILDERS[defaults.name] = builder
        return builder

    return register


def list_models() -> list[str]:
    """Names of the registered models, sorted."""
    return version_names()


def model_options(name: str) -> dict[str, Any]:
    """The version's options and their defaults (``name`` aside)."""
    return {k: v for k, v in describe(name).to_dict().items() if k != "name"}


def create_model(
    name: str | ModelDescription,
    *,
    weights: str | None = None,
    **options: Any,
) -> nn.Module:
    """Builds a registered MobileNet.

    Args:
        name: One of :func:`list_models`, or a whole :class:`ModelDescription`.
        weights: ``None`` (random init) or ``"torchvision"`` (ImageNet weights fetched through
            torchvision's weights API and converted; the classifier is re-initialised when
            ``num_classes != 1000``).
        **options: Fields of :class:`ModelDescription` (``num_classes``, ``width_mult``, ``stem``,
            ``downsamples_removed``, ``dropout``, V1's ``activation``); the rest take the version's
            defaults. ``dropout=None`` keeps the version's default.
    """
    if weights not in WEIGHTS:
        raise ValueError(f"unknown weights {weights!r}; valid: None, 'torchvision'")
    description = _description(name, options)
    model = _BUILDERS[description.name](description)
    model.description = description
    if weights == "torchvision":
        from .torchvision import load_torchvision_weights

        load_torchvision_weights(model, description.name)
    return model


def check_model_args(name: str | ModelDescription, *, weights: str | None = None, **options: Any) -> None:
    """Raises ``ValueError`` naming the problem and the valid values, without building anything."""
    if weights not in WEIGHTS:
        raise ValueError(f"unknown weights {weights!r}; valid: None, 'torchvision'")
    _description(name, options)


def _description(name: str | ModelDescription, options: dict[str, Any]) -> ModelDescription:
    if options.get("dropout", 0.0) is None:
        options = {k: v for k, v in options.items() if k != "dropout"}
    if isinstance(name, ModelDescription):
        return name.replace(**options) if options else name.validate()
    return describe(name, **options)
