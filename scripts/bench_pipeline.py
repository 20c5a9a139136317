"""Pipeline throughput against the compute floor of its own stage code, in one run.

1. Floor: the stage work for each photo (SHA-256, header checks, DCT-scaled decode, EXIF
   rotation, resize and re-encode; quality + gray world + CLAHE + encode; decode + detect) in
   one process, no broker and no S3; scaled to this machine's cores (one ORT thread each).
2. Pipeline: the same photos uploaded to a running stack (``make up``), timed from the first
   put to the last result, plus each photo's put-to-result latency.

    python scripts/bench_pipeline.py [--photos 48] [--seed 31]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import time
from datetime import UTC, datetime

import cv2
import numpy as np

from pipeline.core.lighting import measure_quality, normalize_lighting
from pipeline.core.routing import HEAVY, RouteRules, choose_route
from pipeline.demo import upload_photo, wait_for_results
from pipeline.detect.detector import Detector
from pipeline.image import decode_upright, image_size
from pipeline.settings import get_settings
from pipeline.storage.s3 import ObjectStore, make_client
from pipeline.synth.world import make_photo


def stage_work(data: bytes, detectors: dict[str, Detector], display: str) -> None:
    s = get_settings()
    hashlib.sha256(data).hexdigest()
    upright, _ = decode_upright(data, s.ingest.working_long_side, size_wh=image_size(data))
    ingested = cv2.imencode(".jpg", upright, [cv2.IMWRITE_JPEG_QUALITY, 92])[1]
    img = cv2.imdecode(ingested, cv2.IMREAD_COLOR)
    q = measure_quality(img)
    normalized = cv2.imencode(".jpg", normalize_lighting(img), [cv2.IMWRITE_JPEG_QUALITY, 92])[1]
    route = choose_route(rules=RouteRules(), store_format="standard", display_type=display,
                         camera="c", mean_luminance=q.mean_luminance, contrast=q.contrast)
    detectors[route.path].detect(cv2.imdecode(normalized, cv2.IMREAD_COLOR))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--photos", type=int, default=48)
    ap.add_argument("--seed", type=int, default=31)
    ap.add_argument("--timeout", type=float, default=900)
    args = ap.parse_args()
    s = get_settings()
    now = datetime.now(UTC)
    photos = [make_photo(args.seed, i, None, 4000, taken_at=now) for i in range(args.photos)]
    m = s.models
    detectors = {"light": Detector.from_dir(m.root, m.light, intra_op_threads=1),
                 HEAVY: Detector.from_dir(m.root, m.heavy, intra_op_threads=1)}
    for p in photos[:2]:
        stage_work(p.jpeg, detectors, str(p.truth["display"]))
    t0 = time.perf_counter()
    for p in photos:
        stage_work(p.jpeg, detectors, str(p.truth["display"]))
    per_photo = (time.perf_counter() - t0) / len(photos)
    cores = len(os.sched_getaffinity(0))
    floor = 3600 / per_photo * cores
    print(f"compute floor: {per_photo * 1000:.0f} ms of stage work per photo in one process "
          f"-> {floor:,.0f} photos/hour on {cores} cores")

    store = ObjectStore(make_client(s.aws, "s3"))
    t0 = time.time()
    uploads = [upload_photo(s, store, p, store_id="BENCH", aisle=f"A{i % 4:02d}", bay=f"B{i}",
                            camera="cam-1", name=f"{now:%Y%m%dT%H%M%S}_{i:04d}",
                            store_format="standard")
               for i, p in enumerate(photos)]
    failed = wait_for_results(s, store, uploads, timeout_s=args.timeout, since=t0,
                              progress=False)
    if failed:
        raise SystemExit(f"{len(failed)} photos dead-lettered (shelf dlq list)")
    latencies = [u.seconds for u in uploads if u.result is not None]
    wall = time.time() - t0
    n = len(latencies)
    rate = n / wall * 3600
    print(f"pipeline: {n}/{len(photos)} photos in {wall:.1f} s -> {rate:,.0f} photos/hour "
          f"({rate / floor:.2f} of the floor measured above); put-to-result p50 "
          f"{np.percentile(latencies, 50):.1f} s, p95 {np.percentile(latencies, 95):.1f} s")


if __name__ == "__main__":
    main()
