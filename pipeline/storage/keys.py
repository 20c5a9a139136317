"""The key layout, pure: where every artifact, result and dead letter lives."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class CameraKey:
    """Fields of a raw key ``raw/{store}/{aisle}/{bay}/{camera}/{file}``."""

    store: str
    aisle: str
    bay: str
    camera: str
    filename: str


def parse_raw_key(key: str, prefix: str = "raw/") -> CameraKey | None:
    """Camera fields from a raw key; None when the key does not follow the layout."""
    if not key.startswith(prefix):
        return None
    parts = key[len(prefix):].split("/")
    if len(parts) != 5 or not all(parts):
        return None
    return CameraKey(*parts)


def partition_value(value: str) -> str:
    """A value safe inside a Hive partition path segment (``store=...``)."""
    return _SAFE.sub("_", value).strip("_") or "unknown"


def artifact_key(sha256: str, name: str) -> str:
    """``{sha[:2]}/{sha}/{name}``: artifacts spread over prefixes by their photo's hash."""
    if len(sha256) != 64 or not all(c in "0123456789abcdef" for c in sha256):
        raise ValueError(f"not a SHA-256 hex digest: {sha256!r}")
    return f"{sha256[:2]}/{sha256}/{name}"


def result_key(*, store: str, date: str, aisle: str, sha256: str) -> str:
    return (f"compliance/store={partition_value(store)}/date={date}/"
            f"aisle={partition_value(aisle)}/{sha256}.json")


def dead_letter_key(letter_id: str) -> str:
    return f"dead-letter/{letter_id}.json"


def claim_key(bucket: str, key: str, version: str) -> str:
    """Redis key of the listener's claim on one S3 object version."""
    return f"shelf:seen:{quote(bucket, safe='')}/{quote(key, safe='')}@{version}"
