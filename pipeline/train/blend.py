"""Weight-space ensembles of two exports of one network (Wortsman et al. 2022, "Robust
fine-tuning of zero-shot models"): each convolution's weight and bias mixed, ``alpha`` of
one and ``1 - alpha`` of the other. ONNX and NumPy only: quantized (QDQ) graphs are read
through their DequantizeLinear nodes.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import onnx
from onnx import numpy_helper

Array = npt.NDArray[np.float32]


def conv_weights(model: onnx.ModelProto) -> list[list[Array]]:
    """The weight (and bias, where there is one) of each Conv node in graph order, in float:
    read from the initializer, or through the DequantizeLinear that feeds it."""
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    made_by = {o: n for n in model.graph.node for o in n.output}

    def value(name: str) -> Array:
        if name in inits:
            return np.asarray(inits[name], np.float32)
        node = made_by.get(name)
        if node is None or node.op_type != "DequantizeLinear" or \
                not all(i in inits for i in node.input):
            raise ValueError(f"Conv input {name!r} is neither a weight nor a dequantized one")
        q, scale = inits[node.input[0]], inits[node.input[1]]
        zero = inits[node.input[2]] if len(node.input) > 2 else np.zeros_like(scale)
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        shape = [1] * q.ndim
        if scale.ndim:
            shape[axis] = -1
        return np.asarray((q.astype(np.float32) - zero.astype(np.float32).reshape(shape))
                          * scale.astype(np.float32).reshape(shape), np.float32)

    return [[value(i) for i in n.input[1:] if i] for n in model.graph.node
            if n.op_type == "Conv"]


def mix_convs(model: onnx.ModelProto, other: list[list[Array]], alpha: float) -> None:
    """Set each Conv weight and bias of ``model`` (float initializers) to ``alpha * other +
    (1 - alpha) * model``, in place; ``other`` as :func:`conv_weights` reads it."""
    if not 0 <= alpha <= 1:
        raise ValueError(f"the mixing weight {alpha} is not between 0 and 1")
    inits = {i.name: i for i in model.graph.initializer}
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    if len(convs) != len(other):
        raise ValueError(f"{len(other)} convolutions against {len(convs)}: not one network")
    for node, theirs in zip(convs, other, strict=True):
        names = [i for i in node.input[1:] if i]
        if len(names) != len(theirs):
            raise ValueError(f"{node.name or node.output[0]}: {len(theirs)} parameters "
                             f"against {len(names)}")
        for name, w in zip(names, theirs, strict=True):
            if name not in inits:
                raise ValueError(f"{name!r} is not a float initializer")
            mine = numpy_helper.to_array(inits[name]).astype(np.float32)
            if mine.shape != w.shape:
                raise ValueError(f"{name}: {w.shape} against {mine.shape}")
            inits[name].CopyFrom(numpy_helper.from_array(
                (alpha * w + (1 - alpha) * mine).astype(np.float32), name))
