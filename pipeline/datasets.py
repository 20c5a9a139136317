"""Labelled photo folders on disk: YOLO, Pascal VOC, COCO or CSV, read as class-agnostic boxes.

- ``yolo``: each image's ``<stem>.txt`` (``class cx cy w h``, normalized; a polygon row
  ``class x1 y1 x2 y2 ...`` counts as its bounding box), found where Ultralytics looks, in
  the ``labels`` folder that mirrors the image's ``images`` folder (``images/test/a.jpg`` ->
  ``labels/test/a.txt``, ``test/images/a.jpg`` -> ``test/labels/a.txt``), else in
  ``labels/`` under the root, else beside the image;
- ``voc``: ``*.xml`` annotations (``Annotations/`` or beside the images) naming their file
  (or, when that name is not found, sharing the annotation's stem);
- ``coco``: ``*.json`` with ``images`` and ``annotations`` (``bbox`` = x, y, w, h), at the
  root, in ``annotations/`` or, when neither has one, anywhere below;
- ``csv``: SKU-110K's rows ``image_name,x1,y1,x2,y2[,class,image_width,image_height]``,
  with or without a header.

Boxes come back in the stored image's pixels (EXIF orientation is not applied: most tools
label stored pixels), except where the labels declare the photo's size (CSV, COCO and VOC
do) and that size is the stored one turned a quarter, as the photo's EXIF orientation turns
it: those labels were drawn on the photo as displayed, and the item says so (``upright``). A
folder whose labels cannot be matched to its images is refused with
a :class:`DatasetError` rather than scored as photos without products.
"""

from __future__ import annotations

import csv
import json
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from pipeline.errors import DatasetError
from pipeline.image import image_size, read_orientation

Format = Literal["auto", "yolo", "voc", "coco", "csv"]
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
Box = tuple[float, float, float, float]


QUARTER_TURNS = (5, 6, 7, 8)  # EXIF orientations that swap width and height


@dataclass(frozen=True)
class LabelledImage:
    path: Path
    boxes: npt.NDArray[np.float32]  # (N, 4) x1 y1 x2 y2
    # The boxes are on the photo as displayed (EXIF orientation applied), not on its stored
    # pixels.
    upright: bool = False


def labels_upright(path: Path, declared_wh: tuple[float, float] | None) -> bool:
    """Whether boxes labelled on a photo of ``declared_wh`` are on ``path`` as displayed
    rather than as stored: only a quarter turn shows in the size, so true where the declared
    size is the stored one swapped and the photo's EXIF orientation turns it a quarter."""
    if declared_wh is None:
        return False
    try:
        w, h = image_size(path)
    except (OSError, SyntaxError, ValueError):
        return False  # unreadable: the evaluation names it and leaves it out
    declared = (round(declared_wh[0]), round(declared_wh[1]))
    return w != h and declared == (h, w) and read_orientation(path) in QUARTER_TURNS


def _declared(width: object, height: object) -> tuple[float, float] | None:
    try:
        w, h = float(str(width)), float(str(height))
    except ValueError:
        return None
    return (w, h) if w > 0 and h > 0 else None


def _label_dirs(root: Path) -> list[Path]:
    return [p for p in root.rglob("labels") if p.is_dir() and any(p.rglob("*.txt"))]


def _csv_files(root: Path) -> list[Path]:
    return sorted(root.glob("*.csv")) or sorted((root / "annotations").glob("*.csv"))


def _coco_files(root: Path, deep: bool = True) -> list[Path]:
    return (sorted(root.glob("*.json")) or sorted((root / "annotations").glob("*.json"))
            or (sorted(root.rglob("*.json")) if deep else []))


def detect_format(root: Path) -> Literal["yolo", "voc", "coco", "csv"]:
    if _label_dirs(root):
        return "yolo"
    if _coco_files(root, deep=False):
        return "coco"
    if any(root.rglob("*.xml")):
        return "voc"
    if _coco_files(root):
        return "coco"
    if _csv_files(root):
        return "csv"
    raise DatasetError(f"{root}: no labels/ folder (yolo), *.json (coco), *.xml (voc) or "
                       "*.csv (SKU-110K rows) found")


def images_under(root: Path) -> list[Path]:
    """Every image file under ``root``, at any depth, sorted."""
    return sorted(p for p in root.rglob("*")
                  if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _yolo_label(root: Path, image: Path) -> Path | None:
    """Where a YOLO label of ``image`` is: the mirrored ``labels`` folder, ``root/labels``,
    or beside the image."""
    parts = image.relative_to(root).parts
    tried = []
    if "images" in parts[:-1]:
        i = len(parts) - 2 - parts[:-1][::-1].index("images")
        tried.append(root.joinpath(*parts[:i], "labels", *parts[i + 1:-1], f"{image.stem}.txt"))
    tried += [root / "labels" / f"{image.stem}.txt", image.with_suffix(".txt")]
    return next((p for p in tried if p.is_file()), None)


def yolo_boxes(text: str, width: int, height: int) -> list[Box]:
    """Pixel boxes of a YOLO label file: box rows and polygon rows, other lines skipped."""
    rows = []
    for line in text.splitlines():
        try:
            values = [float(v) for v in line.split()[1:]]
        except ValueError:
            continue
        if len(values) in (4, 5):  # cx cy w h [confidence]
            cx, cy, bw, bh = values[:4]
            rows.append(((cx - bw / 2) * width, (cy - bh / 2) * height,
                         (cx + bw / 2) * width, (cy + bh / 2) * height))
        elif len(values) >= 6 and len(values) % 2 == 0:  # a polygon x1 y1 x2 y2 ...
            xs, ys = values[0::2], values[1::2]
            rows.append((min(xs) * width, min(ys) * height, max(xs) * width,
                         max(ys) * height))
    return rows


def _yolo(root: Path) -> Iterator[LabelledImage]:
    found = 0
    folders = {p: p.relative_to(root).parts[:-1] for p in images_under(root)}
    images = [p for p, dirs in folders.items() if "labels" not in dirs]
    if any("images" in folders[p] for p in images):
        # An Ultralytics layout: its photos are under images/, whatever else lies beside.
        images = [p for p in images if "images" in folders[p]]
    for path in images:
        label = _yolo_label(root, path)
        rows: list[Box] = []
        if label is not None:
            found += 1
            try:
                w, h = image_size(path)
            except (OSError, SyntaxError, ValueError):
                w = h = 0  # unreadable: the evaluation names it and leaves it out
            rows = yolo_boxes(label.read_text(errors="replace"), w, h)
        yield LabelledImage(path, np.array(rows, np.float32).reshape(-1, 4))
    if images and not found:
        raise DatasetError(f"{root}: no YOLO label file found for any of {len(images)} "
                           "images (looked for labels/<same path>/<stem>.txt, "
                           "labels/<stem>.txt and <stem>.txt beside each image)")


def _voc(root: Path) -> Iterator[LabelledImage]:
    images = images_under(root)
    by_name = {p.name: p for p in images}
    by_stem = {p.stem: p for p in images}
    for xml in sorted(root.rglob("*.xml")):
        try:
            tree = ET.parse(xml).getroot()
        except ET.ParseError as exc:
            raise DatasetError(f"{xml}: not readable VOC XML: {exc}") from exc
        name = Path((tree.findtext("filename") or "").strip()).name
        path = by_name.get(name) or by_stem.get(Path(name).stem) or by_stem.get(xml.stem)
        if path is None:
            continue
        rows = []
        for obj in tree.iter("object"):
            bb = obj.find("bndbox")
            if bb is None:
                continue
            rows.append(tuple(float(bb.findtext(k) or 0) for k in ("xmin", "ymin", "xmax",
                                                                    "ymax")))
        size = _declared(tree.findtext("size/width"), tree.findtext("size/height"))
        yield LabelledImage(path, np.array(rows, np.float32).reshape(-1, 4),
                            labels_upright(path, size))


def _coco(root: Path) -> Iterator[LabelledImage]:
    images = images_under(root)
    by_rel = {p.relative_to(root).as_posix(): p for p in images}
    by_name = {p.name: p for p in images}
    for f in _coco_files(root):
        try:
            doc = json.loads(f.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DatasetError(f"{f}: not readable JSON: {exc}") from exc
        if not isinstance(doc, dict) or "images" not in doc:
            continue
        boxes: dict[Any, list[Box]] = {}
        for a in doc.get("annotations", []):
            bbox = a.get("bbox") if isinstance(a, dict) else None
            if not isinstance(bbox, list) or len(bbox) != 4 or "image_id" not in a:
                continue  # no box (a caption, a keypoint set) or no image
            x, y, w, h = (float(v) for v in bbox)
            boxes.setdefault(a["image_id"], []).append((x, y, x + w, y + h))
        for im in doc["images"]:
            if not isinstance(im, dict) or "file_name" not in im:
                continue
            name = str(im["file_name"]).replace("\\", "/")
            path = by_rel.get(name) or by_name.get(Path(name).name)
            if path is not None:
                size = _declared(im.get("width"), im.get("height"))
                yield LabelledImage(path, np.array(boxes.get(im.get("id"), []),
                                                   np.float32).reshape(-1, 4),
                                    labels_upright(path, size))


def _csv(root: Path) -> Iterator[LabelledImage]:
    by_name = {p.name: p for p in images_under(root)}
    boxes: dict[str, list[Box]] = {}
    sizes: dict[str, tuple[float, float] | None] = {}
    for f in _csv_files(root):
        with f.open(newline="") as fh:
            for row in csv.reader(fh):
                try:
                    name, x1, y1, x2, y2 = row[0].strip(), *(float(v) for v in row[1:5])
                except (ValueError, IndexError):
                    continue  # a header or a short row
                name = Path(name).name
                boxes.setdefault(name, []).append((x1, y1, x2, y2))
                if len(row) >= 8:
                    sizes.setdefault(name, _declared(row[6], row[7]))
    for name, rows in sorted(boxes.items()):
        if name in by_name:
            yield LabelledImage(by_name[name], np.array(rows, np.float32).reshape(-1, 4),
                                labels_upright(by_name[name], sizes.get(name)))


def load_dataset(root: Path, fmt: Format = "auto") -> list[LabelledImage]:
    """Every labelled image under ``root``; raises :class:`DatasetError` when none."""
    if not root.is_dir():
        raise DatasetError(f"{root} is not a directory")
    kind = detect_format(root) if fmt == "auto" else fmt
    reader = {"yolo": _yolo, "voc": _voc, "coco": _coco, "csv": _csv}[kind]
    items = list(reader(root))
    if not items:
        raise DatasetError(f"{root}: no labelled images found as {kind}")
    return items
