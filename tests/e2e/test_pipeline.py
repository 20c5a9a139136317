"""A photo put into the raw bucket comes out as a result, through real S3, SQS and Redis."""

from __future__ import annotations

import io
import json
import re
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from pipeline.chaos import Faults
from pipeline.detect.card import load_model
from pipeline.messages import PhotoRef, StageMessage
from pipeline.settings import get_settings
from pipeline.storage.keys import artifact_key
from pipeline.tasks.steps import detections_name
from tests.conftest import Proc, Stack, start_worker, swapped_worker
from tests.e2e.helpers import (
    Uploaded,
    dead_letters,
    photo_bytes,
    put,
    put_photo,
    put_planogram,
    result_keys,
    versions,
    wait_dead_letter,
    wait_idle,
    wait_result,
)

pytestmark = pytest.mark.usefixtures("pipeline_procs")
# The light detector's artifact, named after the version that runs (the latest).
DETECTIONS = detections_name(load_model(get_settings().models.root,
                                        get_settings().models.light).ref)
ARTIFACTS = ("ingest.json", "ingested.jpg", "normalized.jpg", "quality.json", DETECTIONS)


def test_photo_becomes_result_with_artifacts_and_no_personal_data(stack: Stack) -> None:
    # Given a phone photo with GPS, serial and rotation in its EXIF, and its bay's planogram
    data, truth = photo_bytes(0)
    # When the camera uploads it
    up = put_photo(stack, "raw/S001/A01/B1/cam1/IMG_0001.jpg", data, truth,
                   **{"store-format": "standard"})
    sha = up.sha
    result = wait_result(stack, up)
    # Then the result names the route, the model and a compliance figure per shelf
    assert result["store"] == "S001" and result["aisle"] == "A01" and result["bay"] == "B1"
    assert result["route"] == "light" and result["model"].startswith("product-light/")
    assert result["detections"] > 10
    assert 0.0 <= result["compliance"] <= 1.0
    assert len(result["shelves"]) == len(truth["planogram"]["shelves"])
    assert abs(result["compliance"] - truth["expected"]["compliance"]) < 0.15
    assert result["date"] == truth["exif"]["datetime_original"][:10].replace(":", "-")
    # And every artifact exists under the photo's hash
    bucket = stack.settings.s3.artifacts_bucket
    blobs = {name: stack.store.get_bytes(bucket, artifact_key(sha, name)) for name in ARTIFACTS}
    det = json.loads(blobs[DETECTIONS])
    assert det["model"] == result["model"] and det["route"] == "light"
    # And a product counts from the facing score of that model's own scale (its card's,
    # unless the settings set one), which the detections record for the comply stage
    name, version = result["model"].split("/")
    post = load_model(stack.settings.models.root, name, version).card.postprocess
    facing = stack.settings.compliance.scores(post.facing_score, post.evidence_score)[0]
    assert det["facing_score"] == facing
    assert result["detections"] == sum(d["score"] >= facing for d in det["detections"])
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
    up = put_photo(stack, key, data, truth)
    result = wait_result(stack, up)
    assert result["source"]["key"] == key
    assert result["store"] == "Store 7" and result["aisle"] == "Allée é"
    assert result_keys(stack, up)[0].startswith("compliance/store=Store%207/")
    assert "/aisle=All%C3%A9e%20%C3%A9/" in result_keys(stack, up)[0]


def test_a_bay_named_with_decomposed_accents_is_the_same_bay(stack: Stack) -> None:
    from unicodedata import normalize

    # Given the bay's planogram saved under its composed name, and a photo uploaded from a
    # Mac, whose file and folder names come decomposed (e + U+0301)
    data, truth = photo_bytes(16)
    composed = "raw/S009/All\u00e9e 3/Rayon \u00e9t\u00e9/cam1/p.jpg"
    put_planogram(stack, composed, truth)
    up = put(stack, normalize("NFD", composed), data)
    # Then its result is the bay's: compliance against that planogram, filed under the
    # composed aisle, as every other photo of the aisle is
    result = wait_result(stack, up)
    assert result["compliance"] is not None
    assert (result["aisle"], result["bay"]) == ("All\u00e9e 3", "Rayon \u00e9t\u00e9")
    assert result["source"]["key"] == normalize("NFD", composed)
    assert "/aisle=All%C3%A9e%203/" in result_keys(stack, up)[0]


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
    up = put_photo(stack, key, data, truth)
    sha = up.sha
    wait_result(stack, up)
    # When S3 delivers the same event again, twice
    body = _event_body(stack, key)
    for _ in range(2):
        stack.sqs.send_message(QueueUrl=stack.queue_url, MessageBody=body)
    # And a stage message is redelivered straight to ingest (a broker redelivery)
    from pipeline.tasks.stages import send_stage

    head = stack.s3.head_object(Bucket=stack.settings.s3.raw_bucket, Key=key)
    url = stack.store.presign_get(stack.settings.s3.raw_bucket, key, 600)
    send_stage("ingest", StageMessage(photo=PhotoRef(
        bucket=stack.settings.s3.raw_bucket, key=key, url=url, store="S002", aisle="A02",
        bay="B3", camera="cam2", version_id=head.get("VersionId"))))
    wait_idle(stack)  # every duplicate has run to its end
    # Then there is still one result, and every artifact has exactly one version
    assert len(result_keys(stack, up)) == 1
    art = versions(stack, stack.settings.s3.artifacts_bucket, f"{sha[:2]}/{sha}/")
    assert set(art) == {artifact_key(sha, n) for n in ARTIFACTS}
    assert set(art.values()) == {1}
    res = versions(stack, stack.settings.s3.results_bucket, result_keys(stack, up)[0])
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
    # The queue is shared with earlier tests: a message of theirs still hidden comes back and
    # is handled within one visibility timeout. LocalStack reads its two counts one after the
    # other, so a message moving from visible to in flight can read as neither: the queue
    # counts as empty only when it reads so three times in a row.
    deadline = time.time() + stack.settings.sqs.visibility_timeout_s + 25
    empty_reads = 0
    while empty_reads < 3 and time.time() < deadline:
        empty_reads = empty_reads + 1 if _queue_empty(stack, stack.queue_url) else 0
        time.sleep(0.3)
    assert empty_reads == 3
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
    wait_result(stack, put(stack, "raw/S003/A01/B1/cam1/after.jpg", good))


@pytest.mark.parametrize("name", ["IMG_0001.HEIC", "IMG_0002.webp"])
def test_an_iphone_heic_or_a_webp_upload_is_a_result_like_its_jpeg(stack: Stack,
                                                                    name: str) -> None:
    # Given a bay photographed by an iPhone (HEIC, under its default .HEIC name) or sent
    # through an app that keeps photos as WebP
    import pillow_heif
    from PIL import Image, ImageOps

    data, truth = photo_bytes(9)
    rgb = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
    buf = io.BytesIO()
    if name.endswith(".HEIC"):
        pillow_heif.from_pillow(rgb).save(buf, quality=85)
    else:
        rgb.save(buf, "WEBP", quality=85)
    key = f"raw/S007/A01/B1/cam1/{name}"
    up = put_photo(stack, key, buf.getvalue(), truth)
    # Then it becomes a result against the bay's planogram, its products found
    result = wait_result(stack, up)
    assert result["compliance"] is not None
    assert result["detections"] >= 0.8 * len(truth["objects"])


def test_plain_upload_without_planogram_is_a_result_then_recomputed(stack: Stack) -> None:
    # Given a plain camera upload into a bay whose planogram was never uploaded
    data, truth = photo_bytes(6)
    key = "raw/S005/A01/B9/cam1/no-plan.jpg"
    up = put(stack, key, data)
    # Then it still becomes a result: its products, no compliance, and why
    waiting = wait_result(stack, up)
    assert waiting["compliance"] is None
    assert "planograms/S005/A01/B9.json" in waiting["compliance_reason"]
    assert waiting["detections"] > 10 and len(waiting["products"]) == waiting["detections"]
    assert not [d for d in dead_letters(stack) if d.message.photo.key == key]
    # When a planogram that does not validate arrives (PowerShell's UTF-16, an EAN written
    # as a number), the upload keeps waiting and is not sent round to fail every minute
    from pipeline.operations import recompute_pending

    plan_key = "planograms/S005/A01/B9.json"
    broken = json.loads(json.dumps(truth["planogram"]))
    broken["shelves"][0]["positions"][0]["sku"] = 7310865004703
    stack.s3.put_object(Bucket=stack.settings.s3.config_bucket, Key=plan_key,
                        Body=json.dumps(broken).encode("utf-16"))
    assert recompute_pending(stack.settings, stack.store, bay="B9") == 0
    # and a new photo of that bay is a result saying what is wrong with the planogram
    other = put(stack, "raw/S005/A01/B9/cam1/broken-plan.jpg", photo_bytes(8)[0])
    refused = wait_result(stack, other)
    assert refused["compliance"] is None and "quote EAN" in refused["compliance_reason"]
    # When the planogram is saved right (UTF-8 with the BOM Windows tools write) and the
    # waiting uploads are recomputed
    stack.s3.put_object(Bucket=stack.settings.s3.config_bucket, Key=plan_key,
                        Body=b"\xef\xbb\xbf" + json.dumps(truth["planogram"]).encode())
    assert recompute_pending(stack.settings, stack.store, bay="B9") == 2
    # Then the same result now carries the compliance against it
    done = wait_result(stack, up, until=lambda r: r["compliance"] is not None)
    assert done["planogram"]["id"] == truth["planogram"]["planogram_id"]
    assert len(result_keys(stack, up)) == 1
    wait_result(stack, other, until=lambda r: r["compliance"] is not None)
    assert recompute_pending(stack.settings, stack.store) == 0  # nothing waits any more


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
    data, _ = photo_bytes(4)
    key = "uploads/manual/expired.jpg"  # outside raw/: no event, the test enqueues by hand
    stack.s3.put_object(Bucket=stack.settings.s3.raw_bucket, Key=key, Body=data)
    url = stack.store.presign_get(stack.settings.s3.raw_bucket, key, 1)
    time.sleep(2.5)
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(url, timeout=5)
    assert refused.value.code == 403
    from pipeline.tasks.stages import send_stage

    send_stage("ingest", StageMessage(photo=PhotoRef(bucket=stack.settings.s3.raw_bucket,
                                                     key=key, url=url)))
    import hashlib

    from pipeline.storage.keys import upload_id

    up = Uploaded(key, hashlib.sha256(data).hexdigest(),
                  upload_id(stack.settings.s3.raw_bucket, key, None))
    result = wait_result(stack, up)
    assert result["store"] == "unknown" and result["sha256"] == up.sha


def test_worker_killed_mid_task_runs_it_again(
        stack: Stack, pipeline_procs: dict[str, Proc], tmp_path: Path,
        slow_model_env: dict[str, str]) -> None:
    # Given an inference worker whose model takes seconds per photo
    with swapped_worker(stack, pipeline_procs, tmp_path, "inference", "worker-slow",
                        slow_model_env) as slow:
        data, truth = photo_bytes(5)
        up = put_photo(stack, "raw/S004/A01/B1/cam1/killed.jpg", data, truth)
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
        result = wait_result(stack, up, timeout_s=120)
        assert result["model"] == "slow-model/1"
        log = slow.log.read_text()
        killed = log.index("exited with 'signal 9 (SIGKILL)'")
        succeeded = re.search(r"Task shelf\.detect\[[^\]]+\] succeeded", log)
        assert succeeded is not None and succeeded.start() > killed


def test_reconcile_requeues_an_upload_that_left_no_trace(stack: Stack) -> None:
    from datetime import UTC, datetime, timedelta

    from pipeline.operations import reconcile
    from pipeline.storage.keys import ended_key, outcome_key
    from pipeline.tasks.stages import send_stage

    heads: list[str] = []

    class CountingHeads:  # the store, counting what reconciliation asks S3
        def __getattr__(self, name: str) -> Any:
            return getattr(stack.store, name)

        def head(self, bucket: str, key: str, version_id: str | None = None) -> Any:
            heads.append(key)
            return stack.store.head(bucket, key, version_id)

    def run(with_redis: bool) -> Any:
        heads.clear()
        return reconcile(stack.settings, CountingHeads(), since=since,  # type: ignore[arg-type]
                         grace_s=0, enqueue=lambda m: send_stage("ingest", m),
                         redis=stack.redis if with_redis else None)

    # Given an upload whose chain was lost (no result, no dead letter recorded)
    since = datetime.now(UTC) - timedelta(seconds=2)
    data, truth = photo_bytes(7)
    up = put_photo(stack, "raw/S006/A01/B1/cam1/lost.jpg", data, truth)
    first = wait_result(stack, up)
    wait_idle(stack)
    assert stack.redis.exists(ended_key(up.upload_id))  # its end was flagged in Redis too
    s3 = stack.settings.s3
    stack.store.delete(s3.artifacts_bucket, outcome_key(up.upload_id))
    stack.store.delete(s3.results_bucket, result_keys(stack, up)[0])
    stack.redis.delete(ended_key(up.upload_id))
    # When reconciliation runs over the raw bucket
    r = run(with_redis=True)
    # Then that upload, and only it, goes through again (S3 asked, as Redis did not know
    # it, and the upload confirmed as S3 holds it) and ends as its one result
    assert (r.requeued, r.ended) == (1, 0)
    assert heads == [outcome_key(up.upload_id), *["raw/S006/A01/B1/cam1/lost.jpg"] * 2]
    again = wait_result(stack, up)
    assert again["upload_id"] == first["upload_id"] and again["sha256"] == up.sha
    wait_idle(stack)
    # And once ended, Redis answers for it without S3; without Redis, S3 does
    again_run = run(with_redis=True)
    assert (again_run.requeued, again_run.ended, heads) == (0, 1, [])
    without = run(with_redis=False)
    assert (without.requeued, without.ended, len(heads)) == (0, 1, 1)


def test_artifacts_gone_while_marked_done_are_written_again_not_dead_lettered(
        stack: Stack) -> None:
    from pipeline.storage.keys import outcome_key
    from pipeline.tasks.stages import send_stage

    # Given a photo worked to its result, every stage marked done in Redis
    data, truth = photo_bytes(15)
    key = "raw/S006/A02/B1/cam1/purged.jpg"
    up = put_photo(stack, key, data, truth)
    first = wait_result(stack, up)
    wait_idle(stack)
    # When its artifacts are purged from S3 (the marks stay) and the upload is sent round
    # again with its result to be written anew, as reconciliation sends a lost one
    bucket = stack.settings.s3.artifacts_bucket
    for name in ARTIFACTS:
        stack.store.delete(bucket, artifact_key(up.sha, name))
    head = stack.s3.head_object(Bucket=stack.settings.s3.raw_bucket, Key=key)
    send_stage("ingest", StageMessage(recompute=True, photo=PhotoRef(
        bucket=stack.settings.s3.raw_bucket, key=key, url="", store="S006", aisle="A02",
        bay="B1", camera="cam1", version_id=head.get("VersionId"))))
    # Then the chain starts again from ingest: the artifacts are written again and the
    # upload's one result is rewritten from them, with no dead letter
    again = wait_result(stack, up, until=lambda d: d["completed_at"] != first["completed_at"])
    wait_idle(stack)
    assert again["detections"] == first["detections"]
    assert all(stack.store.head(bucket, artifact_key(up.sha, n)) for n in ARTIFACTS)
    assert len(result_keys(stack, up)) == 1
    assert not [d for d in dead_letters(stack) if d.message.photo.key == key]
    assert stack.store.get_json(bucket, outcome_key(up.upload_id))["dead_letter"] is None
    # And an upload whose artifacts keep vanishing is not sent round for ever: past its
    # redos of the day, it is a dead letter saying what is gone
    from pipeline.tasks.stages import REDOS_PER_DAY

    stack.redis.set(f"shelf:redo:{up.upload_id}", REDOS_PER_DAY)
    for name in ARTIFACTS:
        stack.store.delete(bucket, artifact_key(up.sha, name))
    send_stage("ingest", StageMessage(recompute=True, photo=PhotoRef(
        bucket=stack.settings.s3.raw_bucket, key=key, url="", store="S006", aisle="A02",
        bay="B1", camera="cam1", version_id=head.get("VersionId"))))
    letter = wait_dead_letter(stack, key, error_type="ArtifactLostError")
    assert letter.stage == "comply" and "is gone" in letter.error


def test_sqs_dead_letters_are_listed_and_redriven(stack: Stack) -> None:
    from pipeline.operations import event_letters, redrive_events

    stack.sqs.send_message(QueueUrl=stack.queue_url, MessageBody="definitely not an event")
    deadline = time.time() + 30
    letters: list[Any] = []
    while time.time() < deadline:
        letters = [e for e in event_letters(stack.settings, stack.sqs)
                   if e.body == "definitely not an event"]
        if letters:
            break
        time.sleep(0.5)
    assert letters and "not JSON" in letters[0].reason
    assert redrive_events(stack.settings, stack.sqs, letters) == 1
    # Redriven, the listener reads it again and (still malformed) returns it with the reason
    deadline = time.time() + 30
    back: list[Any] = []
    while not back and time.time() < deadline:
        back = [e for e in event_letters(stack.settings, stack.sqs)
                if e.body == "definitely not an event" and e.message_id != letters[0].message_id]
        time.sleep(0.5)
    assert back


def test_adding_a_sku_to_the_catalog_names_it_without_retraining(stack: Stack) -> None:
    from pipeline.detect.embedder import Embedder
    from pipeline.detect.recognizer import Recognizer, weights_from
    from pipeline.storage.catalog import CatalogStore
    from pipeline.synth.catalog import BY_ID
    from pipeline.synth.enrol import packshot_png

    s = stack.settings
    catalog = CatalogStore(stack.store, s.s3.config_bucket)

    def add(sku: str) -> None:  # what `shelf catalog add SKU packshot.png` does
        embedder = Embedder.from_dir(s.models.root, s.recognition.embedder, device="cpu")
        Recognizer(embedder, catalog, weights_from(s.recognition)).enrol(
            sku, [(f"{sku}.png", packshot_png(BY_ID[sku]))], brand=BY_ID[sku].brand,
            name=None)

    # Given a shelf photo whose SKUs the catalog names, and one of them (the one named most
    # often, never more often than it is there) removed from the catalog
    data, truth = photo_bytes(8)
    counts: dict[str, int] = {}
    for o in truth["objects"]:
        if o["status"] == "in_place":
            counts[o["sku"]] = counts.get(o["sku"], 0) + 1
    control = wait_result(stack, put_photo(stack, "raw/S007/A01/B1/cam1/control.jpg", data,
                                           truth))
    named = {k: sum(1 for i in control["items"] if i["sku"] == k) for k in counts}
    sku = max((k for k in counts if named[k] <= counts[k]), key=lambda k: named[k])
    assert named[sku] >= 2
    catalog.remove(sku)
    try:
        before = wait_result(stack, put_photo(stack, "raw/S007/A01/B1/cam1/before.jpg", data,
                                              truth))
        # When the SKU is added to the catalog again from its packshot
        add(sku)
        # Then the next upload of the same shelf names it again, with no model changed
        after = wait_result(stack, put_photo(stack, "raw/S007/A01/B1/cam1/after.jpg", data,
                                             truth))
    finally:
        if sku not in {e.sku for e in catalog.index().entries}:
            add(sku)
    assert [i for i in before["items"] if i["sku"] == sku] == []
    assert before["not_in_catalog"] == [sku] and after["not_in_catalog"] == []
    assert len([i for i in after["items"] if i["sku"] == sku]) == named[sku]
    assert after["model"] == before["model"] and after["catalog"] != before["catalog"]
    assert after["compliance"] > before["compliance"]


def test_a_photo_of_no_shelf_gives_no_figure_for_its_bay(stack: Stack) -> None:
    # Given a bay with its planogram, photographed against a bare wall
    import numpy as np

    from pipeline.tasks.steps import NOTHING_FOUND

    _, truth = photo_bytes(12)
    rng = np.random.default_rng(5)
    wall = np.clip(190 + rng.normal(0, 6, (1200, 1600, 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(wall).save(buf, "JPEG", quality=90)

    result = wait_result(stack, put_photo(stack, "raw/S012/A01/B1/cam1/wall.jpg",
                                          buf.getvalue(), truth))

    # Then it is a result, with nothing found and no compliance figure to replace the bay's
    assert result["detections"] == 0
    assert result["compliance"] is None and result["compliance_reason"] == NOTHING_FOUND
    assert result["planogram"]["id"] == truth["planogram"]["planogram_id"]


def test_a_stage_over_its_time_limit_ends_in_a_dead_letter(
        stack: Stack, pipeline_procs: dict[str, Proc], tmp_path: Path,
        slow_model_env: dict[str, str]) -> None:
    # Given an inference worker whose model runs longer than the stage's soft time limit
    with swapped_worker(stack, pipeline_procs, tmp_path, "inference", "worker-too-slow", {
        **slow_model_env, "SHELF_CELERY__STAGE_TIME_LIMIT_S": "16",
        "SHELF_INGEST__DOWNLOAD_DEADLINE_S": "0.5"}) as slow:  # (it downloads nothing)
        data, truth = photo_bytes(9)
        key = "raw/S004/A02/B1/cam1/too-slow.jpg"
        put_photo(stack, key, data, truth)
        # Then the photo ends as a dead letter that says so, and the worker keeps serving
        letter = wait_dead_letter(stack, key, timeout_s=90)
        assert letter.stage == "detect" and letter.error_type == "StageTimeoutError"
        assert slow.p.poll() is None


OUR_ARTIFACTS_BUCKET = "(the artifacts bucket)"  # its name is the test stack's own


@pytest.mark.parametrize(("change", "reason"), [
    ({"photo": {"bucket": "shelf-config"}}, "not the raw bucket"),
    ({"photo": {"store": "S999"}}, "not the one its key says"),
    ({"artifacts": {"detections": {"bucket": "elsewhere", "key": "x.json"}}}, "artifact"),
    ({"artifacts": {"detections": {"bucket": OUR_ARTIFACTS_BUCKET, "key": "outcomes/x.json"}}},
     "not this photo's"),
    ({"photo": {"url": "file:///etc/passwd"}}, None),
], ids=["other-bucket", "spoofed-store", "foreign-artifact", "another-photos-artifact",
        "file-url"])
def test_forged_stage_messages_are_kept_not_followed(stack: Stack, change: dict[str, Any],
                                                     reason: str | None,
                                                     pipeline_procs: dict[str, Proc]) -> None:
    from pipeline.tasks.app import app

    s3 = stack.settings.s3
    key = f"raw/S008/A01/B1/cam1/{uuid.uuid4().hex}.jpg"
    stack.s3.put_object(Bucket=s3.raw_bucket, Key=key, Body=b"not a photo")
    photo = {"bucket": s3.raw_bucket, "key": key, "store": "S008", "aisle": "A01",
             "bay": "B1", "camera": "cam1", "url": ""}
    ours = {OUR_ARTIFACTS_BUCKET: s3.artifacts_bucket}
    artifacts = {name: {**ref, "bucket": ours.get(ref["bucket"], ref["bucket"])}
                 for name, ref in change.get("artifacts", {}).items()}
    msg: dict[str, Any] = {"photo": {**photo, **change.get("photo", {})},
                           "sha256": "a" * 64, "artifacts": artifacts}
    stage = "comply" if "artifacts" in change else "ingest"
    queue = "compliance" if stage == "comply" else "ingestion"
    app.send_task(f"shelf.{stage}", args=(msg,), queue=queue)
    if reason is not None:
        # Then the message is kept with its reason, and nothing it names is read
        deadline = time.time() + 30
        kept: list[dict[str, Any]] = []
        while not kept and time.time() < deadline:
            kept = [d for k in stack.store.list_keys(s3.artifacts_bucket, "dead-letter/unreadable/")
                    for d in [stack.store.get_json(s3.artifacts_bucket, k)]
                    if key in json.dumps(d)]
            time.sleep(0.3)
        assert kept and reason in kept[0]["error"]
    else:
        # A URL that is not a pre-signed GET of the photo is never fetched: the photo is
        # read through a URL the worker mints, and ends as what it is, a corrupt photo
        letter = wait_dead_letter(stack, key, error_type="CorruptImageError")
        assert letter.message.photo.url == ""
        deadline = time.time() + 30
        while f"{key}: its URL is not followed" not in pipeline_procs["cpu"].log.read_text(
                errors="replace") and time.time() < deadline:
            time.sleep(0.3)
        assert "URL scheme 'file' is not http(s)" in pipeline_procs["cpu"].log.read_text(
            errors="replace")


def test_transient_faults_are_retried_then_dead_lettered_when_they_last(
        stack: Stack, pipeline_procs: dict[str, Proc], tmp_path: Path) -> None:
    from pipeline.chaos import start_proxy
    from pipeline.tasks.app import CPU_QUEUES

    # Given the comply stage on a worker whose every planogram read fails with a 5xx (S3 in
    # trouble), the other CPU stages on a healthy one
    faults = Faults(error_rate=1.0, throttle_rate=0.0, latency_rate=0.0,
                    only_paths="/planograms/")
    proxy, url = start_proxy(str(stack.settings.aws.endpoint_url), faults)
    pipeline_procs["cpu"].stop()
    healthy = start_worker(stack, tmp_path, "cpu", "worker-healthy",
                           queues=tuple(q for q in CPU_QUEUES if q != "compliance"))
    flaky = start_worker(stack, tmp_path, "cpu", "worker-flaky-s3",
                         {"SHELF_AWS__ENDPOINT_URL": url, "SHELF_CELERY__MAX_RETRIES": "3"},
                         queues=("compliance",))
    try:
        data, truth = photo_bytes(10)
        key = "raw/S010/A01/B1/cam1/flaky.jpg"
        put_photo(stack, key, data, truth)
        # Then comply is retried with backoff, and once the retries are spent the photo ends
        # as a dead letter that says why (the photo is not lost, nor stuck)
        letter = wait_dead_letter(stack, key, timeout_s=120)
        assert letter.stage == "comply" and letter.error_type == "TransientError"
        assert "retries exhausted after 4 attempts" in letter.error
        assert faults.served["error"] >= 4
        assert flaky.log.read_text().count("comply transient") >= 3
    finally:
        for w in (flaky, healthy):
            w.stop()
        proxy.shutdown()
        pipeline_procs["cpu"] = start_worker(stack, tmp_path, "cpu", "worker-cpu-back")


class _DamagingLess(Faults):
    """Damages the object bodies numbered 1, 3, 7, 15, 31... (one less than a power of two)."""

    bodies = 0

    def _hit(self, rate: float) -> bool:
        self.bodies += 1
        return self.bodies & (self.bodies + 1) == 0


def test_bytes_damaged_on_the_way_are_read_and_written_again(
        stack: Stack, pipeline_procs: dict[str, Proc], tmp_path: Path) -> None:
    import hashlib

    from pipeline.chaos import start_proxy

    # Given the CPU stages on a worker whose link to S3 flips a bit in the 1st, 3rd, 7th,
    # 15th... object body on its way, either way: the photo it downloads, the artifacts it
    # reads and writes (the first download among them; rarer as they go, so that each stage
    # gets through in a few retries); the first and the last photo uploaded in one part of a
    # multipart upload, whose ETag is no MD5 of the bytes
    faults = _DamagingLess(error_rate=0.0, throttle_rate=0.0, latency_rate=0.0)
    proxy, url = start_proxy(str(stack.settings.aws.endpoint_url), faults)
    pipeline_procs["cpu"].stop()
    damaging = start_worker(stack, tmp_path, "cpu", "worker-damaging-link",
                            {"SHELF_AWS__ENDPOINT_URL": url,
                             "SHELF_CELERY__BACKOFF_BASE_S": "0.2",
                             "SHELF_CELERY__BACKOFF_MAX_S": "1"})
    try:
        uploads = []
        for i in range(3):
            data, truth = photo_bytes(40 + i)
            uploads.append((put_photo(stack, f"raw/S040/A01/B1/cam1/damaged-{i}.jpg", data,
                                      truth, multipart=i != 1), data))
        # Then each photo ends as one result of its own bytes (its id their SHA-256), none as
        # a corrupt photo or a dead letter
        for up, data in uploads:
            result = wait_result(stack, up, timeout_s=150)
            assert result["sha256"] == hashlib.sha256(data).hexdigest()
            assert len(result_keys(stack, up)) == 1
        assert faults.served["damaged"] >= 3
        assert not [d for d in dead_letters(stack) if d.message.photo.store == "S040"]
    finally:
        damaging.stop()
        proxy.shutdown()
        pipeline_procs["cpu"] = start_worker(stack, tmp_path, "cpu", "worker-cpu-back")


def test_a_photo_that_kills_its_worker_every_time_is_dead_lettered(
        stack: Stack, pipeline_procs: dict[str, Proc], tmp_path: Path,
        slow_model_env: dict[str, str]) -> None:
    import os
    import signal

    # Given an inference worker, and a photo whose detect task dies with its process each time
    with swapped_worker(stack, pipeline_procs, tmp_path, "inference", "worker-poisoned",
                        slow_model_env) as slow:
        data, truth = photo_bytes(11)
        key = "raw/S011/A01/B1/cam1/poison.jpg"
        put_photo(stack, key, data, truth)
        kills = 0
        deadline = time.time() + 240
        letter = None
        while letter is None and time.time() < deadline:
            log = slow.log.read_text()
            received = log.count("Task shelf.detect[") - log.count("] succeeded")
            if received > kills and "dead letter" not in log:
                time.sleep(0.3)
                for child in slow.children():
                    os.kill(child, signal.SIGKILL)
                kills += 1
            letter = next((d for d in dead_letters(stack) if d.message.photo.key == key), None)
            time.sleep(0.2)
        # Then after the configured number of deliveries it ends as a dead letter with why
        assert letter is not None, f"no dead letter after {kills} kills"
        assert letter.stage == "detect" and "delivered" in letter.error
        assert slow.p.poll() is None


def test_heavy_route_and_the_debounced_rollup(stack: Stack) -> None:
    from pipeline.analytics.aggregates import aggregate_key

    data, truth = photo_bytes(12, display="endcap")
    up = put_photo(stack, "raw/S012/A01/B1/cam1/endcap.jpg", data, truth,
                   **{"display-type": "endcap"})
    result = wait_result(stack, up)
    assert result["route"] == "heavy" and result["model"].startswith("product-heavy/")
    assert result["route_reason"] == "display type endcap"
    # A finished photo asks for its day's rollup, which appears a few seconds later
    key = aggregate_key("store", result["date"])
    deadline = time.time() + 60
    while stack.store.head(stack.settings.s3.results_bucket, key) is None:
        assert time.time() < deadline, "no rollup for the photo's day"
        time.sleep(0.5)


def test_worker_logs_are_json_lines_about_the_photo_and_leak_nothing(
        stack: Stack, pipeline_procs: dict[str, Proc]) -> None:
    data, truth = photo_bytes(13)
    up = put_photo(stack, "raw/S013/A01/B1/cam1/logged.jpg", data, truth)
    wait_result(stack, up)
    # The comply stage logs once its result is written: its line may follow a moment later
    deadline = time.time() + 15
    while True:
        text = (pipeline_procs["cpu"].log.read_text()
                + pipeline_procs["listener"].log.read_text())
        lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
        mine = [d for d in lines if d.get("sha256") == up.sha]
        if any(d["stage"] == "comply" and d["message"].endswith(" done") for d in mine) \
                or time.time() > deadline:
            break
        time.sleep(0.2)
    # Then each stage's lines name the photo, the upload, the task and the store
    assert {d["stage"] for d in mine} >= {"normalize", "comply"}
    done = [d for d in mine if d["message"].endswith(" done")]
    assert done and all("duration_s" in d and d["task_id"] and d["store"] == "S013"
                        for d in done)
    # And no pre-signed URL, credential or EXIF value is ever logged
    assert "X-Amz-Signature" not in text and "X-Amz-Credential" not in text
    redis_password = stack.settings.redis.url.split("@")[0].rsplit(":", 1)[-1]
    assert len(redis_password) >= 16 and redis_password not in text
    assert truth["exif"]["serial"] not in text


def test_metrics_name_what_dashboards_and_alerts_use(
        stack: Stack, pipeline_procs: dict[str, Proc], tmp_path: Path) -> None:
    import re as regex

    import yaml

    from pipeline.settings import REPO_ROOT

    # Given a few photos through the pipeline and the metrics server of this host
    data, truth = photo_bytes(14)
    wait_result(stack, put_photo(stack, "raw/S014/A01/B1/cam1/metrics.jpg", data, truth))
    server = Proc(["metrics"], stack.env, tmp_path / "metrics.log")
    try:
        server.wait_for_log("metrics on")
        port = stack.env["SHELF_METRICS__PORT"]
        deadline = time.time() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                    text = r.read().decode()
                break
            except OSError:
                assert time.time() < deadline
                time.sleep(0.3)
    finally:
        server.stop()
    # Then every stage's latency histogram has counts, and the queue depths are there
    for stage in ("ingest", "normalize", "detect", "comply"):
        m = regex.search(rf'shelf_stage_duration_seconds_count\{{stage="{stage}"\}} (\S+)', text)
        assert m and float(m.group(1)) > 0, stage
    assert regex.search(r'shelf_queue_depth\{queue="ingestion"\} \d', text)
    # And every metric the dashboard and the alert rules name exists
    infra = REPO_ROOT / "infra"
    rules = yaml.safe_load((infra / "prometheus" / "alerts.yml").read_text())
    exprs = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    dash = json.loads((infra / "grafana" / "shelf-pipeline.json").read_text())
    exprs += [t["expr"] for p in dash["panels"] for t in p["targets"]]
    named = {n for e in exprs for n in regex.findall(r"\b(shelf_[a-z_]+)", e)}
    assert len(named) >= 10
    exposed = set(regex.findall(r"^(shelf_[a-z_]+)", text, regex.M))
    missing = sorted(n for n in named if n not in exposed)
    assert not missing, missing


def test_two_worker_groups_share_the_work_and_each_photo_completes_once(
        stack: Stack, pipeline_procs: dict[str, Proc], tmp_path: Path) -> None:
    # Given two CPU worker groups, as two hosts would run them, on the same Redis and S3
    pipeline_procs["cpu"].stop()
    hosts = [start_worker(stack, tmp_path, "cpu", f"worker-{h}", node=f"group-{h}")
             for h in ("a", "b")]
    try:
        ups = []
        for i in range(6):
            data, truth = photo_bytes(20 + i)
            ups.append(put_photo(stack, f"raw/S015/A01/B{i}/cam1/two-hosts-{i}.jpg", data,
                                 truth))
        results = [wait_result(stack, up) for up in ups]
        wait_idle(stack)
        # Then both groups took stage work, and every photo has exactly one result
        for h in hosts:
            log = h.log.read_text()
            assert log.count("succeeded in") >= 2, h.log.name
        assert len({r["upload_id"] for r in results}) == 6
        assert all(len(result_keys(stack, up)) == 1 for up in ups)
    finally:
        for h in hosts:
            h.stop()
        pipeline_procs["cpu"] = start_worker(stack, tmp_path, "cpu", "worker-cpu-single")
