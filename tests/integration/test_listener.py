"""The listener against real SQS, S3 and Redis, on queues and buckets of its own."""

from __future__ import annotations

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
from pipeline.storage.keys import claim_key
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


def test_notification_delivers_created_photos_only(isolated: Isolated) -> None:
    s3, raw = isolated.stack.s3, isolated.settings.s3.raw_bucket
    _drain_test_event(isolated)
    s3.put_object(Bucket=raw, Key="raw/S1/A1/B1/c1/shelf 1.jpg", Body=b"x")
    s3.put_object(Bucket=raw, Key="raw/S1/A1/B1/c1/notes.txt", Body=b"x")
    s3.put_object(Bucket=raw, Key="elsewhere/p.jpg", Body=b"x")
    got = _receive_all(isolated.stack.sqs, isolated.queue_url, 3)
    keys = [r.key for m in got for r in parse_body(m["Body"])]
    assert keys == ["raw/S1/A1/B1/c1/shelf 1.jpg"]


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
