"""``shelf demo``: cameras upload generated photos; the running pipeline turns them into results.

Uploads with plain ``put_object`` (metadata and key layout as cameras send them), then watches
the results prefix until every photo has its result, and prints a table per photo.
"""

from __future__ import annotations

import hashlib
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from pipeline.settings import Settings, get_settings
from pipeline.storage.keys import bay_planogram_key, result_key, upload_id
from pipeline.storage.s3 import ObjectStore, make_client
from pipeline.synth.world import Photo, make_photo

STORES = (("S001", "standard"), ("S002", "flagship"), ("S003", "standard"))


def _bar(done: int, total: int, failed: int, elapsed: float) -> str:
    width = 30
    filled = int(width * done / max(total, 1))
    return (f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} done"
            f"{f', {failed} dead-lettered' if failed else ''}  {elapsed:5.1f} s")


def _summaries(s: Settings, store: ObjectStore, date: str) -> None:
    """The day's store and aisle rollups, and one HTML report per store."""
    from pipeline.analytics.aggregates import aggregate_day
    from pipeline.analytics.page import build_report
    from pipeline.analytics.query import connect, format_table, run_query

    aggregate_day(store, s.s3.results_bucket, date)
    con = connect(s, store)
    print(f"\nstores on {date}")
    print(format_table(*run_query(con, f"""
        SELECT store, bays, shelves, round(100 * compliance, 1) AS compliance_pct, out_of_stock
        FROM stores WHERE date = '{date}' ORDER BY store""")))
    print(f"\naisles on {date}")
    print(format_table(*run_query(con, f"""
        SELECT store, aisle, bays, round(100 * compliance, 1) AS compliance_pct, out_of_stock
        FROM aisles WHERE date = '{date}' ORDER BY store, aisle""")))
    out_dir = s.run_dir / "reports"
    out_dir.mkdir(parents=True, exist_ok=True)
    print()
    for store_id, _ in STORES:
        path = out_dir / f"store-{store_id}-{date}.html"
        path.write_text(build_report(store, s, store=store_id, date=date))
        print(f"report: {path.resolve()}")


@dataclass
class Upload:
    """One photo put into the raw bucket, and where its result will appear."""

    key: str
    sha256: str
    put_at: float
    result_key: str
    display: str
    expected: dict[str, Any]
    result: dict[str, Any] | None = None

    @property
    def seconds(self) -> float:
        """Put-to-result latency, from the result's completion time."""
        assert self.result is not None
        return datetime.fromisoformat(self.result["completed_at"]).timestamp() - self.put_at


def upload_photo(s: Settings, store: ObjectStore, photo: Photo, *, store_id: str, aisle: str,
                 bay: str, camera: str, name: str, store_format: str) -> Upload:
    """The bay's planogram into the config bucket, then the photo as a camera uploads it."""
    t = photo.truth
    display = str(t["display"])
    store.put_json(s.s3.config_bucket, bay_planogram_key(store_id, aisle, bay),
                   t["planogram"])
    key = f"{s.s3.raw_prefix}{store_id}/{aisle}/{bay}/{camera}/{name}.jpg"
    put_at = time.time()
    resp = store.client.put_object(Bucket=s.s3.raw_bucket, Key=key, Body=photo.jpeg,
                                   ContentType="image/jpeg",
                                   Metadata={"store-format": store_format,
                                             "display-type": display})
    version = resp.get("VersionId") or str(resp.get("ETag", "")).strip('"')
    sha = hashlib.sha256(photo.jpeg).hexdigest()
    exif = t["exif"]
    assert isinstance(exif, dict)
    date = str(exif["datetime_original"])[:10].replace(":", "-")
    expected = t["expected"]
    assert isinstance(expected, dict)
    return Upload(key, sha, put_at, result_key(
        store=store_id, date=date, aisle=aisle,
        upload_id=upload_id(s.s3.raw_bucket, key, version)), display, expected)


def wait_for_results(s: Settings, store: ObjectStore, uploads: list[Upload], *, timeout_s: float,
                     since: float, progress: bool = True) -> set[str]:
    """Poll until every upload has its result or a dead letter; fills ``Upload.result`` and
    returns the keys of dead-lettered photos."""
    from pipeline.tasks.deadletter import read_letters

    keys = {u.key for u in uploads}
    letters_read: set[str] = set()
    waiting = {u.result_key: u for u in uploads if u.result is None}
    folders = sorted({k.rsplit("/", 1)[0] + "/" for k in waiting})
    deadline = time.time() + timeout_s
    failed: set[str] = set()
    rounds = 0
    while time.time() < deadline:
        # One listing per result folder a round, each result read once: waiting for the
        # pipeline must not load the S3 it works against (a HEAD per photo per round did).
        for folder in folders:
            for key in store.list_keys(s.s3.results_bucket, folder):
                u = waiting.pop(key, None)
                if u is not None:
                    u.result = store.get_json(s.s3.results_bucket, key)
        if rounds % 5 == 0 or not waiting:
            failed |= {d.message.photo.key for d in read_letters(
                store, s.s3.artifacts_bucket, seen=letters_read) if d.message.photo.key in keys}
        rounds += 1
        done = sum(1 for u in uploads if u.result is not None)
        if progress:
            sys.stderr.write(_bar(done, len(uploads), len(failed), time.time() - since))
            sys.stderr.flush()
        if done + len(failed) >= len(uploads):
            break
        time.sleep(0.3)
    if progress:
        sys.stderr.write("\n")
    return failed


def enrol_synthetic_catalog(s: Settings, store: ObjectStore) -> int:
    """The synthetic world's SKUs into the catalog, through the same path as any SKU's."""
    from pipeline.detect.embedder import Embedder
    from pipeline.detect.recognizer import Recognizer, weights_from
    from pipeline.storage.catalog import CatalogStore
    from pipeline.synth.enrol import enrol_catalog

    embedder = Embedder.from_dir(s.models.root, s.recognition.embedder, device="cpu",
                                 intra_op_threads=2)
    return enrol_catalog(Recognizer(embedder, CatalogStore(store, s.s3.config_bucket),
                                    weights_from(s.recognition)))


def run_demo(*, count: int, seed: int, timeout_s: float) -> int:
    s = get_settings()
    store = ObjectStore(make_client(s.aws, "s3"))
    print(f"catalog: {enrol_synthetic_catalog(s, store)} SKUs enrolled from their packshots "
          f"(s3://{s.s3.config_bucket}/catalog/)", flush=True)
    print(f"generating {count} shelf photos (seed {seed})...", flush=True)
    now = datetime.now(UTC)
    photos = [make_photo(seed, i, None, 4000, taken_at=now) for i in range(count)]
    t0 = time.time()
    uploads = []
    for i, photo in enumerate(photos):
        store_id, fmt = STORES[i % len(STORES)]
        uploads.append(upload_photo(
            s, store, photo, store_id=store_id, aisle=f"A{(i // 3) % 4 + 1:02d}",
            bay=f"B{i % 5 + 1}", camera=f"cam-{i % 7 + 1}",
            name=f"{datetime.now(UTC):%Y%m%dT%H%M%S}_{i:03d}", store_format=fmt))
    print(f"uploaded {count} photos to s3://{s.s3.raw_bucket}/{s.s3.raw_prefix} "
          f"in {time.time() - t0:.1f} s", flush=True)
    failed = wait_for_results(s, store, uploads, timeout_s=timeout_s, since=t0)
    done = [u for u in uploads if u.result is not None]
    wall = time.time() - t0
    print()
    print(f"{'photo':44} {'display':8} {'route':6} {'model':16} {'dets':>4} "
          f"{'compliance':>10} {'truth':>6} {'secs':>6}")
    latencies = [u.seconds for u in done]
    for u in done:
        r = u.result
        assert r is not None
        comp = r.get("compliance")
        print(f"{u.key[-44:]:44} {u.display:8} {r['route']:6} {r['model']:16} "
              f"{r['detections']:4d} {'-' if comp is None else f'{comp:.1%}':>10} "
              f"{u.expected['compliance']:6.1%} {u.seconds:6.1f}")
    missing = count - len(done)
    print()
    if latencies:
        print(f"{len(done)}/{count} photos done in {wall:.1f} s wall "
              f"({len(done) / wall * 3600:,.0f} photos/hour); put-to-result latency "
              f"p50 {np.percentile(latencies, 50):.1f} s, p95 {np.percentile(latencies, 95):.1f} s")
    print(f"artifacts: s3://{s.s3.artifacts_bucket}/{{sha[:2]}}/{{sha}}/ "
          f"(ingested.jpg, normalized.jpg, quality.json, detections.<model>.json)")
    print(f"results:   s3://{s.s3.results_bucket}/compliance/store=.../date=.../aisle=.../")
    if failed:
        print(f"dead letters: {len(failed)} (shelf dlq list)")
    if done:
        _summaries(s, store, now.strftime("%Y-%m-%d"))
    if missing:
        print(f"{missing} photos without a result after {timeout_s:.0f} s", file=sys.stderr)
        return 1
    return 0
