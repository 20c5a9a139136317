"""What each stage does: parse refs -> skip if its artifact exists -> work -> write -> next.

Each function takes the stage's message and the process runtime and returns the next message.
"""

from __future__ import annotations

import hashlib
import io
from datetime import UTC, datetime

import cv2
import numpy as np
import numpy.typing as npt
from PIL import Image, UnidentifiedImageError
from pydantic import ValidationError

from pipeline.core.lighting import measure_quality, normalize_lighting
from pipeline.core.orientation import ORIENTATIONS
from pipeline.core.planogram import Planogram
from pipeline.core.routing import choose_route
from pipeline.core.shelf import Detected, evaluate_shelves, split_by_score
from pipeline.errors import PermanentError
from pipeline.image import TAG_ORIENTATION, decode_upright
from pipeline.messages import ArtifactRef, StageMessage
from pipeline.storage.download import UrlRejectedError, fetch
from pipeline.storage.keys import artifact_key, result_key
from pipeline.storage.s3 import ObjectNotFoundError
from pipeline.synth.catalog import BY_ID
from pipeline.tasks.runtime import Runtime

FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png"}
TAG_EXIF_IFD = 0x8769
TAG_DATETIME_ORIGINAL = 0x9003


class CorruptImageError(PermanentError):
    """The photo is not a decodable JPEG or PNG within the configured bounds."""


class PlanogramError(PermanentError):
    """The photo's planogram exists but cannot be read."""


def _encode_jpeg(image: npt.NDArray[np.uint8], quality: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise PermanentError("JPEG encoding failed")
    return bytes(buf.tobytes())


def _decode_jpeg(data: bytes) -> npt.NDArray[np.uint8]:
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if arr is None:
        raise PermanentError("stored artifact does not decode")
    return np.asarray(arr, np.uint8)


def download_photo(msg: StageMessage, rt: Runtime) -> bytes:
    """Through the pre-signed URL; a refused URL is re-minted from bucket/key once."""
    cfg = rt.settings.ingest
    try:
        return fetch(msg.photo.url, max_bytes=cfg.max_bytes, timeout_s=cfg.download_timeout_s)
    except UrlRejectedError:
        url = rt.store.presign_get(msg.photo.bucket, msg.photo.key,
                                   rt.settings.s3.presign_expiry_s, msg.photo.version_id)
        return fetch(url, max_bytes=cfg.max_bytes, timeout_s=cfg.download_timeout_s)


def inspect_image(data: bytes, rt: Runtime) -> tuple[str, tuple[int, int], int, str | None]:
    """Format, stored size, EXIF orientation and DateTimeOriginal, read from the headers
    once; bounds enforced."""
    cfg = rt.settings.ingest
    try:
        with Image.open(io.BytesIO(data)) as im:
            fmt = str(im.format)
            w, h = im.size
            exif = im.getexif()
            taken = exif.get_ifd(TAG_EXIF_IFD).get(TAG_DATETIME_ORIGINAL)
            orientation = exif.get(TAG_ORIENTATION, 1)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError,
            Image.DecompressionBombError) as exc:
        raise CorruptImageError(f"not a readable image: {exc}") from exc
    if fmt not in FORMATS:
        raise CorruptImageError(f"unsupported format {fmt}; JPEG and PNG are accepted")
    if w * h > cfg.max_pixels:
        raise CorruptImageError(f"{w}x{h} exceeds the {cfg.max_pixels}-pixel bomb guard")
    if min(w, h) < cfg.min_side or max(w, h) > cfg.max_side:
        raise CorruptImageError(f"{w}x{h} is outside {cfg.min_side}..{cfg.max_side} pixels")
    o = int(orientation) if orientation in ORIENTATIONS else 1
    return fmt, (int(w), int(h)), o, str(taken) if taken else None


def _captured_date(exif_time: str | None, msg: StageMessage) -> str:
    if exif_time:
        try:
            return datetime.strptime(exif_time.strip("\x00 "), "%Y:%m:%d %H:%M:%S").strftime(
                "%Y-%m-%d")
        except ValueError:
            pass
    when = msg.photo.event_time or datetime.now(UTC)
    return when.strftime("%Y-%m-%d")


def ingest(msg: StageMessage, rt: Runtime) -> StageMessage:
    s = rt.settings
    data = download_photo(msg, rt)
    sha = hashlib.sha256(data).hexdigest()
    bucket = s.s3.artifacts_bucket
    meta_key, image_key = artifact_key(sha, "ingest.json"), artifact_key(sha, "ingested.jpg")
    existing = rt.store.head(bucket, meta_key)
    if existing is not None:
        meta = rt.store.get_json(bucket, meta_key)
    else:
        fmt, size, orientation, taken = inspect_image(data, rt)
        try:
            upright, scale = decode_upright(data, s.ingest.working_long_side, size_wh=size,
                                            orientation=orientation)
        except ValueError as exc:
            raise CorruptImageError(str(exc)) from exc
        # Re-encoding from pixels leaves every metadata segment (EXIF, GPS, XMP, MakerNote,
        # ICC, comments) behind.
        rt.store.put_bytes(bucket, image_key, _encode_jpeg(upright, s.ingest.jpeg_quality),
                           "image/jpeg")
        meta = {"sha256": sha, "format": fmt, "bytes": len(data), "stored_size": list(size),
                "orientation": orientation, "upright_size": [upright.shape[1], upright.shape[0]],
                "scale_from_original": round(scale, 6),
                "captured_date": _captured_date(taken, msg),
                "source": {"bucket": msg.photo.bucket, "key": msg.photo.key,
                           "version_id": msg.photo.version_id, "etag": msg.photo.etag}}
        rt.store.put_json(bucket, meta_key, meta)  # written last: marks the stage complete
    return msg.model_copy(update={"sha256": sha, "captured_date": meta["captured_date"]}
                          ).with_artifact("ingested", ArtifactRef(bucket=bucket, key=image_key))


def normalize(msg: StageMessage, rt: Runtime) -> StageMessage:
    sha = _sha(msg)
    bucket = rt.settings.s3.artifacts_bucket
    norm_key, q_key = artifact_key(sha, "normalized.jpg"), artifact_key(sha, "quality.json")
    if rt.store.head(bucket, q_key) is not None:
        quality = rt.store.get_json(bucket, q_key)
    else:
        image = _decode_jpeg(rt.store.get_bytes(bucket, artifact_key(sha, "ingested.jpg")))
        quality = measure_quality(image).to_json()
        rt.store.put_bytes(bucket, norm_key,
                           _encode_jpeg(normalize_lighting(image), rt.settings.ingest.jpeg_quality),
                           "image/jpeg")
        rt.store.put_json(bucket, q_key, quality)
    p = msg.photo
    route = choose_route(rules=rt.rules, store_format=p.store_format,
                         display_type=p.display_type, camera=p.camera,
                         mean_luminance=float(quality["mean_luminance"]),
                         contrast=float(quality["contrast"]))
    return msg.model_copy(update={"route": route.path, "route_reason": route.reason}
                          ).with_artifact("normalized", ArtifactRef(bucket=bucket, key=norm_key))


def detect(msg: StageMessage, rt: Runtime) -> StageMessage:
    sha = _sha(msg)
    bucket = rt.settings.s3.artifacts_bucket
    key = artifact_key(sha, "detections.json")
    route = msg.route or "light"
    detector = rt.detector(route)
    existing = rt.store.head(bucket, key)
    done = existing is not None and rt.store.get_json(bucket, key).get("model") == detector.ref
    if not done:
        image = _decode_jpeg(rt.store.get_bytes(bucket, artifact_key(sha, "normalized.jpg")))
        found = detector.detect(image, score_threshold=rt.settings.compliance.evidence_score)
        labels = detector.labels
        doc = {
            "sha256": sha, "model": detector.ref, "providers": detector.session.providers,
            "route": route, "route_reason": msg.route_reason,
            "image_size": [image.shape[1], image.shape[0]],
            "detections": [
                {"box": [round(float(v), 1) for v in b], "sku": labels[int(c)],
                 "score": round(float(sc), 4)}
                for b, sc, c in zip(found.xyxy, found.scores, found.class_ids, strict=True)],
        }
        del image
        detector.release()
        rt.store.put_json(bucket, key, doc)
    return msg.model_copy(update={"model": detector.ref}).with_artifact(
        "detections", ArtifactRef(bucket=bucket, key=key))


class PlanogramMissingError(PermanentError):
    """No planogram is stored for the photo's bay (or for the id its metadata names)."""


def load_planogram(msg: StageMessage, rt: Runtime) -> Planogram:
    """``planograms/by-id/{id}.json`` when the photo names one, else by store/aisle/bay."""
    p = msg.photo
    bucket = rt.settings.s3.config_bucket
    key = (f"planograms/by-id/{p.planogram_id}.json" if p.planogram_id
           else f"planograms/{p.store}/{p.aisle}/{p.bay}.json")
    try:
        raw = rt.store.get_bytes(bucket, key)
    except ObjectNotFoundError as exc:
        raise PlanogramMissingError(f"no planogram at s3://{bucket}/{key}") from exc
    try:
        return Planogram.model_validate_json(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                             for e in exc.errors()[:5])
        raise PlanogramError(f"invalid planogram s3://{bucket}/{key}: {problems}") from exc


def _brand(sku: str) -> str:
    known = BY_ID.get(sku)
    return known.brand if known else sku


def comply(msg: StageMessage, rt: Runtime) -> StageMessage:
    sha = _sha(msg)
    s = rt.settings
    p = msg.photo
    key = result_key(store=p.store, date=msg.captured_date or "unknown", aisle=p.aisle,
                     sha256=sha)
    if rt.store.head(s.s3.results_bucket, key) is None:
        planogram = load_planogram(msg, rt)
        det = rt.store.get_json(s.s3.artifacts_bucket, artifact_key(sha, "detections.json"))
        seen = [Detected(box=(float(b[0]), float(b[1]), float(b[2]), float(b[3])),
                         sku=str(d["sku"]), score=float(d["score"]))
                for d in det["detections"] for b in [d["box"]]]
        found, weak = split_by_score(seen, s.compliance.min_score)
        report = evaluate_shelves(planogram=planogram, detections=found, brand_of=_brand,
                                  evidence=weak)
        result = {
            "sha256": sha, "store": p.store, "aisle": p.aisle, "bay": p.bay, "camera": p.camera,
            "date": msg.captured_date,
            "captured_at": p.event_time.isoformat() if p.event_time else None,
            "store_format": p.store_format, "display_type": p.display_type,
            "source": {"bucket": p.bucket, "key": p.key, "version_id": p.version_id},
            "route": det.get("route"), "route_reason": det.get("route_reason"),
            "model": det.get("model"), "image_size": det.get("image_size"),
            "detections": len(found),
            **report.to_json(),
            "artifacts": {k: f"s3://{a.bucket}/{a.key}" for k, a in msg.artifacts.items()},
            "stage_seconds": msg.stage_seconds,
            "completed_at": datetime.now(UTC).isoformat(),
        }
        rt.store.put_json(s.s3.results_bucket, key, result)
    return msg.with_artifact("result", ArtifactRef(bucket=s.s3.results_bucket, key=key))


def _sha(msg: StageMessage) -> str:
    if not msg.sha256:
        raise PermanentError("message carries no photo hash: ingest has not run")
    return msg.sha256
