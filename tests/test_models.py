"""The model zoo: exact parameter counts, MACs, torchvision equivalence, CIFAR stem, errors."""

import pytest
import torch
import torchvision
from torch import nn

from mobilenet_lab.models import (
    convert_timm_state_dict,
    convert_torchvision_state_dict,
    count_macs,
    count_params,
    create_model,
    list_models,
    make_divisible,
)

ALL = [
    "mobilenet_v1",
    "mobilenet_v2",
    "mobilenet_v3_large",
    "mobilenet_v3_small",
    "mobilenet_v4_conv_large",
    "mobilenet_v4_conv_medium",
    "mobilenet_v4_conv_small",
]

# 1000 classes, ImageNet stem. V1: Keras' trainable counts; V2: torchvision = timm;
# V3 at 0.75: official TF code = timm (head not scaled, expansion from the rounded input width).
PARAMS = {
    ("mobilenet_v1", 1.0): 4_231_976,
    ("mobilenet_v1", 0.75): 2_585_560,
    ("mobilenet_v1", 0.5): 1_331_592,
    ("mobilenet_v1", 0.25): 470_072,
    ("mobilenet_v2", 1.0): 3_504_872,
    ("mobilenet_v2", 0.75): 2_636_424,
    ("mobilenet_v2", 0.5): 1_968_680,
    ("mobilenet_v2", 1.4): 6_108_776,
    ("mobilenet_v3_large", 1.0): 5_483_032,
    ("mobilenet_v3_large", 0.75): 3_993_528,
    ("mobilenet_v3_small", 1.0): 2_542_856,
    ("mobilenet_v3_small", 0.75): 2_041_872,
    # V4: timm 1.0.31's counts (its mobilenetv4_conv_small_050 is our width 0.5).
    ("mobilenet_v4_conv_small", 1.0): 3_774_024,
    ("mobilenet_v4_conv_small", 0.5): 2_238_952,
    ("mobilenet_v4_conv_medium", 1.0): 9_715_512,
    ("mobilenet_v4_conv_large", 1.0): 32_590_864,
}
# The papers' multiply-adds (V1 Table 8: 569M; V2 Table 4: 300M; V3 Table 3: 217M / 56M; V4 conv-S
# 0.2G at 224, conv-M 1.1G at its 256) at (MACs, resolution).
MACS = {
    "mobilenet_v1": (568.7e6, 224),
    "mobilenet_v2": (300.8e6, 224),
    "mobilenet_v3_large": (216.6e6, 224),
    "mobilenet_v3_small": (56.5e6, 224),
    "mobilenet_v4_conv_small": (186.0e6, 224),
    "mobilenet_v4_conv_medium": (1080.2e6, 256),
}


def test_list_models():
    assert list_models() == sorted(ALL)


@pytest.mark.parametrize(("name", "width"), list(PARAMS))
def test_parameter_counts(name, width):
    assert count_params(create_model(name, width_mult=width)) == PARAMS[name, width]


@pytest.mark.parametrize("name", list(MACS))
def test_macs(name):
    expected, size = MACS[name]
    macs = count_macs(create_model(name), size)
    assert abs(macs - expected) / expected < 0.005, macs


def test_macs_scale_with_resolution():
    # Convolution MACs scale with the number of pixels (V1 section 4.3: rho^2).
    model = create_model("mobilenet_v1")
    big, full = count_macs(model, 448), count_macs(model, 224)
    fc = 1024 * 1000
    assert (big - fc) / (full - fc) == pytest.approx(4.0, rel=1e-6)


@pytest.mark.parametrize(
    ("value", "expected"), [(32 * 0.75, 24), (18, 24), (12, 16), (88.08, 88), (3, 8), (1280 * 1.4, 1792), (30, 32)]
)
def test_make_divisible(value, expected):
    assert make_divisible(value) == expected
    assert make_divisible(value) >= 0.9 * value


def _randomise_bn(model: nn.Module) -> None:
    gen = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):  # timm's BatchNormAct2d too
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=gen) * 0.1)


@pytest.mark.parametrize(
    ("name", "width"),
    [
        ("mobilenet_v2", 1.0),
        ("mobilenet_v2", 0.5),
        ("mobilenet_v2", 1.4),
        ("mobilenet_v3_small", 1.0),
        ("mobilenet_v3_large", 1.0),
    ],
)
def test_same_function_as_torchvision(name, width):
    torch.manual_seed(0)
    kwargs = {"width_mult": width} if width != 1.0 else {}
    reference = torchvision.models.get_model(name, weights=None, num_classes=100, **kwargs).eval()
    _randomise_bn(reference)
    ours = create_model(name, num_classes=100, width_mult=width).eval()
    ours.load_state_dict(convert_torchvision_state_dict(name, reference.state_dict()), strict=True)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        expected, got = reference(x), ours(x)
    gap = (got - expected).abs().max() / expected.abs().max()
    assert gap <= 1e-5, gap
    assert count_params(ours) == count_params(reference)


# timm's name of the same network; its _050 is width 0.5. Random timm networks (BatchNorm
# statistics randomised too), converted, must compute the same logits as timm's.
TIMM = [
    ("mobilenet_v4_conv_small", 1.0, "mobilenetv4_conv_small"),
    ("mobilenet_v4_conv_small", 0.5, "mobilenetv4_conv_small_050"),
    ("mobilenet_v4_conv_medium", 1.0, "mobilenetv4_conv_medium"),
    ("mobilenet_v4_conv_large", 1.0, "mobilenetv4_conv_large"),
]


@pytest.mark.parametrize(("name", "width", "timm_name"), TIMM)
def test_same_function_as_timm(name, width, timm_name):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    reference = timm.create_model(timm_name, num_classes=100).eval()
    _randomise_bn(reference)
    ours = create_model(name, num_classes=100, width_mult=width).eval()
    ours.load_state_dict(convert_timm_state_dict(name, reference.state_dict()), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected, got = reference(x), ours(x)
    gap = (got - expected).abs().max() / expected.abs().max()
    assert gap <= 1e-5, gap
    assert count_params(ours) == count_params(reference)


def test_timm_conversion_refuses_what_it_cannot_map():
    with pytest.raises(ValueError, match="timm weights convert for mobilenet_v4_conv_small"):
        convert_timm_state_dict("mobilenet_v3_small", {})
    with pytest.raises(ValueError, match="not a timm MobileNetV4 state dict"):
        convert_timm_state_dict("mobilenet_v4_conv_small", {"features.0.weight": torch.zeros(1)})
    hybrid = {"blocks.0.0.conv.weight": torch.zeros(1), "blocks.1.0.layer_scale.gamma": torch.zeros(1)}
    with pytest.raises(ValueError, match="unexpected timm key 'blocks.1.0.layer_scale.gamma'"):
        convert_timm_state_dict("mobilenet_v4_conv_medium", hybrid)


# conv-L is conv-M's builder with another table, 4 s here: slow.
@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n == "mobilenet_v4_conv_large" else n for n in ALL]
)
def test_cifar_stem_ends_at_4x4_and_trains(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=100, stem="cifar")
    x = torch.randn(4, 3, 32, 32)
    features = model.forward_features(x)
    assert features.shape[-2:] == (4, 4)
    assert features.shape[1] == model.num_features
    logits = model.forward_head(features)
    assert logits.shape == (4, 100) and torch.isfinite(logits).all()
    logits.logsumexp(1).mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), model.forward_head(model.forward_features(x)))


@pytest.mark.parametrize("name", ["mobilenet_v3_small", "mobilenet_v4_conv_small"])
@pytest.mark.parametrize(("removed", "size"), [(0, 1), (1, 2), (2, 4), (3, 8)])
def test_downsamples_removed(name, removed, size):
    model = create_model(name, stem="cifar", downsamples_removed=removed)
    assert model.forward_features(torch.randn(2, 3, 32, 32)).shape[-2:] == (size, size)


def test_v3_details():
    large = create_model("mobilenet_v3_large", width_mult=0.75)
    bns = [m for m in large.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(bn.eps == 1e-3 and bn.momentum == 0.01 for bn in bns)
    assert large.classifier[0].out_features == 1280  # head not scaled by width
    small = create_model("mobilenet_v3_small")
    assert small.classifier[0].out_features == 1024
    # No squeeze-excite on Small's last 1x1 conv (the official code; Table 2 is wrong there).
    assert not any("SqueezeExcite" in type(m).__name__ for m in small.final_conv.modules())
    se = small.blocks[3].block[2]  # 96-wide expansion: squeeze make_divisible(96 // 4) = 24
    assert (se.fc1.in_channels, se.fc1.out_channels) == (96, 24)
    assert isinstance(se.gate, nn.Hardsigmoid)


def test_v4_details():
    from mobilenet_lab.models.layers import FusedInvertedBottleneck, UniversalInvertedBottleneck
    from mobilenet_lab.models.mobilenet_v4 import TABLES

    for variant, rows in TABLES.items():  # each UIB row builds the form its table names
        model = create_model(f"mobilenet_v4_conv_{variant}", width_mult=0.25)  # narrow: quick to build
        assert len(model.blocks) == len(rows)
        for row, block in zip(rows, model.blocks):
            if isinstance(block, UniversalInvertedBottleneck):
                assert block.form == row.block
    medium = create_model("mobilenet_v4_conv_medium")
    assert isinstance(medium.blocks[0], FusedInvertedBottleneck)
    assert medium.blocks[0].conv_exp[0].out_channels == 128  # 4 x the 32-wide stem
    extra_dw = medium.blocks[1]  # ExtraDW 3x3 / 5x5, stride 2 on the middle conv; linear start conv
    assert extra_dw.dw_start[0].stride == (1, 1) and len(extra_dw.dw_start) == 2
    assert extra_dw.dw_mid[0].stride == (2, 2) and extra_dw.dw_mid[0].kernel_size == (5, 5)
    assert not extra_dw.use_residual and medium.blocks[2].use_residual
    assert all(
        bn.eps == 1e-5 and bn.momentum == 0.1
        for bn in medium.modules()
        if isinstance(bn, nn.modules.batchnorm._BatchNorm)
    )
    # Head: 1x1 to 960, pool, 1280 (no bias, BatchNorm, ReLU), classifier.
    assert isinstance(medium.classifier[1], nn.BatchNorm1d) and medium.classifier[0].bias is None
    # Width 0.5 (timm's rule): stem kept at 32, the 960 conv scaled, the 1280 head not.
    half = create_model("mobilenet_v4_conv_small", width_mult=0.5)
    assert half.stem[0].out_channels == 32 and half.num_features == 480
    assert half.classifier[0].out_features == 1280


@pytest.mark.parametrize(
    ("start", "middle", "form", "size"),
    [(3, 5, "ExtraDW", 4), (0, 3, "IB", 4), (5, 0, "ConvNext", 4), (0, 0, "FFN", None)],
)
def test_uib_forms_place_the_stride(start, middle, form, size):
    from mobilenet_lab.models.layers import UniversalInvertedBottleneck

    x = torch.randn(1, 8, 8, 8)
    if size is None:
        with pytest.raises(ValueError, match="FFN.*cannot downsample"):
            UniversalInvertedBottleneck(8, 16, 8, start, middle, stride=2)
        size = 8
    else:
        assert UniversalInvertedBottleneck(8, 16, 8, start, middle, stride=2)(x).shape == (1, 8, size, size)
    block = UniversalInvertedBottleneck(8, 16, 8, start, middle)
    assert block.form == form and block.use_residual and block(x).shape == x.shape
    depthwise = [m for m in block.modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert len(depthwise) == (start > 0) + (middle > 0)


def test_v2_last_conv_not_reduced():
    assert create_model("mobilenet_v2", width_mult=0.5).num_features == 1280
    assert create_model("mobilenet_v2", width_mult=1.4).num_features == 1792


def test_v1_has_batchnorm_after_every_conv():
    model = create_model("mobilenet_v1")
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(convs) == len(bns) == 27
    assert isinstance(model.stem[1], nn.BatchNorm2d)
    assert isinstance(create_model("mobilenet_v1", activation="relu6").stem[2], nn.ReLU6)


def test_init_like_torchvision():
    torch.manual_seed(0)
    model = create_model("mobilenet_v2")
    fc = model.classifier[-1]
    assert fc.bias.abs().max() == 0 and abs(fc.weight.std().item() - 0.01) < 1e-3
    conv = model.stem[0]  # Kaiming fan-out: std = sqrt(2 / (out * k * k))
    assert conv.weight.std().item() == pytest.approx((2 / (32 * 9)) ** 0.5, rel=0.15)


def test_config_recreates_model():
    model = create_model("mobilenet_v3_small", num_classes=10, width_mult=0.5, stem="cifar", dropout=0.1)
    twin = create_model(**model.config)
    assert model.config == twin.config and count_params(model) == count_params(twin)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "mobilenet_v4"}, "valid models: mobilenet_v1"),
        ({"name": "mobilenet_v2", "width_mult": 0}, "width_mult must be > 0"),
        ({"name": "mobilenet_v2", "width_mult": -1.0}, "width_mult must be > 0"),
        ({"name": "mobilenet_v2", "stem": "tiny"}, "valid stems: imagenet, cifar"),
        ({"name": "mobilenet_v2", "dropout": 1.5}, "dropout must be in"),
        ({"name": "mobilenet_v2", "num_classes": 0}, "num_classes must be"),
        ({"name": "mobilenet_v2", "activation": "relu"}, "unknown option(s) activation"),
        ({"name": "mobilenet_v1", "activation": "gelu"}, "valid: relu, relu6"),
        ({"name": "mobilenet_v2", "weights": "imagenet"}, "unknown weights"),
        ({"name": "mobilenet_v2", "downsamples_removed": 6}, "downsamples_removed must be in 0..5"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        create_model(**kwargs)


def test_torchvision_weights_offline_is_one_clear_error(monkeypatch, tmp_path):
    from mobilenet_lab.errors import UserError

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # no cached weights
    import torchvision.models._api as api

    def offline(*args, **kwargs):
        raise OSError("Temporary failure in name resolution")

    monkeypatch.setattr(api.WeightsEnum, "get_state_dict", offline)
    with pytest.raises(UserError, match="could not download torchvision's MobileNet_V3_Small_Weights"):
        create_model("mobilenet_v3_small", weights="torchvision")


def test_torchvision_weights_load_through_conversion(monkeypatch):
    # Simulate torchvision's download with a state dict of torchvision's own (random) model.
    import torchvision.models._api as api

    source = torchvision.models.mobilenet_v3_large().state_dict()
    monkeypatch.setattr(api.WeightsEnum, "get_state_dict", lambda self, *a, **k: source)
    model = create_model("mobilenet_v3_large", weights="torchvision", num_classes=100, stem="cifar")
    torch.testing.assert_close(model.stem[0].weight, source["features.0.0.weight"])
    torch.testing.assert_close(model.classifier[0].weight, source["classifier.0.weight"])
    assert model.classifier[-1].out_features == 100
