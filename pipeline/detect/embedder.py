"""The product embedder: crops in, unit vectors out, through a lazily created ONNX session."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ValidationError

from pipeline import metrics
from pipeline.core.letterbox import letterbox
from pipeline.detect.session import LazySession
from pipeline.errors import ModelError

BATCH = 64


class EmbedderInput(BaseModel):
    name: str = "crops"
    size: int = 112
    pad_value: int = 114


class EmbedderCard(BaseModel):
    name: str
    version: str
    kind: str = "embedder"
    input: EmbedderInput = EmbedderInput()
    metrics: dict[str, Any] = {}
    sha256: str | None = None


@dataclass(frozen=True)
class EmbedderFiles:
    card: EmbedderCard
    onnx_path: Path

    @property
    def ref(self) -> str:
        return f"{self.card.name}/{self.card.version}"


def load_embedder(root: Path, name: str, version: str | None = None,
                  verify_sha256: bool = False) -> EmbedderFiles:
    base = root / name
    if not base.is_dir():
        raise ModelError(f"embedder {name!r} not found under {root}")
    if version is None:
        versions = [p for p in base.iterdir() if (p / "card.json").is_file()]
        if not versions:
            raise ModelError(f"no embedder version with a card.json under {base}")
        mdir = max(versions, key=lambda p: (len(p.name), p.name))
    else:
        mdir = base / version
    try:
        card = EmbedderCard.model_validate_json((mdir / "card.json").read_text())
    except (OSError, ValidationError) as exc:
        raise ModelError(f"unreadable embedder card in {mdir}: {exc}") from exc
    path = mdir / "model.onnx"
    if not path.is_file():
        raise ModelError(f"{path} is missing")
    if verify_sha256 and card.sha256 and hashlib.sha256(path.read_bytes()).hexdigest() \
            != card.sha256:
        raise ModelError(f"{path} differs from the sha256 in its card")
    return EmbedderFiles(card, path)


class Embedder:
    """Embeds BGR crops of any size: letterboxed to the model's square input, batched."""

    def __init__(self, files: EmbedderFiles, *, device: str = "auto",
                 intra_op_threads: int = 1) -> None:
        self.files = files
        self.session = LazySession(files.onnx_path, device, intra_op_threads, 1)

    @classmethod
    def from_dir(cls, root: Path, name: str, version: str | None = None, *,
                 device: str = "auto", intra_op_threads: int = 1) -> Embedder:
        return cls(load_embedder(root, name, version), device=device,
                   intra_op_threads=intra_op_threads)

    @property
    def ref(self) -> str:
        return self.files.ref

    def prepare(self, crop: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        """One crop as the model takes it: ``(3, S, S)`` RGB in [0, 1]."""
        spec = self.files.card.input
        boxed, _ = letterbox(crop, target_wh=(spec.size, spec.size), pad_value=spec.pad_value)
        return np.ascontiguousarray(boxed[:, :, ::-1].transpose(2, 0, 1), np.float32) / 255.0

    @property
    def dim(self) -> int:
        """D, the length of a signature."""
        return int(self.session.get().get_outputs()[0].shape[1])

    def embed(self, crops: Sequence[npt.NDArray[np.uint8]]) -> npt.NDArray[np.float32]:
        """``(N, D)`` unit vectors for N crops."""
        if not crops:
            return np.zeros((0, self.dim), np.float32)
        name = self.files.card.input.name
        out = []
        for i in range(0, len(crops), BATCH):
            batch = np.stack([self.prepare(c) for c in crops[i:i + BATCH]])
            t0 = time.perf_counter()
            out.append(np.asarray(self.session.get().run(None, {name: batch})[0], np.float32))
            metrics.INFERENCE_SECONDS.labels(self.ref, self.session.provider).observe(
                time.perf_counter() - t0)
        return np.concatenate(out)
