"""An object store in memory, with the S3 adapter's surface: the stages' code without I/O
(the benchmark's compute floor runs the real stages on it)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from pipeline.errors import ObjectNotFoundError
from pipeline.storage.s3 import ObjectStore


class MemoryStore(ObjectStore):
    def __init__(self) -> None:
        super().__init__(client=None)
        self.objects: dict[tuple[str, str], bytes] = {}

    def get_bytes(self, bucket: str, key: str) -> bytes:
        try:
            return self.objects[(bucket, key)]
        except KeyError:
            raise ObjectNotFoundError(f"get s3://{bucket}/{key}: not found") from None

    def put_bytes(self, bucket: str, key: str, data: bytes, content_type: str,
                  metadata: dict[str, str] | None = None) -> None:
        self.objects[(bucket, key)] = bytes(data)

    def head(self, bucket: str, key: str, version_id: str | None = None
             ) -> dict[str, Any] | None:
        # One version per key: any version asked for is that one.
        data = self.objects.get((bucket, key))
        if data is None:
            return None
        etag = hashlib.md5(data, usedforsecurity=False).hexdigest()
        return {"ContentLength": len(data), "ETag": f'"{etag}"',
                "LastModified": datetime.now(UTC), "Metadata": {}}

    def first_part_size(self, bucket: str, key: str, version_id: str | None = None
                        ) -> int | None:
        return None  # objects are put whole

    def presign_get(self, bucket: str, key: str, expiry_s: int,
                    version_id: str | None = None) -> str:
        return f"memory://{bucket}/{key}"

    def list_keys(self, bucket: str, prefix: str) -> Iterator[str]:
        yield from sorted(k for b, k in self.objects if b == bucket and k.startswith(prefix))

    def list_objects(self, bucket: str, prefix: str) -> Iterator[tuple[str, str]]:
        for key in self.list_keys(bucket, prefix):
            yield key, str((self.head(bucket, key) or {}).get("ETag", ""))

    def list_prefixes(self, bucket: str, prefix: str) -> Iterator[str]:
        yield from sorted({prefix + k[len(prefix):].split("/", 1)[0] + "/"
                           for k in self.list_keys(bucket, prefix) if "/" in k[len(prefix):]})

    def delete(self, bucket: str, key: str) -> None:
        self.objects.pop((bucket, key), None)
