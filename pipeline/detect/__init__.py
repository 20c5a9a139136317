"""ONNX Runtime detectors: model cards, lazily created sessions, pre- and post-processing."""

from pipeline.detect.card import ModelCard, load_model
from pipeline.detect.detector import Detector

__all__ = ["Detector", "ModelCard", "load_model"]
