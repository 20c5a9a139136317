"""``shelf chaos``: a fault campaign against the real local stack, counting every photo.

On buckets and queues of its own, the campaign starts two workers and the listener under
supervisors, with every S3 call of theirs going through a fault proxy in front of LocalStack
(errors, throttling, latency, a bit flipped in one object body in a hundred). It uploads
photos (most good, some bad, some into bays with no planogram), and meanwhile kills pool
children, whole workers and the listener with SIGKILL, restarts Redis, sends duplicate
events, and enqueues uploads again with expired pre-signed URLs. After the last upload it
waits for the pipeline to drain, runs the reconciliation a beat would run, and checks every
upload (bucket, key, version):

- a good photo ends as exactly one result;
- a bad input ends as a dead letter with its reason;
- lost = uploads with neither; duplicated = uploads with more than one result, or results of
  uploads never made; misread = results whose photo is not the uploaded bytes (another
  SHA-256). Any above zero fails the campaign (exit status 1).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import random
import signal
import socketserver
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from http.server import BaseHTTPRequestHandler
from typing import Any, TypeVar
from urllib.parse import parse_qs, quote_plus, urlsplit

import cv2
import numpy as np

from pipeline.errors import ObjectNotFoundError, TransientError
from pipeline.settings import REPO_ROOT, get_settings
from pipeline.storage.keys import outcome_key, upload_id
from pipeline.storage.s3 import ObjectStore, make_client
from pipeline.supervise import die_with_parent

log = logging.getLogger(__name__)
T = TypeVar("T")

# -- the fault proxy ------------------------------------------------------------------------


@dataclass
class Faults:
    error_rate: float = 0.03  # 500 InternalError / 503 SlowDown
    throttle_rate: float = 0.02  # 503 SlowDown
    latency_rate: float = 0.05  # 0.2-1.0 s added
    only_paths: str | None = None  # faults only for request paths containing this
    # One bit flipped in an object's bytes on the way (a PUT's body to S3, a GET's body
    # back), and in listings of object versions (what reconciliation reads; other listings
    # are left whole) at a rate of their own, as a campaign makes few of them: what a link
    # or a proxy that damages data does.
    damage_rate: float = 0.0
    listing_damage_rate: float = 0.0
    served: Counter[str] = field(default_factory=Counter)

    def _hit(self, rate: float) -> bool:
        """Whether the body now on its way, damaged at ``rate``, is damaged."""
        return random.random() < rate

    def damage(self, command: str, path: str, body: bytes) -> bytes:
        """``body``, one bit of it flipped at the damage rate when it is an object's or a
        listing of object versions."""
        u = urlsplit(path)
        versions = "versions" in parse_qs(u.query, keep_blank_values=True)
        other_listing = any(q in u.query for q in ("list-type", "uploads", "tagging"))
        an_object = u.path.count("/") >= 2 and not other_listing
        if not body or command not in ("GET", "PUT") or not (versions or an_object) or (
                self.only_paths is not None and self.only_paths not in path) or \
                not self._hit(self.listing_damage_rate if versions else self.damage_rate):
            return body
        self.served["damaged listings" if versions else "damaged"] += 1
        out = bytearray(body)
        out[random.randrange(len(out))] ^= 1 << random.randrange(8)
        return bytes(out)


class _Proxy(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True
    upstream: tuple[str, int]
    faults: Faults

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients that hang up (killed workers) are part of the campaign, not news."""
        if not isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    server: _Proxy
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _forward(self) -> None:
        f = self.server.faults
        r = random.random() if f.only_paths is None or f.only_paths in self.path else 1.0
        if r < f.error_rate:
            f.served["error"] += 1
            return self._fail(random.choice((500, 503)), "InternalError")
        if r < f.error_rate + f.throttle_rate:
            f.served["throttle"] += 1
            return self._fail(503, "SlowDown")
        if r < f.error_rate + f.throttle_rate + f.latency_rate:
            f.served["latency"] += 1
            time.sleep(random.uniform(0.2, 1.0))
        f.served["forwarded"] += 1
        length = int(self.headers.get("Content-Length") or 0)
        body = f.damage(self.command, self.path, self.rfile.read(length)) if length else None
        conn = http.client.HTTPConnection(*self.server.upstream, timeout=60)
        try:
            conn.request(self.command, self.path, body=body, headers=dict(self.headers))
            resp = conn.getresponse()
            data = resp.read()
            if resp.status == 200:
                data = f.damage(self.command, self.path, data)
            self.send_response(resp.status, resp.reason)
            # A HEAD's length is the object's, as S3 gave it; its body is empty.
            head = self.command == "HEAD"
            for k, v in resp.getheaders():
                if k.lower() not in ("transfer-encoding", "connection") and (
                        head or k.lower() != "content-length"):
                    self.send_header(k, v)
            if not head:
                self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
        finally:
            conn.close()

    def _fail(self, status: int, code: str) -> None:
        body = (f"<?xml version=\"1.0\"?><Error><Code>{code}</Code>"
                f"<Message>injected by the chaos proxy</Message></Error>").encode()
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.send_response(status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _forward  # noqa: N815 (http.server API)


def start_proxy(upstream: str, faults: Faults) -> tuple[_Proxy, str]:
    """A fault proxy on 127.0.0.1 (free port) in front of ``upstream``; returns its URL."""
    u = urlsplit(upstream)
    server = _Proxy(("127.0.0.1", 0), _Handler)
    server.upstream = (u.hostname or "127.0.0.1", u.port or 80)
    server.faults = faults
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


# -- photos ---------------------------------------------------------------------------------


def _bad_inputs() -> list[tuple[str, bytes]]:
    """(name, bytes) of inputs that must each end as a dead letter with a reason."""
    from pipeline.synth.world import make_photo

    good = make_photo(1, 0, "gondola", 800).jpeg
    bomb = bytearray(good)
    i = bomb.index(b"\xff\xc0")
    bomb[i + 5:i + 9] = (60000).to_bytes(2, "big") * 2
    return [("zero-bytes", b""), ("truncated", good[:len(good) // 3]),
            ("pdf", b"%PDF-1.7\n" + b"x" * 2000), ("html", b"<html><body>hi</body></html>"),
            ("gif", b"GIF89a" + b"\x00" * 100), ("pixel-bomb", bytes(bomb)),
            ("corrupt", good[:200] + bytes(random.Random(3).randbytes(5000)) + b"\xff\xd9"),
            ("tiny", cv2.imencode(".jpg", np.zeros((64, 64, 3), np.uint8))[1].tobytes())]


@dataclass
class Upload:
    key: str
    kind: str  # good | no-planogram | bad:<name>
    version: str
    upload_id: str
    sha: str | None = None


# -- the campaign ---------------------------------------------------------------------------


@dataclass
class Report:
    sent: int = 0
    good: int = 0
    bad: int = 0
    results: int = 0
    dead_letters: Counter[str] = field(default_factory=Counter)
    good_dead_lettered: int = 0
    bad_with_result: int = 0
    lost: int = 0
    duplicated: int = 0
    # results whose photo is not the uploaded bytes (their SHA-256 another photo's)
    misread: int = 0
    reconciled: int = 0
    # listed by reconciliation, but not in S3 when asked: entries of damaged listings
    vanished: int = 0
    drain_s: float = 0.0
    injected: Counter[str] = field(default_factory=Counter)
    proxy: Counter[str] = field(default_factory=Counter)

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.duplicated == 0 and self.bad_with_result == 0 and \
            self.misread == 0

    def to_json(self) -> dict[str, object]:
        return {"sent": self.sent, "good": self.good, "bad": self.bad, "results": self.results,
                "dead_letters": dict(self.dead_letters),
                "good_dead_lettered": self.good_dead_lettered,
                "bad_with_result": self.bad_with_result, "lost": self.lost,
                "duplicated": self.duplicated, "misread": self.misread,
                "reconciled": self.reconciled, "vanished": self.vanished,
                "drain_s": round(self.drain_s, 1), "injected": dict(self.injected),
                "proxy": dict(self.proxy), "ok": self.ok}

    def format(self) -> str:
        lines = [f"photos sent        {self.sent} ({self.good} good, {self.bad} bad inputs)",
                 f"results            {self.results}",
                 f"dead letters       {sum(self.dead_letters.values())}"]
        lines += [f"  {n:4d}  {reason}" for reason, n in self.dead_letters.most_common()]
        lines += [f"good photos dead-lettered  {self.good_dead_lettered}",
                  f"bad inputs with a result   {self.bad_with_result}",
                  f"re-enqueued by reconciliation  {self.reconciled} ({self.vanished} "
                  "listed but not in S3, left to the next run)",
                  f"lost               {self.lost}",
                  f"duplicated         {self.duplicated}",
                  f"misread            {self.misread}",
                  f"time to drain      {self.drain_s:.1f} s",
                  "injected           " + ", ".join(f"{k} {v}" for k, v in
                                                      sorted(self.injected.items())),
                  "fault proxy        " + ", ".join(f"{k} {v}" for k, v in
                                                      sorted(self.proxy.items()))]
        return "\n".join(lines)


def upload_in_one_part(s3: Any, bucket: str, key: str, data: bytes,
                       metadata: dict[str, str] | None = None) -> dict[str, Any]:
    """Upload ``data`` as a multipart upload of one part, as some cameras' uploaders send
    every photo: its ETag is the MD5 of the part's MD5 (``...-1``), not of the bytes. The
    response of the completion (``ETag``, ``VersionId``)."""
    up = s3.create_multipart_upload(Bucket=bucket, Key=key, ContentType="image/jpeg",
                                    Metadata=metadata or {})
    part = s3.upload_part(Bucket=bucket, Key=key, UploadId=up["UploadId"], PartNumber=1,
                          Body=data)
    return dict(s3.complete_multipart_upload(
        Bucket=bucket, Key=key, UploadId=up["UploadId"],
        MultipartUpload={"Parts": [{"ETag": part["ETag"], "PartNumber": 1}]}))


class Campaign:
    def __init__(self, photos: int, seed: int, bad_share: float = 0.06,
                 no_plan_share: float = 0.08, kills: bool = True, timeout_s: float = 1800,
                 pace: float = 1.0):
        self.rng = random.Random(seed)
        self.seed = seed
        self.n = photos
        self.bad_share = bad_share
        self.no_plan_share = no_plan_share
        self.kills = kills
        self.pace = pace
        self.timeout_s = timeout_s
        self.report = Report()
        self.faults = Faults(damage_rate=0.01, listing_damage_rate=0.2)
        base = get_settings()
        sfx = uuid.uuid4().hex[:6]
        self.run_dir = base.run_dir / f"chaos-{sfx}"
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.direct = base.model_copy(deep=True)
        s3, sqs = self.direct.s3, self.direct.sqs
        s3.raw_bucket, s3.artifacts_bucket = f"chaos-raw-{sfx}", f"chaos-art-{sfx}"
        s3.results_bucket, s3.config_bucket = f"chaos-res-{sfx}", f"chaos-cfg-{sfx}"
        sqs.queue, sqs.dead_letter_queue = f"chaos-ev-{sfx}", f"chaos-dlq-{sfx}"
        sqs.visibility_timeout_s = 20
        self.direct.redis.url = base.redis.url.rsplit("/", 1)[0] + "/3"
        self.direct.celery.key_prefix = f"chaos-{sfx}:"
        self.env = {
            "SHELF_S3__RAW_BUCKET": s3.raw_bucket, "SHELF_S3__ARTIFACTS_BUCKET":
            s3.artifacts_bucket, "SHELF_S3__RESULTS_BUCKET": s3.results_bucket,
            "SHELF_S3__CONFIG_BUCKET": s3.config_bucket, "SHELF_SQS__QUEUE": sqs.queue,
            "SHELF_SQS__DEAD_LETTER_QUEUE": sqs.dead_letter_queue,
            "SHELF_SQS__VISIBILITY_TIMEOUT_S": "20", "SHELF_SQS__WAIT_TIME_S": "2",
            "SHELF_REDIS__URL": self.direct.redis.url,
            "SHELF_CELERY__KEY_PREFIX": self.direct.celery.key_prefix,
            # A whole worker killed: its tasks come back in a minute, not the default five.
            "SHELF_CELERY__VISIBILITY_TIMEOUT_S": "75",
            "SHELF_CELERY__STAGE_TIME_LIMIT_S": "45",
            "SHELF_INGEST__DOWNLOAD_DEADLINE_S": "20",  # under the stages' soft limit
            "SHELF_CELERY__BACKOFF_BASE_S": "0.5", "SHELF_CELERY__BACKOFF_MAX_S": "8",
            "SHELF_CELERY__MAX_RETRIES": "8",
            "SHELF_RUN_DIR": str(self.run_dir),
        }
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.uploads: list[Upload] = []

    # -- setup and teardown ---------------------------------------------------------------
    def _provision(self) -> None:
        from pipeline.demo import enrol_synthetic_catalog
        from pipeline.storage.provision import apply_spec, load_spec, spec_names

        s = self.direct
        self.s3, self.sqs = make_client(s.aws, "s3"), make_client(s.aws, "sqs")
        self.store = ObjectStore(self.s3)
        apply_spec(load_spec(), s3=self.s3, sqs=self.sqs, region=s.aws.region,
                   rename=spec_names(s).__getitem__)
        self.queue_url = self.sqs.get_queue_url(QueueName=s.sqs.queue)["QueueUrl"]
        enrol_synthetic_catalog(s, self.store)

    def _start(self, name: str, *args: str) -> None:
        env = {**os.environ, **self.env, "SHELF_AWS__ENDPOINT_URL": self.proxy_url}
        log = (self.run_dir / f"{name}.log").open("ab")
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "supervise", "--name", name, "--",
             sys.executable, "-m", "pipeline.cli", *args], env=env, stdout=log,
            stderr=subprocess.STDOUT, cwd=REPO_ROOT, start_new_session=True,
            preexec_fn=die_with_parent)

    def _child_pid(self, name: str) -> int | None:
        from pipeline.supervise import read_states

        for st in read_states(self.run_dir):
            if st.name == name:
                return st.child_pid
        return None

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.terminate()
        for p in self.procs.values():
            try:
                p.wait(timeout=40)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
        self.proxy.shutdown()

    # -- uploads --------------------------------------------------------------------------
    def _upload_all(self) -> None:
        from pipeline.synth.world import make_photo

        bad = _bad_inputs()
        s3cfg = self.direct.s3
        for i in range(self.n):
            r = self.rng.random()
            bay = f"B{i % 40}"
            key = f"raw/C{i % 3}/A{i % 7}/{bay}/cam{i % 4}/{i:05d}.jpg"
            if r < self.bad_share:
                name, data = bad[i % len(bad)]
                kind = f"bad:{name}"
            else:
                photo = make_photo(self.seed, i, None, 1024)
                data = photo.jpeg
                kind = "good"
                if r < self.bad_share + self.no_plan_share:
                    kind = "no-planogram"
                    key = f"raw/C{i % 3}/A{i % 7}/NOPLAN{i}/cam{i % 4}/{i:05d}.jpg"
                else:
                    self.store.put_json(s3cfg.config_bucket,
                                        f"planograms/C{i % 3}/A{i % 7}/{bay}.json",
                                        photo.truth["planogram"])
            resp = self._put(key, data, multipart=i % 4 == 3)
            version = str(resp.get("VersionId") or resp["ETag"].strip('"'))
            self.uploads.append(Upload(key, kind, version,
                                       upload_id(s3cfg.raw_bucket, key, version),
                                       hashlib.sha256(data).hexdigest()))
            self.report.sent += 1
            if kind.startswith("bad"):
                self.report.bad += 1
            else:
                self.report.good += 1
            if i and self.rng.random() < 0.05:
                self._duplicate_event(self.uploads[self.rng.randrange(len(self.uploads))])
            if i and self.rng.random() < 0.02:
                self._expired_url(self.uploads[self.rng.randrange(len(self.uploads))])

    def _put(self, key: str, data: bytes, *, multipart: bool) -> dict[str, Any]:
        bucket = self.direct.s3.raw_bucket
        if not multipart:
            return dict(self.s3.put_object(Bucket=bucket, Key=key, Body=data,
                                           ContentType="image/jpeg"))
        self.report.injected["multipart upload"] += 1
        return upload_in_one_part(self.s3, bucket, key, data)

    def _duplicate_event(self, up: Upload) -> None:
        body = json.dumps({"Records": [{
            "eventName": "ObjectCreated:Put", "eventTime": datetime.now(UTC).isoformat(),
            "s3": {"bucket": {"name": self.direct.s3.raw_bucket},
                   "object": {"key": quote_plus(up.key), "versionId": up.version}}}]})
        self.sqs.send_message(QueueUrl=self.queue_url, MessageBody=body)
        self.report.injected["duplicate event"] += 1

    def _expired_url(self, up: Upload) -> None:
        from pipeline.messages import PhotoRef, StageMessage
        from pipeline.storage.keys import parse_raw_key
        from pipeline.tasks.app import app

        cam = parse_raw_key(up.key)
        assert cam is not None
        s = self.direct
        try:
            url = self.proxy_store.presign_get(s.s3.raw_bucket, up.key, 1, up.version)
        except Exception:  # the proxy may refuse: another time
            return
        time.sleep(1.2)
        msg = StageMessage(photo=PhotoRef(bucket=s.s3.raw_bucket, key=up.key,
                                          version_id=up.version, url=url, store=cam.store,
                                          aisle=cam.aisle, bay=cam.bay, camera=cam.camera))
        app.signature("shelf.ingest", args=(msg.model_dump(mode="json"),), immutable=True,
                      queue="ingestion", routing_key="ingestion").apply_async()
        self.report.injected["expired URL"] += 1

    # -- faults ---------------------------------------------------------------------------
    def _chaos_loop(self, stop: threading.Event) -> None:
        """Kills and a Redis crash on a schedule (seconds times ``pace``) until drained."""
        every = {"pool": 15 * self.pace, "worker": 60 * self.pace,
                 "listener": 45 * self.pace, "redis": 90 * self.pace}
        last = dict.fromkeys(every, time.monotonic())
        redis_done = False
        while not stop.wait(1.0):
            now = time.monotonic()
            if now - last["pool"] >= every["pool"]:
                self._kill_pool_child()
                last["pool"] = now
            if now - last["worker"] >= every["worker"]:
                self._kill(self.rng.choice(("worker-cpu", "worker-inference")), "whole worker")
                last["worker"] = now
            if now - last["listener"] >= every["listener"]:
                self._kill("listener", "listener")
                last["listener"] = now
            if not redis_done and now - last["redis"] >= every["redis"]:
                self._restart_redis()
                redis_done = True

    def _kill(self, name: str, what: str) -> None:
        pid = self._child_pid(name)
        if pid:
            try:
                os.kill(pid, signal.SIGKILL)
                self.report.injected[f"SIGKILL {what}"] += 1
            except ProcessLookupError:
                pass

    def _kill_pool_child(self) -> None:
        name = self.rng.choice(("worker-cpu", "worker-inference"))
        pid = self._child_pid(name)
        if not pid:
            return
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True,
                             text=True, check=False).stdout.split()
        if out:
            try:
                os.kill(int(self.rng.choice(out)), signal.SIGKILL)
                self.report.injected["SIGKILL pool child"] += 1
            except ProcessLookupError:
                pass

    def _restart_redis(self) -> None:
        """SIGKILL Redis, as a crash would; its supervisor starts it again from its AOF."""
        from pipeline.supervise import read_states

        for st in read_states(REPO_ROOT / "run"):  # where scripts/stack.sh keeps its state
            if st.name == "redis" and st.child_pid:
                try:
                    os.kill(st.child_pid, signal.SIGKILL)
                except ProcessLookupError:
                    return
                self.report.injected["Redis crash and restart"] += 1

    # -- accounting -----------------------------------------------------------------------
    @staticmethod
    def _patiently(call: Callable[[], T]) -> T:
        """The campaign's own reads go straight to LocalStack, whose load can make it answer
        503: they wait that out (they are what is measured, not part of the pipeline),
        rather than calling the campaign failed."""
        for attempt in range(5):
            try:
                return call()
            except TransientError:
                time.sleep(0.5 * 2 ** attempt)
        return call()

    def _read_if_there(self, bucket: str, key: str) -> Any:
        try:  # one GET, not a HEAD and a GET, for each upload at every round
            return self.store.get_json(bucket, key)
        except ObjectNotFoundError:
            return None

    def _outcomes(self) -> dict[str, dict[str, Any]]:
        """Each upload's outcome record, read straight from LocalStack."""
        bucket = self.direct.s3.artifacts_bucket
        out = {}
        for up in self.uploads:
            key = outcome_key(up.upload_id)
            doc = self._patiently(partial(self._read_if_there, bucket, key))
            if doc:
                out[up.upload_id] = doc
        return out

    def _drain(self, since: datetime) -> None:
        from pipeline.operations import reconcile
        from pipeline.tasks.stages import send_stage

        start = time.monotonic()
        deadline = start + self.timeout_s
        reconciled_at = start
        while time.monotonic() < deadline:
            done = self._outcomes()
            if len(done) == len(self.uploads):
                break
            # What a beat would do: uploads quiet for a minute without an end go round again.
            if time.monotonic() - reconciled_at > 90:
                try:
                    r = reconcile(self.proxied, self.proxy_store, since=since, grace_s=60,
                                  enqueue=lambda m: send_stage("ingest", m))
                    self.report.reconciled += r.requeued
                    self.report.vanished += r.vanished
                except TransientError as exc:  # the proxy's faults: beat retries, so do we
                    log.warning("campaign reconciliation cut short: %s", exc)
                reconciled_at = time.monotonic()
            time.sleep(3)
        self.report.drain_s = time.monotonic() - start

    def _account(self) -> None:
        s3 = self.direct.s3
        outcomes = self._outcomes()
        by_upload: Counter[str] = Counter()
        result_keys: dict[str, str] = {}
        for key in self._patiently(lambda: list(self.store.list_keys(s3.results_bucket,
                                                                      "compliance/"))):
            uid = key.rsplit("/", 1)[-1].removesuffix(".json")
            by_upload[uid] += 1
            result_keys[uid] = key
        sent = {u.upload_id for u in self.uploads}
        self.report.duplicated = sum(n - 1 for n in by_upload.values() if n > 1) + sum(
            n for uid, n in by_upload.items() if uid not in sent)
        letters = {}
        for key in self._patiently(lambda: list(self.store.list_keys(s3.artifacts_bucket,
                                                                      "dead-letter/"))):
            if "/unreadable/" in key:
                continue
            doc = self._patiently(partial(self.store.get_json, s3.artifacts_bucket, key))
            letters[doc["id"]] = doc
        for up in self.uploads:
            got = outcomes.get(up.upload_id)
            has_result = by_upload.get(up.upload_id, 0) > 0
            if has_result:
                self.report.results += 1
                doc = self._patiently(partial(self.store.get_json, s3.results_bucket,
                                              result_keys[up.upload_id]))
                if doc.get("sha256") != up.sha:
                    self.report.misread += 1
            if got is None and not has_result:
                self.report.lost += 1
                continue
            letter = letters.get((got or {}).get("dead_letter") or "")
            if letter and not has_result:
                reason = f"{letter['stage']}: {letter['error_type']}: {letter['error'][:70]}"
                self.report.dead_letters[reason] += 1
                if not up.kind.startswith("bad"):
                    self.report.good_dead_lettered += 1
            elif up.kind.startswith("bad") and has_result:
                self.report.bad_with_result += 1

    def run(self) -> Report:
        from pipeline.tasks.app import using_broker

        with using_broker(self.direct):  # what this process enqueues (reconciliation)
            return self._run()

    def _run(self) -> Report:
        self._provision()
        self.proxy, self.proxy_url = start_proxy(str(self.direct.aws.endpoint_url),
                                                 self.faults)
        # What the pipeline's own processes use (reconciliation mints URLs they accept).
        self.proxied = self.direct.model_copy(deep=True)
        self.proxied.aws.endpoint_url = self.proxy_url
        self.proxy_store = ObjectStore(make_client(self.proxied.aws, "s3"))
        try:
            from pipeline.storage.redis import make_redis

            r = make_redis(self.env["SHELF_REDIS__URL"])
            for stale in r.scan_iter(count=1000):
                r.delete(stale)
            self._start("worker-cpu", "worker", "--pool", "cpu")
            self._start("worker-inference", "worker", "--pool", "inference")
            self._start("listener", "listen")
            time.sleep(8)
            since = datetime.now(UTC) - timedelta(seconds=5)
            stop = threading.Event()
            chaos = threading.Thread(target=self._chaos_loop, args=(stop,), daemon=True)
            if self.kills:
                chaos.start()
            self._upload_all()
            self._drain(since)
            stop.set()
            self._account()
            self.report.proxy = Counter(self.faults.served)
        finally:
            self.stop()
        return self.report


def main_chaos(photos: int, seed: int, kills: bool, as_json: bool, timeout_s: float) -> int:
    if not (REPO_ROOT / "run").exists():
        (REPO_ROOT / "run").mkdir()
    campaign = Campaign(photos, seed, kills=kills, timeout_s=timeout_s)
    print(f"chaos: {photos} photos (seed {seed}), logs in {campaign.run_dir}", flush=True)
    report = campaign.run()
    print(json.dumps(report.to_json()) if as_json else report.format())
    return 0 if report.ok else 1
