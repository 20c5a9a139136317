"""ONNX Runtime sessions, created lazily in the process that uses them.

A session built before ``fork`` misbehaves in the child (onnxruntime#7846), so a session is
owned by the pid that created it and rebuilt when another process asks for it.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnxruntime as ort

from pipeline.errors import ModelError

log = logging.getLogger(__name__)
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


def choose_providers(device: str, available: list[str]) -> list[str]:
    """``auto``: CUDA when the runtime has it, else CPU. ``cuda`` insists on CUDA."""
    if device == "cpu":
        return [CPU]
    if CUDA in available:
        return [CUDA, CPU]
    if device == "cuda":
        raise ModelError(f"CUDA requested but this onnxruntime offers only {available}")
    return [CPU]


@dataclass
class LazySession:
    """Creates the ``InferenceSession`` on first use in each process."""

    path: Path
    device: str = "auto"
    intra_op_threads: int = 1
    inter_op_threads: int = 1

    def __post_init__(self) -> None:
        self._session: Any = None
        self._pid = -1
        self._lock = threading.Lock()

    def get(self) -> Any:
        if self._session is None or self._pid != os.getpid():
            with self._lock:
                if self._session is None or self._pid != os.getpid():
                    self._session = self._create()
                    self._pid = os.getpid()
        return self._session

    @property
    def providers(self) -> list[str]:
        return list(self.get().get_providers())

    @property
    def provider(self) -> str:
        """The provider that runs the graph (the first one the session chose)."""
        return str(self.providers[0]).removesuffix("ExecutionProvider").lower()

    def _create(self) -> Any:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.intra_op_threads
        opts.inter_op_num_threads = self.inter_op_threads
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        providers = choose_providers(self.device, ort.get_available_providers())
        try:
            sess = ort.InferenceSession(str(self.path), sess_options=opts, providers=providers)
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise ModelError(f"cannot load {self.path}: {exc}") from exc
        log.info("onnx session %s pid=%d providers=%s threads=%d", self.path, os.getpid(),
                 sess.get_providers(), self.intra_op_threads)
        return sess
