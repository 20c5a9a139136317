"""A deliberately slow drop-in model (YOLOv8 layout), so a test can kill a worker mid-task."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from pipeline.settings import REPO_ROOT

SIZE = 320
MATMULS = 900


def build_slow_model(path: Path) -> None:
    """Repeated [300, 1024] x [1024, 1024] products on the input, then fixed detections."""
    w = numpy_helper.from_array(np.eye(1024, dtype=np.float32) * 0.5, "w")
    shape = numpy_helper.from_array(np.array([300, 1024], np.int64), "shape")
    dets = np.zeros((1, 5, 2), np.float32)
    dets[0, :, 0] = [160, 160, 40, 80, 0.9]
    dets[0, :, 1] = [60, 60, 20, 20, 0.05]
    fixed = numpy_helper.from_array(dets, "fixed")
    zero = numpy_helper.from_array(np.array(0.0, np.float32), "zero")
    nodes = [helper.make_node("Reshape", ["images", "shape"], ["x0"])]
    for i in range(MATMULS):
        nodes.append(helper.make_node("MatMul", [f"x{i}", "w"], [f"x{i + 1}"]))
    nodes += [
        helper.make_node("ReduceSum", [f"x{MATMULS}"], ["s"], keepdims=0),
        helper.make_node("Mul", ["s", "zero"], ["s0"]),
        helper.make_node("Add", ["fixed", "s0"], ["output0"]),
    ]
    graph = helper.make_graph(
        nodes, "slow",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 5, 2])],
        [w, shape, fixed, zero])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


@pytest.fixture(scope="session")
def slow_model_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    mdir = root / "slow-model" / "1"
    mdir.mkdir(parents=True)
    build_slow_model(mdir / "model.onnx")
    (mdir / "labels.json").write_text(json.dumps({"0": "SKU-001"}))
    shutil.copytree(REPO_ROOT / "models" / "sku-embed", root / "sku-embed")
    (mdir / "card.json").write_text(json.dumps({"name": "slow-model", "version": "1",
                                                "format": "yolov8", "task": "sku"}))
    return root


@pytest.fixture(scope="session")
def slow_model_env(slow_model_root: Path) -> dict[str, str]:
    """A worker's environment that runs the slow model on both routes."""
    return {"SHELF_MODELS__ROOT": str(slow_model_root), "SHELF_MODELS__LIGHT": "slow-model",
            "SHELF_MODELS__HEAVY": "slow-model"}
