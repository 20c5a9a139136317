"""S3 adapter: boto3 inside, the pipeline's errors outside."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ParamValidationError,
    ReadTimeoutError,
)

from pipeline.errors import ObjectNotFoundError, PermanentError, TransientError
from pipeline.settings import AwsSettings
from pipeline.storage.presign import SigningKeys, presign_get_url

_TRANSIENT_CODES = {"Throttling", "ThrottlingException", "SlowDown", "RequestTimeout",
                    "RequestTimeTooSkewed", "InternalError", "ServiceUnavailable",
                    "RequestLimitExceeded", "503", "500", "502", "504",
                    # Credentials that expired mid-call (the next call refreshes them), and
                    # a KMS key that is throttled or briefly unusable.
                    "ExpiredToken", "ExpiredTokenException", "RequestExpired",
                    "KMS.ThrottlingException", "KMS.KMSInvalidStateException",
                    "KMS.DisabledException", "KMS.InternalException", "NoSuchBucket",
                    # The body S3 received is not the one sent (its checksum or MD5 does not
                    # match, or it ended early): damaged or cut on the way; sent again whole.
                    "BadDigest", "XAmzContentChecksumMismatch", "IncompleteBody"}
# A bucket that is not there is no missing object: read as "no such key", a missing config
# bucket would silently mean an empty catalog and no planograms. It is waited for (a deploy
# that creates it after the workers), and retried, like S3 away.
_NOT_FOUND_CODES = {"NoSuchKey", "404", "NotFound"}
T = TypeVar("T")  # what read_listed's reader gives

SQS_READ_TIMEOUT_S = 30.0  # above the longest long poll (20 s)


def make_client(aws: AwsSettings, service: str) -> Any:
    """A boto3 client for ``service`` with bounded timeouts and standard retries: two
    attempts in all, each read waiting ``read_timeout_s`` at most, so one call to an S3 that
    has stopped answering costs half a minute at most, and a stage's few calls fit inside its
    time limit (the stage's own retries, with backoff, take over from there). SQS's long
    polls hold a request open for 20 s: its reads wait longer."""
    read_timeout = max(aws.read_timeout_s, SQS_READ_TIMEOUT_S) if service == "sqs" \
        else aws.read_timeout_s
    cfg = Config(
        region_name=aws.region,
        connect_timeout=aws.connect_timeout_s,
        read_timeout=read_timeout,
        retries={"mode": "standard", "total_max_attempts": 2},
        s3={"addressing_style": "path"},
        signature_version="s3v4",
    )
    return boto3.client(service, endpoint_url=aws.endpoint_url,
                        aws_access_key_id=aws.access_key_id,
                        aws_secret_access_key=aws.secret_access_key, config=cfg)


def translate(exc: Exception, what: str) -> Exception:
    """A botocore error as a ``TransientError`` or a ``PermanentError``."""
    if isinstance(exc, (EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError,
                        ConnectionClosedError)):
        return TransientError(f"{what}: {exc}")
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        # (an error page that is not S3's XML, from a proxy, parses as no code: its status
        # says what happened)
        code = str(err.get("Code") or status or "")
        if code in _NOT_FOUND_CODES or (status == 404 and code not in _TRANSIENT_CODES):
            return ObjectNotFoundError(f"{what}: {code or status} not found")
        if code in _TRANSIENT_CODES or status >= 500 or status == 429:
            return TransientError(f"{what}: {code} {err.get('Message', '')}".strip())
        return PermanentError(f"{what}: {code} {err.get('Message', '')}".strip())
    if isinstance(exc, ParamValidationError):  # (a key or bucket S3 cannot take: no retry
        return PermanentError(f"{what}: {exc}")  # makes it one)
    if isinstance(exc, BotoCoreError):
        return TransientError(f"{what}: {exc}")
    return exc


class ObjectStore:
    """Small, typed surface over an S3 client."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self._buckets: set[str] = set()  # known to exist

    def _signing(self) -> tuple[str, str, Any] | None:
        """What :func:`presign_get_url` needs, when this client signs as it does (SigV4,
        path-style, with credentials); None sends pre-signing through botocore."""
        meta = getattr(self.client, "meta", None)
        credentials = getattr(getattr(self.client, "_request_signer", None), "_credentials",
                              None)
        if meta is None or credentials is None or not meta.region_name:
            return None
        cfg = meta.config
        if cfg.signature_version != "s3v4" or (cfg.s3 or {}).get("addressing_style") != "path":
            return None
        return str(meta.endpoint_url), str(meta.region_name), credentials

    def get_bytes(self, bucket: str, key: str) -> bytes:
        try:
            body = self.client.get_object(Bucket=bucket, Key=key)["Body"]
            return bytes(body.read())
        except (ClientError, BotoCoreError) as exc:
            raise translate(exc, f"get s3://{bucket}/{key}") from exc

    def get_json(self, bucket: str, key: str) -> Any:
        return json.loads(self.get_bytes(bucket, key))

    def put_bytes(self, bucket: str, key: str, data: bytes, content_type: str,
                  metadata: dict[str, str] | None = None) -> None:
        try:
            self.client.put_object(Bucket=bucket, Key=key, Body=data, ContentType=content_type,
                                   Metadata=metadata or {})
        except (ClientError, BotoCoreError) as exc:
            raise translate(exc, f"put s3://{bucket}/{key}") from exc

    def put_json(self, bucket: str, key: str, obj: Any) -> None:
        data = json.dumps(obj, indent=1, sort_keys=True, default=str).encode()
        self.put_bytes(bucket, key, data, "application/json")

    def head(self, bucket: str, key: str, version_id: str | None = None
             ) -> dict[str, Any] | None:
        """The object's HEAD response (of ``version_id`` when given), or None when it does
        not exist."""
        try:
            return dict(self.client.head_object(**_object(bucket, key, version_id)))
        except (ClientError, BotoCoreError) as exc:
            err = translate(exc, f"head s3://{bucket}/{key}")
            if isinstance(err, ObjectNotFoundError):
                self._check_bucket(bucket)
                return None
            raise err from exc

    def _check_bucket(self, bucket: str) -> None:
        """A HEAD's 404 has no body to say whether the object or its bucket is missing: a
        missing config bucket would read as no planogram and an empty catalog. The bucket is
        asked after once (a 403, no right to list it, is taken as there)."""
        if bucket in self._buckets:
            return
        try:
            self.client.head_bucket(Bucket=bucket)
        except (ClientError, BotoCoreError) as exc:
            err = translate(exc, f"head s3://{bucket}")
            if isinstance(err, ObjectNotFoundError):
                raise TransientError(f"s3://{bucket}: no such bucket (yet)") from exc
            if not isinstance(err, PermanentError):
                raise err from exc
        self._buckets.add(bucket)

    def exists(self, bucket: str, key: str) -> bool:
        return self.head(bucket, key) is not None

    def first_part_size(self, bucket: str, key: str, version_id: str | None = None
                        ) -> int | None:
        """The size of a multipart upload's first part (S3 answers a HEAD of part 1 with
        its length), from which its ETag can be worked out of its bytes; None when the
        object was uploaded whole or S3 does not say."""
        try:
            head = self.client.head_object(**_object(bucket, key, version_id), PartNumber=1)
        except (ClientError, BotoCoreError) as exc:
            raise translate(exc, f"head part 1 of s3://{bucket}/{key}") from exc
        size = head.get("ContentLength")
        return int(size) if head.get("PartsCount") and isinstance(size, int) else None

    def presign_get(self, bucket: str, key: str, expiry_s: int,
                    version_id: str | None = None) -> str:
        fast = self._signing()
        if fast is not None:
            endpoint_url, region, credentials = fast
            try:
                frozen = credentials.get_frozen_credentials()  # refreshed when they expire
            except (ClientError, BotoCoreError) as exc:  # the refresh failed (STS away)
                raise translate(exc, f"presign s3://{bucket}/{key}") from exc
            return presign_get_url(
                endpoint_url=endpoint_url, region=region, bucket=bucket, key=key,
                keys=SigningKeys(frozen.access_key, frozen.secret_key, frozen.token),
                expiry_s=expiry_s, now=datetime.now(UTC), version_id=version_id)
        try:
            return str(self.client.generate_presigned_url(
                "get_object", Params=_object(bucket, key, version_id), ExpiresIn=expiry_s))
        except (ClientError, BotoCoreError) as exc:
            raise translate(exc, f"presign s3://{bucket}/{key}") from exc

    def list_keys(self, bucket: str, prefix: str) -> Iterator[str]:
        return (key for key, _ in self.list_objects(bucket, prefix))

    def read_listed(self, bucket: str, prefix: str, read: Callable[[str], T], *,
                    skip: Callable[[str], bool] | None = None, listings: int = 3
                    ) -> Iterator[tuple[str, T]]:
        """``(key, read(key))`` of every object under ``prefix`` (but those ``skip`` names),
        each read once, as it is listed.

        A listed key S3 holds nothing for (``read`` raises ``ObjectNotFoundError``) was
        deleted since the listing, or was damaged on its way: a listing carries no checksum,
        and a bit flipped in a key names nothing while the object it stood for goes unread.
        So the prefix is listed again, for the keys not read yet; a key a newer listing no
        longer names is gone. After ``listings`` listings that each named an object S3 does
        not hold: ``TransientError``, the caller's next run lists anew."""
        done: set[str] = set()
        missing: list[str] = []
        for _ in range(listings):
            missing = []
            for key in self.list_keys(bucket, prefix):
                if key in done or (skip is not None and skip(key)):
                    continue
                try:
                    value = read(key)
                except ObjectNotFoundError:
                    missing.append(key)
                    continue
                done.add(key)
                yield key, value
            if not missing:
                return
        raise TransientError(f"list s3://{bucket}/{prefix}: {listings} listings in a row named "
                             f"objects S3 does not hold ({missing[0]!r} among {len(missing)})")

    def list_objects(self, bucket: str, prefix: str) -> Iterator[tuple[str, str]]:
        """(key, ETag) of every object under ``prefix``."""
        what = f"list s3://{bucket}/{prefix}"
        with _listing(what):
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket,
                                                                          Prefix=prefix)
            for page in _no_cycles(pages, what):
                for obj in page.get("Contents", []):
                    yield _under(prefix, str(obj["Key"])), str(obj.get("ETag", ""))

    def list_prefixes(self, bucket: str, prefix: str) -> Iterator[str]:
        """The "folders" right under ``prefix`` (which ends with ``/``), each ending with ``/``."""
        what = f"list s3://{bucket}/{prefix}"
        with _listing(what):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix=prefix, Delimiter="/")
            for page in _no_cycles(pages, what):
                for common in page.get("CommonPrefixes", []):
                    yield _under(prefix, str(common["Prefix"]))

    def list_versions(self, bucket: str, prefix: str) -> Iterator[dict[str, Any]]:
        """Every object version under ``prefix`` (delete markers left out): Key, VersionId,
        ETag, Size, LastModified, and ``Deleted`` when the key's latest entry is a delete
        marker (the object was deleted; its versions stay); an unversioned bucket gives its
        objects."""
        what = f"list versions s3://{bucket}/{prefix}"
        deleted: set[str] = set()  # a key's entries run newest first, across pages too
        with _listing(what):
            pages = self.client.get_paginator("list_object_versions").paginate(
                Bucket=bucket, Prefix=prefix)
            for page in _no_cycles(pages, what):
                deleted.update(str(m["Key"]) for m in page.get("DeleteMarkers", [])
                               if m.get("IsLatest"))
                for v in page.get("Versions", []):
                    modified = v.get("LastModified")
                    if not isinstance(modified, datetime) or modified.tzinfo is None:
                        raise ValueError(f"an entry's time has no zone ({modified!r})")
                    key = _under(prefix, str(v["Key"]))
                    yield {**v, "Key": key, "Deleted": key in deleted}

    def delete(self, bucket: str, key: str) -> None:
        try:
            self.client.delete_object(Bucket=bucket, Key=key)
        except (ClientError, BotoCoreError) as exc:
            raise translate(exc, f"delete s3://{bucket}/{key}") from exc


def _object(bucket: str, key: str, version_id: str | None) -> dict[str, Any]:
    """The parameters that name one object, of ``version_id`` when given."""
    return {"Bucket": bucket, "Key": key, **({"VersionId": version_id} if version_id else {})}


def _under(prefix: str, key: str) -> str:
    """``key`` of a listing of ``prefix``; one outside it was damaged on its way (as a bit
    flipped in it may name another SKU's packshot, which a caller acting on the listing
    would then touch): ``ValueError``, a damaged listing to :func:`_listing`."""
    if not key.startswith(prefix):
        raise ValueError(f"an entry {key[:200]!r} outside the prefix listed")
    return key


@contextmanager
def _listing(what: str) -> Iterator[None]:
    """A listing's faults as ours. A listing carries no checksum: over plain HTTP one damaged
    on its way may hold a field botocore cannot read (a date or a size with a bit flipped)
    or a time in no zone, a fault that may pass, as the next listing comes whole."""
    try:
        yield
    except (ClientError, BotoCoreError) as exc:
        raise translate(exc, what) from exc
    except (ValueError, KeyError) as exc:
        raise TransientError(f"{what}: the listing was damaged on its way: {exc}") from exc


# What the two listings used here (list_objects_v2, list_object_versions) page by.
_PAGE_TOKENS = ("NextContinuationToken", "NextKeyMarker", "NextVersionIdMarker")


def _no_cycles(pages: Iterable[dict[str, Any]], what: str) -> Iterator[dict[str, Any]]:
    """``pages`` as they come, until one hands back a page token seen before: an endpoint
    that sends a listing round in a cycle (botocore stops only a token repeated at once)
    would otherwise list for ever. A ``TransientError``: the caller's next run lists anew."""
    seen: set[tuple[str | None, ...]] = set()
    for page in pages:
        token = tuple(page.get(name) for name in _PAGE_TOKENS)
        if any(token):
            if token in seen:
                raise TransientError(f"{what}: S3 sent a page token it had sent before; "
                                     "the listing goes round in a cycle")
            seen.add(token)
        yield page
