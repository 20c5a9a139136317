"""Deployments sharing one Redis database keep their messages apart by key prefix."""

from __future__ import annotations

import uuid

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
