"""Download through a pre-signed URL with a size cap and a timeout, and only such a URL.

Stage messages arrive through the broker, so a URL in one is checked before it is fetched:
http(s) to the configured S3 endpoint (or the region's AWS S3 hosts), for exactly the
bucket and key the message names, carrying a SigV4 signature; redirects are not followed.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import Message
from email.utils import parsedate_to_datetime
from typing import Literal
from urllib.parse import parse_qs, quote, unquote, urlsplit

from pipeline.errors import (
    ForgedUrlError,
    PermanentError,
    PipelineError,
    TooLargeError,
    TransientError,
    UrlRejectedError,
)

CHUNK = 1 << 20
MIB = 1 << 20
META_PREFIX = "x-amz-meta-"
# A single-part upload's ETag is the MD5 of its bytes; a multipart upload's the MD5 of its
# parts' MD5s and their count (``md5-of-md5s-N``), which the bytes check once the part size
# is known. Neither under KMS encryption (or a customer's key).
_MD5_ETAG = re.compile(r"[0-9a-fA-F]{32}")
_PARTS_ETAG = re.compile(r"[0-9a-fA-F]{32}-[1-9][0-9]{0,4}")
_ETAG_NOT_MD5_SSE = ("aws:kms", "aws:kms:dsse")
# The part sizes of the common uploaders, the most used first: the AWS CLI, boto3 and the
# Java v2 SDK 8 MiB; the Go, JavaScript and Java v1 SDKs and rclone 5 MiB; minio-go 16;
# s3cmd 15; the rest the sizes people set.
_PART_SIZES_MIB = (8, 5, 16, 15, 10, 32, 50, 64, 100, 128, 256, 512)

EtagKind = Literal["md5", "parts"]

log = logging.getLogger(__name__)
# Stores (scheme, host, bucket) whose ETags of a kind turned out not to follow from the
# bytes: single-part ETags that are no MD5 (an S3-compatible store that encrypts, or
# computes them its own way), multipart ones of parts of no usual size. Not checked there
# again, rather than read twice for every photo.
_UNCHECKABLE: set[tuple[EtagKind, tuple[str, str, str]]] = set()


def bare_etag(etag: str | None) -> str | None:
    """An ETag without its quotes and its weak mark (``W/"..."``, which a proxy that
    compresses or transforms a response sets); None when absent."""
    return (etag or "").removeprefix("W/").strip('"') or None


def parts_etag(data: bytes, part_size: int) -> str:
    """The ETag S3 gives ``data`` uploaded in parts of ``part_size`` bytes (the last one
    shorter): the MD5 of the parts' MD5s, a dash, the number of parts."""
    view = memoryview(data)
    digests = [hashlib.md5(view[at:at + part_size], usedforsecurity=False).digest()
               for at in range(0, len(data), part_size)] or \
        [hashlib.md5(b"", usedforsecurity=False).digest()]
    return f"{hashlib.md5(b''.join(digests), usedforsecurity=False).hexdigest()}-{len(digests)}"


def part_sizes(length: int, parts: int) -> list[int]:
    """The part sizes an uploader may have cut ``length`` bytes into ``parts`` with, the
    most likely first: the usual fixed sizes that give that many parts, then an even split
    (to the byte, rounded up to a MiB, to a million bytes)."""
    if parts == 1:
        return [max(length, 1)]
    even = -(-length // parts)
    sizes = [m * MIB for m in _PART_SIZES_MIB] + [even, -(-even // MIB) * MIB,
                                                   -(-even // 1_000_000) * 1_000_000]
    found: list[int] = []
    for size in sizes:
        if size > 0 and -(-length // size) == parts and size not in found:
            found.append(size)
    return found


@dataclass(frozen=True)
class Download:
    data: bytes
    metadata: dict[str, str]  # the object's user metadata: lower-case names, no prefix
    etag: str | None = None  # as S3 sent it, without quotes
    # When this version was written (Last-Modified); None when absent or unreadable.
    last_modified: datetime | None = None
    # How the ETag follows from the bytes: "md5" (a single-part upload), "parts" (a
    # multipart one); None where it does not (KMS- or customer-key encrypted) or is absent.
    etag_kind: EtagKind | None = None

    def damaged(self, part_size: int | None = None) -> str | None:
        """Why these bytes are not the object's (their MD5, or that of their parts at every
        usual part size, or at ``part_size`` alone, the first part's as S3 gives it, is
        not its ETag); None when they are, or when nothing says what they should be."""
        if self.etag_kind is None or self.etag is None:
            return None
        etag = self.etag.lower()
        if self.etag_kind == "md5":
            md5 = hashlib.md5(self.data, usedforsecurity=False).hexdigest()
            return None if md5 == etag else f"MD5 {md5} of the bytes is not the ETag {etag}"
        parts = int(etag.rsplit("-", 1)[1])
        sizes = [part_size] if part_size else part_sizes(len(self.data), parts)
        if any(parts_etag(self.data, size) == etag for size in sizes):
            return None
        return f"no part size gives the bytes the multipart ETag {etag} (tried " \
            f"{', '.join(str(size) for size in sizes) or 'none'})"

    def check_version(self, *, version_id: str | None, etag: str | None) -> None:
        """Refuse bytes of another version than the event announced. A versioned bucket's
        URL names the version; an unversioned one is overwritten in place, and bytes of a
        newer upload filed under the older one's id would be counted twice (the newer event
        brings them again)."""
        announced = bare_etag(etag) or ""
        if version_id is None and announced and self.etag and announced != self.etag:
            raise PermanentError(f"the object was replaced since its event (ETag {self.etag}, "
                                 f"not {announced}): its newer upload carries it")


def check_presigned(url: str, *, endpoint_url: str | None, region: str, bucket: str,
                    key: str, version_id: str | None = None) -> str:
    """``url`` when it is a pre-signed GET of ``bucket``/``key`` (of that object version,
    given ``version_id``) on the configured S3 endpoint; :class:`ForgedUrlError` otherwise."""
    try:
        u = urlsplit(url)
    except ValueError as exc:
        raise ForgedUrlError(f"unparseable URL: {exc}") from exc
    if u.scheme not in ("http", "https"):
        raise ForgedUrlError(f"URL scheme {u.scheme!r} is not http(s)")
    if u.username or u.password:
        raise ForgedUrlError("URL carries credentials")
    path = unquote(u.path)
    if endpoint_url:
        e = urlsplit(endpoint_url)
        allowed = {(e.scheme, e.netloc.lower())}
        style_ok = path == f"/{bucket}/{key}"
    else:
        hosts = {f"s3.{region}.amazonaws.com", "s3.amazonaws.com"}
        virtual = {f"{bucket}.{h}" for h in hosts}
        allowed = {("https", h) for h in hosts | virtual}
        style_ok = (path == f"/{bucket}/{key}" and u.netloc.lower() in hosts) or (
            path == f"/{key}" and u.netloc.lower() in virtual)
    if (u.scheme, u.netloc.lower()) not in allowed:
        raise ForgedUrlError(f"URL host {u.netloc!r} is not the configured S3 endpoint")
    if not style_ok:
        raise ForgedUrlError(f"URL path does not name s3://{bucket}/{quote(key)}")
    query = parse_qs(u.query, keep_blank_values=True)
    if not query.get("X-Amz-Signature", query.get("Signature", [""]))[0]:
        raise ForgedUrlError("URL is not pre-signed")
    if version_id is not None and query.get("versionId") != [version_id]:
        # another version's bytes would be filed under this upload's id
        raise ForgedUrlError(f"URL does not name the upload's version {version_id!r}")
    return url


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Redirects are not followed (a URL that leads elsewhere is no pre-signed GET of the
    photo). S3's temporary ones (307 while a new bucket's name spreads through DNS) are a
    refusal of this URL: one minted here is tried, and the fault may pass. A permanent one
    says the endpoint or region configured is not the bucket's."""

    def redirect_request(self, req: urllib.request.Request, fp: object, code: int, msg: str,
                         headers: object, newurl: str) -> None:
        if code in (301, 308):
            raise PermanentError(f"S3 moved the photo's URL for good (HTTP {code}, to "
                                 f"{newurl[:100]}): the configured endpoint or region is not "
                                 "the bucket's")
        raise UrlRejectedError(f"pre-signed URL redirected (HTTP {code}) to {newurl[:100]}: "
                               "not followed")


_OPENER = urllib.request.build_opener(_NoRedirect, urllib.request.ProxyHandler({}))


def _content_length(value: str | None) -> int | None:
    """The declared length, or None when absent; a malformed one is the server's fault."""
    if value is None:
        return None
    try:
        declared = int(value)
    except ValueError:
        raise TransientError(f"download failed: Content-Length {value[:40]!r}") from None
    if declared < 0:
        raise TransientError(f"download failed: Content-Length {declared}")
    return declared


def _s3_code(exc: urllib.error.HTTPError) -> str:
    """`` (Code)`` from the head of an S3 error body; empty when it has none."""
    try:
        head = exc.read(2048).decode("utf-8", "replace")
    except (OSError, http.client.HTTPException):
        return ""
    found = re.search(r"<Code>([A-Za-z0-9.]{1,64})</Code>", head)
    return f" ({found.group(1)})" if found else ""


def _http_date(value: str | None) -> datetime | None:
    """An HTTP date header as a UTC time; None when absent or not a date."""
    if not value:
        return None
    try:
        return parsedate_to_datetime(value).astimezone(UTC)
    except (TypeError, ValueError):
        return None


def _store_of(url: str) -> tuple[str, str, str]:
    u = urlsplit(url)
    return u.scheme, u.netloc.lower(), u.path.lstrip("/").split("/", 1)[0]


def fetch(url: str, *, max_bytes: int, timeout_s: float, deadline_s: float | None = None,
          first_part_size: Callable[[], int | None] | None = None) -> Download:
    """GET ``url``; at most ``max_bytes`` are read, whatever Content-Length claims.
    ``timeout_s`` bounds each wait on the socket; ``deadline_s`` the whole download: a
    server that trickles bytes is a transient fault, well before the stage's time limit
    would end the photo as a permanent one.

    Bytes damaged on the way (a proxy or a link that flips them: plain HTTP has nothing
    that would notice) are a transient fault, told by the ETag where it is the bytes' MD5:
    hashed, decoded or refused as corrupt, they would be another photo, or a good one lost
    to the dead letters. Where the bytes do not match it, they are read again: the same
    bytes twice mean the store's ETags of that kind do not follow from the bytes (not
    checked there again); a second read that matches is the photo. A multipart upload's
    ETag checks the bytes at the part size its uploader used: one of the usual ones, else
    the one ``first_part_size`` asks S3 for."""
    started = time.monotonic()
    got = _fetch_once(url, max_bytes=max_bytes, timeout_s=timeout_s, deadline_s=deadline_s)
    store = _store_of(url)
    if got.etag_kind is None or (got.etag_kind, store) in _UNCHECKABLE:
        return got
    why = got.damaged()
    if why is None:
        return got
    part_size = _ask(first_part_size) if got.etag_kind == "parts" else None
    if part_size is not None:
        why = got.damaged(part_size)
        if why is None:
            return got
    left = None if deadline_s is None else deadline_s - (time.monotonic() - started)
    if left is not None and left <= 0:  # the deadline is the whole download's, both reads'
        raise TransientError(f"download damaged on the way ({why}) and no time left within "
                             f"its {deadline_s:g} s to read it again")
    again = _fetch_once(url, max_bytes=max_bytes, timeout_s=timeout_s, deadline_s=left)
    if again.damaged(part_size) is None:
        log.warning("download from %s damaged on the way (%s): read again", "/".join(store),
                    why)
        return again
    if again.data == got.data and again.etag_kind == got.etag_kind:
        log.warning("the %s ETags of %s do not follow from the objects' bytes (%s): such "
                    "downloads from it are not checked against them",
                    "single-part" if got.etag_kind == "md5" else "multipart", "/".join(store),
                    why)
        _UNCHECKABLE.add((got.etag_kind, store))
        return again
    raise TransientError(f"download damaged on the way: {why}, and a second read differs")


def _ask(first_part_size: Callable[[], int | None] | None) -> int | None:
    """The first part's size as S3 gives it; None when nothing can ask or S3 does not say
    (the check then goes on without it)."""
    if first_part_size is None:
        return None
    try:
        return first_part_size()
    except PipelineError as exc:
        log.warning("the size of a multipart photo's first part is not known (%s)", exc)
        return None


def _etag_kind(etag: str | None, headers: Message) -> EtagKind | None:
    if etag is None or headers.get("x-amz-server-side-encryption") in _ETAG_NOT_MD5_SSE or \
            headers.get("x-amz-server-side-encryption-customer-algorithm"):
        return None
    if _MD5_ETAG.fullmatch(etag):
        return "md5"
    return "parts" if _PARTS_ETAG.fullmatch(etag) else None


def _fetch_once(url: str, *, max_bytes: int, timeout_s: float,
                deadline_s: float | None) -> Download:
    start = time.monotonic()
    try:
        with _OPENER.open(url, timeout=timeout_s) as resp:
            declared = _content_length(resp.headers.get("Content-Length"))
            if declared is not None and declared > max_bytes:
                raise TooLargeError(f"object is {declared} bytes, cap is {max_bytes}")
            chunks, total = [], 0
            while True:
                chunk = resp.read1(CHUNK)  # what one read of the socket gives
                if not chunk:
                    break
                if deadline_s is not None and time.monotonic() - start > deadline_s:
                    raise TransientError(f"download too slow: {total + len(chunk)} bytes in "
                                         f"{deadline_s:g} s")
                total += len(chunk)
                if total > max_bytes:
                    raise TooLargeError(f"object exceeds the {max_bytes}-byte cap")
                chunks.append(chunk)
            if declared is not None and total != declared:
                # The connection closed early (a proxy, a reset): the photo is not what it
                # is, and hashing or refusing it as truncated would be wrong. Fetch again.
                raise TransientError(f"download cut short: {total} of {declared} bytes")
            metadata = {k.lower().removeprefix(META_PREFIX): v for k, v in resp.headers.items()
                        if k.lower().startswith(META_PREFIX)}
            etag = bare_etag(resp.headers.get("ETag"))
            return Download(b"".join(chunks), metadata, etag,
                            _http_date(resp.headers.get("Last-Modified")),
                            _etag_kind(etag, resp.headers))
    except urllib.error.HTTPError as exc:
        if exc.code in (400, 401, 403):
            # 403: expired or badly signed; 400: signed with a session token that expired
            # (ExpiredToken) or is unknown. A URL minted now, with fresh credentials, is
            # what fixes either.
            raise UrlRejectedError(f"pre-signed URL refused: HTTP {exc.code}"
                                   f"{_s3_code(exc)}") from exc
        if exc.code == 404:
            raise PermanentError("photo no longer exists (HTTP 404)") from exc
        if exc.code == 429 or exc.code >= 500:
            raise TransientError(f"download failed: HTTP {exc.code}") from exc
        raise PermanentError(f"download failed: HTTP {exc.code}") from exc
    except (urllib.error.URLError, http.client.HTTPException, TimeoutError, ConnectionError,
            OSError) as exc:
        raise TransientError(f"download failed: {exc}") from exc
