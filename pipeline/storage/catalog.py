"""The SKU catalog in S3: packshots, their signatures and the SKU facts.

Layout under ``s3://{config bucket}/catalog/``:

- ``skus/{sku}.json``: one SKU (brand, name, the embedder that signed it, one signature per
  gallery image) - the source of truth;
- ``images/{sku}/{n}.{ext}``: the packshots as given, so the catalog can be signed again
  when the embedder changes;
- ``index.json``: every SKU in one object, rebuilt after each change, which the detect stage
  reads (and re-reads only when its ETag changes).
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from datetime import UTC, datetime

import numpy as np
from pydantic import BaseModel, Field, ValidationError

from pipeline.core.recognition import Gallery
from pipeline.errors import CatalogError, ObjectNotFoundError
from pipeline.storage.s3 import ObjectStore

SKU_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
PREFIX = "catalog/"
INDEX_KEY = PREFIX + "index.json"



class Signature(BaseModel):
    source: str  # the image's key under catalog/images/
    embedding: list[float]
    colour: list[float]
    aspect: float = Field(gt=0)


class CatalogEntry(BaseModel):
    sku: str = Field(pattern=SKU_ID.pattern)
    brand: str | None = None
    name: str | None = None
    embedder: str
    signatures: list[Signature] = Field(min_length=1)
    added_at: datetime


class CatalogIndex(BaseModel):
    built_at: datetime
    entries: list[CatalogEntry]

    def gallery(self, embedder: str, dim: int) -> Gallery:
        """The signatures made by ``embedder`` (others cannot be compared)."""
        rows = [(e.sku, s) for e in self.entries if e.embedder == embedder for s in e.signatures]
        if not rows:
            return Gallery.empty(dim)
        return Gallery(tuple(sku for sku, _ in rows),
                       np.array([s.embedding for _, s in rows], np.float32),
                       np.array([s.colour for _, s in rows], np.float32),
                       np.array([s.aspect for _, s in rows], np.float32))

    def signed_by_others(self, embedder: str) -> dict[str, int]:
        """How many SKUs each embedder other than ``embedder`` signed (they go unnamed)."""
        return dict(Counter(e.embedder for e in self.entries if e.embedder != embedder))

    def brands(self) -> dict[str, str]:
        return {e.sku: e.brand or e.sku for e in self.entries}

    @property
    def version(self) -> str:
        """Changes whenever the catalog does."""
        return self.built_at.isoformat()


def check_sku(sku: str) -> str:
    if not SKU_ID.fullmatch(sku):
        raise CatalogError(f"SKU id {sku!r} must be 1-128 letters, digits, '.', '_' or '-', "
                           "starting with a letter or digit")
    return sku


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
        self.store.put_bytes(self.bucket, key, data, "image/png" if suffix == ".png"
                             else "image/jpeg")
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
        self.store.delete(self.bucket, f"{PREFIX}skus/{check_sku(sku)}.json")
        return self.reindex()

    def entries(self) -> list[CatalogEntry]:
        out = []
        for key in self.store.list_keys(self.bucket, PREFIX + "skus/"):
            try:
                out.append(CatalogEntry.model_validate(self.store.get_json(self.bucket, key)))
            except (ValidationError, ValueError) as exc:
                raise CatalogError(f"unreadable catalog entry s3://{self.bucket}/{key}: {exc}"
                                   ) from exc
        return sorted(out, key=lambda e: e.sku)

    def reindex(self) -> CatalogIndex:
        index = CatalogIndex(built_at=datetime.now(UTC), entries=self.entries())
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
            index = CatalogIndex.model_validate(self.store.get_json(self.bucket, INDEX_KEY))
        except ObjectNotFoundError:
            return CatalogIndex(built_at=datetime.now(UTC), entries=[])
        except (ValidationError, ValueError) as exc:
            raise CatalogError(f"unreadable catalog index: {exc}") from exc
        with self._lock:
            self._cached = (etag, index)
            self._checked_at = time.monotonic()
        return index
