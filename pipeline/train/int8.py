"""ONNX exports to int8 (QDQ): per-channel int8 weights, uint8 activations whose ranges are
calibrated on example inputs. ONNX Runtime's tools only; no PyTorch.

Weights keep 7 bits (``reduce_range``). On x86 CPUs without VNNI (AVX2, AVX-512 before
Cascade Lake, AMD before Zen 4) ONNX Runtime multiplies uint8 activations by int8 weights
with VPMADDUBSW, which adds each pair of products into a saturating 16-bit integer: with
8-bit weights 255 x 127 x 2 overflows it, and the same model names products worse there
than on a VNNI CPU. With 7-bit weights a pair stays within 255 x 64 x 2 < 32,767, so the
model computes the same on every CPU.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import numpy.typing as npt

FORMAT = "QDQ, int8 per-channel weights (7-bit range), uint8 activations"


def quantize_qdq(path: Path, feeds: Iterable[dict[str, npt.NDArray[np.float32]]]) -> None:
    """Rewrite the float model at ``path`` in int8, in place: shapes inferred first, then
    every activation's range calibrated on ``feeds`` (one input dict per run)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )

    class Feeds(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self.left = iter(feeds)

        def get_next(self) -> dict[str, npt.NDArray[np.float32]] | None:
            return next(self.left, None)

    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(path), str(prepared))
        quantize_static(str(prepared), str(path), Feeds(), quant_format=QuantFormat.QDQ,
                        per_channel=True, reduce_range=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
