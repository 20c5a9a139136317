"""Shelf-aware planogram compliance: detections -> shelf rows -> aligned planned facings.

Pure: boxes and a validated planogram in, report dataclasses out. Detections are grouped
into shelf rows (tilted by perspective, some shelves possibly empty); each row is read left
to right, with the empty stretches of board between products measured in centimetres (px/cm
and the fixture's edges are estimated from the boxes and the plan's widths), and aligned to
its shelf's planned facings by Needleman-Wunsch, where an empty stretch may stand for the
facings that fit it. A planned facing paired with a detection of its SKU is found in place;
a position with nothing found is ``out_of_stock`` when enough empty board is where it
belongs and ``missing`` otherwise (replaced, or pushed off a full shelf). Compliance is
planned facings found in place / planned facings, as the synthetic world's truth computes it.

Every threshold and alignment score is a field of ``ShelfTuning`` (defaults are the calibrated
values); the entry points take one as ``tuning`` and production builds it from ``Settings``.
"""

from __future__ import annotations

from pipeline.core.shelf.alignment import align_sequences
from pipeline.core.shelf.common import DEFAULT_TUNING, Box, Detected, ShelfTuning
from pipeline.core.shelf.judge import evaluate_shelves, split_by_score
from pipeline.core.shelf.report import (
    ComplianceReport,
    GapReport,
    ItemReport,
    PositionReport,
    ShelfReport,
)
from pipeline.core.shelf.rows import assign_rows

__all__ = [
    "DEFAULT_TUNING",
    "Box",
    "ComplianceReport",
    "Detected",
    "GapReport",
    "ItemReport",
    "PositionReport",
    "ShelfReport",
    "ShelfTuning",
    "align_sequences",
    "assign_rows",
    "evaluate_shelves",
    "split_by_score",
]
