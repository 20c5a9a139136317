"""Planograms in the config bucket: by bay, or by the id a photo's metadata names."""

from __future__ import annotations

import codecs
import contextlib
import json
from typing import Any
from unicodedata import normalize

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from pipeline.core.planogram import Planogram
from pipeline.errors import ObjectNotFoundError, PlanogramError
from pipeline.messages import PhotoRef
from pipeline.storage.keys import bay_planogram_key, spellings
from pipeline.storage.s3 import ObjectStore

MAX_PLANOGRAM_BYTES = 512 * 1024



# Byte-order marks, the longest first (UTF-32 LE's begins with UTF-16 LE's).
_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
         (codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"),
         (codecs.BOM_UTF16_BE, "utf-16"))


def planogram_text(raw: bytes, where: str) -> str:
    """A planogram file's text: UTF-8, or what its byte-order mark says (Windows tools write
    UTF-8 with a BOM, PowerShell 5 UTF-16)."""
    codec = next((c for bom, c in _BOMS if raw.startswith(bom)), "utf-8")
    try:
        text = raw.decode(codec)
    except UnicodeDecodeError as exc:
        raise PlanogramError(f"{where} is not {codec.upper()} text (byte {exc.start}): save it "
                             "as UTF-8") from exc
    with contextlib.suppress(ValueError, RecursionError):  # not JSON: validation says why
        json.loads(text.lstrip("\ufeff"), object_pairs_hook=lambda pairs: _unique(pairs, where))
    return text


def _unique(pairs: list[tuple[str, Any]], where: str) -> dict[str, Any]:
    """An object whose keys are each given once: a key given twice (a merge gone wrong:
    two ``facings``, two ``positions``) would be read as its last, silently."""
    seen: dict[str, Any] = {}
    for k, v in pairs:
        if k in seen:
            raise PlanogramError(f"{where} gives {k!r} twice in one object")
        seen[k] = v
    return seen


def _problem(error: ErrorDetails) -> str:
    if error["type"] == "string_type" and error["loc"][-1:] == ("sku",):
        return "a SKU must be a JSON string: quote EAN and UPC codes (as numbers they lose " \
               "leading zeros)"
    return error["msg"]


def planogram_key(photo: PhotoRef) -> str:
    if photo.planogram_id:
        return f"planograms/by-id/{photo.planogram_id}.json"
    return bay_planogram_key(photo.store, photo.aisle, photo.bay)


def load_planogram(store: ObjectStore, bucket: str, photo: PhotoRef,
                   max_bytes: int = MAX_PLANOGRAM_BYTES) -> Planogram | None:
    """The bay's planogram; None when there is none. Raises :class:`PlanogramError` for one
    that is too large, invalid, or names another store, aisle or bay."""
    for key in spellings(planogram_key(photo)):  # a bay's file named on a Mac: decomposed
        head = store.head(bucket, key)
        if head is not None:
            break
    else:
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
    where = f"planogram s3://{bucket}/{key}"
    try:
        plan = Planogram.model_validate_json(planogram_text(raw, where))
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {_problem(e)}"
                             for e in exc.errors()[:5])
        raise PlanogramError(f"invalid {where}: {problems}") from exc
    for field in ("store", "aisle", "bay"):
        planned, actual = getattr(plan, field), getattr(photo, field)
        if planned is not None and normalize("NFC", planned) != normalize("NFC", actual):
            raise PlanogramError(f"planogram s3://{bucket}/{key} is for {field} {planned!r}, "
                                 f"the photo is from {actual!r}")
    return plan
