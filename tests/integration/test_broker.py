"""Deployments sharing one Redis database keep their messages apart by key prefix."""

from __future__ import annotations

import uuid

from pipeline.tasks.app import INGESTION, broker_key, create_app
from tests.conftest import Stack


def test_a_task_sent_under_a_prefix_waits_only_under_that_prefix(stack: Stack) -> None:
    # Given two deployments on the same Redis database, told apart by their key prefix
    mine = stack.settings.model_copy(deep=True)
    mine.celery.key_prefix = f"mine-{uuid.uuid4().hex[:6]}:"
    theirs = stack.settings.model_copy(deep=True)
    theirs.celery.key_prefix = f"theirs-{uuid.uuid4().hex[:6]}:"
    app = create_app(mine)
    try:
        # When one of them enqueues a task
        app.send_task("shelf.ingest", args=({"probe": True},), queue=INGESTION)
        # Then it waits under that deployment's keys, where the other's workers never look
        assert stack.redis.llen(broker_key(mine, INGESTION)) == 1
        assert stack.redis.llen(broker_key(theirs, INGESTION)) == 0
    finally:
        stack.redis.delete(broker_key(mine, INGESTION))
        app.close()
