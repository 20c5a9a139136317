"""Helpers for the end-to-end tests: put photos, wait for results and dead letters."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from functools import partial
from typing import Any

from pipeline.messages import DeadLetter
from pipeline.storage.keys import upload_id
from pipeline.synth.world import make_photo
from tests.conftest import Stack


def photo_bytes(index: int, display: str = "gondola", seed: int = 77
                ) -> tuple[bytes, dict[str, Any]]:
    photo = make_photo(seed, index, display, max_long_side=1600)
    return photo.jpeg, photo.truth


def put_planogram(stack: Stack, key: str, truth: dict[str, Any]) -> None:
    """Store the photo's planogram where the comply stage looks for its bay."""
    _, store, aisle, bay, _, _ = key.split("/")
    stack.s3.put_object(Bucket=stack.settings.s3.config_bucket,
                        Key=f"planograms/{store}/{aisle}/{bay}.json",
                        Body=json.dumps(truth["planogram"]).encode())


@dataclass(frozen=True)
class Uploaded:
    """One upload: the photo's hash (its artifacts) and the upload's id (its result)."""

    key: str
    sha: str
    upload_id: str


def put_photo(stack: Stack, key: str, data: bytes, truth: dict[str, Any], *,
              multipart: bool = False, **metadata: str) -> Uploaded:
    """A camera upload into a bay whose planogram is known; ``multipart``: uploaded in one
    part of a multipart upload."""
    put_planogram(stack, key, truth)
    return put(stack, key, data, multipart=multipart, **metadata)


def put(stack: Stack, key: str, data: bytes, *, multipart: bool = False,
        **metadata: str) -> Uploaded:
    from pipeline.chaos import upload_in_one_part

    raw = stack.settings.s3.raw_bucket
    resp = upload_in_one_part(stack.s3, raw, key, data, metadata) if multipart else \
        stack.s3.put_object(Bucket=raw, Key=key, Body=data, ContentType="image/jpeg",
                            Metadata=metadata)
    version = resp.get("VersionId") or resp["ETag"].strip('"')
    return Uploaded(key, hashlib.sha256(data).hexdigest(),
                    upload_id(stack.settings.s3.raw_bucket, key, version))


def result_keys(stack: Stack, up: Uploaded) -> list[str]:
    return [k for k in stack.store.list_keys(stack.settings.s3.results_bucket, "compliance/")
            if k.endswith(f"/{up.upload_id}.json")]


def wait_result(stack: Stack, up: Uploaded, timeout_s: float = 90,
                until: Any = None) -> dict[str, Any]:
    """The upload's result once it exists (and ``until(result)`` holds, when given)."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        keys = result_keys(stack, up)
        if keys:
            doc = stack.store.get_json(stack.settings.s3.results_bucket, keys[0])
            assert isinstance(doc, dict)
            if until is None or until(doc):
                return doc
        time.sleep(0.3)
    raise AssertionError(f"no result for {up.key} after {timeout_s} s")


def wait_idle(stack: Stack, timeout_s: float = 60) -> None:
    """Until no event waits on SQS and no task waits on, or is held from, any queue."""
    from pipeline.tasks.app import ALL_QUEUES, broker_key

    deadline = time.time() + timeout_s
    quiet_since = None
    while time.time() < deadline:
        attrs = stack.sqs.get_queue_attributes(QueueUrl=stack.queue_url, AttributeNames=[
            "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])
        sqs_busy = any(v != "0" for v in attrs["Attributes"].values())
        key = partial(broker_key, stack.settings)
        broker_busy = any(stack.redis.llen(key(q)) for q in ALL_QUEUES) or stack.redis.hlen(
            key("unacked"))
        if sqs_busy or broker_busy:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = time.time()
        elif time.time() - quiet_since > 1.5:
            return
        time.sleep(0.2)
    raise AssertionError(f"pipeline still busy after {timeout_s} s")


def dead_letters(stack: Stack) -> list[DeadLetter]:
    """Every replayable letter; a valid letter that fails to parse fails the test."""
    bucket = stack.settings.s3.artifacts_bucket
    return [DeadLetter.model_validate(stack.store.get_json(bucket, k))
            for k in stack.store.list_keys(bucket, "dead-letter/")
            if not k.startswith("dead-letter/unreadable/")]


def wait_dead_letter(stack: Stack, key: str, timeout_s: float = 60,
                     error_type: str | None = None) -> DeadLetter:
    """A dead letter of the upload at ``key`` (of that error type, when given)."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        for d in dead_letters(stack):
            if d.message.photo.key == key and error_type in (None, d.error_type):
                return d
        time.sleep(0.3)
    raise AssertionError(f"no {error_type or 'dead'} letter for {key} after {timeout_s} s")


def versions(stack: Stack, bucket: str, prefix: str) -> dict[str, int]:
    """How many versions each key under ``prefix`` has (buckets are versioned)."""
    out: dict[str, int] = {}
    pages = stack.s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix)
    for page in pages:
        for v in page.get("Versions", []):
            out[v["Key"]] = out.get(v["Key"], 0) + 1
    return out
