"""A photo put into the raw bucket comes out as a result, through real S3, SQS and Redis."""

from __future__ import annotations

import io
import json
import re
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from pipeline.messages import PhotoRef, StageMessage
from pipeline.storage.keys import artifact_key
from tests.conftest import Proc, Stack, start_worker
from tests.e2e.helpers import (
    dead_letters,
    photo_bytes,
    put,
    put_photo,
    put_planogram,
    result_keys,
    versions,
    wait_dead_letter,
    wait_result,
)

pytestmark = pytest.mark.usefixtures("pipeline_procs")
ARTIFACTS = ("ingest.json", "ingested.jpg", "normalized.jpg", "quality.json", "detections.json")


def test_photo_becomes_result_with_artifacts_and_no_personal_data(stack: Stack) -> None:
    # Given a phone photo with GPS, serial and rotation in its EXIF, and its bay's planogram
    data, truth = photo_bytes(0)
    # When the camera uploads it
    sha = put_photo(stack, "raw/S001/A01/B1/cam1/IMG_0001.jpg", data, truth,
                    **{"store-format": "standard"})
    result = wait_result(stack, sha)
    # Then the result names the route, the model and a compliance figure per shelf
    assert result["store"] == "S001" and result["aisle"] == "A01" and result["bay"] == "B1"
    assert result["route"] == "light" and result["model"].startswith("gondola-light/")
    assert result["detections"] > 10
    assert 0.0 <= result["compliance"] <= 1.0
    assert len(result["shelves"]) == len(truth["planogram"]["shelves"])
    assert abs(result["compliance"] - truth["expected"]["compliance"]) < 0.15
    assert result["date"] == truth["exif"]["datetime_original"][:10].replace(":", "-")
    # And every artifact exists under the photo's hash
    bucket = stack.settings.s3.artifacts_bucket
    blobs = {name: stack.store.get_bytes(bucket, artifact_key(sha, name)) for name in ARTIFACTS}
    det = json.loads(blobs["detections.json"])
    assert det["model"] == result["model"] and det["route"] == "light"
    # And the stored image is upright with no metadata left
    upright_w, upright_h = truth["upright_size"]
    for name in ("ingested.jpg", "normalized.jpg"):
        with Image.open(io.BytesIO(blobs[name])) as im:
            assert len(im.getexif()) == 0, name
            assert not im.info.get("exif") and not im.info.get("xmp"), name
            w, h = im.size
        assert (w > h) == (upright_w > upright_h), name
    serial = truth["exif"]["serial"].encode()
    lat = f"{abs(truth['exif']['gps'][0]):.4f}"[:6].encode()
    stored = [*blobs.values(), json.dumps(result).encode()]
    assert all(serial not in b for b in stored)
    assert all(b"GPS" not in b and lat not in b for b in stored)
    assert serial in data  # the original did carry it


def test_keys_with_spaces_and_non_ascii(stack: Stack) -> None:
    data, truth = photo_bytes(1)
    key = "raw/Store 7/Allée é/Bay 2/cam ü/photo 1 (ü).jpg"
    sha = put_photo(stack, key, data, truth)
    result = wait_result(stack, sha)
    assert result["source"]["key"] == key
    assert result["store"] == "Store 7" and result["aisle"] == "Allée é"
    assert result_keys(stack, sha)[0].startswith("compliance/store=Store_7/")


def _event_body(stack: Stack, key: str) -> str:
    head = stack.s3.head_object(Bucket=stack.settings.s3.raw_bucket, Key=key)
    from urllib.parse import quote_plus

    return json.dumps({"Records": [{
        "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
        "eventTime": "2026-11-24T10:00:00.000Z", "eventName": "ObjectCreated:Put",
        "s3": {"bucket": {"name": stack.settings.s3.raw_bucket},
               "object": {"key": quote_plus(key), "size": head["ContentLength"],
                          "eTag": head["ETag"].strip('"'), "versionId": head.get("VersionId"),
                          "sequencer": "0055AED6DCD90281E5"}}}]})


def test_same_event_twice_gives_one_result_and_artifacts_written_once(stack: Stack) -> None:
    data, truth = photo_bytes(2)
    key = "raw/S002/A02/B3/cam2/dup.jpg"
    sha = put_photo(stack, key, data, truth)
    wait_result(stack, sha)
    # When S3 delivers the same event again, twice
    body = _event_body(stack, key)
    for _ in range(2):
        stack.sqs.send_message(QueueUrl=stack.queue_url, MessageBody=body)
    # And a stage message is redelivered straight to ingest (a broker redelivery)
    from pipeline.tasks.stages import send_stage

    url = stack.store.presign_get(stack.settings.s3.raw_bucket, key, 600)
    send_stage("ingest", StageMessage(photo=PhotoRef(bucket=stack.settings.s3.raw_bucket,
                                                     key=key, url=url, store="S002",
                                                     aisle="A02", bay="B3")))
    time.sleep(8)
    # Then there is still one result, and every artifact has exactly one version
    assert len(result_keys(stack, sha)) == 1
    art = versions(stack, stack.settings.s3.artifacts_bucket, f"{sha[:2]}/{sha}/")
    assert set(art) == {artifact_key(sha, n) for n in ARTIFACTS}
    assert set(art.values()) == {1}
    res = versions(stack, stack.settings.s3.results_bucket, result_keys(stack, sha)[0])
    assert list(res.values()) == [1]


def _queue_empty(stack: Stack, url: str) -> bool:
    attrs = stack.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=[
        "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
    return attrs["ApproximateNumberOfMessages"] == "0" and \
        attrs["ApproximateNumberOfMessagesNotVisible"] == "0"


def test_s3_test_event_is_ignored(stack: Stack) -> None:
    before = len(dead_letters(stack))
    stack.sqs.send_message(QueueUrl=stack.queue_url, MessageBody=json.dumps({
        "Service": "Amazon S3", "Event": "s3:TestEvent", "Time": "2026-11-24T10:00:00Z",
        "Bucket": stack.settings.s3.raw_bucket, "RequestId": "X", "HostId": "Y"}))
    deadline = time.time() + 20
    while not _queue_empty(stack, stack.queue_url) and time.time() < deadline:
        time.sleep(0.3)
    assert _queue_empty(stack, stack.queue_url)
    assert _queue_empty(stack, stack.dlq_url)
    assert len(dead_letters(stack)) == before


def test_malformed_event_goes_to_dlq_with_reason(stack: Stack) -> None:
    stack.sqs.send_message(QueueUrl=stack.queue_url, MessageBody='{"Records": "nope"}')
    deadline = time.time() + 20
    got: list[dict[str, Any]] = []
    while not got and time.time() < deadline:
        got = stack.sqs.receive_message(QueueUrl=stack.dlq_url, WaitTimeSeconds=1,
                                        MessageAttributeNames=["All"]).get("Messages", [])
    assert got, "malformed event did not reach the DLQ"
    assert got[0]["Body"] == '{"Records": "nope"}'
    assert "not an S3 event" in got[0]["MessageAttributes"]["reason"]["StringValue"]
    stack.sqs.delete_message(QueueUrl=stack.dlq_url, ReceiptHandle=got[0]["ReceiptHandle"])


def test_corrupt_jpeg_is_dead_lettered_and_worker_keeps_serving(
        stack: Stack, pipeline_procs: dict[str, Proc]) -> None:
    good, truth = photo_bytes(3)
    key = "raw/S003/A01/B1/cam1/truncated.jpg"
    put_photo(stack, key, good[: len(good) // 3], truth)
    letter = wait_dead_letter(stack, key)
    assert letter.stage == "ingest" and letter.error_type == "CorruptImageError"
    assert letter.error
    assert pipeline_procs["cpu"].p.poll() is None
    # The same worker still serves the next photo
    sha = put(stack, "raw/S003/A01/B1/cam1/after.jpg", good)
    wait_result(stack, sha)


def test_missing_planogram_is_dead_lettered_then_replayed(stack: Stack) -> None:
    # Given a photo of a bay whose planogram was never uploaded
    data, truth = photo_bytes(6)
    key = "raw/S005/A01/B9/cam1/no-plan.jpg"
    sha = put(stack, key, data)
    letter = wait_dead_letter(stack, key)
    assert letter.stage == "comply" and letter.error_type == "PlanogramMissingError"
    assert "planograms/S005/A01/B9.json" in letter.error
    assert not result_keys(stack, sha)
    # When the planogram arrives and the dead letter is replayed
    put_planogram(stack, key, truth)
    from pipeline.operations import list_letters, replay

    assert replay(stack.settings, stack.store,
                  [d for d in list_letters(stack.settings, stack.store) if d.id == letter.id]) == 1
    # Then the photo completes and its letter is marked replayed
    assert wait_result(stack, sha)["planogram"]["id"] == truth["planogram"]["planogram_id"]
    replayed = [d for d in dead_letters(stack) if d.id == letter.id]
    assert replayed and replayed[0].replayed_at is not None


def test_unreadable_stage_message_is_kept_not_lost(stack: Stack) -> None:
    from pipeline.tasks.app import app

    app.send_task("shelf.normalize", args=({"not": "a stage message"},), queue="preprocessing")
    bucket = stack.settings.s3.artifacts_bucket
    deadline = time.time() + 30
    kept: list[str] = []
    while not kept and time.time() < deadline:
        kept = list(stack.store.list_keys(bucket, "dead-letter/unreadable/normalize-"))
        time.sleep(0.3)
    assert kept, "the unreadable message vanished"
    doc = stack.store.get_json(bucket, kept[0])
    assert doc["payload"] == {"not": "a stage message"} and "photo" in doc["error"]


def test_expired_presigned_url_is_reminted(stack: Stack) -> None:
    data, truth = photo_bytes(4)
    put_planogram(stack, "raw/S009/A09/B9/c/x.jpg", truth)
    key = "uploads/manual/expired.jpg"  # outside raw/: no event, the test enqueues by hand
    stack.s3.put_object(Bucket=stack.settings.s3.raw_bucket, Key=key, Body=data)
    url = stack.store.presign_get(stack.settings.s3.raw_bucket, key, 1)
    time.sleep(2.5)
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(url, timeout=5)
    assert refused.value.code == 403
    from pipeline.tasks.stages import send_stage

    send_stage("ingest", StageMessage(photo=PhotoRef(bucket=stack.settings.s3.raw_bucket,
                                                     key=key, url=url, store="S009",
                                                     aisle="A09", bay="B9")))
    import hashlib

    result = wait_result(stack, hashlib.sha256(data).hexdigest())
    assert result["store"] == "S009"


def test_worker_killed_mid_task_runs_it_again(
        stack: Stack, pipeline_procs: dict[str, Proc], tmp_path: Path,
        slow_model_root: Path) -> None:
    # Given an inference worker whose model takes seconds per photo
    pipeline_procs["gpu"].stop()
    slow = start_worker(stack, tmp_path, "gpu", "worker-slow", {
        "SHELF_MODELS__ROOT": str(slow_model_root), "SHELF_MODELS__LIGHT": "slow-model",
        "SHELF_MODELS__HEAVY": "slow-model"})
    try:
        data, truth = photo_bytes(5)
        sha = put_photo(stack, "raw/S004/A01/B1/cam1/killed.jpg", data, truth)
        # When its pool process is killed with SIGKILL while the detect task runs
        deadline = time.time() + 60
        while "shelf.detect" not in slow.log.read_text() and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        children = slow.children()
        assert children, "no pool process to kill"
        import os
        import signal

        os.kill(children[0], signal.SIGKILL)
        # Then the task is delivered again and the photo completes
        result = wait_result(stack, sha, timeout_s=120)
        assert result["model"] == "slow-model/1"
        log = slow.log.read_text()
        killed = log.index("exited with 'signal 9 (SIGKILL)'")
        succeeded = re.search(r"Task shelf\.detect\[[^\]]+\] succeeded", log)
        assert succeeded is not None and succeeded.start() > killed
    finally:
        slow.stop()
        pipeline_procs["gpu"] = start_worker(stack, tmp_path, "gpu", "worker-gpu-again")
