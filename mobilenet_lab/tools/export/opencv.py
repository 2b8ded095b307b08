"""OpenCV's DNN module as a second ONNX runtime, and the graph rewrite that makes SE gates run there.

OpenCV's ONNX importer (seen in opencv-python-headless 4.10, 4.12 and 5.1) fuses
``Mul(a, HardSigmoid(b))`` into ``HardSwish(b)`` without checking that ``a`` is ``b``. A MobileNetV3
squeeze-excite gate is exactly ``Mul(features, HardSigmoid(gate))`` with ``gate`` of shape
N x C x 1 x 1, so OpenCV replaced every gated feature map by the hard-swish of its gate: an
N x C x 1 x 1 tensor. OpenCV 5.1 refuses to run where a residual follows (V3-Small's first block at
the cifar stem); elsewhere, and in 4.x everywhere, the network runs and returns wrong logits.

:func:`expand_gate_hardsigmoids` writes each such HardSigmoid as its ONNX definition,
``Clip(Mul(b, alpha) + beta, 0, 1)``: the same function, a pattern the importer leaves alone.
The PyTorch model is untouched; HardSwish nodes and every other node stay as exported.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .verify import CHECK_BATCHES, batches, random_images, relative_gap, torch_logits

__all__ = [
    "expand_gate_hardsigmoids",
    "opencv_available",
    "opencv_version",
    "opencv_net",
    "opencv_logits",
    "check_opencv",
]


def expand_gate_hardsigmoids(proto: Any) -> int:
    """Rewrites, in place, each HardSigmoid that gates another tensor in a Mul; returns how many.

    ``HardSigmoid(b)`` becomes ``Clip(Add(Mul(b, alpha), beta), 0, 1)`` (the operator's ONNX
    definition, with its own ``alpha`` and ``beta``), so no runtime can mistake
    ``Mul(a, HardSigmoid(b))`` for ``HardSwish(b)``.
    """
    from onnx import helper, numpy_helper

    graph = proto.graph
    producer = {out: i for i, node in enumerate(graph.node) for out in node.output}
    gates = set()  # indices of the HardSigmoid nodes to expand
    for node in graph.node:
        if node.op_type != "Mul" or len(node.input) != 2:
            continue
        for mine, other in (node.input, reversed(node.input)):
            source = producer.get(mine)
            if (
                source is not None
                and graph.node[source].op_type == "HardSigmoid"
                and graph.node[source].input[0] != other
            ):
                gates.add(source)
    if not gates:
        return 0
    constants: dict[float, str] = {}

    def constant(value: float) -> str:  # one shared scalar initializer per value
        if value not in constants:
            constants[value] = f"hardsigmoid_expanded_{len(constants)}"
            graph.initializer.append(numpy_helper.from_array(np.array(value, np.float32), constants[value]))
        return constants[value]

    nodes = []
    for index, node in enumerate(graph.node):
        if index not in gates:
            nodes.append(node)
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        alpha, beta = constant(float(attrs.get("alpha", 0.2))), constant(float(attrs.get("beta", 0.5)))
        tag, x, y = f"{node.name or 'hardsigmoid'}_{index}_expanded", node.input[0], node.output[0]
        nodes += [
            helper.make_node("Mul", [x, alpha], [f"{tag}_scaled"], name=f"{tag}_mul"),
            helper.make_node("Add", [f"{tag}_scaled", beta], [f"{tag}_shifted"], name=f"{tag}_add"),
            helper.make_node("Clip", [f"{tag}_shifted", constant(0.0), constant(1.0)], [y], name=f"{tag}_clip"),
        ]
    del graph.node[:]
    graph.node.extend(nodes)
    return len(gates)


def opencv_available() -> bool:
    """Whether ``cv2`` (e.g. opencv-python-headless) is installed."""
    return importlib.util.find_spec("cv2") is not None


def opencv_version() -> str:
    """The installed OpenCV's version, e.g. ``5.1.0``."""
    import cv2

    return str(cv2.__version__)


def opencv_net(path: str | os.PathLike) -> Any:
    """The ONNX file as an OpenCV DNN network (CPU, OpenCV's own engine)."""
    import cv2

    return cv2.dnn.readNetFromONNX(os.fspath(path))


def opencv_logits(net: Any, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """The network's logits for [0, 1] images N x 3 x S x S, batch by batch."""
    out = []
    for b in batches(np.asarray(images, np.float32), batch_size):
        net.setInput(b, "images")
        out.append(np.array(net.forward("logits"), np.float32))
    return np.concatenate(out)


def check_opencv(
    model: torch.nn.Module, path: str | os.PathLike, batches: Sequence[int] = CHECK_BATCHES, seed: int = 0
) -> float:
    """The largest relative logit gap of the file in OpenCV's DNN vs ``model`` on random inputs.

    Uses the same inputs as :func:`mobilenet_lab.tools.export.onnx.check_onnx` (``seed`` + i).

    Raises:
        ValueError: OpenCV returned logits of another shape than PyTorch.
    """
    net = opencv_net(path)
    size = int(getattr(model, "image_size", 32))
    gaps = []
    for i, n in enumerate(batches):
        x = random_images(n, size, seed + i)
        got, want = opencv_logits(net, x), torch_logits(model, x)
        if got.shape != want.shape:
            raise ValueError(f"OpenCV returned logits of shape {got.shape} for PyTorch's {want.shape}")
        gaps.append(relative_gap(got, want))
    return max(gaps)
