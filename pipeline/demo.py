"""``shelf demo``: cameras upload generated photos; the running pipeline turns them into results.

Uploads with plain ``put_object`` (metadata and key layout as cameras send them), then watches
the results prefix until every photo has its result, and prints a table per photo.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from datetime import UTC, datetime
from typing import Any

import numpy as np

from pipeline.settings import get_settings
from pipeline.storage.keys import result_key
from pipeline.storage.s3 import ObjectStore, make_client
from pipeline.synth.world import make_photo

STORES = (("S001", "standard"), ("S002", "flagship"), ("S003", "standard"))


def _dead_lettered(s: Any, store: ObjectStore, keys: set[str]) -> set[str]:
    """Which of this run's photos ended in a dead letter."""
    from pipeline.tasks.deadletter import read_letters

    return {d.message.photo.key for d in read_letters(store, s.s3.artifacts_bucket)
            if d.message.photo.key in keys}


def _bar(done: int, total: int, failed: int, elapsed: float) -> str:
    width = 30
    filled = int(width * done / max(total, 1))
    return (f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} done"
            f"{f', {failed} dead-lettered' if failed else ''}  {elapsed:5.1f} s")


def _summaries(s: Any, store: ObjectStore, date: str) -> None:
    """The day's store and aisle rollups, and one HTML report per store."""
    from pipeline.aggregation import aggregate_day
    from pipeline.query import connect, format_table, run_query
    from pipeline.report import build_report

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


def run_demo(*, count: int, seed: int, timeout_s: float) -> int:
    s = get_settings()
    store = ObjectStore(make_client(s.aws, "s3"))
    s3 = store.client
    print(f"generating {count} shelf photos (seed {seed})...", flush=True)
    now = datetime.now(UTC)
    photos = [make_photo(seed, i, None, 4000, taken_at=now) for i in range(count)]
    pending: dict[str, dict[str, Any]] = {}
    t0 = time.time()
    for i, photo in enumerate(photos):
        t = photo.truth
        store_id, fmt = STORES[i % len(STORES)]
        aisle, bay, camera = f"A{(i // 3) % 4 + 1:02d}", f"B{i % 5 + 1}", f"cam-{i % 7 + 1}"
        display = str(t["display"])
        planogram = t["planogram"]
        s3.put_object(Bucket=s.s3.config_bucket, Key=f"planograms/{store_id}/{aisle}/{bay}.json",
                      Body=json.dumps(planogram).encode(), ContentType="application/json")
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        key = f"{s.s3.raw_prefix}{store_id}/{aisle}/{bay}/{camera}/{stamp}_{i:03d}.jpg"
        put_at = time.time()
        s3.put_object(Bucket=s.s3.raw_bucket, Key=key, Body=photo.jpeg, ContentType="image/jpeg",
                      Metadata={"store-format": fmt, "display-type": display})
        sha = hashlib.sha256(photo.jpeg).hexdigest()
        exif = t["exif"]
        assert isinstance(exif, dict)
        date = str(exif["datetime_original"])[:10].replace(":", "-")
        pending[sha] = {"key": key, "put_at": put_at, "display": display, "store": store_id,
                        "aisle": aisle, "result_key": result_key(store=store_id, date=date,
                                                                 aisle=aisle, sha256=sha),
                        "truth": t["expected"]}
    print(f"uploaded {count} photos to s3://{s.s3.raw_bucket}/{s.s3.raw_prefix} "
          f"in {time.time() - t0:.1f} s", flush=True)
    done: dict[str, dict[str, Any]] = {}
    deadline = time.time() + timeout_s
    failed: set[str] = set()
    while len(done) + len(failed) < count and time.time() < deadline:
        for sha, info in pending.items():
            if sha in done:
                continue
            if store.head(s.s3.results_bucket, info["result_key"]) is not None:
                result = store.get_json(s.s3.results_bucket, info["result_key"])
                info["seen_at"] = time.time()
                done[sha] = {**info, "result": result}
        failed = _dead_lettered(s, store, {v["key"] for v in pending.values()})
        sys.stderr.write(_bar(len(done), count, len(failed), time.time() - t0))
        sys.stderr.flush()
        time.sleep(0.5)
    sys.stderr.write("\n")
    wall = time.time() - t0
    print()
    print(f"{'photo':44} {'display':8} {'route':6} {'model':16} {'dets':>4} "
          f"{'compliance':>10} {'truth':>6} {'secs':>6}")
    latencies = []
    for info in sorted(done.values(), key=lambda v: v["put_at"]):
        r = info["result"]
        completed = datetime.fromisoformat(r["completed_at"]).timestamp()
        secs = completed - info["put_at"]
        latencies.append(secs)
        comp = r.get("compliance")
        truth = info["truth"]["compliance"]
        print(f"{info['key'][-44:]:44} {info['display']:8} {r['route']:6} {r['model']:16} "
              f"{r['detections']:4d} {'-' if comp is None else f'{comp:.1%}':>10} "
              f"{truth:6.1%} {secs:6.1f}")
    missing = count - len(done)
    print()
    if latencies:
        print(f"{len(done)}/{count} photos done in {wall:.1f} s wall "
              f"({len(done) / wall * 3600:,.0f} photos/hour); put-to-result latency "
              f"p50 {np.percentile(latencies, 50):.1f} s, p95 {np.percentile(latencies, 95):.1f} s")
    print(f"artifacts: s3://{s.s3.artifacts_bucket}/{{sha[:2]}}/{{sha}}/ "
          f"(ingested.jpg, normalized.jpg, quality.json, detections.json)")
    print(f"results:   s3://{s.s3.results_bucket}/compliance/store=.../date=.../aisle=.../")
    if failed:
        print(f"dead letters: {len(failed)} (shelf dlq list)")
    if done:
        _summaries(s, store, now.strftime("%Y-%m-%d"))
    if missing:
        print(f"{missing} photos without a result after {timeout_s:.0f} s", file=sys.stderr)
        return 1
    return 0
