"""The SKU catalog in S3: packshots, their signatures and the SKU facts.

Layout under ``s3://{config bucket}/catalog/``:

- ``skus/{sku}.json``: one SKU (brand, name, the embedder that signed it, one signature per
  gallery image) - the source of truth;
- ``images/{sku}/{n}.{ext}``: the packshots as given, so the catalog can be signed again
  when the embedder changes;
- ``index.json``: every SKU in one object, rebuilt after each change, which the detect stage
  reads (and re-reads only when its ETag changes);
- ``reference.npz`` and ``reference.json``: optionally, the signatures of unlabelled photos
  from the stores and what signed them, from which each gallery row's hubness offset is
  computed (:func:`pipeline.core.recognition.gallery_offsets`).
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Annotated

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, Field, ValidationError

from pipeline.core.recognition import LAYOUT_ROWS, SKU_ID, UNKNOWN, Gallery
from pipeline.errors import CatalogError, ObjectNotFoundError
from pipeline.storage.s3 import ObjectStore

log = logging.getLogger(__name__)
PREFIX = "catalog/"
INDEX_KEY = PREFIX + "index.json"
REFERENCE_KEY = PREFIX + "reference.npz"
REFERENCE_META_KEY = PREFIX + "reference.json"
CONTENT_TYPES = {".png": "image/png", ".webp": "image/webp"}  # a packshot's; else JPEG


class Signature(BaseModel):
    source: str  # the image's key under catalog/images/
    embedding: list[float]
    colour: list[float]
    aspect: float = Field(gt=0)
    # Where on the pack its colours are (pipeline.core.recognition.colour_layout); None in
    # entries signed before layouts were: `shelf catalog resign --all` adds them.
    layout: list[float] | None = None


# A brand or a name: printable text (no control or terminal escape characters), bounded.
FACT = r"^[^\x00-\x1f\x7f-\x9f]*$"
MAX_BRAND, MAX_NAME = 120, 300
# A pack's front, cm: from a lipstick to a pallet's display.
MIN_SIZE_CM, MAX_SIZE_CM = 0.5, 300.0
SizeCm = tuple[Annotated[float, Field(ge=MIN_SIZE_CM, le=MAX_SIZE_CM)],
               Annotated[float, Field(ge=MIN_SIZE_CM, le=MAX_SIZE_CM)]]


class CatalogEntry(BaseModel):
    sku: str = Field(pattern=f"^{SKU_ID.pattern}$")  # pydantic's patterns search, unanchored
    brand: str | None = None  # checked when given (check_fact); stored entries read as they are
    name: str | None = None
    embedder: str
    signatures: list[Signature] = Field(min_length=1)
    added_at: datetime
    # The front's width and height, cm, as the retailer's product data gives them: a
    # product line in two sizes is told apart by them (recognition.rerank_by_size).
    size_cm: SizeCm | None = None


class Reference(BaseModel):
    """Unlabelled photos from the stores, signed by ``embedder`` (``reference.npz``)."""

    embedder: str
    count: int = Field(gt=0)
    sha256: str
    built_at: datetime


ReferenceArrays = tuple[npt.NDArray[np.float32], npt.NDArray[np.float32],
                        npt.NDArray[np.float32]]


class CatalogIndex(BaseModel):
    built_at: datetime
    entries: list[CatalogEntry]
    reference: Reference | None = None

    def gallery(self, embedder: str, dim: int) -> Gallery:
        """The signatures made by ``embedder`` (others cannot be compared). One whose vectors
        are not that embedder's shape (a hand-edited or damaged index) is left out, saying
        so, rather than stopping every product from being named."""
        rows = [(e.sku, s) for e in self.entries if e.embedder == embedder for s in e.signatures]
        colours = Counter(len(s.colour) for _, s in rows if len(s.embedding) == dim)
        colour_len = colours.most_common(1)[0][0] if colours else 0

        def fits(s: Signature) -> bool:  # one NaN would make every similarity NaN
            return len(s.embedding) == dim and len(s.colour) == colour_len and bool(
                np.isfinite(s.embedding).all() and np.isfinite(s.colour).all())

        fit, bad = [], set()
        for sku, s in rows:
            if fits(s):
                fit.append((sku, s))
            else:
                bad.add(sku)
        if bad:
            log.warning("catalog: %d signatures of %s are not %s's shape (%d-long finite "
                        "embeddings) and are left out: %s", len(rows) - len(fit),
                        ", ".join(sorted(bad)[:10]), embedder, dim,
                        "`shelf catalog resign` signs them again")
        rows = fit
        if not rows:
            return Gallery.empty(dim)
        width = LAYOUT_ROWS * 2
        layouts = np.array([s.layout if s.layout is not None and len(s.layout) == width
                            else [np.nan] * width for _, s in rows], np.float32)
        return Gallery(tuple(sku for sku, _ in rows),
                       np.array([s.embedding for _, s in rows], np.float32),
                       np.array([s.colour for _, s in rows], np.float32),
                       np.array([s.aspect for _, s in rows], np.float32),
                       layouts=None if np.isnan(layouts).all() else layouts,
                       sizes={e.sku: e.size_cm for e in self.entries
                              if e.embedder == embedder and e.size_cm is not None})

    def signed_by_others(self, embedder: str) -> dict[str, int]:
        """How many SKUs each embedder other than ``embedder`` signed (they go unnamed)."""
        return dict(Counter(e.embedder for e in self.entries if e.embedder != embedder))

    def brands(self) -> dict[str, str]:
        return {e.sku: e.brand or e.sku for e in self.entries}

    @property
    def version(self) -> str:
        """Changes whenever the catalog does."""
        return self.built_at.isoformat()


def check_fact(value: str | None, what: str, longest: int) -> str | None:
    """A SKU's brand or name as given: printable, at most ``longest`` characters."""
    if value is None:
        return None
    if not value.strip() or len(value) > longest or not re.fullmatch(FACT, value) or \
            not value.isprintable():  # (nor line separators, direction overrides...)
        raise CatalogError(f"{what} must be 1-{longest} printable characters (no control or "
                           f"escape characters), got {value[:40]!r}")
    return value


def check_size(size: tuple[float, float] | None) -> tuple[float, float] | None:
    """A pack front's width and height as given, cm."""
    if size is not None and not all(MIN_SIZE_CM <= v <= MAX_SIZE_CM for v in size):
        raise CatalogError(f"a size is a width and a height of {MIN_SIZE_CM:g}-"
                           f"{MAX_SIZE_CM:g} cm, got {size[0]:g} x {size[1]:g}")
    return size


def check_sku(sku: str) -> str:
    if not SKU_ID.fullmatch(sku):
        raise CatalogError(f"SKU id {sku!r} must be 1-128 letters, digits, '.', '_' or '-', "
                           "starting with a letter or digit")
    return sku


def check_new_sku(sku: str) -> str:
    """A SKU id to enrol: :func:`check_sku`, and not what unnamed products are called."""
    if check_sku(sku) == UNKNOWN:
        raise CatalogError(f"SKU id {sku!r} is what unnamed products are called")
    return sku


def _read_index(doc: object) -> CatalogIndex:
    """The stored index; an entry that does not read (a hand edit: a SKU that is no SKU id,
    say) is left out with a warning, not fatal to the naming of every other product."""
    if not isinstance(doc, dict) or not isinstance(doc.get("entries"), list):
        raise ValueError("not a catalog index (no list of entries)")
    entries, bad = [], []
    for raw in doc["entries"]:
        try:
            entries.append(CatalogEntry.model_validate(raw))
        except ValidationError:
            bad.append(str(raw.get("sku"))[:40] if isinstance(raw, dict) else "?")
    if bad:
        log.warning("catalog: %d entries of the index do not read and are left out: %s",
                    len(bad), ", ".join(bad[:10]))
    return CatalogIndex.model_validate({**doc, "entries": []}).model_copy(
        update={"entries": entries})


class CatalogStore:
    """Reads and writes the catalog; keeps the last index read, keyed by its ETag."""

    def __init__(self, store: ObjectStore, bucket: str, refresh_s: float = 0.0) -> None:
        self.store = store
        self.bucket = bucket
        self.refresh_s = refresh_s
        self._lock = threading.Lock()
        self._cached: tuple[str, CatalogIndex] | None = None
        self._checked_at = 0.0

    def put_image(self, sku: str, n: int, data: bytes, suffix: str) -> str:
        key = f"{PREFIX}images/{check_sku(sku)}/{n}{suffix}"
        self.store.put_bytes(self.bucket, key, data, CONTENT_TYPES.get(suffix, "image/jpeg"))
        return key

    def get_image(self, key: str) -> bytes:
        if not key.startswith(PREFIX + "images/"):
            raise CatalogError(f"{key!r} is not a catalog packshot")
        try:
            return self.store.get_bytes(self.bucket, key)
        except ObjectNotFoundError as exc:
            raise CatalogError(f"catalog packshot s3://{self.bucket}/{key} is missing") from exc

    def put(self, entry: CatalogEntry, *, reindex: bool = True) -> CatalogIndex | None:
        self.store.put_json(self.bucket, f"{PREFIX}skus/{check_sku(entry.sku)}.json",
                            entry.model_dump(mode="json"))
        return self.reindex() if reindex else None

    def remove(self, sku: str) -> CatalogIndex:
        """The SKU and its packshots; :class:`CatalogError` when the catalog has neither
        (a mistyped SKU is said so, not reported removed)."""
        entry_key = f"{PREFIX}skus/{check_sku(sku)}.json"
        images = self.image_keys(sku)
        if not images and self.store.head(self.bucket, entry_key) is None:
            raise CatalogError(f"no SKU {sku!r} in the catalog")
        self.store.delete(self.bucket, entry_key)
        for key in images:
            self.store.delete(self.bucket, key)
        return self.reindex()

    def get(self, sku: str) -> CatalogEntry | None:
        try:
            return self._entry(f"{PREFIX}skus/{check_sku(sku)}.json")
        except ObjectNotFoundError:
            return None

    def _entry(self, key: str) -> CatalogEntry:
        try:
            return CatalogEntry.model_validate(self.store.get_json(self.bucket, key))
        except (ValidationError, ValueError) as exc:
            raise CatalogError(f"unreadable catalog entry s3://{self.bucket}/{key}: {exc}"
                               ) from exc

    def image_keys(self, sku: str) -> list[str]:
        """The keys of the packshots stored for ``sku``."""
        return list(self.store.list_keys(self.bucket, f"{PREFIX}images/{check_sku(sku)}/"))

    def entries(self) -> list[CatalogEntry]:
        """Every SKU's entry; an entry removed while it was being listed is left out
        (:meth:`ObjectStore.read_listed`)."""
        out = [e for _, e in self.store.read_listed(self.bucket, PREFIX + "skus/", self._entry)]
        return sorted(out, key=lambda e: e.sku)

    def put_reference(self, embedder: str, embeddings: npt.NDArray[np.float32],
                      colours: npt.NDArray[np.float32], aspects: npt.NDArray[np.float32]
                      ) -> CatalogIndex:
        """Store the reference photos' signatures (replacing any) and rebuild the index."""
        if not len(embeddings) or not len(embeddings) == len(colours) == len(aspects):
            raise CatalogError(f"reference of {len(embeddings)} embeddings, {len(colours)} "
                               f"colours and {len(aspects)} aspects")
        buf = io.BytesIO()
        np.savez_compressed(buf, embeddings=embeddings.astype(np.float32),
                            colours=colours.astype(np.float32),
                            aspects=aspects.astype(np.float32))
        data = buf.getvalue()
        meta = Reference(embedder=embedder, count=len(embeddings),
                         sha256=hashlib.sha256(data).hexdigest(), built_at=datetime.now(UTC))
        self.store.put_bytes(self.bucket, REFERENCE_KEY, data, "application/octet-stream")
        self.store.put_json(self.bucket, REFERENCE_META_KEY, meta.model_dump(mode="json"))
        return self.reindex()

    def clear_reference(self) -> CatalogIndex:
        self.store.delete(self.bucket, REFERENCE_META_KEY)
        self.store.delete(self.bucket, REFERENCE_KEY)
        return self.reindex()

    def reference(self) -> Reference | None:
        try:
            return Reference.model_validate(self.store.get_json(self.bucket, REFERENCE_META_KEY))
        except ObjectNotFoundError:
            return None
        except (ValidationError, ValueError) as exc:
            raise CatalogError(f"unreadable catalog reference: {exc}") from exc

    def reference_arrays(self, ref: Reference) -> ReferenceArrays:
        """The signatures ``ref`` describes: embeddings, colours, aspects."""
        try:
            data = self.store.get_bytes(self.bucket, REFERENCE_KEY)
        except ObjectNotFoundError as exc:
            raise CatalogError(f"catalog reference s3://{self.bucket}/{REFERENCE_KEY} is "
                               "missing") from exc
        if hashlib.sha256(data).hexdigest() != ref.sha256:
            raise CatalogError("the catalog reference changed since the index was built: "
                               "run `shelf catalog reference` again")
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as z:
                out = (np.asarray(z["embeddings"], np.float32),
                       np.asarray(z["colours"], np.float32), np.asarray(z["aspects"], np.float32))
        except (ValueError, KeyError, OSError) as exc:
            raise CatalogError(f"unreadable catalog reference: {exc}") from exc
        if not len(out[0]) == len(out[1]) == len(out[2]) == ref.count:
            raise CatalogError("catalog reference arrays do not match its description")
        return out

    def reindex(self) -> CatalogIndex:
        index = CatalogIndex(built_at=datetime.now(UTC), entries=self.entries(),
                             reference=self.reference())
        self.store.put_json(self.bucket, INDEX_KEY, index.model_dump(mode="json"))
        return index

    def index(self) -> CatalogIndex:
        """The current index: none of S3 within ``refresh_s`` of the last check, one HEAD
        when it has not changed since the last read."""
        with self._lock:
            if self._cached is not None and time.monotonic() - self._checked_at < self.refresh_s:
                return self._cached[1]
        head = self.store.head(self.bucket, INDEX_KEY)
        if head is None:
            return CatalogIndex(built_at=datetime.now(UTC), entries=[])
        etag = str(head.get("ETag", ""))
        with self._lock:
            if self._cached is not None and self._cached[0] == etag:
                self._checked_at = time.monotonic()
                return self._cached[1]
        try:
            index = _read_index(self.store.get_json(self.bucket, INDEX_KEY))
        except ObjectNotFoundError:
            return CatalogIndex(built_at=datetime.now(UTC), entries=[])
        except (ValidationError, ValueError) as exc:
            raise CatalogError(f"unreadable catalog index: {exc}") from exc
        with self._lock:
            self._cached = (etag, index)
            self._checked_at = time.monotonic()
        return index
