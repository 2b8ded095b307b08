"""One thin LightningModule per version: that version's options with its defaults, nothing else.

Each class sets ``model_name`` (a registered model); :data:`VERSION_MODULES` maps the name to the
class, so ``test --ckpt_path`` finds a checkpoint's class from its model description. Loss, metrics
and optimisation are
:class:`~mobilenet_lab.classifier.ImageClassifier`'s. Configs name them ``mobilenet_lab.MobileNetV2``
(the package resolves the short path) or ``mobilenet_lab.versions.MobileNetV2``.
"""

from __future__ import annotations

from typing import Any, Literal

from .classifier import CIFAR100_CLASSES, ImageClassifier, Stem
from .models import ModelDescription, describe


def cifar_defaults(name: str) -> ModelDescription:
    """The version's defaults for CIFAR training: its description with the CIFAR stem, 100 classes."""
    return describe(name, stem="cifar", num_classes=CIFAR100_CLASSES)


_V1 = cifar_defaults("mobilenet_v1")
_V2 = cifar_defaults("mobilenet_v2")


class MobileNetV1(ImageClassifier):
    """MobileNetV1 (Howard et al., 2017) on CIFAR-100.

    Defaults are the ModelDescription's (``mobilenet_lab.models.describe``), with the CIFAR stem.

    Args:
        width_mult: Width multiplier alpha (0.25, 0.5, 0.75, 1.0, ...).
        stem: ``cifar`` runs the first two stride-2 layers at stride 1 (4x4 final map at 32x32).
        downsamples_removed: Overrides how many early stride-2 layers run at stride 1 (3: 8x8 map).
        dropout: Dropout before the classifier.
        activation: ``relu`` (the paper) or ``relu6``.
    """

    model_name = "mobilenet_v1"

    def __init__(
        self,
        width_mult: float = _V1.width_mult,
        stem: Stem = _V1.stem,
        downsamples_removed: int | None = _V1.downsamples_removed,
        dropout: float = _V1.dropout,
        activation: Literal["relu", "relu6"] = _V1.activation,
        **kwargs: Any,
    ) -> None:
        options = dict(
            width_mult=width_mult,
            stem=stem,
            downsamples_removed=downsamples_removed,
            dropout=dropout,
            activation=activation,
        )
        super().__init__(self.model_name, options, **kwargs)


class _InvertedResidualNetwork(ImageClassifier):
    """The options V2, V3 and V4 share (set ``model_name`` in the subclass).

    Defaults are the ModelDescription's, with the CIFAR stem (these versions share them; a test
    checks each version's own description against this signature).

    Args:
        width_mult: Width multiplier (0.25 ... 1.4); the last/head layer is not reduced (see the model).
        stem: ``cifar`` runs the first two stride-2 layers at stride 1 (4x4 final map at 32x32).
        downsamples_removed: Overrides how many early stride-2 layers run at stride 1 (3: 8x8 map).
        dropout: Dropout before the classifier.
    """

    model_name = ""

    def __init__(
        self,
        width_mult: float = _V2.width_mult,
        stem: Stem = _V2.stem,
        downsamples_removed: int | None = _V2.downsamples_removed,
        dropout: float = _V2.dropout,
        **kwargs: Any,
    ) -> None:
        options = dict(width_mult=width_mult, stem=stem, downsamples_removed=downsamples_removed, dropout=dropout)
        super().__init__(self.model_name, options, **kwargs)


class MobileNetV2(_InvertedResidualNetwork):
    """MobileNetV2 (Sandler et al., 2018) on CIFAR-100; the 1280 last conv is never reduced."""

    model_name = "mobilenet_v2"


class MobileNetV3Large(_InvertedResidualNetwork):
    """MobileNetV3-Large (Howard et al., 2019) on CIFAR-100; the 1280 head layer is not scaled."""

    model_name = "mobilenet_v3_large"


class MobileNetV3Small(_InvertedResidualNetwork):
    """MobileNetV3-Small (Howard et al., 2019) on CIFAR-100; the 1024 head layer is not scaled."""

    model_name = "mobilenet_v3_small"


# One class per V4 variant (not one class with a variant option): each registered name then has
# its class, its own defaults and its own --help, as V3-Small/Large, and a checkpoint's model
# description names its class (VERSION_MODULES) without looking at the options.
class MobileNetV4ConvSmall(_InvertedResidualNetwork):
    """MobileNetV4 conv-S (Qin et al., 2024) on CIFAR-100; the 1280 head layer is not scaled."""

    model_name = "mobilenet_v4_conv_small"


class MobileNetV4ConvMedium(_InvertedResidualNetwork):
    """MobileNetV4 conv-M (Qin et al., 2024) on CIFAR-100; the 1280 head layer is not scaled."""

    model_name = "mobilenet_v4_conv_medium"


class MobileNetV4ConvLarge(_InvertedResidualNetwork):
    """MobileNetV4 conv-L (Qin et al., 2024) on CIFAR-100; the 1280 head layer is not scaled."""

    model_name = "mobilenet_v4_conv_large"


#: Registered model name -> its version LightningModule (a user's subclass does not take a name over).
VERSION_MODULES: dict[str, type[ImageClassifier]] = {
    cls.model_name: cls
    for cls in (
        MobileNetV1,
        MobileNetV2,
        MobileNetV3Large,
        MobileNetV3Small,
        MobileNetV4ConvSmall,
        MobileNetV4ConvMedium,
        MobileNetV4ConvLarge,
    )
}


def description_of(cls: type, init_args: dict[str, Any]) -> ModelDescription:
    """The ModelDescription a module class builds from these ``init_args`` (validated; ValueError if not).

    A version class (``model_name`` set) takes its options from ``init_args`` and the rest from
    :func:`cifar_defaults`; the generic :class:`ImageClassifier` from ``model_name``/``model_options``.
    """
    name = getattr(cls, "model_name", None)
    if isinstance(name, str) and name:
        base = cifar_defaults(name)
        options = {k: v for k, v in init_args.items() if k in base.options() and k != "num_classes"}
    else:
        name = init_args.get("model_name")
        if not name:
            raise ValueError("the model names no registered network (model_name)")
        base = describe(name, num_classes=CIFAR100_CLASSES)
        options = dict(init_args.get("model_options") or {})
    if init_args.get("num_classes") is not None:
        options["num_classes"] = init_args["num_classes"]
    return base.replace(**options)


__all__ = [cls.__name__ for cls in VERSION_MODULES.values()] + ["VERSION_MODULES", "cifar_defaults", "description_of"]
