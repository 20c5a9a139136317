"""``shelf bench``: the pipeline's throughput against its own compute floor, in one run.

On the same generated photos (a mix of 3 to 12 MP, gondolas and endcaps):

1. **Floor**: the real stage code (ingest from bytes, normalize, detect with naming, comply)
   on an in-memory object store, one process, one ONNX Runtime thread, no broker: the stage
   work alone, scaled to this machine's cores. It is measured right before and right after
   the pipeline's saturation run, and their mean is the floor: a shared host's speed drifts
   within minutes, and the ratio compares the pipeline with the floor of its own minutes.
2. **Pipeline at saturation**: the photos put into the running stack at once, the rate at
   which results appear, and its ratio to the floor.
3. **Paced load** at 50 % and 80 % of that rate: put-to-result p50/p95/p99.
4. **Bytes-through-broker baseline**: the article's design (``pipeline.tasks.baseline``): its
   five-task chain with the photo base64 in every message and every stage on the full-size
   image, on a worker of its own.
5. **Listener alone**: S3 events per second from SQS to enqueued chains.
6. **Peak RSS** of every worker process, and how the stage work grows with photo size (3,
   12, 24 MP) and with products per photo.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pipeline.settings import REPO_ROOT, Settings, cpu_count, get_settings
from pipeline.storage.s3 import ObjectStore, make_client
from pipeline.synth.world import Photo, make_photo

SIZES_MP = {3: 2000, 12: 4000}  # long side of generated photos per megapixel class


@dataclass
class BenchReport:
    photos: int
    cores: int
    floor_ms_per_photo: float
    floor_ms_before: float
    floor_ms_after: float
    floor_per_hour: float
    pipeline_per_hour: float
    ratio_to_floor: float
    p50_s: float
    p95_s: float
    p99_s: float
    paced: dict[str, dict[str, float]]
    bytes_baseline_per_hour: float | None
    ratio_to_bytes_baseline: float | None
    listener_events_per_s: float
    peak_rss_mb: float
    rss_by_process: dict[str, float]
    cost_by_megapixels: dict[str, float]
    cost_by_products: dict[str, float]
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def format(self) -> str:
        lines = [
            f"{self.photos} photos, {self.cores} cores",
            f"compute floor      {self.floor_ms_per_photo:7.1f} ms of stage work per photo "
            f"(before {self.floor_ms_before:.1f}, after {self.floor_ms_after:.1f}) "
            f"-> {self.floor_per_hour:9,.0f} photos/hour",
            f"pipeline           {self.pipeline_per_hour:9,.0f} photos/hour at saturation = "
            f"{self.ratio_to_floor:.2f} of the floor",
        ]
        for name, v in self.paced.items():
            lines.append(f"paced at {name:>4}     {v['per_hour']:9,.0f} photos/hour offered: "
                         f"put-to-result p50 {v['p50_s']:.2f} s, p95 {v['p95_s']:.2f} s, "
                         f"p99 {v['p99_s']:.2f} s")
        if self.bytes_baseline_per_hour:
            lines.append(f"bytes baseline     {self.bytes_baseline_per_hour:9,.0f} photos/hour "
                         f"(ours = {self.ratio_to_bytes_baseline:.2f}x)")
        lines.append(f"listener alone     {self.listener_events_per_s:9,.0f} events/s")
        lines.append(f"peak RSS           {self.peak_rss_mb:9,.0f} MB (" + ", ".join(
            f"{k} {v:.0f}" for k, v in sorted(self.rss_by_process.items())) + ")")
        lines.append("stage work by size " + ", ".join(
            f"{k} MP {v:.0f} ms" for k, v in self.cost_by_megapixels.items()))
        lines.append("by products        " + ", ".join(
            f"{k}: {v:.0f} ms" for k, v in self.cost_by_products.items()))
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def _photos(n: int, seed: int) -> list[Photo]:
    now = datetime.now(UTC)
    sides = list(SIZES_MP.values())
    return [make_photo(seed, i, None, sides[i % len(sides)], taken_at=now) for i in range(n)]


def _scaled_jpeg(photo: Photo, megapixels: int) -> bytes:
    """The photo re-encoded at ``megapixels`` (sizes the generator does not draw)."""
    from pipeline.image import decode_jpeg

    img = decode_jpeg(photo.jpeg)
    h, w = img.shape[:2]
    f = (megapixels * 1e6 / (w * h)) ** 0.5
    big = cv2.resize(img, (round(w * f), round(h * f)), interpolation=cv2.INTER_CUBIC)
    return bytes(cv2.imencode(".jpg", big, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes())


# -- 1. the floor ---------------------------------------------------------------------------


class Floor:
    """The real stages on an in-memory store, one ORT thread, in this process."""

    def __init__(self, settings: Settings) -> None:
        from pipeline.demo import enrol_synthetic_catalog
        from pipeline.storage.ledger import MemoryLedger
        from pipeline.storage.memory import MemoryStore
        from pipeline.storage.redis import make_redis
        from pipeline.tasks.runtime import Runtime

        s = settings.model_copy(deep=True)
        s.models.intra_op_threads = 1
        self.store = MemoryStore()
        # A database of its own: the floor's photo counts are not the pipeline's.
        scratch = make_redis(s.redis.url.rsplit("/", 1)[0] + "/15")
        self.rt = Runtime(s, self.store, scratch, os.getpid(), MemoryLedger())
        enrol_synthetic_catalog(s, self.store)
        self.n = 0

    def forget(self) -> None:
        """Forget which photos were worked on: the next runs of the same photos do the whole
        stage work again instead of skipping it as done."""
        from pipeline.storage.ledger import MemoryLedger

        self.rt.ledger = MemoryLedger()
        self.rt.images.clear()

    def run(self, photo: Photo, data: bytes | None = None) -> tuple[float, int]:
        """Seconds of stage work for one photo, and the products found."""
        from pipeline.messages import PhotoRef, StageMessage
        from pipeline.tasks import steps

        s = self.rt.settings
        self.n += 1
        bay = f"B{self.n}"
        self.store.put_json(s.s3.config_bucket, f"planograms/FLOOR/A1/{bay}.json",
                            photo.truth["planogram"])
        msg = StageMessage(photo=PhotoRef(
            bucket=s.s3.raw_bucket, key=f"raw/FLOOR/A1/{bay}/cam/{self.n}.jpg", store="FLOOR",
            aisle="A1", bay=bay, camera="cam", display_type=str(photo.truth["display"]),
            version_id=str(self.n)))
        t0 = time.perf_counter()
        m = steps.ingest_bytes(data or photo.jpeg, msg, self.rt)
        m = steps.normalize(m, self.rt)
        m = steps.detect(m, self.rt)
        m = steps.comply(m, self.rt)
        elapsed = time.perf_counter() - t0
        result = self.store.get_json(s.s3.results_bucket, m.artifacts["result"].key)
        return elapsed, int(result["detections"])


# -- 2, 3. the pipeline ---------------------------------------------------------------------


def _upload_and_wait(s: Settings, store: ObjectStore, photos: list[Photo], tag: str,
                     interval_s: float, timeout_s: float) -> tuple[float, list[float]]:
    """Put ``photos`` (every ``interval_s``), wait for their results; returns the rate
    (photos/s from the first put to the last result) and put-to-result latencies."""
    from pipeline.demo import upload_photo, wait_for_results

    t0 = time.time()
    uploads = []
    for i, p in enumerate(photos):
        target = t0 + i * interval_s
        if time.time() < target:
            time.sleep(target - time.time())
        uploads.append(upload_photo(s, store, p, store_id=f"BENCH-{tag}", aisle="A1",
                                    bay=f"B{i}", camera="cam-1", name=f"{tag}-{i:04d}",
                                    store_format="standard"))
    failed = wait_for_results(s, store, uploads, timeout_s=timeout_s, since=t0,
                              progress=False)
    if failed:
        raise RuntimeError(f"{len(failed)} bench photos dead-lettered (shelf dlq list)")
    done = [u for u in uploads if u.result is not None]
    if len(done) < len(uploads):
        raise RuntimeError(f"{len(uploads) - len(done)} bench photos without a result")
    last = max(datetime.fromisoformat(u.result["completed_at"]).timestamp()  # type: ignore[index]
               for u in done)
    return len(done) / (last - t0), [u.seconds for u in done]


# -- 4. the bytes-through-broker baseline -----------------------------------------------------


def _baseline(photos: list[Photo], timeout_s: float) -> float:
    """Photos/s of the article's design on a worker of its own."""
    from pipeline.storage.redis import make_redis
    from pipeline.tasks import baseline
    from pipeline.tasks.app import app

    s = get_settings()
    app.conf.broker_url = s.redis.url
    log = (s.run_dir / "bench-baseline-worker.log").open("wb")
    worker = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "worker", "--pool", "cpu", "--queues",
         baseline.QUEUE, "--concurrency", str(cpu_count())], stdout=log,
        stderr=subprocess.STDOUT, cwd=REPO_ROOT, start_new_session=True)
    marker = f"shelf:bench-baseline:{uuid.uuid4().hex}"
    r = make_redis(s.redis.url)
    try:
        deadline = time.time() + 120
        while "ready." not in (s.run_dir / "bench-baseline-worker.log").read_text(
                errors="replace"):
            if time.time() > deadline or worker.poll() is not None:
                raise RuntimeError("the baseline worker did not start")
            time.sleep(0.2)
        baseline.send(photos[0].jpeg, marker)  # warm-up
        while r.llen(marker) < 1:
            time.sleep(0.1)
        t0 = time.time()
        for p in photos:
            baseline.send(p.jpeg, marker)
        deadline = t0 + timeout_s
        while r.llen(marker) < len(photos) + 1 and time.time() < deadline:
            time.sleep(0.1)
        done = int(r.llen(marker)) - 1
        return done / (time.time() - t0)
    finally:
        r.delete(marker)
        worker.terminate()
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, 9)
        log.close()


# -- 5. the listener alone ----------------------------------------------------------------


def _listener_rate(events: int, warm_up: int = 50) -> float:
    """Events/s through a Listener in this process, from SQS to enqueued chain heads, on a
    bucket and queue of its own; the chains go to a queue no worker reads (then dropped).
    The clock starts once ``warm_up`` events are through (the pollers started, their
    connections open), as a listener that runs all day is; ``events`` are timed after it."""
    from pipeline.listeners.listener import Listener
    from pipeline.storage.provision import apply_spec, load_spec, spec_names
    from pipeline.storage.redis import make_redis
    from pipeline.tasks.stages import publish_batch, send_stage

    base = get_settings()
    s = base.model_copy(deep=True)
    sfx = uuid.uuid4().hex[:6]
    s.s3.raw_bucket = f"bench-raw-{sfx}"
    s.sqs.queue, s.sqs.dead_letter_queue = f"bench-ev-{sfx}", f"bench-dlq-{sfx}"
    s.sqs.wait_time_s = 1
    s3, sqs = make_client(s.aws, "s3"), make_client(s.aws, "sqs")
    spec = load_spec()
    spec["notifications"] = []  # events are sent by hand, all at once
    urls = apply_spec(spec, s3=s3, sqs=sqs, region=s.aws.region,
                      rename=spec_names(s).__getitem__)
    queue = urls[s.sqs.queue]
    keys = [f"raw/B/A1/B{i % 50}/cam/{i:05d}.jpg" for i in range(warm_up + events)]
    for k in keys:
        s3.put_object(Bucket=s.s3.raw_bucket, Key=k, Body=b"x")
    bodies = [json.dumps({"Records": [{"eventName": "ObjectCreated:Put",
                                       "eventTime": datetime.now(UTC).isoformat(),
                                       "s3": {"bucket": {"name": s.s3.raw_bucket},
                                              "object": {"key": k, "eTag": "x"}}}]})
              for k in keys]
    for i in range(0, len(bodies), 10):
        sqs.send_message_batch(QueueUrl=queue, Entries=[
            {"Id": str(j), "MessageBody": b} for j, b in enumerate(bodies[i:i + 10])])
    sink = f"bench-sink-{sfx}"
    redis = make_redis(base.redis.url)

    listener = Listener(s, sqs=sqs, store=ObjectStore(s3), redis=redis,
                        enqueue=lambda m: send_stage("ingest", m, queue=sink),
                        batch=publish_batch)
    polling = threading.Thread(target=listener.run, daemon=True)  # its configured pollers
    polling.start()
    deadline = time.time() + 300
    while listener.stats.enqueued < warm_up and time.time() < deadline:
        time.sleep(0.005)
    t0, n0 = time.perf_counter(), listener.stats.enqueued
    while listener.stats.enqueued < warm_up + events and time.time() < deadline:
        time.sleep(0.005)
    rate = (listener.stats.enqueued - n0) / (time.perf_counter() - t0)
    listener.stop_event.set()
    polling.join()
    redis.delete(sink)
    for url in urls.values():
        sqs.delete_queue(QueueUrl=url)
    _drop_bucket(s3, s.s3.raw_bucket)
    return rate


def _drop_bucket(s3: Any, bucket: str) -> None:
    """Delete ``bucket`` with every version in it (each run would leave one behind)."""
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
        gone = [{"Key": v["Key"], "VersionId": v["VersionId"]}
                for v in page.get("Versions", []) + page.get("DeleteMarkers", [])]
        if gone:
            s3.delete_objects(Bucket=bucket, Delete={"Objects": gone, "Quiet": True})
    s3.delete_bucket(Bucket=bucket)


# -- 6. memory ------------------------------------------------------------------------------


def _rss(run_dir: Path) -> dict[str, float]:
    """Peak resident memory (VmHWM) of each supervised worker and its pool processes."""
    from pipeline.supervise import read_states

    out: dict[str, float] = {}
    for st in read_states(run_dir):
        if not st.name.startswith("worker") or not st.child_pid:
            continue
        pids = [st.child_pid] + [int(p) for p in subprocess.run(
            ["ps", "-o", "pid=", "--ppid", str(st.child_pid)], capture_output=True, text=True,
            check=False).stdout.split()]
        for n, pid in enumerate(pids):
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            kb = next((int(line.split()[1]) for line in status.splitlines()
                       if line.startswith("VmHWM:")), 0)
            out[f"{st.name}{'' if n == 0 else f'/pool-{n}'}"] = kb / 1024
    return out


def run_bench(*, photos: int, seed: int, baseline: bool, timeout_s: float) -> BenchReport:
    s = get_settings()
    cores = cpu_count()
    notes: list[str] = []
    shots = _photos(photos, seed)
    # 1, 2. floor, saturation, floor again
    floor = Floor(s)
    for p in shots[:2]:  # warm-up
        floor.run(p)
    floor.forget()
    before = [floor.run(p) for p in shots]
    store = ObjectStore(make_client(s.aws, "s3"))
    rate, _ = _upload_and_wait(s, store, shots, f"sat{seed}", 0.0, timeout_s)
    floor.forget()
    after = [floor.run(p) for p in shots]
    samples = before + after
    ms_before = float(np.mean([t for t, _ in before])) * 1000
    ms_after = float(np.mean([t for t, _ in after])) * 1000
    per_photo = float(np.mean([t for t, _ in samples]))
    floor_per_hour = cores * 3600 / per_photo
    if abs(ms_after - ms_before) > 0.1 * min(ms_before, ms_after):
        notes.append(f"the host's speed drifted during the run: stage work {ms_before:.0f} ms "
                     f"per photo before the saturation run, {ms_after:.0f} ms after")
    by_products: dict[str, list[float]] = {}
    for t, n in samples:
        key = "<60 products" if n < 60 else "60-120" if n <= 120 else ">120"
        by_products.setdefault(key, []).append(t * 1000)
    by_size = {}
    for mp in (3, 12, 24):
        data = [_scaled_jpeg(p, mp) for p in shots[:4]]
        by_size[str(mp)] = float(np.mean([floor.run(p, d)[0] for p, d in zip(shots, data,
                                                                              strict=False)])
                                 * 1000)
    # 3. paced
    paced = {}
    half = shots[: max(8, photos // 2)]
    for share in (0.5, 0.8):
        _, lat = _upload_and_wait(s, store, half, f"p{int(share * 100)}-{seed}",
                                  1 / (share * rate), timeout_s)
        paced[f"{int(share * 100)}%"] = {
            "per_hour": share * rate * 3600, "p50_s": float(np.percentile(lat, 50)),
            "p95_s": float(np.percentile(lat, 95)), "p99_s": float(np.percentile(lat, 99))}
    rss = _rss(REPO_ROOT / "run")
    # 4. baseline
    base_rate = _baseline(shots, timeout_s) if baseline else None
    # 5. listener
    listener = _listener_rate(500)
    if not rss:
        notes.append("no supervised workers found under run/: peak RSS not measured")
    p80 = paced["80%"]
    return BenchReport(
        photos=photos, cores=cores, floor_ms_per_photo=per_photo * 1000,
        floor_ms_before=ms_before, floor_ms_after=ms_after,
        floor_per_hour=floor_per_hour, pipeline_per_hour=rate * 3600,
        ratio_to_floor=rate * 3600 / floor_per_hour, p50_s=p80["p50_s"], p95_s=p80["p95_s"],
        p99_s=p80["p99_s"], paced=paced,
        bytes_baseline_per_hour=base_rate * 3600 if base_rate else None,
        ratio_to_bytes_baseline=rate / base_rate if base_rate else None,
        listener_events_per_s=listener, peak_rss_mb=max(rss.values(), default=0.0),
        rss_by_process=rss, cost_by_megapixels=by_size,
        cost_by_products={k: float(np.mean(v)) for k, v in sorted(by_products.items())},
        notes=notes)
