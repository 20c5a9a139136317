"""Weight-space blends: convolution weights read from float and quantized graphs, and mixed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from pipeline.detect.register import widest_int8_weight
from pipeline.train.blend import conv_weights, mix_convs
from pipeline.train.int8 import quantize_qdq

RNG = np.random.default_rng(0)


def two_convs(seed: int, bias: bool = True) -> onnx.ModelProto:
    """x (1, 3, 8, 8) -> Conv 3->4 (3x3, bias) -> Relu -> Conv 4->2 (1x1, bias or none)."""
    rng = np.random.default_rng(seed)
    w1 = rng.normal(size=(4, 3, 3, 3)).astype(np.float32)
    b1 = rng.normal(size=4).astype(np.float32)
    w2 = rng.normal(size=(2, 4, 1, 1)).astype(np.float32)
    b2 = rng.normal(size=2).astype(np.float32)
    inits = [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"))]
    second = ["h", "w2"]
    if bias:
        inits.append(numpy_helper.from_array(b2, "b2"))
        second.append("b2")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w1", "b1"], ["c"], pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["c"], ["h"]),
         helper.make_node("Conv", second, ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 8, 8])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.asarray(sess.run(None, {"x": x})[0])


@pytest.mark.parametrize("bias", [True, False])
def test_float_weights_are_read_in_graph_order(bias: bool) -> None:
    model = two_convs(1, bias)
    got = conv_weights(model)
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    assert [len(w) for w in got] == [2, 2 if bias else 1]
    np.testing.assert_array_equal(got[0][0], inits["w1"])
    np.testing.assert_array_equal(got[1][0], inits["w2"])


def test_quantized_weights_are_read_through_their_dequantization(tmp_path: Path) -> None:
    float_path, int8_path = tmp_path / "f.onnx", tmp_path / "q.onnx"
    onnx.save(two_convs(2), str(float_path))
    onnx.save(two_convs(2), str(int8_path))
    quantize_qdq(int8_path, ({"x": RNG.random((1, 3, 8, 8), np.float32)} for _ in range(4)))
    quantized = onnx.load(str(int8_path))
    fed = {n.output[0] for n in quantized.graph.node if n.op_type == "DequantizeLinear"}
    assert all(n.input[1] in fed for n in quantized.graph.node if n.op_type == "Conv")
    # Weights within [-64, 64]: a pair of uint8 x int8 products stays within int16, so CPUs
    # without VNNI (VPMADDUBSW saturates the pair's sum) compute what VNNI CPUs compute.
    assert widest_int8_weight(quantized) == 64
    exact, read = conv_weights(onnx.load(str(float_path))), conv_weights(quantized)
    for mine, theirs in zip(exact, read, strict=True):
        for a, b in zip(mine, theirs, strict=True):
            # 7-bit weights per output channel: within half a step of the float weight
            step = np.abs(a).reshape(a.shape[0], -1).max(1) / 64 if a.ndim > 1 else None
            tol = 0.5 * step.reshape((-1,) + (1,) * (a.ndim - 1)) + 1e-6 if step is not None \
                else 1e-3 * np.abs(a).max()
            assert np.all(np.abs(a - b) <= tol)


@pytest.mark.parametrize("alpha", [0.0, 0.35, 1.0])
def test_mixing_runs_the_network_with_the_mixed_weights(alpha: float) -> None:
    model, other = two_convs(3), two_convs(4)
    theirs = conv_weights(other)
    mine = conv_weights(model)
    mix_convs(model, theirs, alpha)
    expected = two_convs(5)
    for node_w, a, b in zip(
            [["w1", "b1"], ["w2", "b2"]], mine, theirs, strict=True):
        for name, wa, wb in zip(node_w, a, b, strict=True):
            init = next(i for i in expected.graph.initializer if i.name == name)
            init.CopyFrom(numpy_helper.from_array(alpha * wb + (1 - alpha) * wa, name))
    x = RNG.random((1, 3, 8, 8), np.float32)
    np.testing.assert_allclose(run(model, x), run(expected, x), rtol=1e-5, atol=1e-5)
    if alpha == 1.0:
        np.testing.assert_allclose(run(model, x), run(other, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("other", "alpha", "message"), [
    (two_convs(6), 1.5, "not between 0 and 1"),
    (two_convs(6, bias=False), 0.5, "parameters against"),
    (helper.make_model(helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"])], "one",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.zeros((2, 3, 1, 1), np.float32), "w")])),
     0.5, "1 convolutions against 2"),
])
def test_networks_that_differ_are_refused(other: onnx.ModelProto, alpha: float,
                                          message: str) -> None:
    with pytest.raises(ValueError, match=message):
        mix_convs(two_convs(7), conv_weights(other), alpha)


def test_a_conv_fed_by_anything_but_a_weight_is_refused() -> None:
    model = two_convs(8)
    model.graph.node.insert(0, helper.make_node("Identity", ["w1"], ["w1_copy"]))
    model.graph.node[1].input[1] = "w1_copy"
    with pytest.raises(ValueError, match="neither a weight"):
        conv_weights(model)


def test_the_shipped_embedder_computes_alike_on_every_cpu() -> None:
    """Its int8 weights keep 7 bits: no VPMADDUBSW pair sum can saturate on a CPU without
    VNNI, so an AVX2 worker signs a crop as a VNNI worker does."""
    from pipeline.detect.embedder import load_embedder
    from pipeline.settings import get_settings

    s = get_settings()
    files = load_embedder(s.models.root, s.recognition.embedder, verify_sha256=True)
    model = onnx.load(str(files.onnx_path))
    assert sum(i.data_type == TensorProto.INT8 for i in model.graph.initializer) >= 40
    assert 0 < widest_int8_weight(model) <= 64  # every convolution and the projection
