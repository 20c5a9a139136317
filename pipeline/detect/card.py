"""Model directories: ``model.onnx`` + ``labels.json`` + ``card.json``.

A user's model drops in as ``models/<name>/<version>/`` with these three files; the card says
how to feed it and how to read its outputs, so no code changes.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, ValidationError

from pipeline.core.decode import Format
from pipeline.errors import ModelError

MAX_INPUT_SIDE = 4096
Finite = Annotated[float, Field(allow_inf_nan=False)]
Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class InputSpec(BaseModel):
    name: str | None = None  # default: the graph's first input
    # (width, height); default: from the graph. Bounded: a card is a file anyone with the
    # models folder can edit, and a 100,000-pixel input would take the host's memory.
    size: tuple[Annotated[int, Field(ge=16, le=MAX_INPUT_SIDE)],
                Annotated[int, Field(ge=16, le=MAX_INPUT_SIDE)]] | None = None
    layout: Literal["NCHW", "NHWC"] | None = None  # default: from the graph
    channels: Literal["RGB", "BGR"] = "RGB"
    scale: float = Field(default=1 / 255, gt=0, allow_inf_nan=False)
    mean: tuple[Finite, Finite, Finite] = (0.0, 0.0, 0.0)
    std: tuple[Positive, Positive, Positive] = (1.0, 1.0, 1.0)
    pad_value: int = Field(default=114, ge=0, le=255)
    # With a graph whose height and width are dynamic: fit the image inside ``size`` keeping
    # its aspect (a 4:3 photo gets a 4:3 input, no pixels spent on padding), each side
    # rounded up to a multiple of ``stride``.
    keep_aspect: bool = False
    stride: int = Field(default=32, ge=1, le=256)
    # Which working image the detector sees: ``normalized`` (the normalize stage's, lighting
    # evened out: what this project's detectors are trained on) or ``original`` (ingest's:
    # upright, faces blurred, lighting as the camera took it: what a model trained on
    # ordinary photos expects; a public SKU-110K YOLOv8 loses recall on normalized photos).
    lighting: Literal["normalized", "original"] = "normalized"


class SmallBoxSpec(BaseModel):
    """Scores of boxes whose short side is under ``px`` model-input pixels are scaled by
    ``(short / px) ** power`` before NMS and the threshold: fitted where a detector's small
    boxes are right less often than its scores say."""

    px: float = Field(gt=0, allow_inf_nan=False)
    power: float = Field(default=0.5, gt=0, allow_inf_nan=False)


class PostprocessSpec(BaseModel):
    score_threshold: float = Field(default=0.25, ge=0, le=1)
    iou_threshold: float = Field(default=0.6, ge=0, le=1)
    max_detections: int = Field(default=300, ge=1, le=10_000)
    # Boxes in [0, 1] of the input size rather than pixels; None: the format's convention
    # (``decode_rows``: rtdetr normalized, the others pixels). ``shelf model add`` probes it.
    normalized_boxes: bool | None = None
    small_boxes: SmallBoxSpec | None = None
    # ``centernet``: each peak's score times its neighbours' agreement on its box (the mean
    # IoU of their boxes with its, weighted by their scores) to this power; 0: scores as
    # they come. Fitted on real shelves with the threshold.
    box_agreement: float = Field(default=0.0, ge=0, le=8)
    # The scores, on this model's own scale, at which a detection counts as a product facing
    # and under which it is not even evidence that the place is stocked (what the compliance
    # settings use unless they set their own); None: the settings' defaults.
    facing_score: float | None = Field(default=None, ge=0, le=1)
    evidence_score: float | None = Field(default=None, ge=0, le=1)


class TilingSpec(BaseModel):
    # columns, rows: each tile is one more run of the model per photo
    grid: tuple[Annotated[int, Field(ge=1, le=8)], Annotated[int, Field(ge=1, le=8)]] = (2, 2)
    overlap: float = Field(default=0.2, ge=0, lt=1)
    whole_image: bool = True  # also run once on the whole image, for large objects


class ModelCard(BaseModel):
    name: str
    version: str
    format: Format
    # product: class-agnostic boxes, named by the catalog; sku: its labels are SKU ids.
    task: Literal["product", "sku"] | None = None
    input: InputSpec = InputSpec()
    postprocess: PostprocessSpec = PostprocessSpec()
    tiling: TilingSpec | None = None
    metrics: dict[str, Any] = {}
    sha256: str | None = None


@dataclass(frozen=True)
class ModelFiles:
    card: ModelCard
    labels: tuple[str, ...]  # class index -> SKU id
    onnx_path: Path

    @property
    def normalized_lighting(self) -> bool:
        """The detector is fed the lighting-normalized working image."""
        return self.card.input.lighting == "normalized"

    @property
    def ref(self) -> str:
        return f"{self.card.name}/{self.card.version}"

    @property
    def finds_products(self) -> bool:
        """Class-agnostic: its boxes are products to be named by recognition."""
        return self.card.task == "product" or (self.card.task is None and len(self.labels) == 1)


def _latest_version(root: Path) -> Path:
    versions = [p for p in root.iterdir() if (p / "card.json").is_file()]
    if not versions:
        raise ModelError(f"no model version with a card.json under {root}")
    return max(versions, key=lambda p: (len(p.name), p.name))


def load_model(root: Path, name: str, version: str | None = None,
               verify_sha256: bool = False) -> ModelFiles:
    """Read ``root/name/version`` (the highest version when ``version`` is None)."""
    base = root / name
    if not base.is_dir():
        raise ModelError(f"model {name!r} not found under {root}")
    mdir = base / version if version else _latest_version(base)
    try:
        card = ModelCard.model_validate_json((mdir / "card.json").read_text())
        raw = json.loads((mdir / "labels.json").read_text())
    except (OSError, ValueError, ValidationError) as exc:
        raise ModelError(f"unreadable model card or labels in {mdir}: {exc}") from exc
    if isinstance(raw, dict):
        try:
            labels = tuple(str(raw[k]) for k in sorted(raw, key=int))
        except ValueError as exc:
            raise ModelError(f"{mdir / 'labels.json'} keys must be class indices: {exc}"
                             ) from exc
        if sorted(int(k) for k in raw) != list(range(len(raw))):
            raise ModelError(f"{mdir / 'labels.json'} must cover class indices 0..{len(raw) - 1}")
    elif isinstance(raw, list):
        labels = tuple(str(v) for v in raw)
    else:
        raise ModelError(f"{mdir / 'labels.json'} must map class index to SKU id")
    onnx_path = mdir / "model.onnx"
    if not onnx_path.is_file():
        raise ModelError(f"{onnx_path} is missing")
    if verify_sha256 and card.sha256:
        digest = hashlib.sha256(onnx_path.read_bytes()).hexdigest()
        if digest != card.sha256:
            raise ModelError(f"{onnx_path} sha256 {digest} differs from its card")
    return ModelFiles(card, labels, onnx_path)
