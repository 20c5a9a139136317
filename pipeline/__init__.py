"""shelf-pipeline: retail shelf photos in, SKU detections and planogram compliance out."""

from __future__ import annotations

__version__ = "0.1.0"
