"""Import timm's MobileNetV4 (conv-S/M/L) weights: the same function, op for op, under our names.

timm is not needed to use this: the converter renames a state dict timm wrote (e.g.
``timm.create_model("mobilenetv4_conv_small", pretrained=True).state_dict()``) and never imports timm.
"""

from __future__ import annotations

import re

import torch

__all__ = ["convert_timm_state_dict", "TIMM_MODELS"]

#: Our name -> timm's name of the same architecture (at width 1.0; timm's ``_050`` is our width 0.5).
TIMM_MODELS = {
    "mobilenet_v4_conv_small": "mobilenetv4_conv_small",
    "mobilenet_v4_conv_medium": "mobilenetv4_conv_medium",
    "mobilenet_v4_conv_large": "mobilenetv4_conv_large",
}
# Inside a block: timm's ConvNormAct is (conv, bn) by name, ours a Sequential (0, 1); timm's
# EdgeResidual has conv_exp/bn1 and conv_pwl/bn2 where our FusedInvertedBottleneck has conv_exp
# and pw_proj; timm's plain ConvBnAct block (conv, bn1) is our ConvNormAct.
_UIB_KEY = re.compile(r"(dw_start|pw_exp|dw_mid|pw_proj)\.(conv|bn)\.(.*)")
_FUSED_KEYS = {"conv_exp": "conv_exp.0", "bn1": "conv_exp.1", "conv_pwl": "pw_proj.0", "bn2": "pw_proj.1"}
_CONV_KEYS = {"conv": "0", "bn1": "1"}
# Outside the blocks: the stem, and the head after pooling (timm's conv_head is a 1x1 conv on the
# pooled map, ours the same weights as a Linear; our PooledHead: 0 linear, 1 norm, 4 classifier).
_TOP_KEYS = {
    "conv_stem": "stem.0",
    "bn1": "stem.1",
    "conv_head": "classifier.0",
    "norm_head": "classifier.1",
    "classifier": "classifier.4",
}


def convert_timm_state_dict(name: str, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Renames a timm MobileNetV4 conv-S/M/L state dict (any width) to this package's module names.

    timm nests its blocks by stage (``blocks.<stage>.<index>``) and keeps the 1x1 conv to 960 as
    the last stage; ours are one flat ``blocks`` sequence and a ``final_conv``.

    Raises:
        ValueError: ``name`` has no timm counterpart, or a key is not one of timm's conv-model keys.
    """
    if name not in TIMM_MODELS:
        raise ValueError(f"timm weights convert for {', '.join(TIMM_MODELS)}, not {name!r}")
    positions = sorted(
        {(int(m.group(1)), int(m.group(2))) for k in state_dict if (m := re.match(r"blocks\.(\d+)\.(\d+)\.", k))}
    )
    if not positions:
        raise ValueError(f"not a timm MobileNetV4 state dict (no blocks.<stage>.<index> keys) for {name}")
    last_stage = positions[-1][0]
    flat = {pos: i for i, pos in enumerate(p for p in positions if p[0] != last_stage)}
    converted = {}
    for key, value in state_dict.items():
        m = re.match(r"blocks\.(\d+)\.(\d+)\.(.*)", key)
        if m is None:
            head, _, rest = key.partition(".")
            if head not in _TOP_KEYS:
                raise ValueError(f"unexpected timm key {key!r} for {name}")
            if head == "conv_head":
                value = value.flatten(1)  # 1x1 conv weight -> Linear weight
            converted[f"{_TOP_KEYS[head]}.{rest}"] = value
            continue
        stage, index, rest = int(m.group(1)), int(m.group(2)), m.group(3)
        prefix = "final_conv" if stage == last_stage else f"blocks.{flat[stage, index]}"
        converted[f"{prefix}.{_block_key(rest, key, state_dict)}"] = value
    return converted


def _block_key(rest: str, key: str, state_dict: dict[str, torch.Tensor]) -> str:
    if m := _UIB_KEY.fullmatch(rest):
        return f"{m.group(1)}.{'0' if m.group(2) == 'conv' else '1'}.{m.group(3)}"
    layer, _, tail = rest.partition(".")
    block = key[: len(key) - len(rest)]
    renames = _FUSED_KEYS if f"{block}conv_exp.weight" in state_dict else _CONV_KEYS
    if layer not in renames:
        raise ValueError(f"unexpected timm key {key!r} (layer scale, squeeze-excite and attention are not supported)")
    return f"{renames[layer]}.{tail}"
