"""What each stage does: parse refs -> skip if its artifact exists -> work -> write -> next.

Each function takes the stage's message and the process runtime and returns the next message.
Artifacts are keyed by the photo's hash (the same bytes are worked on once); the result is
keyed by the upload (bucket, key, version), so every upload ends as exactly one result.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt

from pipeline import metrics
from pipeline.core.lighting import measure_quality, normalize_lighting
from pipeline.core.recognition import name_crop
from pipeline.core.result import PhotoResult
from pipeline.core.routing import choose_route
from pipeline.core.shelf import Detected, evaluate_shelves, split_by_score
from pipeline.errors import (
    ArtifactLostError,
    CorruptImageError,
    ForgedUrlError,
    ObjectNotFoundError,
    PermanentError,
    PipelineError,
    PlanogramError,
    TransientError,
    UrlRejectedError,
)
from pipeline.image import decode_jpeg, decode_upright, encode_jpeg, inspect_image
from pipeline.messages import ArtifactRef, StageMessage
from pipeline.privacy import blur_faces
from pipeline.storage.download import Download, check_presigned, fetch
from pipeline.storage.keys import (
    LEGACY_PENDING_PREFIX,
    artifact_key,
    ended_key,
    outcome_key,
    pending_key,
    result_key,
)
from pipeline.storage.planograms import load_planogram, planogram_key
from pipeline.storage.redis import flag
from pipeline.tasks.runtime import Runtime

log = logging.getLogger(__name__)


def download_photo(msg: StageMessage, rt: Runtime) -> Download:
    """Through the message's pre-signed URL when it is one of the photo on this worker's S3
    endpoint; else through one minted here from bucket/key: the message carries none, S3
    refused it (expired), or it is not one this worker may follow (another endpoint's
    spelling, as a listener configured apart would mint, or a forged one, never fetched).
    Bytes of another version than the message announces are refused."""
    s = rt.settings
    p = msg.photo
    if p.bucket != s.s3.raw_bucket:
        raise ForgedUrlError(f"photo in bucket {p.bucket!r}: only the raw bucket is read")
    cfg = s.ingest

    def get(url: str) -> Download:
        return fetch(url, max_bytes=cfg.max_bytes, timeout_s=cfg.download_timeout_s,
                     deadline_s=cfg.download_deadline_s,
                     first_part_size=lambda: rt.store.first_part_size(p.bucket, p.key,
                                                                      p.version_id))

    got = None
    if p.url:
        try:
            check_presigned(p.url, endpoint_url=s.aws.endpoint_url, region=s.aws.region,
                            bucket=p.bucket, key=p.key, version_id=p.version_id)
        except ForgedUrlError as exc:
            log.warning("%s: its URL is not followed (%s); read through a URL minted here",
                        p.key, exc)
        else:
            with contextlib.suppress(UrlRejectedError):
                got = get(p.url)
    if got is None:
        got = get(rt.store.presign_get(p.bucket, p.key, s.s3.presign_expiry_s, p.version_id))
    got.check_version(version_id=p.version_id, etag=p.etag)
    return got


def capture_time(taken: str | None, msg: StageMessage, max_age_days: int) -> str | None:
    """The photo's EXIF capture time if it is at most ``max_age_days`` before its upload (a
    backlog from a phone that was offline) and not after it; else None: a camera whose
    clock was reset says 2000-01-01 or its build date."""
    if not taken:
        return None
    uploaded = msg.photo.event_time or datetime.now(UTC)
    at = datetime.fromisoformat(taken)
    if uploaded - timedelta(days=max_age_days) <= at <= uploaded + timedelta(days=1):
        return taken
    log.warning("upload %s: its EXIF time %s is not within %d days before its upload at %s "
                "(a camera clock reset?): filed under the upload day", msg.photo.upload_id,
                taken, max_age_days, uploaded.isoformat())
    return None


def earlier_artifact(rt: Runtime, sha: str, bucket: str, key: str) -> bytes:
    """An artifact an earlier stage wrote: one that is gone is an ``ArtifactLostError``, on
    which the photo goes round again from ingest (see ``redo_from_ingest``)."""
    try:
        return rt.store.get_bytes(bucket, key)
    except ObjectNotFoundError as exc:
        raise ArtifactLostError(f"artifact s3://{bucket}/{key} is gone", sha) from exc


def redo_from_ingest(rt: Runtime, msg: StageMessage, sha: str) -> StageMessage:
    """The photo's message back at ingest with the stages before comply marked undone, so
    that each writes its artifact again. The upload's result is per upload and written once:
    a redo rewrites it only where the message already said to (``recompute``)."""
    rt.ledger.forget("ingest", sha)
    rt.ledger.forget("normalize", sha)
    if msg.model:
        rt.ledger.forget("detect", f"{sha}:{msg.model}")
    return StageMessage(photo=msg.photo, recompute=msg.recompute)


def filed_day(taken: str | None, msg: StageMessage, first_uploaded: str | None = None) -> str:
    """The day a photo is filed under: the day it was taken (a :func:`capture_time`), else
    the day it was uploaded: a bay filed under its camera's reset clock would drop out of
    the day's rollups. The same bytes uploaded again (a phone's sync sending yesterday's
    photo once more) are filed under the day they were ``first_uploaded``, not counted again
    as the next day's photo of the bay."""
    if taken:
        return taken[:10]
    uploaded = msg.photo.event_time or datetime.now(UTC)
    if first_uploaded:
        uploaded = min(uploaded, datetime.fromisoformat(first_uploaded))
    return uploaded.strftime("%Y-%m-%d")


def ingest(msg: StageMessage, rt: Runtime) -> StageMessage:
    got = download_photo(msg, rt)
    photo = msg.photo.with_metadata(got.metadata)
    if got.last_modified is not None:
        # When this version was written, as S3 keeps it: the same whether the listener's
        # event (its eventTime) or reconciliation (the listing) sent the upload, so the
        # day it is filed under cannot differ between two copies of one upload.
        photo = photo.model_copy(update={"event_time": got.last_modified})
    return ingest_bytes(got.data, msg.model_copy(update={"photo": photo}), rt)


def ingest_bytes(data: bytes, msg: StageMessage, rt: Runtime) -> StageMessage:
    """Ingest once the photo's bytes are here (the benchmark's floor starts here too)."""
    s = rt.settings
    sha = hashlib.sha256(data).hexdigest()
    bucket = s.s3.artifacts_bucket
    meta_key, image_key = artifact_key(sha, "ingest.json"), artifact_key(sha, "ingested.jpg")
    meta = rt.ledger.get("ingest", sha)
    if meta is not None:
        metrics.ARTIFACTS_SKIPPED.labels("ingest").inc()
    else:
        cfg = s.ingest
        facts = inspect_image(data, max_pixels=cfg.max_pixels, min_side=cfg.min_side,
                              max_side=cfg.max_side, max_aspect=cfg.max_aspect)
        try:
            upright, scale = decode_upright(data, cfg.working_long_side, size_wh=facts.size_wh,
                                            orientation=facts.orientation,
                                            icc_profile=facts.icc_profile)
        except ValueError as exc:
            raise CorruptImageError(str(exc)) from exc
        upright, faces = blur_faces(upright)
        # Re-encoding from pixels leaves every metadata segment (EXIF, GPS, XMP, MakerNote,
        # ICC, comments) behind; faces were blurred first.
        rt.store.put_bytes(bucket, image_key, encode_jpeg(upright, cfg.jpeg_quality),
                           "image/jpeg")
        meta = {"sha256": sha, "format": facts.format, "bytes": len(data),
                "stored_size": list(facts.size_wh), "orientation": facts.orientation,
                "upright_size": [upright.shape[1], upright.shape[0]],
                "scale_from_original": round(scale, 6), "faces_blurred": faces,
                "taken_at": facts.taken.isoformat() if facts.taken else None,
                "first_uploaded_at": (msg.photo.event_time or datetime.now(UTC)).isoformat()}
        rt.store.put_json(bucket, meta_key, meta)
        rt.ledger.put("ingest", sha, meta)  # after the artifacts: marks the stage complete
        rt.keep_image(sha, upright)
    taken = capture_time(meta.get("taken_at"), msg, s.ingest.max_capture_age_days)
    return msg.model_copy(update={"sha256": sha, "taken_at": taken,
                                  "captured_date": filed_day(taken, msg,
                                                             meta.get("first_uploaded_at"))}
                          ).with_artifact("ingested", ArtifactRef(bucket=bucket, key=image_key))


def normalize(msg: StageMessage, rt: Runtime) -> StageMessage:
    sha = _sha(msg)
    bucket = rt.settings.s3.artifacts_bucket
    norm_key, q_key = artifact_key(sha, "normalized.jpg"), artifact_key(sha, "quality.json")
    quality = rt.ledger.get("normalize", sha)
    if quality is not None:
        metrics.ARTIFACTS_SKIPPED.labels("normalize").inc()
    else:
        kept = rt.images.pop(sha, None)
        # Ingest ran in this process: its image is the stored one but for JPEG's rounding.
        image = kept if kept is not None else decode_jpeg(
            earlier_artifact(rt, sha, bucket, artifact_key(sha, "ingested.jpg")))
        quality = measure_quality(image).to_json()
        rt.store.put_bytes(bucket, norm_key,
                           encode_jpeg(normalize_lighting(image), rt.settings.ingest.jpeg_quality),
                           "image/jpeg")
        rt.store.put_json(bucket, q_key, quality)
        rt.ledger.put("normalize", sha, quality)
    p = msg.photo
    route = choose_route(rules=rt.rules, store_format=p.store_format,
                         display_type=p.display_type, camera=p.camera,
                         mean_luminance=float(quality["mean_luminance"]),
                         contrast=float(quality["contrast"]))
    return msg.model_copy(update={"route": route.path, "route_reason": route.reason}
                          ).with_artifact("normalized", ArtifactRef(bucket=bucket, key=norm_key))


def detections_name(ref: str) -> str:
    """A detector's artifact: one per model, so copies routed elsewhere never collide."""
    return "detections." + ref.replace("/", "@") + ".json"


def detect(msg: StageMessage, rt: Runtime) -> StageMessage:
    """Boxes from the routed detector; for a product detector, each firm box's most similar
    catalog SKUs (the bay's plan picks among them at the comply stage)."""
    sha = _sha(msg)
    s = rt.settings
    bucket = s.s3.artifacts_bucket
    route = msg.route or "light"
    detector = rt.detector(route)
    key = artifact_key(sha, detections_name(detector.ref))
    recognizer = rt.recognizer() if detector.files.finds_products else None
    catalog = recognizer.catalog.index().version if recognizer else None
    mark = rt.ledger.get("detect", f"{sha}:{detector.ref}")
    if mark is not None and mark.get("catalog") == catalog:
        metrics.ARTIFACTS_SKIPPED.labels("detect").inc()
    else:
        @functools.cache  # each artifact read once, whichever needs it first
        def artifact(name: str) -> npt.NDArray[np.uint8]:
            return decode_jpeg(earlier_artifact(rt, sha, bucket, artifact_key(sha, name)))

        image = artifact("normalized.jpg" if detector.files.normalized_lighting
                         else "ingested.jpg")
        facing, evidence = detector.facing_scores(s.compliance)
        found = detector.detect(image, score_threshold=evidence)
        firm = np.nonzero(found.scores >= facing)[0]
        cands: dict[int, list[tuple[str, float]]] = {}
        if recognizer is not None:
            # Named from both images: embedded under normalized lighting, coloured as
            # photographed (see recognizer.crop_signatures).
            catalog, per_box = recognizer.candidates(
                artifact("normalized.jpg"), artifact("ingested.jpg"), found.xyxy[firm],
                s.recognition.candidates)
            cands = dict(zip(firm.tolist(), per_box, strict=True))
        labels = detector.labels
        doc = {
            "sha256": sha, "model": detector.ref, "providers": detector.session.providers,
            "task": "product" if recognizer else "sku", "catalog": catalog,
            "embedder": recognizer.embedder.ref if recognizer else None,
            "route": route, "route_reason": msg.route_reason,
            "image_size": [image.shape[1], image.shape[0]], "facing_score": facing,
            "detections": [
                {"box": [round(float(v), 1) for v in b], "score": round(float(sc), 4),
                 **({"candidates": cands.get(i, [])} if recognizer
                    else {"sku": labels[int(c)]})}
                for i, (b, sc, c) in enumerate(zip(found.xyxy, found.scores, found.class_ids,
                                                   strict=True))],
        }
        rt.store.put_json(bucket, key, doc)
        rt.ledger.put("detect", f"{sha}:{detector.ref}", {"catalog": catalog})
    return msg.model_copy(update={"model": detector.ref}).with_artifact(
        "detections", ArtifactRef(bucket=bucket, key=key))


def name_detections(det: dict[str, Any], planned: set[str] | None, threshold: float,
                    margin: float, floor: float | None = None) -> list[Detected]:
    """Each detection with its SKU: named from its candidates for this bay (with the SKUs it
    is nearly as like, within ``margin``; for an unknown one, above ``floor``), or as the
    detector labelled it."""
    out = []
    for d in det["detections"]:
        b = d["box"]
        box = (float(b[0]), float(b[1]), float(b[2]), float(b[3]))
        if "candidates" in d:
            sku, alternatives = name_crop([(str(c), float(v)) for c, v in d["candidates"]],
                                          planned=planned, threshold=threshold, margin=margin,
                                          floor=floor)
            out.append(Detected(box=box, sku=sku, score=float(d["score"]),
                                alternatives=alternatives))
        else:
            out.append(Detected(box=box, sku=str(d["sku"]), score=float(d["score"])))
    return out


def comply(msg: StageMessage, rt: Runtime) -> StageMessage:
    """The upload's result: its products named for its bay and, when the bay has a
    planogram, the compliance against it; without one (or with one that does not validate),
    ``compliance: null`` and why, and the upload waits (``pending/``) to be recomputed when
    a valid planogram arrives."""
    sha = _sha(msg)
    s = rt.settings
    p = msg.photo
    key = result_key(store=p.store, date=msg.captured_date or "unknown", aisle=p.aisle,
                     upload_id=p.upload_id)
    if msg.recompute or rt.ledger.get("comply", p.upload_id) is None:
        try:
            planogram = load_planogram(rt.store, s.s3.config_bucket, p)
            why_none = f"no planogram at s3://{s.s3.config_bucket}/{planogram_key(p)}"
        except PlanogramError as exc:  # the bay's file is broken: the photo's products are
            planogram, why_none = None, str(exc)  # still a result; it waits for a good one
        ref = msg.artifacts["detections"]
        det = json.loads(earlier_artifact(rt, sha, ref.bucket, ref.key))
        planned = ({q.sku for shelf in planogram.shelves for q in shelf.positions}
                   if planogram else set())
        seen = name_detections(det, planned or None, s.recognition.threshold,
                               s.recognition.position_margin, s.recognition.position_floor)
        # The facing score the detect stage named by: the model's own scale.
        facing = det.get("facing_score", s.compliance.scores(None, None)[0])
        found, weak = split_by_score(seen, float(facing))
        brands = rt.catalog.index().brands()
        not_in_catalog = sorted(planned - brands.keys())  # (none without a planogram)
        fields: dict[str, Any] = {
            "sha256": sha, "upload_id": p.upload_id, "store": p.store, "aisle": p.aisle,
            "bay": p.bay, "camera": p.camera, "date": msg.captured_date,
            "captured_at": p.event_time.isoformat() if p.event_time else None,
            "taken_at": msg.taken_at,
            "store_format": p.store_format, "display_type": p.display_type,
            "source": {"bucket": p.bucket, "key": p.key, "version_id": p.version_id},
            "route": det.get("route"), "route_reason": det.get("route_reason"),
            "model": det.get("model"), "catalog": det.get("catalog"),
            "image_size": det.get("image_size"), "detections": len(found),
            "artifacts": {k: f"s3://{a.bucket}/{a.key}" for k, a in msg.artifacts.items()},
            "stage_seconds": msg.stage_seconds,
            "completed_at": datetime.now(UTC).isoformat(),
        }
        pending = pending_key(planogram_key(p), p.upload_id)
        if planogram is None:
            fields.update({
                "compliance": None,
                "compliance_reason": why_none,
                "products": [{"box": list(d.box), "sku": d.sku, "brand": brands.get(d.sku, d.sku),
                              "score": d.score} for d in found],
            })
        elif not found:
            # A photo of no shelf (a wall, the floor, a hand over the lens) reads as a bay
            # with nothing in place: its 0 % would replace the bay's figure of the day
            fields.update({
                "compliance": None, "compliance_reason": NOTHING_FOUND,
                "planogram": {"id": planogram.planogram_id, "version": planogram.version},
                "planned_facings": planogram.planned_facings, "found_facings": 0,
                "not_in_catalog": not_in_catalog,
            })
        else:
            size = det.get("image_size")
            report = evaluate_shelves(planogram=planogram, detections=found,
                                      brand_of=lambda sku: brands.get(sku, sku), evidence=weak,
                                      tuning=s.compliance.tuning,
                                      image_wh=(int(size[0]), int(size[1])) if size else None)
            fields.update(report.to_json())
            fields["not_in_catalog"] = not_in_catalog
        result = PhotoResult.model_validate(fields).model_dump(mode="json")
        if planogram is None:  # kept waiting before its result is written: a stage stopped
            # between the two (its time limit) leaves an upload that is complied again once
            # its planogram arrives, never a result no planogram will ever update
            waiting = msg.model_copy(update={"photo": p.model_copy(update={"url": ""}),
                                             "recompute": True})
            rt.store.put_json(s.s3.artifacts_bucket, pending, waiting.model_dump(mode="json"))
        rt.store.put_json(s.s3.results_bucket, key, result)
        if planogram is not None and msg.recompute:
            rt.store.delete(s.s3.artifacts_bucket, pending)
            rt.store.delete(s.s3.artifacts_bucket, f"{LEGACY_PENDING_PREFIX}{p.upload_id}.json")
        rt.ledger.put("comply", p.upload_id, {"result": key})
        metrics.photo_done(rt.redis, p.event_time.timestamp() if p.event_time else None,
                           planogram is not None)
    else:
        metrics.ARTIFACTS_SKIPPED.labels("comply").inc()
    record_outcome(rt, msg, result=f"s3://{s.s3.results_bucket}/{key}")
    return msg.with_artifact("result", ArtifactRef(bucket=s.s3.results_bucket, key=key))


NOTHING_FOUND = ("no product found in the photo: nothing to judge the bay by (a photo of no "
                 "shelf, or a bay emptied of everything); the bay's other photos of the day "
                 "count")


def record_outcome(rt: Runtime, msg: StageMessage, *, result: str | None = None,
                   dead_letter: str | None = None) -> None:
    """How the upload ended, where reconciliation looks for it: in S3, and flagged in Redis
    for as long as reconciliation looks back (a flag lost with Redis costs a HEAD). A dead
    letter never replaces a result: a second copy of the upload (sent round by
    reconciliation, or a worker that froze and woke) failing after the first one's result
    would make an upload with a result read as dead-lettered."""
    s = rt.settings
    if result is None and _ended_with_result(rt, msg.photo.upload_id):
        log.warning("upload %s: a copy of it was dead-lettered (%s) after its result was "
                    "written; the result stands", msg.photo.upload_id, dead_letter)
        return
    rt.store.put_json(s.s3.artifacts_bucket, outcome_key(msg.photo.upload_id), {
        "upload_id": msg.photo.upload_id, "bucket": msg.photo.bucket, "key": msg.photo.key,
        "version_id": msg.photo.version_id, "result": result, "dead_letter": dead_letter,
        "at": datetime.now(UTC).isoformat()})
    try:
        flag(rt.redis, ended_key(msg.photo.upload_id), s.celery.reconcile_window_s + 86_400)
    except (TransientError, PermanentError) as exc:  # S3 holds the outcome all the same
        log.warning("upload %s ended, not flagged in Redis: %s", msg.photo.upload_id, exc)


def _ended_with_result(rt: Runtime, upload_id: str) -> bool:
    try:
        doc = rt.store.get_json(rt.settings.s3.artifacts_bucket, outcome_key(upload_id))
    except (PipelineError, ValueError):  # none yet, or unreadable: the letter is the end
        return False
    return isinstance(doc, dict) and bool(doc.get("result"))


def _sha(msg: StageMessage) -> str:
    if not msg.sha256:
        raise PermanentError("message carries no photo hash: ingest has not run")
    return msg.sha256
