"""Planograms in the config bucket: by bay, or by the id a photo's metadata names."""

from __future__ import annotations

from pydantic import ValidationError

from pipeline.core.planogram import Planogram
from pipeline.errors import ObjectNotFoundError, PlanogramError
from pipeline.messages import PhotoRef
from pipeline.storage.s3 import ObjectStore

MAX_PLANOGRAM_BYTES = 512 * 1024



def planogram_key(photo: PhotoRef) -> str:
    if photo.planogram_id:
        return f"planograms/by-id/{photo.planogram_id}.json"
    return f"planograms/{photo.store}/{photo.aisle}/{photo.bay}.json"


def load_planogram(store: ObjectStore, bucket: str, photo: PhotoRef,
                   max_bytes: int = MAX_PLANOGRAM_BYTES) -> Planogram | None:
    """The bay's planogram; None when there is none. Raises :class:`PlanogramError` for one
    that is too large, invalid, or names another store, aisle or bay."""
    key = planogram_key(photo)
    head = store.head(bucket, key)
    if head is None:
        return None
    size = int(head.get("ContentLength", 0))
    if size > max_bytes:
        raise PlanogramError(f"planogram s3://{bucket}/{key} is {size} bytes; the cap is "
                             f"{max_bytes}")
    try:
        raw = store.get_bytes(bucket, key)
    except ObjectNotFoundError:
        return None
    if len(raw) > max_bytes:
        raise PlanogramError(f"planogram s3://{bucket}/{key} exceeds {max_bytes} bytes")
    try:
        plan = Planogram.model_validate_json(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                             for e in exc.errors()[:5])
        raise PlanogramError(f"invalid planogram s3://{bucket}/{key}: {problems}") from exc
    for field in ("store", "aisle", "bay"):
        planned, actual = getattr(plan, field), getattr(photo, field)
        if planned is not None and planned != actual:
            raise PlanogramError(f"planogram s3://{bucket}/{key} is for {field} {planned!r}, "
                                 f"the photo is from {actual!r}")
    return plan
