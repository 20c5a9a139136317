"""Labelled photo folders on disk: YOLO, Pascal VOC or COCO, read as class-agnostic boxes.

- ``yolo``: ``images/*.jpg|png`` and ``labels/<stem>.txt`` (``class cx cy w h``, normalized);
- ``voc``: ``*.xml`` annotations (``Annotations/`` or beside the images) naming their file;
- ``coco``: one ``*.json`` with ``images`` and ``annotations`` (``bbox`` = x, y, w, h).

Boxes come back in the stored image's pixels (EXIF orientation is not applied: the datasets
label stored pixels).
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt

from pipeline.errors import DatasetError
from pipeline.image import image_size

Format = Literal["auto", "yolo", "voc", "coco"]
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")



@dataclass(frozen=True)
class LabelledImage:
    path: Path
    boxes: npt.NDArray[np.float32]  # (N, 4) x1 y1 x2 y2 in stored pixels


def detect_format(root: Path) -> Literal["yolo", "voc", "coco"]:
    if (root / "labels").is_dir():
        return "yolo"
    if any(root.glob("*.json")) or any((root / "annotations").glob("*.json")):
        return "coco"
    if any(root.rglob("*.xml")):
        return "voc"
    raise DatasetError(f"{root}: no labels/ (yolo), *.json (coco) or *.xml (voc) found")


def _images(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def _yolo(root: Path) -> Iterator[LabelledImage]:
    images = root / "images" if (root / "images").is_dir() else root
    for path in _images(images):
        label = root / "labels" / f"{path.stem}.txt"
        w, h = image_size(path.read_bytes())
        rows = []
        if label.is_file():
            for line in label.read_text().splitlines():
                parts = line.split()
                if len(parts) < 5:
                    continue
                cx, cy, bw, bh = (float(v) for v in parts[1:5])
                rows.append(((cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w,
                             (cy + bh / 2) * h))
        yield LabelledImage(path, np.array(rows, np.float32).reshape(-1, 4))


def _voc(root: Path) -> Iterator[LabelledImage]:
    by_name = {p.name: p for p in _images(root)}
    for xml in sorted(root.rglob("*.xml")):
        tree = ET.parse(xml).getroot()
        name = tree.findtext("filename") or f"{xml.stem}.jpg"
        path = by_name.get(name) or by_name.get(Path(name).name)
        if path is None:
            continue
        rows = []
        for obj in tree.iter("object"):
            bb = obj.find("bndbox")
            if bb is None:
                continue
            rows.append(tuple(float(bb.findtext(k) or 0) for k in ("xmin", "ymin", "xmax",
                                                                    "ymax")))
        yield LabelledImage(path, np.array(rows, np.float32).reshape(-1, 4))


def _coco(root: Path) -> Iterator[LabelledImage]:
    files = sorted(root.glob("*.json")) or sorted((root / "annotations").glob("*.json"))
    by_name = {p.name: p for p in _images(root)}
    for f in files:
        doc = json.loads(f.read_text())
        if not isinstance(doc, dict) or "images" not in doc:
            continue
        boxes: dict[int, list[tuple[float, float, float, float]]] = {}
        for a in doc.get("annotations", []):
            x, y, w, h = (float(v) for v in a["bbox"])
            boxes.setdefault(int(a["image_id"]), []).append((x, y, x + w, y + h))
        for im in doc["images"]:
            path = by_name.get(Path(str(im["file_name"])).name)
            if path is not None:
                yield LabelledImage(path, np.array(boxes.get(int(im["id"]), []),
                                                   np.float32).reshape(-1, 4))


def load_dataset(root: Path, fmt: Format = "auto") -> list[LabelledImage]:
    """Every labelled image under ``root``; raises :class:`DatasetError` when none."""
    if not root.is_dir():
        raise DatasetError(f"{root} is not a directory")
    kind = detect_format(root) if fmt == "auto" else fmt
    reader = {"yolo": _yolo, "voc": _voc, "coco": _coco}[kind]
    items = list(reader(root))
    if not items:
        raise DatasetError(f"{root}: no labelled images found as {kind}")
    return items
