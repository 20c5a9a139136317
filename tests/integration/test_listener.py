"""The listener against real SQS, S3 and Redis, on queues and buckets of its own."""

from __future__ import annotations

import contextlib
import itertools
import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from pipeline.errors import TransientError
from pipeline.listeners.events import parse_body
from pipeline.listeners.listener import Listener
from pipeline.messages import StageMessage
from pipeline.settings import Settings
from pipeline.storage.download import fetch
from pipeline.storage.keys import claim_key, inflight_key
from pipeline.storage.provision import apply_spec, load_spec, spec_names
from tests.conftest import Stack


@dataclass
class Isolated:
    settings: Settings
    queue_url: str
    stack: Stack


@pytest.fixture
def isolated(stack: Stack) -> Iterator[Isolated]:
    sfx = uuid.uuid4().hex[:8]
    s = stack.settings.model_copy(deep=True)
    s.s3.raw_bucket = f"lraw-{sfx}"
    s.s3.artifacts_bucket = f"lart-{sfx}"
    s.s3.results_bucket = f"lres-{sfx}"
    s.s3.config_bucket = f"lcfg-{sfx}"
    s.sqs.queue = f"lq-{sfx}"
    s.sqs.dead_letter_queue = f"ldlq-{sfx}"
    s.sqs.wait_time_s = 1
    urls = apply_spec(load_spec(), s3=stack.s3, sqs=stack.sqs, region=s.aws.region,
                      rename=spec_names(s).__getitem__)
    yield Isolated(s, urls[s.sqs.queue], stack)
    for url in urls.values():
        stack.sqs.delete_queue(QueueUrl=url)


def _receive_all(sqs: Any, url: str, seconds: float) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    deadline = time.time() + seconds
    while time.time() < deadline:
        got += sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10,
                                   WaitTimeSeconds=1).get("Messages", [])
    return got


def _drain_test_event(iso: Isolated) -> None:
    for m in _receive_all(iso.stack.sqs, iso.queue_url, 1.5):
        assert parse_body(m["Body"]) == []  # only the s3:TestEvent may be waiting
        iso.stack.sqs.delete_message(QueueUrl=iso.queue_url, ReceiptHandle=m["ReceiptHandle"])


def _visible(iso: Isolated) -> int:
    attrs = iso.stack.sqs.get_queue_attributes(
        QueueUrl=iso.queue_url, AttributeNames=["ApproximateNumberOfMessages"])["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"])


def _listener(iso: Isolated, enqueue: Any) -> Listener:
    return Listener(iso.settings, sqs=iso.stack.sqs, store=iso.stack.store,
                    redis=iso.stack.redis, enqueue=enqueue)


def _one_upload(iso: Isolated, key: str, enqueue: Any) -> Listener:
    """A listener with a one-second visibility timeout, and one upload's event waiting."""
    _drain_test_event(iso)
    iso.stack.s3.put_object(Bucket=iso.settings.s3.raw_bucket, Key=key, Body=b"x")
    listener = _listener(iso, enqueue)
    listener.s.sqs.visibility_timeout_s = 1
    return listener


def test_notification_delivers_every_upload_under_the_prefix_whatever_its_name(
        isolated: Isolated) -> None:
    s3, raw = isolated.stack.s3, isolated.settings.s3.raw_bucket
    _drain_test_event(isolated)
    s3.put_object(Bucket=raw, Key="raw/S1/A1/B1/c1/shelf 1.jpg", Body=b"x")
    s3.put_object(Bucket=raw, Key="raw/S1/A1/B1/c1/IMG_0001.HEIC", Body=b"x")
    s3.put_object(Bucket=raw, Key="elsewhere/p.jpg", Body=b"x")
    got = _receive_all(isolated.stack.sqs, isolated.queue_url, 3)
    keys = sorted(r.key for m in got for r in parse_body(m["Body"]))
    assert keys == ["raw/S1/A1/B1/c1/IMG_0001.HEIC", "raw/S1/A1/B1/c1/shelf 1.jpg"]


def test_uploads_of_any_format_go_on_keys_off_the_layout_are_refused_with_why(
        isolated: Isolated) -> None:
    # Given a camera's HEIC, a photo in a date folder under its camera, a key with no camera
    # folder, and a folder marker and a .DS_Store that a sync tool copied along
    s3, raw = isolated.stack.s3, isolated.settings.s3.raw_bucket
    _drain_test_event(isolated)
    for key in ("raw/S1/A1/B1/c1/IMG_0001.HEIC", "raw/S1/A1/B1/c1/2025-06-02/0003.jpg",
                "raw/S1/A1/B1/shelf.jpg", "raw/S1/A1/B1/c1/", "raw/S1/A1/B1/c1/.DS_Store"):
        s3.put_object(Bucket=raw, Key=key, Body=b"x")
    got = _receive_all(isolated.stack.sqs, isolated.queue_url, 5)
    done: list[StageMessage] = []
    listener = _listener(isolated, done.append)

    # When the listener handles them
    listener.handle_batch(got)

    # Then the HEIC goes on to ingest (which tells its format by its bytes) and the dated
    # photo keeps its camera; the key off the layout waits on the DLQ saying the layout; the
    # marker and the hidden file are no uploads
    by_key = {m.photo.key: m.photo for m in done}
    assert sorted(by_key) == ["raw/S1/A1/B1/c1/2025-06-02/0003.jpg",
                              "raw/S1/A1/B1/c1/IMG_0001.HEIC"]
    dated = by_key["raw/S1/A1/B1/c1/2025-06-02/0003.jpg"]
    assert (dated.store, dated.aisle, dated.bay, dated.camera) == ("S1", "A1", "B1", "c1")
    dead = [(m["MessageAttributes"]["reason"]["StringValue"], m["Body"])
            for m in _dlq_messages(isolated)]
    assert len(dead) == 1 and "raw/{store}/{aisle}/{bay}/{camera}/{file}" in dead[0][0]
    assert [r.key for r in parse_body(dead[0][1])] == ["raw/S1/A1/B1/shelf.jpg"]
    assert _visible(isolated) == 0


def test_sigterm_finishes_current_message_and_returns_the_rest(isolated: Isolated) -> None:
    s3, raw = isolated.stack.s3, isolated.settings.s3.raw_bucket
    _drain_test_event(isolated)
    for i in range(3):
        s3.put_object(Bucket=raw, Key=f"raw/S1/A1/B1/c1/p{i}.jpg", Body=b"x")
    deadline = time.time() + 10
    while _visible(isolated) < 3 and time.time() < deadline:
        time.sleep(0.2)
    enqueued: list[StageMessage] = []
    listener = _listener(isolated, enqueued.append)

    def enqueue_then_stop(msg: StageMessage) -> None:
        enqueued.append(msg)
        listener.stop_event.set()  # SIGTERM arrives while the first photo is handled

    listener.enqueue = enqueue_then_stop
    assert listener.poll_once() == 3
    assert len(enqueued) == 1
    # The two unprocessed messages are visible again at once, not after the timeout
    assert _visible(isolated) == 2
    # and their claims were dropped: the next listener enqueues them, none held as busy
    listener.stop_event.clear()
    listener.enqueue = enqueued.append
    while len(enqueued) < 3 and time.time() < deadline:
        listener.poll_once()
    assert sorted(m.photo.key for m in enqueued) == [f"raw/S1/A1/B1/c1/p{i}.jpg"
                                                     for i in range(3)]
    assert listener.stats.failed == 0 and _visible(isolated) == 0


def test_a_batch_whose_publish_fails_is_kept_whole_with_its_claims_dropped(
        isolated: Isolated) -> None:
    # Given three uploads received in one batch, and a broker that takes their chains but
    # fails to confirm the batch (the connection drops on the flush)
    s3, raw = isolated.stack.s3, isolated.settings.s3.raw_bucket
    _drain_test_event(isolated)
    for i in range(3):
        s3.put_object(Bucket=raw, Key=f"raw/S1/A1/B1/c1/f{i}.jpg", Body=b"x")
    got = _receive_all(isolated.stack.sqs, isolated.queue_url, 3)
    assert len(got) == 3
    records = [r for m in got for r in parse_body(m["Body"])]

    @contextlib.contextmanager
    def lost_flush() -> Iterator[None]:
        yield
        raise TransientError("broker flush: connection reset")

    sent: list[StageMessage] = []
    listener = _listener(isolated, sent.append)
    listener.batch = lost_flush

    # When the listener handles the batch
    listener.handle_batch(got)

    # Then every record counts as failed, none as seen, none left claimed, none deleted
    assert listener.stats.failed == 3 and listener.stats.enqueued == 0
    redis = isolated.stack.redis
    for r in records:
        seen = claim_key(r.bucket, r.key, r.version)
        assert not redis.exists(seen) and not redis.exists(inflight_key(seen))
    # And handled again with the broker back, all three are enqueued, once each
    done: list[StageMessage] = []
    listener.enqueue, listener.batch = done.append, contextlib.nullcontext
    listener.handle_batch(got)
    assert sorted(m.photo.key for m in done) == [f"raw/S1/A1/B1/c1/f{i}.jpg" for i in range(3)]
    assert listener.stats.enqueued == 3 and listener.stats.duplicates == 0


def test_failed_enqueue_keeps_message_and_releases_claim(isolated: Isolated) -> None:
    s3, raw = isolated.stack.s3, isolated.settings.s3.raw_bucket
    _drain_test_event(isolated)
    key = "raw/S1/A1/B1/c1/retry.jpg"
    s3.put_object(Bucket=raw, Key=key, Body=b"x")

    def broken(_msg: StageMessage) -> None:
        raise TransientError("broker down")

    listener = _listener(isolated, broken)
    listener.s.sqs.visibility_timeout_s = 1
    deadline = time.time() + 10
    while listener.stats.failed == 0 and time.time() < deadline:
        listener.poll_once()
    assert listener.stats.failed == 1 and listener.stats.enqueued == 0
    # Given the broker is back, the redelivered event is enqueued: nothing was lost
    done: list[StageMessage] = []
    listener.enqueue = done.append
    while not done and time.time() < deadline + 10:
        listener.poll_once()
    assert [m.photo.key for m in done] == [key]


def test_same_object_version_is_enqueued_once(isolated: Isolated) -> None:
    s3, raw = isolated.stack.s3, isolated.settings.s3.raw_bucket
    _drain_test_event(isolated)
    key = "raw/S1/A1/B1/c1/dup.jpg"
    s3.put_object(Bucket=raw, Key=key, Body=b"x")
    got = _receive_all(isolated.stack.sqs, isolated.queue_url, 2)
    assert len(got) == 1
    done: list[StageMessage] = []
    listener = _listener(isolated, done.append)
    listener.handle(got[0])
    listener.handle(got[0])  # the same event delivered again
    assert len(done) == 1 and listener.stats.duplicates == 1
    rec = parse_body(got[0]["Body"])[0]
    assert isolated.stack.redis.exists(claim_key(rec.bucket, rec.key, rec.version))



def test_eventbridge_event_enqueues_the_object_once_with_its_notification(
        isolated: Isolated) -> None:
    # Given an upload whose key needs encoding, announced by S3's own notification and, as
    # when an EventBridge rule also targets the queue, by its EventBridge event
    sqs, s3, raw = isolated.stack.sqs, isolated.stack.s3, isolated.settings.s3.raw_bucket
    _drain_test_event(isolated)
    key = "raw/S1/A1/B1/c1/aisle photo+1.jpg"
    head = s3.put_object(Bucket=raw, Key=key, Body=b"x")
    (notification,) = _receive_all(sqs, isolated.queue_url, 2)
    obj: dict[str, Any] = {"key": key, "size": 1, "etag": head["ETag"].strip('"')}
    if head.get("VersionId"):
        obj["version-id"] = head["VersionId"]
    bridge = {"version": "0", "id": str(uuid.uuid4()), "detail-type": "Object Created",
              "source": "aws.s3", "time": "2024-05-14T08:31:07Z", "region": "us-east-1",
              "resources": [f"arn:aws:s3:::{raw}"],
              "detail": {"version": "0", "bucket": {"name": raw}, "reason": "PutObject",
                         "object": obj}}
    sqs.send_message(QueueUrl=isolated.queue_url, MessageBody=json.dumps(bridge))
    (bridged,) = _receive_all(sqs, isolated.queue_url, 2)
    done: list[StageMessage] = []
    listener = _listener(isolated, done.append)

    # When the listener handles the EventBridge event, then the notification
    listener.handle(bridged)
    listener.handle(notification)

    # Then the photo is enqueued once, under its stored key, fetchable through its URL
    assert [m.photo.key for m in done] == [key]
    assert listener.stats.enqueued == 1 and listener.stats.duplicates == 1
    assert fetch(done[0].photo.url, max_bytes=1024, timeout_s=5).data == b"x"


def test_pollers_in_parallel_enqueue_every_upload_once(isolated: Isolated) -> None:
    # Given thirty uploads, each event sent twice (S3 delivers at least once)
    sqs, s3, raw = isolated.stack.sqs, isolated.stack.s3, isolated.settings.s3.raw_bucket
    _drain_test_event(isolated)
    for i in range(30):
        s3.put_object(Bucket=raw, Key=f"raw/S1/A1/B1/c1/p{i:02d}.jpg", Body=b"x")
    events = _receive_all(sqs, isolated.queue_url, 3)
    assert len(events) == 30
    for i in range(0, 60, 10):
        sqs.send_message_batch(QueueUrl=isolated.queue_url, Entries=[
            {"Id": str(j), "MessageBody": events[(i + j) % 30]["Body"]} for j in range(10)])
    done: list[StageMessage] = []
    listener = _listener(isolated, done.append)
    listener.s.sqs.wait_time_s = 1
    polling = threading.Thread(target=listener.run, kwargs={"pollers": 4})
    polling.start()
    deadline = time.time() + 30
    while listener.stats.received < 60 and time.time() < deadline:
        time.sleep(0.05)
    listener.stop_event.set()
    polling.join(10)
    # Then four pollers shared them: each upload enqueued once; its second event was a
    # duplicate, or, met while the first was being enqueued, left for a later delivery
    assert sorted(m.photo.key for m in done) == [f"raw/S1/A1/B1/c1/p{i:02d}.jpg"
                                                 for i in range(30)]
    st = listener.stats
    assert st.received == 60 and st.enqueued == 30
    assert st.duplicates + st.failed == 30 and st.refused == st.errors == 0


def _dlq_messages(iso: Isolated, seconds: float = 2) -> list[dict[str, Any]]:
    dlq = iso.stack.sqs.get_queue_url(QueueName=iso.settings.sqs.dead_letter_queue)["QueueUrl"]
    got: list[dict[str, Any]] = []
    deadline = time.time() + seconds
    while time.time() < deadline:
        got += iso.stack.sqs.receive_message(
            QueueUrl=dlq, MaxNumberOfMessages=10, WaitTimeSeconds=1,
            MessageAttributeNames=["All"]).get("Messages", [])
    return got


def test_poison_messages_never_stop_the_loop(isolated: Isolated) -> None:
    # Given hostile bodies on the queue, then a real upload behind them
    sqs, s3, raw = isolated.stack.sqs, isolated.stack.s3, isolated.settings.s3.raw_bucket
    _drain_test_event(isolated)
    good = {"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": raw},
                                                    "object": {"key": "raw/S/A/B/c/x.jpg"}}}
    surrogate = json.dumps({"Records": [good]}).replace("x.jpg", "\\ud800.jpg")
    nul = json.dumps({"Records": [good]}).replace("x.jpg", "a\\u0000b.jpg")
    not_utf8 = json.dumps({"Records": [good]}).replace("x.jpg", "%FFx.jpg")
    bodies = ["[" * 100_000, "not json", json.dumps({"Records": [good] * 500}),
              json.dumps({"Records": [{"eventName": 3}]}), surrogate, nul, not_utf8]
    for b in bodies:
        sqs.send_message(QueueUrl=isolated.queue_url, MessageBody=b)
    s3.put_object(Bucket=raw, Key="raw/S1/A1/B1/c1/after-poison.jpg", Body=b"x")
    done: list[StageMessage] = []
    listener = _listener(isolated, done.append)

    # When the listener runs its loop
    deadline = time.time() + 20
    while not done and time.time() < deadline:
        listener.run(max_batches=1)

    # Then the good photo got through, and every bad body is on the DLQ with its reason
    assert [m.photo.key for m in done] == ["raw/S1/A1/B1/c1/after-poison.jpg"]
    listener.run(max_batches=2)
    reasons = [m["MessageAttributes"]["reason"]["StringValue"] for m in _dlq_messages(isolated)]
    assert len(reasons) == len(bodies)
    joined = " | ".join(reasons)
    for expected in ("nested too deeply", "not JSON", "exceed the cap", "not an S3 event",
                     "not valid Unicode", "control characters"):
        assert expected in joined
    assert _visible(isolated) == 0


def test_a_bad_record_or_a_repeated_one_never_holds_back_the_good_ones(
        isolated: Isolated) -> None:
    # Given one message holding a photo's record twice and a record that is not S3's, a
    # second message holding the same photo again, and a body just under the size limit
    sqs, raw = isolated.stack.sqs, isolated.settings.s3.raw_bucket
    _drain_test_event(isolated)
    good = {"eventName": "ObjectCreated:Put", "eventTime": "2026-12-01T10:00:00Z",
            "s3": {"bucket": {"name": raw},
                   "object": {"key": "raw/S1/A1/B1/c1/twice.jpg", "eTag": "e1"}}}
    bad = {"eventName": 3, "s3": "nothing"}
    sqs.send_message(QueueUrl=isolated.queue_url,
                     MessageBody=json.dumps({"Records": [good, bad, good]}))
    sqs.send_message(QueueUrl=isolated.queue_url, MessageBody=json.dumps({"Records": [good]}))
    near_limit = "x" * (isolated.settings.sqs.max_body_bytes - 100)
    sqs.send_message(QueueUrl=isolated.queue_url, MessageBody=near_limit)
    got = _receive_all(sqs, isolated.queue_url, 2)
    assert len(got) == 3
    done: list[StageMessage] = []
    listener = _listener(isolated, done.append)

    # When the listener handles them in one batch
    listener.handle_batch(got)

    # Then the photo is enqueued once, its copies count as duplicates, nothing waits for
    # redelivery, and each refusal is on the DLQ with its reason
    assert [m.photo.key for m in done] == ["raw/S1/A1/B1/c1/twice.jpg"]
    st = listener.stats
    assert (st.duplicates, st.failed, st.malformed) == (2, 0, 2)
    dead = {m["MessageAttributes"]["reason"]["StringValue"]: m["Body"]
            for m in _dlq_messages(isolated)}
    assert len(dead) == 2
    record = next(b for r, b in dead.items() if "not an S3 event record" in r)
    assert json.loads(record) == {"Records": [bad]}
    body = next(b for r, b in dead.items() if "not JSON" in r)
    assert json.loads(body)["truncated"] is True
    time.sleep(1)
    attrs = sqs.get_queue_attributes(QueueUrl=isolated.queue_url, AttributeNames=[
        "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
    assert attrs == {"ApproximateNumberOfMessages": "0",
                     "ApproximateNumberOfMessagesNotVisible": "0"}


def test_lost_redis_reply_after_enqueue_enqueues_again_never_loses(isolated: Isolated,
                                                                  monkeypatch: Any) -> None:
    # Given the enqueue succeeds but marking the version as seen fails (Redis reply lost)
    s3, raw = isolated.stack.s3, isolated.settings.s3.raw_bucket
    _drain_test_event(isolated)
    s3.put_object(Bucket=raw, Key="raw/S1/A1/B1/c1/lost-reply.jpg", Body=b"x")
    done: list[StageMessage] = []
    listener = _listener(isolated, done.append)
    listener.s.sqs.visibility_timeout_s = 1
    import pipeline.listeners.listener as mod

    real_mark = mod.mark_done  # all of a batch's marks, one round trip

    def lost(*_a: Any, **_k: Any) -> None:
        raise TransientError("redis reply lost")

    monkeypatch.setattr(mod, "mark_done", lost)
    deadline = time.time() + 10
    while not done and time.time() < deadline:
        listener.poll_once()
    assert len(done) == 1 and listener.stats.failed == 1
    # When Redis answers again, the redelivered event is enqueued once more: a duplicate
    # chain (absorbed downstream, results being per upload), never a lost photo
    monkeypatch.setattr(mod, "mark_done", real_mark)
    while len(done) < 2 and time.time() < deadline + 10:
        listener.poll_once()
    assert [m.photo.upload_id for m in done] == [done[0].photo.upload_id] * 2
    listener.poll_once()
    assert _visible(isolated) == 0


def test_identity_comes_from_the_key_and_metadata_arrives_with_the_bytes(
        isolated: Isolated) -> None:
    s3, raw = isolated.stack.s3, isolated.settings.s3.raw_bucket
    _drain_test_event(isolated)
    s3.put_object(Bucket=raw, Key="raw/S1/A1/B1/c1/meta.jpg", Body=b"x",
                  Metadata={"store": "S999", "bay": "B9", "display-type": "endcap",
                            "store-format": "<script>", "planogram-id": "pg 7"})
    done: list[StageMessage] = []
    listener = _listener(isolated, done.append)
    deadline = time.time() + 10
    while not done and time.time() < deadline:
        listener.poll_once()
    (msg,) = done
    assert (msg.photo.store, msg.photo.bay) == ("S1", "B1")
    # The listener reads nothing from S3; ingest's GET through the message's URL brings the
    # metadata, and only what the key cannot say is taken from it
    got = fetch(msg.photo.url, max_bytes=1024, timeout_s=5)
    assert got.data == b"x"
    photo = msg.photo.with_metadata(got.metadata)
    assert (photo.store, photo.bay) == ("S1", "B1")
    assert photo.display_type == "endcap" and photo.planogram_id == "pg 7"
    assert photo.store_format == "standard"  # a value outside the safe set is ignored


class _RedisRefusing:
    """The real Redis client, but every pipeline's reply is the error Redis gives when it
    cannot save its data (``stop-writes-on-bgsave-error``)."""

    def __init__(self, real: Any) -> None:
        self.real = real

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def pipeline(self, *args: Any, **kwargs: Any) -> Any:
        from redis.exceptions import ResponseError

        pipe = self.real.pipeline(*args, **kwargs)

        def refuse() -> None:
            raise ResponseError("MISCONF Redis is configured to save RDB snapshots, but it's "
                                "currently unable to persist to disk")

        pipe.execute = refuse
        return pipe


def test_records_redis_refuses_to_claim_come_back_and_are_never_dead_lettered(
        isolated: Isolated) -> None:
    key = "raw/S1/A1/B1/c1/misconf.jpg"
    done: list[StageMessage] = []
    listener = _one_upload(isolated, key, done.append)
    # Given Redis refusing writes with an error that is not a connection failure
    listener.redis = _RedisRefusing(isolated.stack.redis)  # type: ignore[assignment]
    deadline = time.time() + 10
    while listener.stats.failed == 0 and time.time() < deadline:
        listener.poll_once()
    # Then the record is not the one at fault: nothing goes to the dead-letter queue
    assert listener.stats.failed == 1 and listener.stats.refused == 0 and not done
    assert _dlq_messages(isolated, seconds=1) == []
    # And once Redis writes again, the redelivered event is enqueued
    listener.redis = isolated.stack.redis
    while not done and time.time() < deadline + 10:
        listener.poll_once()
    assert [m.photo.key for m in done] == [key]


class _SqsDamagingOnce:
    """The real SQS client, but the first message it receives has a byte of its body
    changed on the way: the key it names reads ``damagec`` for ``damaged``."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.damaged = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def receive_message(self, **kwargs: Any) -> dict[str, Any]:
        resp = dict(self.real.receive_message(**kwargs))
        for m in resp.get("Messages", []):
            if not self.damaged and "damaged.jpg" in m["Body"]:
                m["Body"] = m["Body"].replace("damaged.jpg", "damagec.jpg")
                self.damaged += 1
        return resp


def test_a_message_damaged_on_the_way_is_read_again_not_taken_as_it_came(
        isolated: Isolated) -> None:
    key = "raw/S1/A1/B1/c1/damaged.jpg"
    done: list[StageMessage] = []
    listener = _one_upload(isolated, key, done.append)
    # Given a link that changes a byte of the first message received (its MD5 no longer
    # SQS's)
    listener.sqs = _SqsDamagingOnce(isolated.stack.sqs)
    deadline = time.time() + 20
    while not done and time.time() < deadline:
        listener.poll_once()
    # Then the damaged copy names no photo and goes to no dead-letter queue: the event,
    # read again, enqueues the photo it names
    assert [m.photo.key for m in done] == [key]
    assert listener.sqs.damaged == 1 and listener.stats.damaged == 1
    assert listener.stats.malformed == 0 and listener.stats.refused == 0
    assert _dlq_messages(isolated, seconds=1) == []


def test_a_message_left_by_a_transient_fault_comes_back_later_each_time(
        isolated: Isolated) -> None:
    s3, raw = isolated.stack.s3, isolated.settings.s3.raw_bucket
    _drain_test_event(isolated)
    s3.put_object(Bucket=raw, Key="raw/S1/A1/B1/c1/outage.jpg", Body=b"x")
    received: list[float] = []

    def broker_down(_msg: StageMessage) -> None:
        received.append(time.monotonic())
        raise TransientError("broker down")

    # Given the broker away for the whole test, and a one-second visibility timeout
    listener = _listener(isolated, broker_down)
    listener.s.sqs.visibility_timeout_s = 1
    deadline = time.time() + 30
    while len(received) < 4 and time.time() < deadline:
        listener.poll_once()
    # Then each receive hides the message for about twice as long as the one before (1, 2,
    # 4 s, less a quarter of jitter), not a retry a second until the redrive count is spent
    gaps = [b - a for a, b in itertools.pairwise(received)]
    assert len(gaps) == 3, gaps
    assert gaps[0] < 2.5 and gaps[2] >= 2.9 and gaps[2] > gaps[0] + 1, gaps


def test_a_slow_batch_keeps_its_handled_messages_hidden_until_they_are_deleted(
        isolated: Isolated) -> None:
    s3, raw = isolated.stack.s3, isolated.settings.s3.raw_bucket
    _drain_test_event(isolated)
    keys = [f"raw/S1/A1/B1/c1/slow-{i}.jpg" for i in range(4)]
    for key in keys:
        s3.put_object(Bucket=raw, Key=key, Body=b"x")
    time.sleep(1)  # the four events are on the queue

    # Given a batch that takes twice the visibility timeout (a slow broker, say)
    done: list[str] = []

    def slow(msg: StageMessage) -> None:
        time.sleep(1.0)
        done.append(msg.photo.key)

    listener = _listener(isolated, slow)
    listener.s.sqs.visibility_timeout_s = 2
    others: list[str] = []
    stop = threading.Event()

    def another_listener() -> None:  # receives whatever becomes visible meanwhile
        while not stop.is_set():
            for m in isolated.stack.sqs.receive_message(
                    QueueUrl=isolated.queue_url, MaxNumberOfMessages=10,
                    WaitTimeSeconds=1, VisibilityTimeout=1).get("Messages", []):
                others.append(m["MessageId"])

    watcher = threading.Thread(target=another_listener, daemon=True)
    deadline = time.time() + 30
    while len(done) < len(keys) and time.time() < deadline:
        batch = threading.Thread(target=listener.poll_once)
        batch.start()
        if not watcher.is_alive():
            time.sleep(0.5)  # the batch is received; the other listener polls from now on
            watcher.start()
        batch.join()
    stop.set()
    watcher.join(timeout=5)
    # Then no message it handled was seen by anyone else before it was deleted
    assert sorted(done) == keys and others == []
    assert _visible(isolated) == 0


def test_a_batch_of_refusals_goes_to_the_dlq_in_few_calls_and_none_is_lost(
        isolated: Isolated) -> None:
    sqs = isolated.stack.sqs
    _drain_test_event(isolated)
    # Given a batch of ten hostile bodies, two of them near the size limit
    big = "x" * (isolated.settings.sqs.max_body_bytes - 2000)
    bodies = [f"not json {i}" for i in range(8)] + [big, big + "y"]
    sqs.send_message_batch(QueueUrl=isolated.queue_url, Entries=[
        {"Id": str(i), "MessageBody": b} for i, b in enumerate(bodies)])
    got = _receive_all(sqs, isolated.queue_url, 2)
    assert len(got) == 10

    class CountingSqs:  # the real SQS, counting the DLQ calls and failing one letter
        def __init__(self) -> None:
            self.calls: list[int] = []

        def __getattr__(self, name: str) -> Any:
            return getattr(sqs, name)

        def send_message_batch(self, QueueUrl: str, Entries: list[Any]) -> Any:
            self.calls.append(len(Entries))
            refused = [e for e in Entries if e["MessageBody"] == "not json 3"]
            resp = sqs.send_message_batch(QueueUrl=QueueUrl, Entries=[
                e for e in Entries if e not in refused])
            return {**resp, "Failed": [{"Id": e["Id"], "Code": "InternalError"}
                                       for e in refused]}

    counting = CountingSqs()
    listener = Listener(isolated.settings, sqs=counting, store=isolated.stack.store,
                        redis=isolated.stack.redis, enqueue=lambda m: None)
    # When the listener handles them in one batch
    listener._local.deferred = []
    listener.handle_batch(got)
    listener._delete_batch(listener._local.deferred)
    # Then they go to the DLQ in a handful of calls, each within SQS's limits (ten letters,
    # the size of one message), and the one letter SQS refused leaves its message on the queue
    assert sum(counting.calls) == 10 and 2 <= len(counting.calls) <= 3
    dead = _dlq_messages(isolated)
    assert len(dead) == 9
    assert "not json 3" not in {m["Body"] for m in dead}
    left = sqs.get_queue_attributes(QueueUrl=isolated.queue_url, AttributeNames=[
        "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
    assert left == {"ApproximateNumberOfMessages": "0",
                    "ApproximateNumberOfMessagesNotVisible": "1"}  # backed off, then back
