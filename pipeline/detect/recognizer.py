"""Naming detected products from the catalog, and enrolling packshots into it."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import PurePath
from typing import TYPE_CHECKING

import cv2
import numpy as np
import numpy.typing as npt

from pipeline.core.orientation import apply_orientation
from pipeline.core.packshot import cut_out
from pipeline.core.recognition import (
    Gallery,
    Weights,
    candidates,
    colour_layout,
    colour_signature,
    crop_box,
    gallery_offsets,
    rerank_by_size,
    similarity,
)
from pipeline.detect.embedder import Embedder
from pipeline.errors import CatalogError, CorruptImageError
from pipeline.image import PreparedPhoto, inspect_image, to_srgb
from pipeline.settings import RecognitionSettings, get_settings
from pipeline.storage.catalog import (
    MAX_BRAND,
    MAX_NAME,
    CatalogEntry,
    CatalogStore,
    Reference,
    ReferenceArrays,
    Signature,
    check_fact,
    check_new_sku,
    check_size,
)

if TYPE_CHECKING:
    from pipeline.detect.detector import Detector

log = logging.getLogger(__name__)
Image = npt.NDArray[np.uint8]
View = tuple[Image, Image]  # one product: (lighting normalized, as photographed)
# Web shops keep their packshots as WebP, transparent backdrop and all.
IMAGE_SUFFIXES = {".jpg": ".jpg", ".jpeg": ".jpg", ".png": ".png", ".webp": ".webp"}
PACKSHOT = "JPEG, PNG or WebP packshot"
MAX_REFERENCE = 3000  # reference photos kept (their signatures: about 1.2 KB each)


class Recognizer:
    def __init__(self, embedder: Embedder, catalog: CatalogStore, weights: Weights) -> None:
        self.embedder = embedder
        self.catalog = catalog
        self.weights = weights
        self._gallery: tuple[str, Gallery] | None = None  # per catalog version

    def gallery(self) -> tuple[str, Gallery]:
        """The catalog's version and its signatures this embedder can compare, built once
        per version (a large catalog costs tens of milliseconds to gather): SKUs that another
        embedder signed are counted in a warning then."""
        index = self.catalog.index()
        if self._gallery is None or self._gallery[0] != index.version:
            stale = index.signed_by_others(self.embedder.ref)
            if stale:
                log.warning("%d catalog SKUs were signed by another embedder (%s) and cannot "
                            "be named by %s: run `shelf catalog resign`", sum(stale.values()),
                            ", ".join(f"{e}: {n}" for e, n in sorted(stale.items())),
                            self.embedder.ref)
            self._gallery = (index.version, self._with_reference(
                index.reference, index.gallery(self.embedder.ref, self.embedder.dim)))
        return self._gallery

    def _with_reference(self, ref: Reference | None, gallery: Gallery) -> Gallery:
        """``gallery`` with the hubness offsets of the catalog's reference photos, if any."""
        if ref is None or not len(gallery):
            return gallery
        if ref.embedder != self.embedder.ref:
            log.warning("the catalog's %d reference photos were signed by %s, not %s: no "
                        "offsets until `shelf catalog reference` signs them again", ref.count,
                        ref.embedder, self.embedder.ref)
            return gallery
        try:
            emb, colours, aspects = self.catalog.reference_arrays(ref)
        except CatalogError as exc:  # e.g. replaced since this index: names without offsets
            log.warning("catalog reference not applied: %s", exc)
            return gallery
        return gallery.with_offsets(gallery_offsets(gallery, embeddings=emb, colours=colours,
                                                    aspects=aspects, weights=self.weights))

    def set_reference(self, views: Iterable[View]) -> int:
        """Sign unlabelled photos from the stores (crops of products, or close-ups of them)
        as the catalog's reference, at most ``MAX_REFERENCE``; returns how many were signed."""
        signed = reference_signatures(self.embedder, views)
        if signed is None:
            raise CatalogError("give at least one reference photo")
        self.catalog.put_reference(self.embedder.ref, *signed)
        return len(signed[0])

    def candidates(self, normalized: Image, photographed: Image, boxes: npt.NDArray[np.float32],
                   k: int) -> tuple[str, list[list[tuple[str, float]]]]:
        """The catalog's version and the ``k`` most similar SKUs of each box of a photo, given
        with its lighting normalized and as photographed (see ``crop_signatures``)."""
        version, gallery = self.gallery()
        if len(boxes) == 0:
            return version, []
        return version, rank_crops(self.embedder, crop_views(normalized, photographed, boxes),
                                   gallery, self.weights, k, boxes=boxes)

    def enrol(self, sku: str, images: Sequence[tuple[str, bytes]], *, brand: str | None,
              name: str | None, size_cm: tuple[float, float] | None = None,
              replace: bool = False) -> CatalogEntry:
        """Sign each packshot and store the SKU; the catalog changes at once, no retraining.
        A SKU already in the catalog gains these packshots and keeps its others, and its
        brand, name and size unless given; with ``replace`` it holds these packshots only
        (its facts kept all the same unless given)."""
        check_new_sku(sku)
        check_fact(brand, "brand", MAX_BRAND)
        check_fact(name, "name", MAX_NAME)
        check_size(size_cm)
        decoded = []
        for filename, data in images:  # every packshot checked before anything is stored
            suffix = IMAGE_SUFFIXES.get(PurePath(filename).suffix.lower())
            if suffix is None:
                raise CatalogError(f"{filename}: not a readable {PACKSHOT}")
            decoded.append((data, suffix, decode_packshot(data, filename)))
        if not decoded:
            raise CatalogError(f"{sku}: give at least one packshot")
        old = self.catalog.get(sku)
        sigs = [] if old is None or replace else self._current_signatures(old)
        # New packshots are numbered past those stored, replaced or not: listed, and those
        # the entry signed (a key damaged in the listing would otherwise free its number,
        # and the new packshot would overwrite the one the entry signed there; a replace
        # cut short would leave the old entry signing a new image).
        taken = {PurePath(k).stem for k in self.catalog.image_keys(sku)} | (
            {PurePath(s.source).stem for s in old.signatures} if old else set())
        numbers = (n for n in itertools.count() if str(n) not in taken)
        for (data, suffix, image), n in zip(decoded, numbers, strict=False):
            sigs += self._sign(self.catalog.put_image(sku, n, data, suffix), image)
        entry = CatalogEntry(
            sku=sku, brand=brand if brand is not None or old is None else old.brand,
            name=name if name is not None or old is None else old.name,
            size_cm=size_cm if size_cm is not None or old is None else old.size_cm,
            embedder=self.embedder.ref, signatures=sigs,
            added_at=old.added_at if old else datetime.now(UTC))
        self.catalog.put(entry)
        if replace:  # packshots of the SKU's earlier entry, no longer signed
            used = {s.source for s in sigs}
            for key in self.catalog.image_keys(sku):
                if key not in used:
                    self.catalog.store.delete(self.catalog.bucket, key)
        return entry

    def sign_again(self, *, every: bool = False) -> tuple[int, int]:
        """Sign every SKU that another embedder signed again, from its stored packshots (a
        new embedder cannot compare the old signatures), or with ``every`` all SKUs (after
        a release that cuts packshots out or reads their colours anew); the index is rebuilt
        once. Returns (signed again, already current)."""
        done = current = 0
        failed: list[tuple[str, str]] = []
        try:
            for entry in self.catalog.entries():
                if entry.embedder == self.embedder.ref and not every:
                    current += 1
                    continue
                try:
                    sigs = self._current_signatures(entry, again=every)
                except CatalogError as exc:  # (a stored packshot gone): the others go on
                    failed.append((entry.sku, str(exc)))
                    continue
                self.catalog.put(entry.model_copy(update={
                    "embedder": self.embedder.ref, "signatures": sigs}), reindex=False)
                done += 1
        finally:  # what was signed again is named by, however the run ended
            if done:
                self.catalog.reindex()
        if failed:
            raise CatalogError(f"signed {done} SKUs again; not " + "; ".join(
                f"{sku} ({why})" for sku, why in failed) + ": add their packshots again with "
                "'shelf catalog add --replace'")
        return done, current

    def _current_signatures(self, entry: CatalogEntry, *, again: bool = False
                            ) -> list[Signature]:
        """``entry``'s signatures as this embedder signs: its own if it signed them (unless
        ``again``), else signed again from the stored packshots."""
        if entry.embedder == self.embedder.ref and not again:
            return list(entry.signatures)
        sigs = []
        for key in dict.fromkeys(s.source for s in entry.signatures):
            sigs += self._sign(key, decode_packshot(self.catalog.get_image(key),
                                                    f"{entry.sku}: stored packshot {key}"))
        return sigs

    def _sign(self, key: str, image: Image) -> list[Signature]:
        """The catalog's signatures of the packshot stored at ``key``."""
        return [Signature(source=key, embedding=[round(float(v), 6) for v in emb],
                          colour=[round(float(v), 6) for v in colour],
                          aspect=round(float(aspect), 4),
                          layout=[round(float(v), 3) for v in layout])
                for emb, colour, aspect, layout in packshot_signatures(self.embedder, image)]


_OPAQUE = 32  # of 255: a packshot with no pixel more opaque shows nothing


def decode_packshot(data: bytes, name: str) -> Image:
    """A packshot's BGR pixels: its headers checked first (no decompression bomb reaches
    the decoder), a transparent backdrop made white as a studio's is (the backdrop that
    ``cut_out`` removes), grey or 16-bit images made 8-bit colour, colours in sRGB. The
    pixel and side caps are the photos' (``ingest`` settings); a packshot may be small."""
    limits = get_settings().ingest
    try:
        facts = inspect_image(data, max_pixels=limits.max_pixels, min_side=1,
                              max_side=limits.max_side)
    except CorruptImageError as exc:
        raise CatalogError(f"{name}: not a usable {PACKSHOT}: {exc}") from exc
    buf = np.frombuffer(data, np.uint8)
    if facts.format == "JPEG":  # upright (its EXIF orientation applied), CMYK or grey as BGR
        raw = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    else:  # a PNG or WebP as stored, alpha kept, then upright as its EXIF says
        raw = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED | cv2.IMREAD_IGNORE_ORIENTATION)
        raw = None if raw is None else apply_orientation(np.asarray(raw), facts.orientation)
    if raw is None:
        raise CatalogError(f"{name}: not a readable {PACKSHOT}")
    image = np.asarray(raw)
    if image.dtype == np.uint16:
        image = (image.astype(np.uint32) // 257).astype(np.uint8)
    if image.ndim == 2:
        return np.asarray(cv2.cvtColor(image, cv2.COLOR_GRAY2BGR), np.uint8)
    if image.shape[2] == 4:
        if int(image[:, :, 3].max()) < _OPAQUE:  # an export that lost its picture
            raise CatalogError(f"{name}: a fully transparent {PACKSHOT}: nothing to sign")
        alpha = image[:, :, 3:4].astype(np.float32) / 255.0
        white = np.full_like(image[:, :, :3], 255, np.float32)
        image = np.round(image[:, :, :3] * alpha + white * (1 - alpha))
    # in sRGB, as the photos it names products in are read (a phone's packshot is in P3)
    return to_srgb(np.asarray(image[:, :, :3], np.uint8), facts.icc_profile)


def crop_views(normalized: Image, photographed: Image, boxes: Iterable[Sequence[float]]
               ) -> list[View]:
    """Each box of a photo cropped out of its normalized and its photographed image."""
    return [(crop_box(normalized, b, 0.0), crop_box(photographed, b, 0.0)) for b in boxes]


COLOUR_CENTRE = 0.6  # of a crop's width and height, where its colours are read


def centre(image: Image, share: float) -> Image:
    """The middle ``share`` of ``image``'s width and height."""
    h, w = image.shape[:2]
    dy, dx = int(h * (1 - share) / 2), int(w * (1 - share) / 2)
    return image[dy:h - dy, dx:w - dx]


def crop_signatures(embedder: Embedder, views: Sequence[View]
                    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32],
                               npt.NDArray[np.float32]]:
    """Embeddings ``(N, D)``, colour histograms and aspect ratios of N products, each seen
    as ``(normalized, photographed)``: the embedding reads print and form under normalized
    lighting, free of the store's colour cast (packaged goods are named better), the colour
    histogram reads the product's own colours, which white balance would grey (produce is
    named better). Measured on GroceryStoreDataset test photos and synthetic shelves, this
    names better than either image alone. The colours are read from the middle of the crop
    (:data:`COLOUR_CENTRE`): a box's edges hold its neighbours, the shelf, the crate."""
    emb = embedder.embed([v[0] for v in views])
    colours = np.array([colour_signature(centre(v[1], COLOUR_CENTRE)) for v in views],
                       np.float32).reshape(len(views), -1)
    aspects = np.array([v[1].shape[1] / max(1, v[1].shape[0]) for v in views], np.float32)
    return emb, colours, aspects


def crop_layouts(views: Sequence[View]) -> npt.NDArray[np.float32]:
    """The colour layouts ``(N, LAYOUT_ROWS * 2)`` of N products as photographed: the whole
    box, as a pack's layout is read from its whole front."""
    return np.array([colour_layout(v[1]) for v in views], np.float32).reshape(len(views), -1)


def reference_signatures(embedder: Embedder, views: Iterable[View],
                         limit: int = MAX_REFERENCE) -> ReferenceArrays | None:
    """Signatures of at most ``limit`` reference products, signed one at a time as they
    come (a folder of store photos never sits in memory); None when there are none."""
    parts = []
    for view in itertools.islice(views, limit):
        parts.append(crop_signatures(embedder, [view]))
    if not parts:
        return None
    emb, colours, aspects = (np.concatenate(p) for p in zip(*parts, strict=True))
    return emb, colours, aspects


def product_crops(detector: Detector, photo: PreparedPhoto, min_score: float) -> list[View]:
    """The products ``detector`` finds on ``photo`` (fed what its card asks) with at least
    ``min_score``, cropped as the detect stage crops them for naming."""
    found = detector.detect(photo.seen(detector.files.normalized_lighting),
                            score_threshold=min_score)
    return crop_views(photo.normalized, photo.photographed, list(found.xyxy))


def rank_crops(embedder: Embedder, views: Sequence[View], gallery: Gallery, weights: Weights,
               k: int, *, boxes: npt.NDArray[np.float32] | None = None
               ) -> list[list[tuple[str, float]]]:
    """The ``k`` SKUs of ``gallery`` most similar to each product, with their scores; given
    the products' ``boxes`` on one photo, near ties reordered by the SKUs' sizes
    (:func:`rerank_by_size`)."""
    emb, colours, aspects = crop_signatures(embedder, views)
    # Layouts only where they count: a catalog signed before them, or the weight at 0.
    layouts = crop_layouts(views) if gallery.layouts is not None and weights.layout > 0 \
        else None
    scores = similarity(embeddings=emb, colours=colours, aspects=aspects, gallery=gallery,
                        weights=weights, layouts=layouts)
    ranked = candidates(scores, gallery, k)
    if boxes is None:
        return ranked
    return rerank_by_size(ranked, boxes, gallery.sizes, weight=weights.size,
                          margin=weights.size_margin, threshold=weights.threshold)


SHELF_VIEW_HEIGHT = 40  # pixels: how small a product often is in a shelf photo


def packshot_signatures(embedder: Embedder, image: Image
                        ) -> list[tuple[npt.NDArray[np.float32], npt.NDArray[np.float32],
                                        float, npt.NDArray[np.float32]]]:
    """The packshot's signatures: as photographed, and as small as a shelf photo shows the
    product (detail lost the same way), cut to the product as a detector's box is. Colours,
    aspect and colour layout are the product's, cut out of its backdrop (the whole image
    when it has none)."""
    cut = cut_out(image)
    product, mask = (image, None) if cut is None else (cut.image, cut.mask)
    h, w = product.shape[:2]
    colour, layout, aspect = colour_signature(product, mask), colour_layout(product, mask), w / h
    f = SHELF_VIEW_HEIGHT / h
    small = np.asarray(cv2.resize(product, (max(2, round(w * f)), SHELF_VIEW_HEIGHT),
                                  interpolation=cv2.INTER_AREA), np.uint8) if f < 1 else product
    return [(emb, colour, aspect, layout) for emb in embedder.embed([image, small])]


def gallery_from_packshots(embedder: Embedder, packshots: Sequence[tuple[str, Image]],
                           sizes: Mapping[str, tuple[float, float]] | None = None) -> Gallery:
    """A gallery in memory (evaluations, benchmarks) signed as the catalog signs; ``sizes``
    as the catalog gives them (the SKUs' fronts, cm)."""
    rows = [(sku, sig) for sku, image in packshots
            for sig in packshot_signatures(embedder, image)]
    return Gallery(tuple(sku for sku, _ in rows), np.stack([r[1][0] for r in rows]),
                   np.stack([r[1][1] for r in rows]),
                   np.array([r[1][2] for r in rows], np.float32),
                   layouts=np.stack([r[1][3] for r in rows]), sizes=dict(sizes or {}))


def weights_from(settings: RecognitionSettings) -> Weights:
    return Weights(embed=settings.embed_weight, colour=settings.colour_weight,
                   aspect=settings.aspect_weight, threshold=settings.threshold,
                   layout=settings.layout_weight, layout_margin=settings.layout_margin,
                   size=settings.size_weight, size_margin=settings.size_margin)
