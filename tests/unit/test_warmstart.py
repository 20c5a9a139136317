"""Training goes on from a shipped export: the network rebuilt from its folded weights
computes what the export computes (needs the ``train`` extras)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")


def test_network_loaded_from_an_export_matches_it(tmp_path: Path) -> None:
    from pipeline.train.net import ExportWrapper, ProductNet
    from pipeline.train.warmstart import load_export

    # Given an exported network whose batch norms hold statistics of their own
    torch.manual_seed(0)
    src = ProductNet(neck=16)
    for m in src.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    src.eval()
    path = tmp_path / "model.onnx"
    torch.onnx.export(ExportWrapper(src), (torch.zeros(1, 3, 128, 128),), str(path),
                      input_names=["images"], output_names=["scores", "boxes"],
                      dynamic_axes={"images": {2: "h", 3: "w"}}, opset_version=17,
                      dynamo=False)

    # When a fresh network is loaded from it and put in training mode (its batch norms stay
    # in eval mode)
    net = ProductNet(neck=16)
    load_export(net, path)
    net.train()

    # Then it computes the export's scores and boxes
    x = np.random.default_rng(1).random((1, 3, 96, 160), dtype=np.float32)
    with torch.no_grad():
        scores, boxes = ExportWrapper(net)(torch.from_numpy(x))
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {"images": x})
    np.testing.assert_allclose(scores.numpy(), want[0], atol=1e-4)
    np.testing.assert_allclose(boxes.numpy(), want[1], atol=1e-2)


def test_an_export_of_another_network_is_refused(tmp_path: Path) -> None:
    from pipeline.train.net import ExportWrapper, ProductNet
    from pipeline.train.warmstart import load_export

    path = tmp_path / "model.onnx"
    torch.onnx.export(ExportWrapper(ProductNet(neck=16)).eval(),
                      (torch.zeros(1, 3, 64, 64),), str(path), opset_version=17, dynamo=False)
    with pytest.raises(ValueError, match="convolution"):
        load_export(ProductNet(neck=32), path)
