"""torchvision's network of the same architecture as ours, measured beside ours as a reference row."""

from __future__ import annotations

from typing import Any

from torch import nn

from ...models.description import STEMS
from ...models.torchvision import TORCHVISION_MODELS

__all__ = ["TORCHVISION_MODELS", "torchvision_reference"]


def torchvision_reference(name: str, width: float, num_classes: int, stem: str) -> nn.Module | None:
    """torchvision's network of the same architecture as ``create_model(name, ...)``, or None.

    torchvision's width semantics equal ours for MobileNetV2 at every width and for V3 at width 1.0
    only (for V3 it scales the head layer and rounds expanded widths differently); it has no V1.
    For a stem that runs the first k stride-2 layers at stride 1 (``cifar``: k = 2), the same k
    convolutions of torchvision's network are set to stride 1, and a block whose shortcut that
    makes possible gets it (as ours: stride 1 and equal channels).
    """
    if name not in TORCHVISION_MODELS or (name != "mobilenet_v2" and width != 1.0):
        return None
    import torchvision

    kwargs: dict[str, Any] = {"num_classes": num_classes}
    if name == "mobilenet_v2":
        kwargs["width_mult"] = width
    model = getattr(torchvision.models, name)(weights=None, **kwargs)
    remove = STEMS[stem]
    for module in model.modules():  # module order is forward order in these networks
        if remove == 0:
            break
        if isinstance(module, nn.Conv2d) and module.stride == (2, 2):
            module.stride = (1, 1)
            remove -= 1
    for module in model.modules():
        if hasattr(module, "use_res_connect"):
            body = module.block if hasattr(module, "block") else module.conv
            convs = [m for m in body.modules() if isinstance(m, nn.Conv2d)]  # expand/dw, SE, project
            strided = any(c.stride != (1, 1) for c in convs)
            module.use_res_connect = not strided and convs[0].in_channels == convs[-1].out_channels
    return model
