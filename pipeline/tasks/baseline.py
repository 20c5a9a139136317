"""The article's design, kept for comparison only (``shelf bench``): a chain that carries the
photo's bytes through the broker, base64 in every message, and does the same stage work.

Its tasks run on their own queue (``bench_baseline``), which no production worker consumes.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from celery import Task

from pipeline.core.lighting import measure_quality, normalize_lighting
from pipeline.image import decode_jpeg, decode_upright, encode_jpeg
from pipeline.privacy import blur_faces
from pipeline.tasks.app import app
from pipeline.tasks.runtime import get_runtime

QUEUE = "bench_baseline"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def send(photo: bytes, marker: str) -> None:
    """Start a baseline chain for ``photo``; ``marker`` is the Redis list it reports to."""
    app.signature("baseline.ingest", args=(_b64(photo), marker), queue=QUEUE,
                  routing_key=QUEUE).apply_async()


@app.task(bind=True, name="baseline.ingest")
def ingest(self: Task, photo_b64: str, marker: str) -> None:
    data = base64.b64decode(photo_b64)
    s = get_runtime().settings
    upright, _ = decode_upright(data, s.ingest.working_long_side)
    image = encode_jpeg(blur_faces(upright)[0], s.ingest.jpeg_quality)
    app.signature("baseline.normalize", args=(_b64(image), photo_b64, marker), queue=QUEUE,
                  routing_key=QUEUE).apply_async()


@app.task(bind=True, name="baseline.normalize")
def normalize(self: Task, image_b64: str, photo_b64: str, marker: str) -> None:
    s = get_runtime().settings
    image = decode_jpeg(base64.b64decode(image_b64))
    measure_quality(image)
    normalized = encode_jpeg(normalize_lighting(image), s.ingest.jpeg_quality)
    app.signature("baseline.detect", args=(_b64(normalized), photo_b64, marker), queue=QUEUE,
                  routing_key=QUEUE).apply_async()


@app.task(bind=True, name="baseline.detect")
def detect(self: Task, image_b64: str, photo_b64: str, marker: str) -> None:
    rt = get_runtime()
    image = decode_jpeg(base64.b64decode(image_b64))
    det = rt.detector("light")
    found = det.detect(image)
    boxes = [[float(v) for v in b] for b in found.xyxy]
    if det.files.finds_products:
        rt.recognizer().candidates(image, found.xyxy, rt.settings.recognition.candidates)
    app.signature("baseline.comply", args=(boxes, photo_b64, marker), queue=QUEUE,
                  routing_key=QUEUE).apply_async()


@app.task(bind=True, name="baseline.comply")
def comply(self: Task, boxes: list[Any], photo_b64: str, marker: str) -> None:
    rt = get_runtime()
    sha = hashlib.sha256(base64.b64decode(photo_b64)).hexdigest()
    rt.store.put_json(rt.settings.s3.results_bucket, f"bench-baseline/{sha}.json",
                      {"sha256": sha, "detections": len(boxes), "boxes": boxes})
    rt.redis.rpush(marker, sha)
