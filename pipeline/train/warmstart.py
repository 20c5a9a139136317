"""Start training from a shipped ``product`` export instead of ImageNet alone.

The export's convolutions carry their batch norms folded in (``torch.onnx.export`` in eval
mode folds them). Each convolution of a fresh ``ProductNet`` takes the folded weights, in the
order the network runs them, and the batch norm after it becomes the identity plus the folded
bias. The network then keeps every batch norm in eval mode while it trains
(``ProductNet.batch_norms_frozen``): statistics of small batches would undo the folding.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from pipeline.train.net import ProductNet


def _conv_order(net: ProductNet, size: int = 64) -> list[nn.Conv2d]:
    order: list[nn.Conv2d] = []
    hooks = [m.register_forward_hook(lambda mod, _i, _o: order.append(mod))
             for m in net.modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.no_grad():
            net.eval()
            net(torch.zeros(1, 3, size, size))
    finally:
        for h in hooks:
            h.remove()
    return order


def _bn_after(net: ProductNet) -> dict[nn.Conv2d, nn.BatchNorm2d]:
    """Each bias-free convolution's batch norm: the next one in definition order."""
    out: dict[nn.Conv2d, nn.BatchNorm2d] = {}
    pending: nn.Conv2d | None = None
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            pending = m if m.bias is None else None
        elif isinstance(m, nn.BatchNorm2d) and pending is not None:
            out[pending] = m
            pending = None
    return out


def load_export(net: ProductNet, onnx_path: Path) -> None:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(onnx_path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for n in model.graph.node:  # also stored as Constant nodes, or shared through Identity
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            inits[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
        elif n.op_type == "Identity" and n.input[0] in inits:
            inits[n.output[0]] = inits[n.input[0]]
    nodes = [n for n in model.graph.node if n.op_type == "Conv"]
    convs = _conv_order(net)
    if len(nodes) != len(convs):
        raise ValueError(f"{onnx_path}: {len(nodes)} convolutions, the network has "
                         f"{len(convs)}")
    bns = _bn_after(net)
    with torch.no_grad():
        for node, conv in zip(nodes, convs, strict=True):
            w = inits[node.input[1]]
            b = inits[node.input[2]] if len(node.input) > 2 else np.zeros(w.shape[0], np.float32)
            if tuple(w.shape) != tuple(conv.weight.shape):
                raise ValueError(f"{onnx_path}: convolution {node.name} is {w.shape}, the "
                                 f"network's is {tuple(conv.weight.shape)}")
            conv.weight.copy_(torch.from_numpy(np.array(w)))
            bias = torch.from_numpy(np.array(b, np.float32))
            if conv.bias is not None:
                conv.bias.copy_(bias)
                continue
            bn = bns[conv]
            assert bn.running_mean is not None and bn.running_var is not None
            bn.weight.fill_(1.0)
            bn.bias.copy_(bias)
            bn.running_mean.zero_()
            bn.running_var.fill_(1.0 - bn.eps)
    net.batch_norms_frozen = True
