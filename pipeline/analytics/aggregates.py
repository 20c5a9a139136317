"""Daily shelf/aisle/store rollups as Parquet under Hive partitions in the results bucket.

``aggregates/level={shelf,aisle,store}/date=YYYY-MM-DD/part-0.parquet``. Rebuilding a day from
the same per-photo results gives byte-identical files, and an unchanged file is not rewritten.
"""

from __future__ import annotations

import io
import logging
import threading
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import ValidationError

from pipeline.core.result import PhotoResult
from pipeline.core.rollup import LEVELS, rollups
from pipeline.errors import ObjectNotFoundError, PermanentError, TransientError
from pipeline.storage.s3 import ObjectStore

log = logging.getLogger(__name__)
_COMMON = [("store", pa.string()), ("aisle", pa.string())]
_COUNTS = [("planned_facings", pa.int32()), ("found_facings", pa.int32()),
           ("compliance", pa.float64()), ("out_of_stock", pa.int32())]
SCHEMAS = {
    "shelf": pa.schema([*_COMMON, ("bay", pa.string()), ("shelf", pa.int32()),
                        ("photo", pa.string()), *_COUNTS,
                        ("out_of_stock_skus", pa.list_(pa.string()))]),
    "aisle": pa.schema([*_COMMON, ("bays", pa.int32()), ("shelves", pa.int32()), *_COUNTS]),
    "store": pa.schema([("store", pa.string()), ("bays", pa.int32()), ("shelves", pa.int32()),
                        *_COUNTS]),
}


def aggregate_key(level: str, date: str) -> str:
    return f"aggregates/level={level}/date={date}/part-0.parquet"


def read_results(store: ObjectStore, bucket: str, prefix: str, *, marker: str = ""
                 ) -> list[PhotoResult]:
    """The per-upload results under ``prefix`` (whose key holds ``marker``); a document
    that is not a result is logged and left out."""
    return [r for k in store.list_keys(bucket, prefix) if marker in k and k.endswith(".json")
            if (r := _read_result(store, bucket, k)) is not None]


def _read_result(store: ObjectStore, bucket: str, key: str, *, relist: bool = False
                 ) -> PhotoResult | None:
    """The result at ``key``; None (logged) when it is not one, or S3 will not give it (gone
    since the listing, refused: a key it may not decrypt): one such object must not hold
    back its day's rollup. A fault that may pass (throttling, S3 away) is raised.

    With ``relist``, a listed result S3 does not hold is such a fault: the listing is stale,
    or was damaged on its way (a listing carries no checksum, and a bit flipped in a key
    names an object that does not exist while the result it named goes unread); the day is
    listed again rather than rolled up without a photo."""
    try:
        return PhotoResult.model_validate(store.get_json(bucket, key))
    except ObjectNotFoundError as exc:
        if relist:
            raise TransientError(f"s3://{bucket}/{key} was listed but is not in S3 (deleted "
                                 "since, or the listing damaged on its way): list again"
                                 ) from exc
        log.error("s3://%s/%s is gone since it was listed, left out", bucket, key)
        return None
    except (ValidationError, ValueError, PermanentError) as exc:
        log.error("s3://%s/%s is not a photo result it can read, left out: %s", bucket, key,
                  exc)
        return None


class ResultCache:
    """The results of the last few days read, by key and ETag, kept as much as the rollups
    read of them: a day is rebuilt after every burst of finished photos, and reading all its
    results each time would grow with the day (a 10,000-photo day re-read in full every few
    seconds). Only new or rewritten results are fetched."""

    DAYS = 3

    def __init__(self) -> None:
        self._days: dict[tuple[str, str], dict[str, tuple[str, PhotoResult]]] = {}
        self._lock = threading.Lock()

    def day(self, store: ObjectStore, bucket: str, date: str) -> list[PhotoResult]:
        with self._lock:
            known = self._days.pop((bucket, date), {})
            fresh: dict[str, tuple[str, PhotoResult]] = {}
            done = False
            try:
                for folder in store.list_prefixes(bucket, "compliance/"):
                    for key, etag in store.list_objects(bucket, f"{folder}date={date}/"):
                        if not key.endswith(".json"):
                            continue
                        hit = known.get(key)
                        if hit is not None and hit[0] == etag:
                            fresh[key] = hit
                            continue
                        doc = _read_result(store, bucket, key, relist=True)
                        if doc is not None:
                            fresh[key] = (etag, doc.model_copy(update=_NOT_ROLLED_UP))
                done = True
            finally:  # a read cut short (an S3 fault, a time limit) keeps what it read
                self._days[(bucket, date)] = fresh if done else {**known, **fresh}
                while len(self._days) > self.DAYS:
                    self._days.pop(next(iter(self._days)))
            return [r for _, r in fresh.values()]


_NOT_ROLLED_UP: dict[str, Any] = {"items": [], "gaps": [], "products": [], "osa": {},
                                  "share_of_shelf": {}, "share_of_shelf_width": {},
                                  "artifacts": {}, "stage_seconds": {}}
_CACHE = ResultCache()


def collect_results(store: ObjectStore, bucket: str, date: str) -> list[PhotoResult]:
    """Every per-upload result of ``date`` (all stores and aisles): one listing per store,
    only new or changed results read (see :class:`ResultCache`)."""
    return _CACHE.day(store, bucket, date)


def to_parquet(level: str, rows: list[dict[str, Any]]) -> bytes:
    """Deterministic Parquet bytes: fixed schema, sorted rows, no timestamps in metadata."""
    schema = SCHEMAS[level]
    table = pa.Table.from_pylist([{f.name: r.get(f.name) for f in schema} for r in rows],
                                 schema=schema)
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd", use_dictionary=True, write_statistics=True)
    return buf.getvalue()


def aggregate_day(store: ObjectStore, bucket: str, date: str) -> dict[str, int]:
    """Rebuild the three rollups of ``date``; returns rows per level."""
    levels = rollups(collect_results(store, bucket, date))
    counts = {}
    for level in LEVELS:
        data = to_parquet(level, levels[level])
        key = aggregate_key(level, date)
        head = store.head(bucket, key)
        if head is None or int(head.get("ContentLength", -1)) != len(data) or \
                store.get_bytes(bucket, key) != data:
            store.put_bytes(bucket, key, data, "application/vnd.apache.parquet")
        counts[level] = len(levels[level])
    return counts
