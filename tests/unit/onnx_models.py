"""Tiny ONNX graphs and model directories built inside the tests.

A "constant" model returns fixed output tensors whatever the image, but still consumes its input
(``output = constant + 0 * sum(images)``), so ONNX Runtime checks the fed tensor against the
declared shape and element type.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper

Dim = int | str  # a string declares a dynamic axis


def constant_model(outputs: list[npt.NDArray[np.float32]], *, input_shape: list[Dim],
                   input_type: int = TensorProto.FLOAT, input_name: str = "images"
                   ) -> onnx.ModelProto:
    """A graph with one image input returning ``outputs`` (float32) unchanged."""
    nodes = []
    source = input_name
    if input_type != TensorProto.FLOAT:
        nodes.append(helper.make_node("Cast", [input_name], ["as_float"], to=TensorProto.FLOAT))
        source = "as_float"
    nodes += [
        helper.make_node("ReduceSum", [source], ["total"], keepdims=0),
        helper.make_node("Mul", ["total", "zero"], ["nothing"]),
    ]
    inits = [numpy_helper.from_array(np.array(0.0, np.float32), "zero")]
    graph_outputs = []
    for k, value in enumerate(outputs):
        arr = np.asarray(value, np.float32)
        inits.append(numpy_helper.from_array(arr, f"const{k}"))
        nodes.append(helper.make_node("Add", [f"const{k}", "nothing"], [f"output{k}"]))
        graph_outputs.append(helper.make_tensor_value_info(f"output{k}", TensorProto.FLOAT,
                                                           list(arr.shape)))
    graph = helper.make_graph(
        nodes, "constant", [helper.make_tensor_value_info(input_name, input_type, input_shape)],
        graph_outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="pipeline-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def write_model_dir(root: Path, name: str, *, card: dict[str, Any], labels: Any,
                    model: onnx.ModelProto | None = None, version: str = "1") -> Path:
    """``root/name/version/`` with ``card.json``, ``labels.json`` and (if given) ``model.onnx``.

    ``card`` gets ``name`` and ``version`` filled in unless it sets them itself.
    """
    mdir = root / name / version
    mdir.mkdir(parents=True, exist_ok=True)
    (mdir / "card.json").write_text(json.dumps({"name": name, "version": version, **card}))
    (mdir / "labels.json").write_text(json.dumps(labels))
    if model is not None:
        onnx.save(model, str(mdir / "model.onnx"))
    return mdir
