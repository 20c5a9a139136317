"""Calibrate naming: the colour weight on real photos, the unknown threshold on shelf crops.

1. GroceryStoreDataset's val split (never its test split) against its 81 packshots: top-1 for
   each colour weight of the signature.
2. Generated shelf photos (the synthetic world, with products the catalog does not know):
   every true product box cropped from the photo as the detect stage sees it, signed and
   ranked against the enrolled packshots; for each threshold, the share of crops named right
   (a known product as its SKU, an unknown one as ``unknown``).
3. With ``--unknown-shelves DIR``: real shelf photos of products the catalog does not hold
   (e.g. SKU-110K photos against the synthetic catalog); every product the light detector
   finds is signed as the detect stage signs it, and for each threshold the share of them
   that gets a catalog SKU's name (all wrongly) is printed. A store whose catalog covers few
   of its products needs this share low more than the synthetic share high. For each
   position floor, the share of them that naming by position would name (wrongly) were the
   SKU planned where each stands drawn at random from the catalog.
4. With ``--reference DIR``: real shelf photos (none of those of ``--unknown-shelves``) whose
   products, found by the light detector, become the catalog's reference: steps 2 and 3 then
   score against the packshots with their reference offsets, as the detect stage does when
   the catalog has a reference.

    python scripts/calibrate_recognition.py --grocery DIR [--photos 60]
        [--unknown-shelves DIR] [--reference DIR] [--json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np

from pipeline.core.recognition import UNKNOWN, Gallery, choose, gallery_offsets, nearly_as_like
from pipeline.datasets import images_under
from pipeline.detect.detector import Detector
from pipeline.detect.embedder import Embedder
from pipeline.detect.recognizer import (
    View,
    crop_views,
    gallery_from_packshots,
    product_crops,
    rank_crops,
    reference_signatures,
    weights_from,
)
from pipeline.eval.recognition import evaluate_recognition
from pipeline.eval.synthetic import prepare
from pipeline.image import prepare_photo
from pipeline.settings import get_settings
from pipeline.synth.catalog import UNKNOWN_SKU
from pipeline.synth.enrol import catalog_images, catalog_sizes
from pipeline.synth.world import make_photo

COLOUR_WEIGHTS = (0.0, 0.15, 0.25, 0.35, 0.5, 0.7)
THRESHOLDS = tuple(round(0.3 + 0.05 * i, 2) for i in range(11))


def progress(line: str) -> None:
    """A figure as it is measured, on stderr: with --json, stdout holds only the object."""
    print(line, file=sys.stderr, flush=True)


def colour_weight_on_val(embedder: Embedder, grocery: Path) -> dict[float, float]:
    s = get_settings()
    base = weights_from(s.recognition)
    data = grocery / "dataset"
    out = {}
    for w in COLOUR_WEIGHTS:
        r = evaluate_recognition(embedder, data / "iconic-images-and-descriptions",
                                 data / "val", weights=replace(base, colour=w),
                                 long_side=s.ingest.working_long_side,
                                 jpeg_quality=s.ingest.jpeg_quality)
        out[w] = round(r.top1, 4)
        progress(f"colour weight {w:.2f}: val top-1 {r.top1:.3f}, top-5 {r.top5:.3f}")
    return out


def threshold_on_shelves(embedder: Embedder, gallery: Gallery, photos: int, seed: int
                         ) -> dict[float, float]:
    s = get_settings()
    weights = weights_from(s.recognition)
    truths: list[str] = []
    cands: list[list[tuple[str, float]]] = []
    planned_sets: list[set[str]] = []
    for i in range(photos):
        photo = make_photo(seed, i, None, 4000)
        prepared = prepare(photo.jpeg)
        scale = prepared.scale
        objects = photo.truth["objects"]
        plan = photo.truth["planogram"]
        assert isinstance(objects, list) and isinstance(plan, dict)
        planned = {p["sku"] for shelf in plan["shelves"] for p in shelf["positions"]}
        boxes = np.array([[v * scale for v in o["box"]] for o in objects], np.float32)
        crops = crop_views(prepared.normalized, prepared.photographed, boxes)
        cands += rank_crops(embedder, crops, gallery, weights, s.recognition.candidates,
                            boxes=boxes)
        truths += [str(o["sku"]) for o in objects]
        planned_sets += [planned] * len(objects)
    out = {}
    for t in THRESHOLDS:
        right = sum(choose(c, planned=p, threshold=t).sku == (sku if sku != UNKNOWN_SKU
                                                             else "unknown")
                    for c, p, sku in zip(cands, planned_sets, truths, strict=True))
        out[t] = round(right / len(truths), 4)
        progress(f"threshold {t:.2f}: {out[t]:.3f} of {len(truths)} shelf crops named right")
    return out


def shelf_crops(folder: Path) -> Iterator[list[View]]:
    """Per real shelf photo under ``folder``, the products the light detector finds there,
    cropped as the detect stage crops them."""
    s = get_settings()
    detector = Detector.from_dir(s.models.root, s.models.light, intra_op_threads=2)
    paths = images_under(folder)
    if not paths:
        raise SystemExit(f"{folder}: no photos")
    for path in paths:
        photo = prepare_photo(path.read_bytes(), long_side=s.ingest.working_long_side,
                              jpeg_quality=s.ingest.jpeg_quality)
        yield product_crops(detector, photo, detector.facing_scores(s.compliance)[0])


def with_reference(embedder: Embedder, gallery: Gallery, folder: Path) -> Gallery:
    """``gallery`` offset by the products of the shelf photos under ``folder`` (at most
    ``MAX_REFERENCE`` of them), as a catalog reference offsets it."""
    signed = reference_signatures(embedder, itertools.chain.from_iterable(shelf_crops(folder)))
    if signed is None:
        raise SystemExit(f"{folder}: no products found")
    emb, colours, aspects = signed
    progress(f"reference: {len(emb)} products")
    return gallery.with_offsets(gallery_offsets(gallery, embeddings=emb, colours=colours,
                                                aspects=aspects,
                                                weights=weights_from(get_settings().recognition)))


FLOORS = (0.35, 0.4, 0.45, 0.5, 0.55)


def false_names_on_real(embedder: Embedder, gallery: Gallery, folder: Path
                        ) -> tuple[dict[float, float], dict[float, float]]:
    """For each threshold, the share of real products the catalog lacks that get one of its
    names; and for each position floor (at the settings' threshold and margin), the share
    that would be named by position were the SKU planned where each stands drawn at random
    from the catalog (its candidates near enough, over the catalog's SKU count)."""
    s = get_settings()
    weights = weights_from(s.recognition)
    skus = len(set(gallery.skus))
    ranked: list[list[tuple[str, float]]] = []
    n = 0
    for crops in shelf_crops(folder):
        ranked += rank_crops(embedder, crops, gallery, weights, skus)
        n += 1
    best = [c[0][1] for c in ranked]
    out = {}
    for t in THRESHOLDS:
        out[t] = round(sum(b >= t for b in best) / max(1, len(best)), 4)
        progress(f"threshold {t:.2f}: {out[t]:.3f} of {len(best)} real products not in the "
                 f"catalog named as one of its SKUs ({n} photos)")
    by_position = {}
    margin, threshold = s.recognition.position_margin, weights.threshold
    for floor in FLOORS:
        # what the shelf check may name an unknown product by (recognition.nearly_as_like)
        near = [len(nearly_as_like(c, match, threshold=threshold, margin=margin, floor=floor))
                for c in ranked
                if (match := choose(c, planned=None, threshold=threshold)).sku == UNKNOWN]
        by_position[floor] = round(sum(near) / skus / max(1, len(best)), 4)
        progress(f"position floor {floor:.2f}: {by_position[floor]:.4f} of them named by "
                 f"position were the planned SKU drawn at random ({sum(k > 0 for k in near)}"
                 " with a near name)")
    return out, by_position


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--grocery", type=Path, required=True)
    ap.add_argument("--photos", type=int, default=60)
    ap.add_argument("--seed", type=int, default=9100)
    ap.add_argument("--unknown-shelves", type=Path,
                    help="real shelf photos of products the catalog does not hold")
    ap.add_argument("--reference", type=Path,
                    help="real shelf photos whose products become the catalog's reference")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    s = get_settings()
    embedder = Embedder.from_dir(s.models.root, s.recognition.embedder, intra_op_threads=2)
    colour = colour_weight_on_val(embedder, args.grocery)
    gallery = gallery_from_packshots(embedder, catalog_images(), catalog_sizes())
    if args.reference is not None:
        gallery = with_reference(embedder, gallery, args.reference)
    threshold = threshold_on_shelves(embedder, gallery, args.photos, args.seed)
    best_colour = max(colour, key=lambda k: colour[k])
    best_threshold = max(threshold, key=lambda k: threshold[k])
    summary: dict[str, object] = {
        "colour_weight": colour, "threshold": threshold, "best_colour_weight": best_colour,
        "best_threshold": best_threshold}
    if args.unknown_shelves is not None:
        named, by_position = false_names_on_real(embedder, gallery, args.unknown_shelves)
        summary["false_names_on_real"] = named
        summary["named_by_position_on_real"] = by_position
    print(json.dumps(summary) if args.json else
          f"best colour weight {best_colour} (val top-1 {colour[best_colour]}), best "
          f"threshold {best_threshold} ({threshold[best_threshold]} of shelf crops right)")


if __name__ == "__main__":
    main()
