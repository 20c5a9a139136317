"""The per-upload result: the analysts' contract, one JSON document per upload under
``compliance/store=…/date=…/aisle=…/{upload_id}.json`` (JSON Schema in
``schemas/photo-result.schema.json``). ``result_version`` changes when a field's meaning does;
new optional fields do not change it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

RESULT_VERSION = 1
PositionStatus = Literal["in_place", "partial", "out_of_stock", "missing"]
ItemStatus = Literal["in_place", "extra", "misplaced", "unknown", "off_shelf"]
# x1, y1, x2, y2 in the upright working image's pixels: four finite numbers of a size a
# photo can have (a hand-edited or damaged result's NaN or 1e30 would stop a report drawing)
Coordinate = Annotated[float, Field(allow_inf_nan=False, ge=-1e6, le=1e6)]
Box = Annotated[list[Coordinate], Field(min_length=4, max_length=4)]
Ratio = Annotated[float, Field(allow_inf_nan=False, ge=0.0, le=1.0)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class Source(_Model):
    bucket: str
    key: str
    version_id: str | None = None


class PlanogramRef(_Model):
    id: str
    version: int


class PositionResult(_Model):
    index: int
    sku: str
    planned_facings: int
    found_facings: int
    status: PositionStatus
    gap_box: Box | None = None


class ShelfResult(_Model):
    index: int
    planned_facings: int
    found_facings: int
    compliance: Ratio
    detections: int
    out_of_stock: list[str] = Field(default_factory=list)
    out_of_stock_positions: list[int] = Field(default_factory=list)
    not_found_positions: list[int] = Field(default_factory=list)
    positions: list[PositionResult] = Field(default_factory=list)


class ItemResult(_Model):
    """A detected product on the shelves, named, with its status against the plan."""

    box: Box
    sku: str
    score: float
    shelf: int | None = None
    position: int | None = None
    status: ItemStatus
    # Named the SKU planned where it stands, which recognition found it nearly as like as
    # its best candidate (SHELF_RECOGNITION__POSITION_MARGIN)
    by_position: bool = False


class GapResult(_Model):
    shelf: int
    position: int
    sku: str
    box: Box


class ProductResult(_Model):
    """A detected product of a bay without a planogram: named, nothing to compare with."""

    box: Box
    sku: str
    brand: str
    score: float


class PhotoResult(_Model):
    result_version: int = RESULT_VERSION
    sha256: str
    upload_id: str
    store: str
    aisle: str
    bay: str
    camera: str
    date: str | None
    captured_at: str | None = None  # when the upload reached S3 (its event time)
    taken_at: str | None = None  # when the photo was taken (EXIF), if credible
    store_format: str
    display_type: str
    source: Source
    route: str | None = None
    route_reason: str | None = None
    model: str | None = None
    catalog: str | None = None
    image_size: list[int] | None = None
    detections: int
    compliance: Ratio | None = Field(
        description="planned facings found in place / planned facings; null without a "
                    "planogram (see compliance_reason)")
    compliance_reason: str | None = None
    planogram: PlanogramRef | None = None
    planned_facings: int | None = None
    found_facings: int | None = None
    out_of_stock: list[str] = Field(default_factory=list)
    not_in_catalog: list[str] = Field(
        default_factory=list,
        description="SKUs the planogram plans that the catalog lacks: no product can be "
                    "named one, so their facings count as missing until they are added")
    misplaced: int = 0
    unknown_products: int = 0
    extra_facings: int = 0
    unknown_label: str = "unknown"
    shelves: list[ShelfResult] = Field(default_factory=list)
    items: list[ItemResult] = Field(default_factory=list)
    gaps: list[GapResult] = Field(default_factory=list)
    products: list[ProductResult] = Field(default_factory=list)
    osa: dict[str, float] = Field(default_factory=dict)
    share_of_shelf: dict[str, float] = Field(default_factory=dict)
    share_of_shelf_width: dict[str, float] = Field(default_factory=dict)
    artifacts: dict[str, str] = Field(default_factory=dict)
    stage_seconds: dict[str, float] = Field(default_factory=dict)
    completed_at: str


def export_json_schema(path: Path | str) -> Path:
    """Write the result's JSON Schema (committed as ``schemas/``) and return the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(PhotoResult.model_json_schema(), indent=2, sort_keys=True) + "\n")
    return out
