"""Operator views and actions: queue depths, in-flight work, dead letters and their replay."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pipeline.messages import DeadLetter
from pipeline.settings import Settings
from pipeline.storage.keys import dead_letter_key
from pipeline.storage.s3 import ObjectStore
from pipeline.tasks.app import ALL_QUEUES
from pipeline.tasks.deadletter import read_letters


@dataclass(frozen=True)
class Status:
    queues: dict[str, int]
    in_flight: int  # delivered to a worker, not yet acknowledged
    sqs_events: int
    sqs_dead_letters: int
    dead_letters: int


def status(settings: Settings, *, redis: Any, sqs: Any, store: ObjectStore) -> Status:
    depths = {q: int(redis.llen(q)) for q in ALL_QUEUES}

    def sqs_depth(name: str) -> int:
        url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
        attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=[
            "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
        return int(attrs["ApproximateNumberOfMessages"]) + int(
            attrs["ApproximateNumberOfMessagesNotVisible"])

    letters = sum(1 for _ in store.list_keys(settings.s3.artifacts_bucket, "dead-letter/"))
    return Status(depths, int(redis.hlen("unacked")), sqs_depth(settings.sqs.queue),
                  sqs_depth(settings.sqs.dead_letter_queue), letters)


def list_letters(settings: Settings, store: ObjectStore) -> list[DeadLetter]:
    return sorted(read_letters(store, settings.s3.artifacts_bucket), key=lambda d: d.failed_at)


def replay(settings: Settings, store: ObjectStore, letters: list[DeadLetter]) -> int:
    """Send each letter's message to its stage again and mark the record replayed."""
    from pipeline.tasks.stages import send_stage

    for letter in letters:
        send_stage(letter.stage, letter.message)
        done = letter.model_copy(update={"replayed_at": datetime.now(UTC)})
        store.put_json(settings.s3.artifacts_bucket, dead_letter_key(letter.id),
                       done.model_dump(mode="json"))
    return len(letters)
