"""The planogram schema: shelves top to bottom, each a left-to-right run of SKU positions.

Validated at the edge so the compliance maths can trust it. The synthetic world's
``Planogram.to_json()`` is a valid document; unknown keys are refused so typos surface early.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pipeline.core.recognition import SKU_ID, UNKNOWN  # UNKNOWN: a product recognition cannot name

# Caps that bound the compliance work per photo (a real bay is far below each).
MAX_SHELVES = 24
MAX_POSITIONS = 200  # per shelf
MAX_FACINGS = 100  # per position
# A facing or a fixture; inf and denormals are errors. No pack is narrower than a
# centimetre, and facings narrower than the detected gaps they fill multiply the work of
# aligning a shelf (2,000 facings of 0.1 cm took 8 s against 60 detections, 1 s at 1 cm).
MIN_WIDTH_CM, MAX_WIDTH_CM = 1.0, 10_000.0
MAX_TOTAL_FACINGS = 2000


class Position(BaseModel):
    """One planned position: ``facings`` side-by-side units of ``sku``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sku: str = Field(min_length=1, max_length=128,
                     description="a JSON string (EAN and UPC codes quoted: as numbers they "
                                 f"lose leading zeros); not {UNKNOWN!r}")
    # A whole number: true or "2" are typos, not facings.
    facings: int = Field(default=1, ge=1, le=MAX_FACINGS, strict=True)
    width_cm: float | None = Field(default=None, ge=MIN_WIDTH_CM, le=MAX_WIDTH_CM,
                                   description="width of one facing")

    @field_validator("sku", mode="before")
    @classmethod
    def _trimmed(cls, sku: object) -> object:
        """Spaces around a code (a spreadsheet's cell) are not part of it."""
        return sku.strip() if isinstance(sku, str) else sku

    @field_validator("sku")
    @classmethod
    def _a_catalog_id(cls, sku: str) -> str:
        if sku == UNKNOWN:  # every product recognition cannot name would count as it
            raise ValueError(f"{UNKNOWN!r} is what unnamed products are called, not a SKU")
        if not SKU_ID.fullmatch(sku):  # no catalog entry could match it: always out of stock
            raise ValueError(f"SKU {sku!r} is not a catalog SKU id (letters, digits, '.', "
                             "'_' and '-', starting with a letter or digit)")
        return sku


class Shelf(BaseModel):
    """One shelf; ``index`` 0 is the top shelf. Positions run left to right."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    index: int = Field(ge=0, strict=True)
    positions: list[Position] = Field(default_factory=list, max_length=MAX_POSITIONS)

    @property
    def planned_facings(self) -> int:
        return sum(p.facings for p in self.positions)


class Planogram(BaseModel):
    """A bay's plan: identity, optional location, fixture width and its shelves."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    planogram_id: str = Field(min_length=1, max_length=128)
    version: int = Field(ge=0, le=2**53, strict=True)  # exact in any JSON or SQL reader
    store: str | None = None
    aisle: str | None = None
    bay: str | None = None
    display: Literal["gondola", "endcap"] = "gondola"
    width_cm: float | None = Field(default=None, ge=MIN_WIDTH_CM, le=MAX_WIDTH_CM,
                                   description="fixture width")
    shelves: list[Shelf] = Field(min_length=1, max_length=MAX_SHELVES)

    @model_validator(mode="after")
    def _check_shelf_order(self) -> Planogram:
        indexes = [s.index for s in self.shelves]
        if indexes != list(range(len(indexes))):
            raise ValueError(f"shelf indexes must be 0..{len(indexes) - 1} in order, "
                             f"got {indexes}")
        if self.planned_facings == 0:  # a draft, or a bay being reset: nothing to comply with
            raise ValueError("no shelf plans a position")
        if self.planned_facings > MAX_TOTAL_FACINGS:
            raise ValueError(f"{self.planned_facings} planned facings exceed the cap of "
                             f"{MAX_TOTAL_FACINGS}")
        return self

    @property
    def planned_facings(self) -> int:
        return sum(s.planned_facings for s in self.shelves)

    def sku_widths(self) -> dict[str, float]:
        """Facing width per SKU wherever the plan states one (first mention wins)."""
        out: dict[str, float] = {}
        for shelf in self.shelves:
            for pos in shelf.positions:
                if pos.width_cm is not None:
                    out.setdefault(pos.sku, pos.width_cm)
        return out


def export_json_schema(path: Path | str) -> Path:
    """Write the planogram JSON Schema to ``path`` (committed as ``schemas/``) and return it."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(Planogram.model_json_schema(), indent=2, sort_keys=True) + "\n")
    return out
