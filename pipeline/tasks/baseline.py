"""The article's design, kept for comparison only (``shelf bench``): its five-task chain
(ingest, normalize lighting, route, detect, aggregate) as the article's sample code writes it.

The photo travels base64 in the messages and every stage works on the full-resolution image:
ingest decodes the whole photo to fix its orientation and re-encodes it (which also drops its
metadata), normalize decodes it again, corrects white balance and contrast at full size and
re-encodes it, route forwards the bytes to the detector's task, and detect decodes it a third
time. Our pipeline passes references, decodes once at the working size and keeps that image.
The article's retries and returned AsyncResults are left out: they would only slow it further.

Its tasks run on their own queue (``bench_baseline``), which no production worker consumes.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from celery import Task

from pipeline.core.lighting import normalize_lighting
from pipeline.image import decode_jpeg, encode_jpeg
from pipeline.tasks.app import app
from pipeline.tasks.runtime import get_runtime

QUEUE = "bench_baseline"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _next(task: str, *args: Any) -> None:
    app.signature(task, args=args, queue=QUEUE, routing_key=QUEUE).apply_async()


def send(photo: bytes, marker: str) -> None:
    """Start a baseline chain for ``photo``; ``marker`` is the Redis list it reports to."""
    _next("baseline.ingest", _b64(photo), marker)


@app.task(bind=True, name="baseline.ingest")
def ingest(self: Task, photo_b64: str, marker: str) -> None:
    data = base64.b64decode(photo_b64)
    sha = hashlib.sha256(data).hexdigest()
    upright = decode_jpeg(data)  # the full photo; cv2 applies its EXIF orientation
    corrected = encode_jpeg(upright, get_runtime().settings.ingest.jpeg_quality)
    _next("baseline.normalize", _b64(corrected), sha, marker)


@app.task(bind=True, name="baseline.normalize")
def normalize(self: Task, image_b64: str, sha: str, marker: str) -> None:
    image = decode_jpeg(base64.b64decode(image_b64))
    normalized = encode_jpeg(normalize_lighting(image),
                             get_runtime().settings.ingest.jpeg_quality)
    _next("baseline.route", _b64(normalized), sha, marker)


@app.task(bind=True, name="baseline.route")
def route(self: Task, image_b64: str, sha: str, marker: str) -> None:
    _next("baseline.detect", image_b64, sha, marker)


@app.task(bind=True, name="baseline.detect")
def detect(self: Task, image_b64: str, sha: str, marker: str) -> None:
    rt = get_runtime()
    image = decode_jpeg(base64.b64decode(image_b64))
    det = rt.detector("light")
    found = det.detect(image)
    boxes = [[float(v) for v in b] for b in found.xyxy]
    if det.files.finds_products:
        rt.recognizer().candidates(image, image, found.xyxy, rt.settings.recognition.candidates)
    _next("baseline.comply", boxes, sha, marker)


@app.task(bind=True, name="baseline.comply")
def comply(self: Task, boxes: list[Any], sha: str, marker: str) -> None:
    rt = get_runtime()
    rt.store.put_json(rt.settings.s3.results_bucket, f"bench-baseline/{sha}.json",
                      {"sha256": sha, "detections": len(boxes), "boxes": boxes})
    rt.redis.rpush(marker, sha)
