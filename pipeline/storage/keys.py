"""The key layout, pure: where every artifact, result and dead letter lives."""

from __future__ import annotations

import hashlib
import itertools
import unicodedata
from dataclasses import dataclass
from urllib.parse import quote, unquote

from pipeline.errors import InvalidKeyError

MAX_S3_KEY_BYTES = 1024  # S3 object key maximum


RAW_LAYOUT = "{store}/{aisle}/{bay}/{camera}/{file}"  # under the raw prefix


@dataclass(frozen=True)
class CameraKey:
    """Fields of a raw key ``raw/{store}/{aisle}/{bay}/{camera}/{file}``; the file may lie
    in folders of its own under the camera's (``cam-3/2025-06-02/0003.jpg``)."""

    store: str
    aisle: str
    bay: str
    camera: str
    filename: str


# Folders no camera writes, which a URL or a path would read as another folder.
DOT_SEGMENTS = frozenset({".", ".."})


def parse_raw_key(key: str, prefix: str = "raw/") -> CameraKey | None:
    """Camera fields from a raw key; None when the key does not follow the layout (fewer
    than five segments after the prefix, an empty store, aisle, bay or camera, no file
    name, or a folder named ``.`` or ``..``). Empty folders below the camera's
    (``2025-06-02//f.jpg``, from a sync tool) are the file's path, which nothing but the
    upload's own key uses."""
    if not key.startswith(prefix):
        return None
    parts = key[len(prefix):].split("/")
    if len(parts) < 5 or not all(parts[:4]) or not parts[-1] or DOT_SEGMENTS & set(parts):
        return None
    # One store, aisle, bay or camera however its name's accents were spelled in Unicode:
    # a Mac's files come decomposed (e + U+0301), most others composed (U+00E9). Composed
    # (NFC) is the identity the planogram, the result's partitions and the rollups use.
    store, aisle, bay, camera = (unicodedata.normalize("NFC", p) for p in parts[:4])
    return CameraKey(store, aisle, bay, camera, "/".join(parts[4:]))


def spellings(key: str) -> list[str]:
    """``key`` as an uploader's tools may have written it, the order to look for it in:
    composed (NFC) first, decomposed (NFD) last, and between them each mix of the two by
    folder (a store and aisle typed in a shell, a bay file named on a Mac). One spelling
    for a key with no accents."""
    forms = [list(dict.fromkeys(unicodedata.normalize(f, part) for f in ("NFC", "NFD")))
             for part in key.split("/")]
    return ["/".join(parts) for parts in itertools.product(*forms)]


# What a phone's camera roll or a sync tool copies beside the photos: videos (a Live Photo
# is a HEIC and a .MOV), edit and metadata sidecars. Never a photo, whatever it holds.
NOT_PHOTOS = frozenset({".mov", ".mp4", ".m4v", ".3gp", ".aae", ".xmp", ".thm", ".json",
                        ".txt"})


def is_upload(key: str, prefix: str = "raw/") -> bool:
    """Whether an object is an upload the pipeline takes: anything under ``prefix`` whatever
    its name says it is (ingest reads its bytes and dead-letters what it cannot use, with
    why), except folder markers (keys ending in ``/``), hidden files (``.DS_Store``, macOS
    ``._`` resource forks) and the videos and sidecars of :data:`NOT_PHOTOS`."""
    name = key.rsplit("/", 1)[-1]
    suffix = name[name.rfind("."):].lower() if "." in name else ""
    return (key.startswith(prefix) and not key.endswith("/") and not name.startswith(".")
            and suffix not in NOT_PHOTOS)


def check_layout(key: str, prefix: str = "raw/") -> CameraKey:
    """The camera fields of an upload's key; :class:`InvalidKeyError` saying the layout
    when it does not follow it (its store, aisle and bay would be unknown: no planogram, no
    rollup could ever take it)."""
    cam = parse_raw_key(key, prefix)
    if cam is None:
        raise InvalidKeyError(f"key does not follow {prefix}{RAW_LAYOUT}: store, aisle, bay "
                              "and camera cannot be told; upload it under that layout")
    return cam


def partition_value(value: str) -> str:
    """A value safe inside a Hive partition path segment (``store=...``), encoded
    losslessly: letters, digits, ``.``, ``_``, ``-`` as they are, every other byte of its
    UTF-8 as ``%XX``, so two different stores never share a partition."""
    if not value:
        raise ValueError("a partition value cannot be empty")
    return quote(value.encode("utf-8", "surrogatepass"), safe="").replace("~", "%7E")


def partition_decode(value: str) -> str:
    return unquote(value, errors="surrogatepass")


def artifact_key(sha256: str, name: str) -> str:
    """``{sha[:2]}/{sha}/{name}``: artifacts spread over prefixes by their photo's hash."""
    if len(sha256) != 64 or not all(c in "0123456789abcdef" for c in sha256):
        raise ValueError(f"not a SHA-256 hex digest: {sha256!r}")
    return f"{sha256[:2]}/{sha256}/{name}"


def upload_id(bucket: str, key: str, version: str | None) -> str:
    """One upload: a bucket, key and object version (versionId, else ETag)."""
    raw = f"{bucket}\n{key}\n{version or ''}".encode("utf-8", "surrogatepass")
    return hashlib.sha256(raw).hexdigest()[:32]


def result_key(*, store: str, date: str, aisle: str, upload_id: str) -> str:
    """One result per upload (bucket, key, version): the same bytes uploaded to two bays are
    two results."""
    return (f"compliance/store={partition_value(store)}/date={date}/"
            f"aisle={partition_value(aisle)}/{upload_id}.json")


def bay_planogram_key(store: str, aisle: str, bay: str) -> str:
    """Where a bay's planogram is kept in the config bucket."""
    return f"planograms/{store}/{aisle}/{bay}.json"


def check_result_room(cam: CameraKey) -> None:
    """Refuse, before any work, an upload whose store, aisle or bay would make a key it ends
    under longer than S3 allows: its result (partition values are percent-encoded: up to 9
    bytes a letter), or its place among the uploads waiting for the bay's planogram."""
    longest = {
        "result": result_key(store=cam.store, date="0000-00-00", aisle=cam.aisle,
                             upload_id="0" * 32),
        "waiting": pending_key(bay_planogram_key(cam.store, cam.aisle, cam.bay), "0" * 32)}
    for what, key in longest.items():
        size = len(key.encode("utf-8", "surrogatepass"))
        if size > MAX_S3_KEY_BYTES:
            raise InvalidKeyError(f"store, aisle and bay of this key would make its {what} key "
                                  f"{size} bytes long (S3 allows {MAX_S3_KEY_BYTES})")


def outcome_key(upload_id: str) -> str:
    """Where an upload's end is recorded: its result or its dead letter."""
    return f"outcomes/{upload_id}.json"


def ended_key(upload_id: str) -> str:
    """Redis key that says an upload has ended (its outcome is in S3): reconciliation asks
    Redis first and S3 only for uploads Redis does not know as ended."""
    return f"shelf:ended:{upload_id}"


PENDING_PREFIX = "pending/planograms/"
LEGACY_PENDING_PREFIX = "pending/planogram/"  # flat, before uploads were kept by planogram


def pending_key(planogram_key: str, upload_id: str) -> str:
    """An upload whose bay had no usable planogram, kept to be recomputed when one arrives:
    under the planogram's own key (``planograms/{store}/{aisle}/{bay}.json`` or
    ``planograms/by-id/{id}.json``), so that a bay still waiting costs a listing, not a
    read of each of its uploads."""
    if not planogram_key.startswith("planograms/") or not planogram_key.endswith(".json"):
        raise ValueError(f"not a planogram key: {planogram_key!r}")
    return f"pending/{planogram_key.removesuffix('.json')}/{upload_id}.json"


def pending_planogram(key: str) -> str:
    """The planogram key a pending upload's key waits for (see :func:`pending_key`)."""
    if not key.startswith(PENDING_PREFIX):
        raise ValueError(f"not a pending upload's key: {key!r}")
    return key.removeprefix("pending/").rsplit("/", 1)[0] + ".json"


def dead_letter_key(letter_id: str) -> str:
    return f"dead-letter/{letter_id}.json"


def claim_key(bucket: str, key: str, version: str) -> str:
    """Redis key marking one S3 object version as enqueued."""
    return f"shelf:seen:{quote(bucket, safe='')}/{quote(key, safe='')}@{quote(version, safe='')}"


def inflight_key(seen_key: str) -> str:
    """Redis key of a listener's short claim while it enqueues that object version."""
    return "shelf:inflight:" + seen_key.removeprefix("shelf:seen:")
