"""The one model description: defaults, validation, plain-dict round trip, registry, imports."""

from __future__ import annotations

import ast
import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import assert_imports_no_lightning

from mobilenet_lab.models import ModelDescription, create_model, describe, list_models, register_model

ROOT = Path(__file__).resolve().parents[1]


def test_per_version_defaults():
    v1 = describe("mobilenet_v1")
    assert (v1.dropout, v1.activation, v1.stem, v1.width_mult, v1.num_classes) == (0.0, "relu", "imagenet", 1.0, 1000)
    for name in (
        "mobilenet_v2",
        "mobilenet_v3_small",
        "mobilenet_v3_large",
        "mobilenet_v4_conv_small",
        "mobilenet_v4_conv_medium",
        "mobilenet_v4_conv_large",
    ):
        d = describe(name)
        assert (d.dropout, d.activation) == (0.2, None)
        assert "activation" not in d.to_dict() and "activation" not in d.options()


def test_builders_read_the_description():
    d = describe("mobilenet_v1", width_mult=0.5, stem="cifar", num_classes=10, dropout=0.3, activation="relu6")
    model = create_model(d)
    assert model.description == d and model.config == d.to_dict()
    assert model.num_classes == 10 and model.classifier[0].p == 0.3
    assert any(isinstance(m, torch.nn.ReLU6) for m in model.modules())
    assert not any(type(m) is torch.nn.ReLU for m in model.modules())
    # The same network from keyword options.
    assert create_model(**d.to_dict()).description == d


@pytest.mark.parametrize(
    "name", ["mobilenet_v1", "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large", "mobilenet_v4_conv_small"]
)
def test_plain_dict_survives_weights_only_load(name, tmp_path):
    d = describe(name, width_mult=0.75, stem="cifar", downsamples_removed=3, num_classes=7)
    torch.save({"description": d.to_dict()}, tmp_path / "d.pt")
    loaded = torch.load(tmp_path / "d.pt", weights_only=True)["description"]
    assert ModelDescription.from_dict(loaded) == d


def test_older_partial_dict_takes_the_version_defaults():
    # create_model used to store only the arguments given, and dropout=None for "the default".
    d = ModelDescription.from_dict(
        {"name": "mobilenet_v2", "num_classes": 100, "width_mult": 0.5, "stem": "cifar", "dropout": None}
    )
    assert d == describe("mobilenet_v2", num_classes=100, width_mult=0.5, stem="cifar")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, "needs a name; valid models: mobilenet_v1"),
        ({"name": "mobilenet_v9"}, "valid models: mobilenet_v1, mobilenet_v2"),
        ({"name": "mobilenet_v2", "activation": "relu"}, "unknown option(s) activation for mobilenet_v2; valid:"),
        ({"name": "mobilenet_v1", "activation": "gelu"}, "valid: relu, relu6"),
        ({"name": "mobilenet_v1", "stem": "tiny"}, "valid stems: imagenet, cifar"),
        ({"name": "mobilenet_v1", "kernel": 5}, "unknown option(s) kernel"),
    ],
)
def test_from_dict_refuses_with_the_valid_choices(data, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ModelDescription.from_dict(data)


def test_registry_refuses_a_duplicate_name():
    with pytest.raises(ValueError, match="already registered"):
        register_model(ModelDescription("mobilenet_v2"))(lambda d: None)
    assert list_models() == [
        "mobilenet_v1",
        "mobilenet_v2",
        "mobilenet_v3_large",
        "mobilenet_v3_small",
        "mobilenet_v4_conv_large",
        "mobilenet_v4_conv_medium",
        "mobilenet_v4_conv_small",
    ]


def _package_imports(path: Path) -> set[str]:
    """Names of the sibling modules a models/ file imports (``from .x import``)."""
    tree = ast.parse(path.read_text())
    return {
        node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module
    }


def test_registry_and_description_import_no_model_file():
    models = ROOT / "mobilenet_lab" / "models"
    version_files = {p.stem for p in models.glob("mobilenet_v*.py")}
    for room in ("registry", "description", "base"):
        assert not _package_imports(models / f"{room}.py") & version_files, room


def test_models_and_load_model_import_no_lightning(tmp_path):
    # A checkpoint as fit writes it (the parts load_model reads), without Lightning.
    model = create_model("mobilenet_v3_small", num_classes=5, width_mult=0.25, stem="cifar")
    ckpt = tmp_path / "m.ckpt"
    torch.save(
        {
            "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
            "mobilenet_lab": {"model_config": model.description.to_dict(), "image_size": 32},
        },
        ckpt,
    )
    code = (
        "import sys, mobilenet_lab.models\n"
        "from mobilenet_lab import models, inference\n"
        "from mobilenet_lab import load_model\n"
        f"m = load_model({str(ckpt)!r})\n"
        "assert m.config['width_mult'] == 0.25, m.config\n"
    )
    assert_imports_no_lightning(code)


def test_every_version_has_one_module_found_by_name():
    import mobilenet_lab
    from mobilenet_lab import versions as modules
    from mobilenet_lab.from_checkpoint import _version_class_path

    assert sorted(modules.VERSION_MODULES) == list_models()  # one LightningModule per registered model
    assert modules.VERSION_MODULES["mobilenet_v4_conv_small"] is modules.MobileNetV4ConvSmall
    for name, cls in modules.VERSION_MODULES.items():
        assert cls.model_name == name and cls.__name__ in modules.__all__
        assert getattr(mobilenet_lab, cls.__name__) is cls  # configs' class_path: mobilenet_lab.<Class>
        checkpoint = {"mobilenet_lab": {"model_config": describe(name).to_dict()}}
        assert _version_class_path(checkpoint) == f"mobilenet_lab.versions.{cls.__name__}"
        assert getattr(mobilenet_lab, cls.__name__) is cls  # configs' short class path mobilenet_lab.<Class>

    class Custom(modules.MobileNetV4ConvSmall):  # a user's subclass does not take the name over
        model_name = "mobilenet_v4_conv_small"

    assert modules.VERSION_MODULES["mobilenet_v4_conv_small"] is modules.MobileNetV4ConvSmall
    with pytest.raises(AttributeError, match="no attribute 'MobileNetV9'"):
        _ = mobilenet_lab.MobileNetV9


def test_version_modules_take_their_defaults_from_the_description():
    from mobilenet_lab.versions import VERSION_MODULES, cifar_defaults

    for cls in VERSION_MODULES.values():
        defaults = cifar_defaults(cls.model_name)
        params = {
            n: p.default
            for n, p in inspect.signature(cls.__init__).parameters.items()
            if p.default is not inspect.Parameter.empty
        }
        options = set(defaults.options()) - {"num_classes"}
        assert options <= set(params), cls  # every option is in the class's --help
        assert {k: params[k] for k in options} == {k: getattr(defaults, k) for k in options}, cls
        assert defaults.stem == "cifar"


def test_worked_example_registers_and_builds(tmp_path):
    # docs/adding-a-model.md step 1, run as mobilenet_lab.models.mobilenet_v2_shallow in a fresh
    # interpreter (the registry of this process stays as shipped).
    doc = (ROOT / "docs" / "adding-a-model.md").read_text()
    source = doc.split("```python\n", 1)[1].split("```", 1)[0]
    (tmp_path / "mobilenet_v2_shallow.py").write_text(source)
    code = (
        "import importlib.util, sys\n"
        "import mobilenet_lab.models as models\n"
        "spec = importlib.util.spec_from_file_location('mobilenet_lab.models.mobilenet_v2_shallow',\n"
        f"    {str(tmp_path / 'mobilenet_v2_shallow.py')!r})\n"
        "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)\n"
        "import torch\n"
        "m = models.create_model('mobilenet_v2_shallow', width_mult=0.5, stem='cifar', num_classes=100)\n"
        "assert m(torch.zeros(2, 3, 32, 32)).shape == (2, 100)\n"
        "assert m.config['dropout'] == 0.0 and 'mobilenet_v2_shallow' in models.list_models()\n"
        "try:\n"
        "    models.create_model('mobilenet_v2_shallow', activation='relu')\n"
        "    raise SystemExit('activation accepted')\n"
        "except ValueError as err:\n"
        "    assert 'unknown option(s) activation for mobilenet_v2_shallow' in str(err), err\n"
    )

    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
