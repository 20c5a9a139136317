"""``shelf eval-recognition``: naming photos of products from a gallery of packshots.

Both folders hold one sub-folder per SKU (its name is the SKU id), at any depth:
``gallery/**/<sku>/*.jpg`` and ``queries/**/<sku>/*.jpg``. Each query photo is prepared as
the pipeline prepares a photo (upright, working size, lighting normalized), signed like a
crop and ranked against the gallery's packshots. Figures are given overall and per top-level
group of the queries folder (e.g. Fruit, Packages, Vegetables).

With a reference folder (unlabelled photos from the same stores, none of them queries), each
packshot's scores are lowered by how much it resembles in-store photos in general
(:func:`pipeline.core.recognition.reference_offsets`), so that a packshot that looks like
any in-store photo stops taking the names of the others.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt

from pipeline.core.recognition import (
    REFERENCE_K,
    Weights,
    candidates,
    gallery_offsets,
    similarity,
)
from pipeline.datasets import images_under
from pipeline.detect.detector import Detector
from pipeline.detect.embedder import Embedder
from pipeline.detect.recognizer import (
    View,
    crop_layouts,
    crop_signatures,
    crop_views,
    decode_packshot,
    gallery_from_packshots,
    reference_signatures,
)
from pipeline.errors import CatalogError, DatasetError
from pipeline.eval import read_prepared
from pipeline.image import PreparedPhoto

Crop = Literal["none", "center", "detector"]


@dataclass(frozen=True)
class RecognitionReport:
    embedder: str
    gallery: int
    queries: int
    top1: float
    top5: float
    groups: dict[str, dict[str, float]]
    ms_per_crop: float
    skipped: int = 0
    reference: int = 0  # unlabelled reference photos the gallery's offsets came from

    def to_json(self) -> dict[str, object]:
        return {"embedder": self.embedder, "gallery": self.gallery, "queries": self.queries,
                "top1": self.top1, "top5": self.top5, "groups": self.groups,
                "ms_per_crop": self.ms_per_crop, "skipped": self.skipped,
                "reference": self.reference}

    def format(self) -> str:
        against = f" (offsets from {self.reference} reference photos)" if self.reference else ""
        lines = [f"{self.embedder}: {self.queries} queries against {self.gallery} packshots"
                 f"{against}",
                 f"  all{'':10} top-1 {self.top1:.3f}  top-5 {self.top5:.3f}"]
        for g, v in sorted(self.groups.items()):
            lines.append(f"  {g:13} top-1 {v['top1']:.3f}  top-5 {v['top5']:.3f}  "
                         f"({int(v['queries'])} queries)")
        lines.append(f"  {self.ms_per_crop:.2f} ms per crop (signature)")
        if self.skipped:
            lines.append(f"  {self.skipped} unreadable query photos left out")
        return "\n".join(lines)


def reference_images(root: Path) -> list[Path]:
    """Every image under ``root``, at any depth; folder names, if any, are not read."""
    if not root.is_dir():
        raise DatasetError(f"{root} is not a directory")
    out = images_under(root)
    if not out:
        raise DatasetError(f"{root}: no images")
    return out


def labelled_images(root: Path) -> list[tuple[Path, str, str]]:
    """(path, SKU = parent folder, group = first folder under ``root``) of every image."""
    if not root.is_dir():
        raise DatasetError(f"{root} is not a directory")
    out = []
    for p in images_under(root):
        if p.parent != root:
            rel = p.relative_to(root).parts
            out.append((p, p.parent.name, rel[0] if len(rel) > 2 else p.parent.name))
    if not out:
        raise DatasetError(f"{root}: no images in per-SKU folders")
    return out


def query_crop(photo: PreparedPhoto, how: Crop, detector: Detector | None) -> View:
    """What of a query photo is named, as ``(normalized, photographed)``: the whole photo;
    its central half; or, as the pipeline does, the product the detector finds nearest the
    centre (the whole photo if none)."""
    h, w = photo.photographed.shape[:2]
    box: tuple[float, float, float, float] = (0, 0, w, h)
    if how == "center":
        box = (w // 4, h // 4, w - w // 4, h - h // 4)
    if how == "detector" and detector is not None:
        found = detector.detect(photo.seen(detector.files.normalized_lighting))
        big = [b for b in found.xyxy if (b[2] - b[0]) * (b[3] - b[1]) >= 0.02 * w * h]
        if big:
            centre = np.array([w / 2, h / 2])
            best = min(big, key=lambda b: float(np.hypot(*((b[:2] + b[2:]) / 2 - centre))))
            box = (float(best[0]), float(best[1]), float(best[2]), float(best[3]))
    return crop_views(photo.normalized, photo.photographed, [box])[0]


def evaluate_recognition(embedder: Embedder, gallery_dir: Path, queries_dir: Path, *,
                         weights: Weights, long_side: int, jpeg_quality: int,
                         limit: int | None = None, crop: Crop = "none",
                         detector: Detector | None = None, reference_dir: Path | None = None,
                         reference_k: int = REFERENCE_K) -> RecognitionReport:
    weights = replace(weights, aspect=0.0) if crop != "detector" else weights

    def read(path: Path) -> PreparedPhoto | None:
        return read_prepared(path, "eval-recognition", long_side=long_side,
                             jpeg_quality=jpeg_quality)

    def packshot(path: Path) -> npt.NDArray[np.uint8] | None:
        try:  # decoded as the catalog decodes what `shelf catalog add` is given
            return decode_packshot(path.read_bytes(), str(path))
        except (OSError, CatalogError):
            return None

    packshots = [(sku, image) for path, sku, _ in labelled_images(gallery_dir)
                 if (image := packshot(path)) is not None]
    if not packshots:
        raise DatasetError(f"{gallery_dir}: none of its packshots decodes")
    gallery = gallery_from_packshots(embedder, packshots)
    queries = labelled_images(queries_dir)[:limit]
    used = 0
    if reference_dir is not None:
        photos = reference_images(reference_dir)
        if {p.resolve() for p in photos} & {q.resolve() for q, _, _ in queries}:
            raise DatasetError(f"{reference_dir} holds query photos: the reference must be "
                               "other photos from the stores")
        signed = reference_signatures(
            embedder, (query_crop(photo, crop, detector) for path in photos
                       if (photo := read(path)) is not None), limit=len(photos))
        if signed is None:
            raise DatasetError(f"{reference_dir}: none of its {len(photos)} photos decodes")
        emb, colours, aspects = signed
        gallery = gallery.with_offsets(gallery_offsets(
            gallery, embeddings=emb, colours=colours, aspects=aspects, weights=weights,
            k=reference_k))
        used = len(emb)
    hits1: dict[str, list[bool]] = defaultdict(list)
    hits5: dict[str, list[bool]] = defaultdict(list)
    spent = 0.0
    skipped = 0
    for path, sku, group in queries:
        photo = read(path)
        if photo is None:
            skipped += 1
            continue
        view = query_crop(photo, crop, detector)
        t0 = time.perf_counter()
        emb, colours, aspects = crop_signatures(embedder, [view])
        # A product's colour layout is read from its box: a whole photo's is not the pack's.
        layouts = crop_layouts([view]) if crop == "detector" else None
        spent += time.perf_counter() - t0
        scores = similarity(embeddings=emb, colours=colours, aspects=aspects, gallery=gallery,
                            weights=weights, layouts=layouts)
        best = [sku for sku, _ in candidates(scores, gallery, 5)[0]]
        hits1[group].append(best[0] == sku)
        hits5[group].append(sku in best)
    if not hits1:
        raise DatasetError(f"{queries_dir}: none of its {len(queries)} photos decodes")
    all1 = [h for v in hits1.values() for h in v]
    all5 = [h for v in hits5.values() for h in v]
    groups = {g: {"top1": float(np.mean(hits1[g])), "top5": float(np.mean(hits5[g])),
                  "queries": float(len(hits1[g]))} for g in hits1}
    return RecognitionReport(embedder.ref, len(gallery), len(all1), float(np.mean(all1)),
                             float(np.mean(all5)), groups, spent / max(1, len(all1)) * 1000,
                             skipped, used)
