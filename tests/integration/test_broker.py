"""Deployments sharing one Redis database keep their messages apart by key prefix."""

from __future__ import annotations

import base64
import json
import uuid

import pytest

from pipeline.messages import PhotoRef, StageMessage
from pipeline.tasks.app import broker_key, create_app
from tests.conftest import Stack


def test_a_task_sent_under_a_prefix_waits_only_under_that_prefix(stack: Stack) -> None:
    # Given two deployments on the same Redis database, told apart by their key prefix
    mine = stack.settings.model_copy(deep=True)
    mine.celery.key_prefix = f"mine-{uuid.uuid4().hex[:6]}:"
    theirs = stack.settings.model_copy(deep=True)
    theirs.celery.key_prefix = f"theirs-{uuid.uuid4().hex[:6]}:"
    app = create_app(mine)
    queue = f"probe-{uuid.uuid4().hex[:6]}"  # no worker consumes it
    try:
        # When one of them enqueues a task
        app.send_task("shelf.ingest", args=({"probe": True},), queue=queue)
        # Then it waits under that deployment's keys, where the other's workers never look
        assert stack.redis.llen(broker_key(mine, queue)) == 1
        assert stack.redis.llen(broker_key(theirs, queue)) == 0
        assert stack.redis.llen(queue) == 0
    finally:
        stack.redis.delete(broker_key(mine, queue))
        app.close()


def test_a_block_using_another_broker_sends_there_and_only_inside(stack: Stack) -> None:
    from pipeline.tasks.app import app, using_broker

    queue = f"probe-{uuid.uuid4().hex[:6]}"  # no worker consumes it
    # Given this process already sent to the test broker (its connection pools exist)
    app.send_task("shelf.ingest", args=({"probe": 1},), queue=queue)
    other = stack.settings.model_copy(deep=True)
    other.celery.key_prefix = f"other-{uuid.uuid4().hex[:6]}:"
    try:
        # When a block (a fault campaign, say) sends under its own broker settings
        with using_broker(other):
            app.send_task("shelf.ingest", args=({"probe": 2},), queue=queue)
        # Then that message went there, and after the block this process sends to ours again
        app.send_task("shelf.ingest", args=({"probe": 3},), queue=queue)
        assert stack.redis.llen(broker_key(other, queue)) == 1
        assert stack.redis.llen(broker_key(stack.settings, queue)) == 2
    finally:
        stack.redis.delete(broker_key(other, queue), broker_key(stack.settings, queue))


def _photo_message(i: int) -> StageMessage:
    url = f"http://127.0.0.1:4566/raw/raw/S1/A1/B1/c1/p{i}.jpg?X-Amz-Signature=secret{i}"
    return StageMessage(photo=PhotoRef(bucket="raw", key=f"raw/S1/A1/B1/c1/p{i}.jpg", url=url,
                                       store="S1", aisle="A1", bay="B1", camera="c1"))


def test_a_publish_batch_reaches_the_broker_when_the_block_ends(stack: Stack) -> None:
    from pipeline.tasks.stages import publish_batch, send_stage

    queue = f"probe-{uuid.uuid4().hex[:6]}"  # no worker consumes it
    key = broker_key(stack.settings, queue)
    try:
        # When ten chains are published in one batch (a nested block changes nothing)
        with publish_batch():
            for i in range(10):
                with publish_batch():
                    send_stage("ingest", _photo_message(i), queue=queue)
            # Then none is on the queue before the block ends, all ten after it
            assert stack.redis.llen(key) == 0
        assert stack.redis.llen(key) == 10
        # And each names its upload in the headers, never its pre-signed URL
        raw = [json.loads(m) for m in stack.redis.lrange(key, 0, -1)]
        heads = [m["headers"] for m in raw]
        assert all("secret" not in h["argsrepr"] and "upload " in h["argsrepr"] for h in heads)
        bodies = [json.loads(base64.b64decode(m["body"]))[0][0] for m in raw]
        assert sorted(b["photo"]["url"][-7:] for b in bodies) == [f"secret{i}" for i in range(10)]
    finally:
        stack.redis.delete(key)


def test_a_publish_batch_left_by_an_error_enqueues_nothing_still_buffered(
        stack: Stack) -> None:
    from pipeline.tasks.stages import publish_batch, send_stage

    queue = f"probe-{uuid.uuid4().hex[:6]}"
    key = broker_key(stack.settings, queue)
    try:
        with pytest.raises(RuntimeError), publish_batch():
            send_stage("ingest", _photo_message(1), queue=queue)
            raise RuntimeError("the caller failed half-way")
        assert stack.redis.llen(key) == 0
        send_stage("ingest", _photo_message(2), queue=queue)  # and sending works after it
        assert stack.redis.llen(key) == 1
    finally:
        stack.redis.delete(key)
