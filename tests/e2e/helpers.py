"""Helpers for the end-to-end tests: put photos, wait for results and dead letters."""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

from pipeline.messages import DeadLetter
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


def put_photo(stack: Stack, key: str, data: bytes, truth: dict[str, Any],
              **metadata: str) -> str:
    """A camera upload into a bay whose planogram is known."""
    put_planogram(stack, key, truth)
    return put(stack, key, data, **metadata)


def put(stack: Stack, key: str, data: bytes, **metadata: str) -> str:
    stack.s3.put_object(Bucket=stack.settings.s3.raw_bucket, Key=key, Body=data,
                        ContentType="image/jpeg", Metadata=metadata)
    return hashlib.sha256(data).hexdigest()


def result_keys(stack: Stack, sha: str) -> list[str]:
    return [k for k in stack.store.list_keys(stack.settings.s3.results_bucket, "compliance/")
            if k.endswith(f"/{sha}.json")]


def wait_result(stack: Stack, sha: str, timeout_s: float = 90) -> dict[str, Any]:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        keys = result_keys(stack, sha)
        if keys:
            doc = stack.store.get_json(stack.settings.s3.results_bucket, keys[0])
            assert isinstance(doc, dict)
            return doc
        time.sleep(0.3)
    raise AssertionError(f"no result for {sha} after {timeout_s} s")


def dead_letters(stack: Stack) -> list[DeadLetter]:
    bucket = stack.settings.s3.artifacts_bucket
    return [DeadLetter.model_validate(stack.store.get_json(bucket, k))
            for k in stack.store.list_keys(bucket, "dead-letter/")]


def wait_dead_letter(stack: Stack, key: str, timeout_s: float = 60) -> DeadLetter:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        for d in dead_letters(stack):
            if d.message.photo.key == key:
                return d
        time.sleep(0.3)
    raise AssertionError(f"no dead letter for {key} after {timeout_s} s")


def versions(stack: Stack, bucket: str, prefix: str) -> dict[str, int]:
    """How many versions each key under ``prefix`` has (buckets are versioned)."""
    out: dict[str, int] = {}
    pages = stack.s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix)
    for page in pages:
        for v in page.get("Versions", []):
            out[v["Key"]] = out.get(v["Key"], 0) + 1
    return out
